"""AdamW over the trainable parameters and a warmup + cosine learning rate, set per optimizer step.

Weight decay goes only on parameters with ``ndim >= 2``, minus the names the model lists in
``no_weight_decay()`` (nanoGPT ``configure_optimizers``); the schedule follows mae ``util/lr_sched.py``.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Iterable, Mapping

import torch
from torch import nn


def param_groups(
    named_params: Iterable[tuple[str, nn.Parameter]],
    weight_decay: float,
    skip: set[str] | frozenset[str] = frozenset(),
    lr_scales: Mapping[str, float] | None = None,
) -> list[dict]:
    """Split parameters into a decayed group (``ndim >= 2``, not in ``skip``) and a group without decay.

    ``lr_scales`` maps a ``grad_group`` name to a multiple of the learning rate; the parameters of a group whose
    scale is not 1 get groups of their own (carrying ``"lr_scale"``, which ``set_lr`` applies). Each group carries
    the parameter names under ``"names"`` so optimizer state can be saved by name.
    """
    scales = {g: float(v) for g, v in (lr_scales or {}).items() if v != 1}
    buckets: dict[tuple[float, bool], list[tuple[str, nn.Parameter]]] = {}
    for name, p in named_params:
        if not p.requires_grad:
            continue
        decay = p.ndim >= 2 and name not in skip
        buckets.setdefault((scales.get(grad_group(name), 1.0), decay), []).append((name, p))
    groups = []
    for scale in dict.fromkeys([1.0, *scales.values()]):
        for decay in (True, False):
            members = buckets.get((scale, decay), [])
            group = {"params": [p for _, p in members], "names": [n for n, _ in members]}
            group["weight_decay"] = weight_decay if decay else 0.0
            if scale != 1:
                group["lr_scale"] = scale
            if members:
                groups.append(group)
    return groups


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, ...],
    eps: float,
    lr_scales: Mapping[str, float] | None = None,
) -> torch.optim.AdamW:
    """AdamW over ``model.named_trainable_parameters()`` (or every parameter that requires grad).

    ``lr_scales``: learning-rate multiples per ``grad_group`` (``param_groups``).

    Raises:
        ValueError: the model has nothing to train.
    """
    named = getattr(model, "named_trainable_parameters", None)
    params = list(named()) if named is not None else [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    skip_fn = getattr(model, "no_weight_decay", None)
    skip = set(skip_fn()) if skip_fn is not None else set()
    groups = param_groups(params, weight_decay, skip, lr_scales)
    if not groups:
        raise ValueError("the model has no trainable parameters; check model.variant and model.full_finetune")
    if len(betas) != 2:
        raise ValueError(f"train.betas needs two numbers (beta1, beta2), got {list(betas)}")
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(betas[0], betas[1]), eps=eps)
    set_lr(optimizer, lr)
    return optimizer


def lr_at(step: int, *, total_steps: int, warmup_steps: int, lr: float, min_lr: float = 0.0) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup, then cosine down to ``min_lr``."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group: ``lr`` times the group's ``lr_scale`` (default 1)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def grad_group(name: str) -> str:
    """The group of a trainable parameter, for its learning-rate scale and its logged gradient norm.

    One of pta, spg, temporal_embedding (PTA and SPG), text_context, logit_scale, backbone (CLIP's own weights: full
    fine-tuning, or the image tower's LayerNorms).
    """
    if name.endswith("temporal_embedding"):
        return "temporal_embedding"
    if ".pta." in name:
        return "pta"
    if ".spg." in name:
        return "spg"
    if name.startswith("text_prompt."):
        return "text_context"
    if name.endswith("logit_scale"):
        return "logit_scale"
    return "backbone"  # full fine-tuning, or the image tower's LayerNorms


class GradClipper:
    """Gradient norms per group before clipping, then the global norm clipped to ``max_norm`` (0 = no clipping).

    One pass computes both: the global norm is the norm of the group norms. Norms stay on the device; the caller
    reads them when it logs. ``spike`` watches the global norm for explosions.
    """

    SPIKE = 10.0  # a norm this many times the median of the recent ones is an explosion
    WINDOW = 50  # recent norms kept
    MIN_RECENT = 20  # norms needed before judging

    def __init__(self, named_params: Iterable[tuple[str, nn.Parameter]], max_norm: float) -> None:
        self.recent: deque[float] = deque(maxlen=self.WINDOW)
        self.groups: dict[str, list[nn.Parameter]] = {}
        for name, p in named_params:
            if p.requires_grad:
                self.groups.setdefault(grad_group(name), []).append(p)
        self.params = [p for ps in self.groups.values() for p in ps]
        self.max_norm = max_norm

    def __call__(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Clip in place; returns the global norm and each group's norm, both before clipping."""
        norms = {}
        for group, params in self.groups.items():
            grads = [p.grad for p in params if p.grad is not None]
            if grads:
                norms[group] = torch.nn.utils.get_total_norm(grads)
        total = torch.nn.utils.get_total_norm(list(norms.values())) if norms else torch.zeros(())
        if self.max_norm:
            torch.nn.utils.clip_grads_with_norm_(self.params, self.max_norm, total)
        return total, norms

    def spike(self, total: float) -> float:
        """``total`` over the median of the recent norms when it is a spike (else 0); then remembers it."""
        ratio = total / max(statistics.median(self.recent), 1e-12) if len(self.recent) >= self.MIN_RECENT else 0.0
        self.recent.append(total)
        return ratio if ratio >= self.SPIKE else 0.0

    def factor(self, total: float) -> float:
        """What clipping multiplied the gradients by (1 = not clipped), as ``clip_grad_norm_`` computes it."""
        return min(1.0, self.max_norm / (total + 1e-6)) if self.max_norm else 1.0
