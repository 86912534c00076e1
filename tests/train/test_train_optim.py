"""AdamW parameter groups and the warmup + cosine schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from omniclip.train.optim import GradClipper, build_optimizer, lr_at, param_groups, set_lr


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


def test_text_side_learning_rate_scale_gets_groups_of_its_own() -> None:
    model = nn.Module()
    model.text_prompt = nn.Module()
    model.text_prompt.context = nn.Parameter(torch.zeros(2, 4))
    model.logit_scale = nn.Parameter(torch.zeros(()))
    model.pta = nn.Linear(4, 4)
    scales = {"text_context": 0.1, "logit_scale": 0.1}
    groups = param_groups(model.named_parameters(), 0.05, lr_scales=scales)
    assert [(g["names"], g["weight_decay"], g.get("lr_scale", 1.0)) for g in groups] == [
        (["pta.weight"], 0.05, 1.0),
        (["pta.bias"], 0.0, 1.0),
        (["text_prompt.context"], 0.05, 0.1),
        (["logit_scale"], 0.0, 0.1),
    ]
    # a scale of 1 keeps the two usual groups, so checkpoints of earlier runs resume
    assert len(param_groups(model.named_parameters(), 0.05, lr_scales={"text_context": 1.0})) == 2
    optimizer = build_optimizer(model, lr=2e-3, weight_decay=0.05, betas=(0.9, 0.98), eps=1e-8, lr_scales=scales)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([2e-3, 2e-3, 2e-4, 2e-4])
    set_lr(optimizer, 1e-3)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4])


def test_grad_clipper_reports_group_norms_before_clipping_and_clips_like_torch() -> None:
    torch.manual_seed(0)
    named = [(n, nn.Parameter(torch.randn(3, 3))) for n in ("a.pta.w", "a.spg.w", "text_prompt.context", "b.w")]
    for _, p in named:
        p.grad = torch.randn(3, 3)
    reference = [p.grad.clone() for _, p in named]
    copies = [torch.nn.Parameter(torch.zeros(3, 3)) for _ in reference]
    for c, g in zip(copies, reference, strict=True):
        c.grad = g.clone()
    expected = torch.nn.utils.clip_grad_norm_(copies, 0.5)
    clipper = GradClipper(named, max_norm=0.5)
    total, norms = clipper()
    assert set(norms) == {"pta", "spg", "text_context", "backbone"}
    assert norms["pta"] == pytest.approx(reference[0].norm().item(), rel=1e-6)
    assert float(total) == pytest.approx(float(expected), rel=1e-6)
    scale = 0.5 / (float(total) + 1e-6)
    for (_, p), c in zip(named, copies, strict=True):
        torch.testing.assert_close(p.grad, c.grad)  # what torch's own clipping left
    assert clipper.factor(float(total)) == pytest.approx(scale) and GradClipper(named, 0).factor(5.0) == 1.0


def test_grad_clipper_calls_a_norm_ten_times_its_recent_median_a_spike() -> None:
    clipper = GradClipper([], max_norm=1.0)
    assert [clipper.spike(v) for v in [1.0, 2.0] * 10] == [0.0] * 20  # 20 norms before judging
    assert clipper.spike(15.0) == pytest.approx(10.0)  # median 1.5
    assert clipper.spike(3.0) == 0.0
