"""Checkpoint I/O: atomic layout, the ``last`` pointer, optimizer state by name, RNG states."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from omniclip.train.checkpoint import (
    TrainedMeta,
    find_checkpoint,
    load_training_state,
    read_meta,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from omniclip.train.optim import build_optimizer


def _model() -> nn.Module:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3), nn.Linear(3, 2))
    model[1].requires_grad_(False)
    return model


def _meta(step: int) -> TrainedMeta:
    return TrainedMeta(["a", "b"], 8, 32, ("a video of {}.",), {"train": {"lr": 1.0}}, "tiny.safetensors", step=step)


def _step(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    loss = model(torch.randn(5, 4)).square().mean()
    loss.backward()
    opt.step()
    opt.zero_grad()


def test_checkpoint_round_trip_restores_weights_optimizer_and_pointer(tmp_path) -> None:
    model = _model()
    opt = build_optimizer(model, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.98), eps=1e-8)
    for _ in range(2):
        _step(model, opt)
    ckpt = save_checkpoint(tmp_path, model=model, optimizer=opt, meta=_meta(2), state={"step": 2}, keep=2)
    assert ckpt.name == "step_00000002" and (tmp_path / "checkpoints" / "last").read_text().strip() == ckpt.name
    assert sorted(p.name for p in ckpt.iterdir()) == ["model.safetensors", "optimizer.safetensors", "state.json"]
    assert not list((tmp_path / "checkpoints").glob(".tmp*"))
    torch.manual_seed(5)
    _step(model, opt)  # one more step on the original...
    clone = _model()
    clone[0].weight.data.zero_()
    opt2 = build_optimizer(clone, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.98), eps=1e-8)
    state = load_training_state(tmp_path, clone, opt2)
    assert state["step"] == 2 and state["meta"]["class_names"] == ["a", "b"]
    torch.manual_seed(5)
    _step(clone, opt2)  # ...equals one more step after restoring weights and AdamW moments
    for p, q in zip(clone.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_old_checkpoints_are_pruned_and_last_points_at_newest(tmp_path) -> None:
    model = _model()
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, model=model, optimizer=None, meta=_meta(step), state={"step": step}, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*"))
    assert names == ["step_00000002", "step_00000003"]
    assert find_checkpoint(tmp_path).name == "step_00000003"
    assert read_meta(tmp_path / "checkpoints" / "step_00000002" / "model.safetensors").step == 2


def test_missing_checkpoint_and_mismatched_model_are_clear_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        find_checkpoint(tmp_path)
    save_checkpoint(tmp_path, model=_model(), optimizer=None, meta=_meta(1), state={"step": 1})
    other = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(ValueError, match="does not match the model"):
        load_training_state(tmp_path, other)


def test_rng_states_round_trip_through_json() -> None:
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    state = json.loads(json.dumps(rng_state()))
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
