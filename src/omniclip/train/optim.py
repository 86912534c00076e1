"""AdamW over the trainable parameters and a warmup + cosine learning rate, set per optimizer step.

Weight decay goes only on parameters with ``ndim >= 2``, minus the names the model lists in
``no_weight_decay()`` (nanoGPT ``configure_optimizers``); the schedule follows mae ``util/lr_sched.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


def param_groups(
    named_params: Iterable[tuple[str, nn.Parameter]], weight_decay: float, skip: set[str] | frozenset[str] = frozenset()
) -> list[dict]:
    """Split parameters into a decayed group (``ndim >= 2``, not in ``skip``) and a group without decay.

    Each group carries the parameter names under ``"names"`` so optimizer state can be saved by name.
    """
    decay: list[tuple[str, nn.Parameter]] = []
    no_decay: list[tuple[str, nn.Parameter]] = []
    for name, p in named_params:
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and name not in skip else no_decay).append((name, p))
    groups = [
        {"params": [p for _, p in decay], "names": [n for n, _ in decay], "weight_decay": weight_decay},
        {"params": [p for _, p in no_decay], "names": [n for n, _ in no_decay], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(
    model: nn.Module, *, lr: float, weight_decay: float, betas: tuple[float, ...], eps: float
) -> torch.optim.AdamW:
    """AdamW over ``model.named_trainable_parameters()`` (or every parameter that requires grad).

    Raises:
        ValueError: the model has nothing to train.
    """
    named = getattr(model, "named_trainable_parameters", None)
    params = list(named()) if named is not None else [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    skip_fn = getattr(model, "no_weight_decay", None)
    skip = set(skip_fn()) if skip_fn is not None else set()
    groups = param_groups(params, weight_decay, skip)
    if not groups:
        raise ValueError("the model has no trainable parameters; check model.variant and model.full_finetune")
    if len(betas) != 2:
        raise ValueError(f"train.betas needs two numbers (beta1, beta2), got {list(betas)}")
    return torch.optim.AdamW(groups, lr=lr, betas=(betas[0], betas[1]), eps=eps)


def lr_at(step: int, *, total_steps: int, warmup_steps: int, lr: float, min_lr: float = 0.0) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup, then cosine down to ``min_lr``."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr
