"""BenchConfig: what one ``omniclip bench`` run measures, with device-dependent defaults filled by ``resolved()``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from omniclip.clip.presets import CLIPConfig, get_preset
from omniclip.precision import DTYPES, DtypeName

# frame_average: bare CLIP averaging frame embeddings (frozen: only the logit scale trains); vificlip: the same model
# with every weight trained (ViFi-CLIP's recipe, the fair baseline for training cost); xclip: transformers' X-CLIP.
SUBJECTS: tuple[str, ...] = ("frame_average", "vificlip", "omniclip", "pta", "spg", "serial", "xclip")
MODES: tuple[str, ...] = ("infer", "train")


@dataclass(frozen=True)
class BenchConfig:
    arch: str = "tiny"  # CLIP preset (``ViT-B-16``, ``tiny``, ...)
    frames: int = 8  # T
    size: int | None = None  # clip resolution; None = the preset's image size
    batch: int | None = None  # clips per step; None = 32 on CUDA, 4 on the CPU
    device: str = "auto"  # auto = cuda when available
    dtype: DtypeName | None = None  # bf16 autocast or fp32; None = bf16 on CUDA, fp32 on the CPU
    classes: int | None = None  # class texts trained against; None = 400 on CUDA, 16 on the CPU
    variants: tuple[str, ...] = SUBJECTS  # subjects to measure, in order
    modes: tuple[str, ...] = MODES  # infer, train
    repeats: int = 5  # timed passes over the input batches; the median is reported
    warmup: int = 3  # untimed steps first (compilation, autotuning, graph capture)
    batches: int = 3  # pre-made input batches rotated in every pass
    compile: bool = False  # torch.compile the image encoders in place
    compile_backend: str = "inductor"  # torch.compile backend (``eager`` checks tracing only)
    bf16_weights: bool = False  # store frozen weights in bf16 (trainable ones stay fp32)
    grad_checkpointing: bool = False  # recompute blocks in backward
    cuda_graphs: bool = False  # replay steps as CUDA graphs (CUDA only; skipped on the CPU)
    full_finetune: bool = False  # train every CLIP weight in our variants (X-CLIP always trains all)
    max_batch: bool = False  # search the largest training batch, without and with activation checkpointing
    max_batch_limit: int | None = None  # largest size tried; None = 4096 on CUDA, 4 x batch on the CPU
    max_batch_tolerance: float = 0.0  # stop bisecting within this fraction of the size found (0 = exact)
    threads: int | None = None  # torch CPU threads; None = torch's default
    interleave: bool = False  # time all subjects taking turns (shared CPUs); no peak memory then
    seed: int = 0  # seeds weights, inputs and class texts

    def resolved(self) -> BenchConfig:
        """Fill device-dependent defaults and validate; raises ValueError naming the bad option."""
        device = "cuda" if self.device == "auto" and torch.cuda.is_available() else self.device
        device = "cpu" if device == "auto" else device
        try:
            cuda = torch.device(device).type == "cuda"
        except RuntimeError as err:
            raise ValueError(f"--device {self.device!r} is not a device; use auto, cpu, cuda or cuda:N") from err
        if cuda and not torch.cuda.is_available():
            raise ValueError(f"--device {self.device}: CUDA is not available here; use --device cpu")
        unknown = [v for v in self.variants if v not in SUBJECTS]
        if unknown or not self.variants:
            raise ValueError(f"--variants: unknown {unknown or 'empty list'}; choose from {', '.join(SUBJECTS)}")
        if any(m not in MODES for m in self.modes) or not self.modes:
            raise ValueError(f"--modes: got {list(self.modes)}; choose from {', '.join(MODES)}")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ValueError(f"--dtype: unknown {self.dtype!r}; choose from {', '.join(DTYPES)}")
        clip_cfg = get_preset(self.arch)  # raises for unknown names
        size, batch = _pick(self.size, clip_cfg.vision.image_size), _pick(self.batch, 32 if cuda else 4)
        cfg = dataclasses.replace(
            self,
            device=device,
            size=size,
            batch=batch,
            dtype=_pick(self.dtype, "bf16" if cuda else "fp32"),
            classes=_pick(self.classes, 400 if cuda else 16),
            cuda_graphs=self.cuda_graphs and cuda,
            max_batch_limit=_pick(self.max_batch_limit, 4096 if cuda else 4 * batch),
        )
        for name in ("frames", "size", "batch", "classes", "repeats", "batches", "max_batch_limit"):
            if getattr(cfg, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
        if size < clip_cfg.vision.patch_size:
            raise ValueError(f"--size {size} is smaller than one {clip_cfg.vision.patch_size}-pixel patch")
        if cfg.warmup < 0 or cfg.max_batch_tolerance < 0:
            raise ValueError(
                f"--warmup and --max-batch-tolerance must be >= 0, got {cfg.warmup}, {cfg.max_batch_tolerance}"
            )
        return cfg

    def clip_config(self) -> CLIPConfig:
        """The preset with its image size set to the clip resolution (no positional-embedding resize per step)."""
        assert self.size is not None, "clip_config() needs a resolved() config"
        base = get_preset(self.arch)
        return dataclasses.replace(base, vision=dataclasses.replace(base.vision, image_size=self.size))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _pick(value: Any, default: Any) -> Any:
    """``default`` only for a missing value: an explicit 0 stays 0 and fails validation."""
    return default if value is None else value
