"""Precision, chosen in one place: the autocast dtype of a run, its context, and a frozen backbone stored in bf16.

``train.amp`` names the autocast precision of training, evaluation and prediction (``amp_dtype``); ``autocast`` turns
a dtype into its context. ``omniclip bench`` uses the same functions with its own switches.

OmniCLIP freezes CLIP (METHOD.md section 1), so the backbone's weights never need fp32 master copies: storing them
in bf16 halves their memory and lets the GPU run the frozen matmuls without autocast's per-call weight casts
(PROTOCOLS.md "Compute figures"). The adapters and gates keep fp32 weights; PTA and SPG cast their input to their
own dtype and their output back, so the two precisions meet only at the branch boundaries.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Literal

import torch
from torch import nn

DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp32": torch.float32}
DtypeName = Literal["bf16", "fp32"]


def cast_frozen_(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> int:
    """Store every floating-point parameter with ``requires_grad=False`` in ``dtype``; trainable ones are untouched.

    Run it after the trainable parameters are chosen (``build_model`` does that). Cached class embeddings are
    dropped when the model has a ``clear_class_cache`` method, since the text tower's precision changed.

    Returns:
        The number of parameters cast.
    """
    cast = 0
    for p in model.parameters():
        if not p.requires_grad and p.is_floating_point() and p.dtype != dtype:
            p.data = p.data.to(dtype)
            cast += 1
    clear = getattr(model, "clear_class_cache", None)
    if callable(clear):
        clear()
    return cast


def amp_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """``train.amp`` -> the autocast dtype: bf16 when asked, or on GPUs for ``auto``; None = full precision."""
    return torch.bfloat16 if amp == "bf16" or (amp == "auto" and device.type == "cuda") else None


def autocast(
    device: torch.device, dtype: torch.dtype | DtypeName | None, *, cache: bool = True
) -> AbstractContextManager[object]:
    """Autocast to ``dtype`` on ``device`` (a dtype or its name); nothing for None or ``"fp32"``.

    ``cache=False`` is needed under CUDA-graph capture (cached casts would be graph-private tensors).
    """
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
        dtype = DTYPES[dtype]
    if dtype is None or dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype, cache_enabled=cache)
