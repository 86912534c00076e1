"""Precision, chosen in one place: the autocast dtype of a run, the dtype of its frozen weights, and compilation.

``resolve_precision`` turns the settings (``train.amp``, ``train.frozen_dtype``, ``train.compile``; ``--precision`` of
``omniclip predict``) into a ``Precision``, deciding every ``auto`` from the hardware and logging each decision once
with its reason. Training, evaluation, prediction and ``omniclip bench`` all use it; ``autocast`` turns a dtype into
its context.

OmniCLIP freezes CLIP (METHOD.md section 1), so the backbone's weights never need fp32 master copies: storing them
in bf16 halves their memory and lets the frozen matmuls run in bf16 without autocast's per-call weight casts
(PROTOCOLS.md "Compute figures"). The adapters, gates and the optimizer keep fp32; PTA and SPG cast their input to
their own dtype and their output back, so the two precisions meet only at the branch boundaries.

What ``auto`` picks, from measurements (docs/benchmarks.md "Precision, compilation and the training loop"):

- a GPU: bf16 autocast where it supports bf16, frozen weights as loaded, ``torch.compile`` of the image encoder;
- a CPU with AMX bf16 units (Intel Sapphire Rapids and later): frozen weights in bf16 and no autocast, when the image
  tower is at least ``CPU_BF16_MIN_WIDTH`` wide. There bf16 frozen weights inferred 1.9x and trained 1.2x as fast
  as fp32 (width 192; width 128: 1.35x and 1.05x); autocast was no faster (1.9x / 1.1x) and both together slower
  than bf16 weights alone; at width 64 bf16 trained at 0.7x fp32 speed;
- any other CPU: fp32. Without AMX, bf16 ran at 0.7-0.8x fp32 speed with AVX512-BF16 and 0.3-0.4x without it (and
  OmniCLIP trained 10x slower in bf16 on an AMD EPYC). No compilation on a CPU (not faster; 20 s to minutes).
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

log = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp32": torch.float32}
DtypeName = Literal["bf16", "fp32"]
PRECISION_NAMES = ("auto", "fp32", "bf16")  # --precision of predict and export (named_precision)
CPU_BF16_MIN_WIDTH = 128  # narrower image towers ran slower in bf16 than in fp32 on an AMX CPU (module docstring)

_LOGGED: set[str] = set()  # decisions already logged by this process


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


@dataclass(frozen=True)
class Precision:
    """How a model runs: ``amp`` autocast dtype (None: none), ``frozen`` dtype of frozen weights, ``compile``."""

    amp: torch.dtype | None = None
    frozen: torch.dtype = torch.float32
    compile: bool = False

    @property
    def name(self) -> str:
        """``"fp32"``, ``"bf16 frozen weights"``, ``"bf16 autocast"`` or both, plus ``" + compile"``."""
        parts = {"bf16 frozen weights": self.frozen != torch.float32, "bf16 autocast": self.amp is not None}
        text = " + ".join(p for p, on in parts.items() if on) or "fp32"
        return text + (" + compile" if self.compile else "")

    def autocast(self, device: torch.device | str) -> AbstractContextManager[object]:
        """The autocast context of this precision on ``device`` (nothing for fp32)."""
        return autocast(torch.device(device), self.amp)

    def apply(self, model: nn.Module, encoder: nn.Module | None = None) -> nn.Module:
        """Cast ``model``'s frozen weights to ``frozen`` and, with ``compile``, compile ``encoder`` in place.

        Run it once the trainable parameters are chosen and before the optimizer is built. Compiling in place
        (``nn.Module.compile``) leaves parameter names and checkpoints as they are; an encoder already compiled
        is left alone. Returns ``model``.
        """
        if self.frozen != torch.float32:
            cast_frozen_(model, self.frozen)
        if self.compile and encoder is not None and getattr(encoder, "_compiled_call_impl", None) is None:
            encoder.compile()
        return model


def cpu_bf16_units() -> str:
    """The CPU's native bf16 matrix instructions: ``"amx"`` (AMX-BF16), ``"avx512_bf16"`` or ``""`` for none.

    Read from the CPU flags torch reports (``torch.cpu`` capabilities), else from ``/proc/cpuinfo``.
    """
    flags = _cpu_flags()
    return "amx" if "amx_bf16" in flags else "avx512_bf16" if "avx512_bf16" in flags else ""


def _cpu_flags() -> set[str]:
    probe = getattr(torch.cpu, "get_capabilities", None)
    if callable(probe):
        with suppress(RuntimeError, AttributeError):
            return {str(k) for k, v in probe().items() if v is True}
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.partition(":")[2].split())
    return set()


def _native_bf16(device: torch.device, width: int | None) -> tuple[bool, str]:
    """Whether bf16 pays on ``device`` for an image tower ``width`` wide (None: unknown), and why."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return True, "the GPU computes bf16 natively"
        return False, "this GPU has no native bf16"
    if device.type != "cpu":
        return False, f"bf16 speed on {device.type} is not measured"
    units = cpu_bf16_units()
    if units == "avx512_bf16":
        return False, "this CPU has AVX512-BF16 but no AMX (bf16 measured 0.7x to 0.8x fp32 speed without AMX)"
    if units != "amx":
        return False, "this CPU has no native bf16 (bf16 measured 2.5x to 10x slower than fp32)"
    if width is not None and width < CPU_BF16_MIN_WIDTH:
        return False, (
            f"the image tower is {width} wide, under {CPU_BF16_MIN_WIDTH}: bf16 measured slower there even with AMX"
        )
    return True, "this CPU has AMX bf16 units"


def _decide(setting: str, message: str) -> None:
    text = f"{message} ({setting}=auto)"
    if text not in _LOGGED:
        _LOGGED.add(text)
        log.info("%s", text)


def resolve_precision(
    device: torch.device | str,
    amp: str = "auto",
    frozen_dtype: str = "auto",
    compile: bool | str = "auto",
    *,
    width: int | None = None,
) -> Precision:
    """The precision of a run on ``device``; every ``auto`` decided from the hardware (module docstring), logged once.

    Args:
        device: where the model runs.
        amp: ``train.amp``: ``"bf16"`` autocast, ``"off"`` (or ``"fp32"``), or ``"auto"``.
        frozen_dtype: ``train.frozen_dtype``: frozen weights in ``"bf16"``, ``"fp32"`` (as loaded), or ``"auto"``.
        compile: ``train.compile``: ``True``/``"on"``, ``False``/``"off"`` or ``"auto"``.
        width: the image tower's width (``clip.cfg.vision.width``): bf16 does not pay for narrow towers on a CPU.

    Raises:
        ValueError: a setting outside its choices.
    """
    device = torch.device(device)
    if amp not in ("auto", "bf16", "off", "fp32"):
        raise ValueError(f"amp must be auto, bf16 or off, got {amp!r}")
    if frozen_dtype not in ("auto", "bf16", "fp32"):
        raise ValueError(f"frozen_dtype must be auto, bf16 or fp32, got {frozen_dtype!r}")
    if compile not in (True, False, "auto", "on", "off"):
        raise ValueError(f"compile must be true, false or auto, got {compile!r}")
    native, why = _native_bf16(device, width) if "auto" in (amp, frozen_dtype) else (False, "")
    frozen = torch.bfloat16 if frozen_dtype == "bf16" else torch.float32
    if frozen_dtype == "auto":
        if device.type == "cpu" and native:
            frozen = torch.bfloat16
            _decide("frozen_dtype", f"frozen weights in bf16: {why}")
        elif device.type == "cpu":
            _decide("frozen_dtype", f"frozen weights in fp32: {why}")
        else:
            _decide("frozen_dtype", "frozen weights as loaded: bf16 storage is not measured on a GPU")
    dtype = torch.bfloat16 if amp == "bf16" else None
    if amp == "auto":
        if device.type == "cpu":
            _decide("amp", "no autocast on the CPU: its per-op casts cost more than they save (bf16 frozen weights "
                    "are the CPU's bf16)")  # fmt: skip
        elif native:
            dtype = torch.bfloat16
            _decide("amp", f"bf16 autocast: {why}")
        else:
            _decide("amp", f"no autocast: {why}")
    if compile == "auto":
        compiled = device.type == "cuda"
        _decide("compile", "torch.compile of the image encoder on the GPU" if compiled else
                "no torch.compile on the CPU: not faster there, and 20 s to minutes to compile")  # fmt: skip
    else:
        compiled = compile in (True, "on")
    return Precision(amp=dtype, frozen=frozen, compile=compiled)


def named_precision(device: torch.device | str, name: str, *, width: int | None = None) -> Precision:
    """``--precision`` of ``omniclip predict`` and ``export``: ``"fp32"``, ``"bf16"`` (frozen weights in bf16, with
    autocast on a GPU) or ``"auto"`` (as ``resolve_precision`` decides); never compiled.

    Raises:
        ValueError: another name.
    """
    if name == "fp32":
        return resolve_precision(device, "off", "fp32", False)
    if name == "bf16":
        return resolve_precision(device, "bf16" if torch.device(device).type == "cuda" else "off", "bf16", False)
    if name == "auto":
        return resolve_precision(device, "auto", "auto", False, width=width)
    raise ValueError(f"precision must be one of {', '.join(PRECISION_NAMES)}, got {name!r}")


def amp_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """``train.amp`` -> the autocast dtype (``resolve_precision``'s): bf16 when asked or on a bf16 GPU; None = none."""
    return resolve_precision(device, amp, "fp32", False).amp


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
