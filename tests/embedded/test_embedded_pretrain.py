"""Contrastive pretraining: the loss and its false-negative mask, the schedule, and bit-exact reproducibility."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from omniclip.clip import build_clip, load_clip, save_clip
from omniclip.embedded.pretrain import (
    NO_DECAY,
    PretrainConfig,
    build_optimizer,
    canonicalise_header,
    contrastive_loss,
    deterministic,
    init_sincos_,
    lr_at,
    pretrain,
)

SHORT = PretrainConfig(steps=3, batch_size=8, warmup=2, spatial_steps=1)  # both curriculum stages


def test_embedded_loss_equals_clip_loss_without_false_negatives() -> None:
    img, txt = torch.randn(6, 16), torch.randn(6, 16)
    scale = torch.tensor(math.log(10.0))
    logits = 10.0 * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).t()
    target = torch.arange(6)
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
    fits = torch.eye(6, dtype=torch.bool)
    torch.testing.assert_close(contrastive_loss(img, txt, scale, fits), expected)


def test_embedded_loss_ignores_masked_pairs() -> None:
    img, txt = torch.randn(4, 8), torch.randn(4, 8)
    scale = torch.tensor(math.log(20.0))
    fits = torch.eye(4, dtype=torch.bool)
    fits[0, 1] = True  # caption 1 also describes image 0: not a negative for either side
    base = contrastive_loss(img, txt, scale, fits)
    assert base < contrastive_loss(img, txt, scale, torch.eye(4, dtype=torch.bool))  # one negative fewer
    logits = 20.0 * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).t()
    logits[0, 1] = float("-inf")
    target = torch.arange(4)
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
    torch.testing.assert_close(base, expected)


def test_embedded_schedule_warms_up_then_decays_to_the_floor() -> None:
    cfg = PretrainConfig(steps=100, warmup=10, lr=1e-3, min_lr=1e-5)
    lrs = [lr_at(s, cfg) for s in range(cfg.steps)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10], strict=False))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] == pytest.approx(1e-5)


def test_embedded_sincos_table_encodes_the_grid() -> None:
    pos = init_sincos_(torch.empty(1 + 4 * 4, 8))
    assert torch.equal(pos[0], torch.zeros(8))
    grid = pos[1:].view(4, 4, 8)  # (rows, cols, D)
    x_half, y_half = grid[..., :4], grid[..., 4:]
    torch.testing.assert_close(x_half[0], x_half[3])  # the x channels do not change down a column
    torch.testing.assert_close(y_half[:, 0], y_half[:, 3])  # the y channels do not change along a row
    torch.testing.assert_close(grid[0, 1, 0], torch.tensor(math.sin(1.0)))  # sin(x * omega_0), omega_0 = 1
    assert len({tuple(v.tolist()) for v in pos[1:]}) == 16  # every patch is told apart
    with pytest.raises(AssertionError, match="divisible by 4"):
        init_sincos_(torch.empty(1 + 4, 6))


def test_embedded_weight_decay_only_on_matrices() -> None:
    model = build_clip("tiny")
    decay, no_decay = build_optimizer(model, PretrainConfig(weight_decay=0.1)).param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    decayed = set(decay["names"])
    assert decayed and all(model.get_parameter(n).ndim >= 2 for n in decayed)
    assert not decayed & set(NO_DECAY) and "logit_scale" not in decayed
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_embedded_pretraining_reproduces_bit_for_bit() -> None:
    first, hist1 = pretrain(SHORT, log_every=1)
    second, hist2 = pretrain(SHORT, log_every=1)
    a, b = first.state_dict(), second.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [h["loss"] for h in hist1] == [h["loss"] for h in hist2]
    fresh = build_clip(SHORT.preset)
    assert not torch.equal(fresh.state_dict()["visual.proj"], a["visual.proj"])  # training moved the weights


def test_embedded_pretraining_restores_global_state() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    threads = torch.get_num_threads()
    pretrain(replace(SHORT, steps=1), log_every=1)
    assert torch.equal(torch.rand(3), expected)  # the caller's random stream is untouched
    assert torch.get_num_threads() == threads and not torch.are_deterministic_algorithms_enabled()
    with deterministic(1):
        assert torch.are_deterministic_algorithms_enabled() and torch.get_num_threads() == 1


def test_embedded_pretraining_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        pretrain(replace(SHORT, batch_size=1))
    with pytest.raises(ValueError, match="steps"):
        pretrain(replace(SHORT, steps=0))


def test_embedded_saved_bytes_do_not_depend_on_hash_order(tmp_path: Path) -> None:
    model = build_clip("tiny")
    files = [tmp_path / f"{k}.safetensors" for k in range(4)]
    for f in files:
        save_clip(model, f)
        canonicalise_header(f)
    assert len({f.read_bytes() for f in files}) == 1
    header = files[0].read_bytes()
    assert int.from_bytes(header[:8], "little") % 8 == 0
    loaded = load_clip(files[0])
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_embedded_resumed_run_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    cfg = replace(SHORT, steps=5)
    state = tmp_path / "state.pt"

    def stop_at_3(entry: dict) -> None:
        if entry["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, log_every=1, state_file=state, save_every=2, on_log=stop_at_3)
    assert torch.load(state, weights_only=True)["next_step"] == 2
    resumed, history = pretrain(cfg, log_every=1, state_file=state, save_every=2)
    straight, expected = pretrain(cfg, log_every=1)
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    assert [h["loss"] for h in history] == [h["loss"] for h in expected]
    with pytest.raises(ValueError, match="another recipe"):
        pretrain(replace(cfg, lr=5e-4), state_file=state)
