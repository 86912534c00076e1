"""AdamW parameter groups and the warmup + cosine schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from omniclip.train.optim import build_optimizer, lr_at, param_groups, set_lr


class _Adapter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Linear(4, 2)
        self.gate = nn.Parameter(torch.zeros(1, 1))
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)

    def no_weight_decay(self) -> set[str]:
        return {"gate"}


def test_weight_decay_only_on_matrices_minus_named_exclusions() -> None:
    groups = param_groups(_Adapter().named_parameters(), 0.1, {"gate"})
    by_decay = {g["weight_decay"]: g["names"] for g in groups}
    assert by_decay == {0.1: ["down.weight"], 0.0: ["gate", "down.bias"]}  # frozen.* left out


def test_build_optimizer_uses_model_exclusions_and_rejects_nothing_to_train() -> None:
    opt = build_optimizer(_Adapter(), lr=1e-3, weight_decay=0.05, betas=(0.9, 0.98), eps=1e-8)
    assert [g["names"] for g in opt.param_groups] == [["down.weight"], ["gate", "down.bias"]]
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(frozen, lr=1e-3, weight_decay=0.0, betas=(0.9, 0.98), eps=1e-8)


def test_schedule_warms_up_linearly_then_follows_a_cosine() -> None:
    kw = dict(total_steps=110, warmup_steps=10, lr=1.0, min_lr=0.1)
    assert lr_at(0, **kw) == pytest.approx(0.1)
    assert lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(10, **kw) == pytest.approx(1.0)
    assert lr_at(60, **kw) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(110, **kw) == pytest.approx(0.1)
    lrs = [lr_at(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))  # monotone after warmup


def test_set_lr_sets_every_group() -> None:
    opt = build_optimizer(_Adapter(), lr=1e-3, weight_decay=0.05, betas=(0.9, 0.98), eps=1e-8)
    set_lr(opt, 0.5)
    assert {g["lr"] for g in opt.param_groups} == {0.5}
