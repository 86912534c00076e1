"""Parameter and FLOP counts of a video model, split into backbone, PTA and SPG (mmaction2's ``get_flops`` idea).

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``, which counts 2 FLOPs per multiply-accumulate of the
matrix products and convolutions (element-wise ops, softmax, norms and pooling are not counted). The model is built
on the ``meta`` device, so counting a ViT-B/16 at 32 frames takes about 0.3 s on a CPU and allocates nothing.
On the meta device SDPA runs its math path (two counted matmuls); on a CPU it runs a flash kernel (forward and
backward) that PyTorch's counter does not know, so the same formulas are registered for it: meta, CPU and CUDA counts
agree. ``count_flops`` counts any call this way (``omniclip bench`` counts training steps with it).
Attribution is by module: whatever runs inside a block's ``pta`` or ``spg`` branch counts as PTA or SPG; all the
rest (patchify, spatial attention, MLPs, projection) is the backbone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from omniclip.clip.model import CLIP
from omniclip.clip.presets import CLIPConfig
from omniclip.model.build import branch_parameters, build_model, count_parameters
from omniclip.model.config import ModelConfig
from omniclip.model.omniclip import OmniCLIP


@dataclass(frozen=True)
class ModelInfo:
    """Sizes of one video model for one clip of ``num_frames`` frames at ``image_size`` pixels."""

    arch: str  # CLIP architecture (preset name or checkpoint source)
    variant: str  # ModelConfig.variant
    num_frames: int  # T
    image_size: int  # square input side in pixels
    params_total: int  # every parameter, text tower included
    params_trainable: int  # what the optimiser updates
    params_pta: int  # all PTA branches
    params_spg: int  # all SPG branches
    gflops: float  # video encoder, one clip (2 FLOPs per MAC)
    gflops_backbone: float  # CLIP image blocks, patchify and projection
    gflops_pta: float  # inside PTA branches
    gflops_spg: float  # inside SPG branches

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _cpu_sdpa_flops(q_shape: Any, k_shape: Any, v_shape: Any, *args: Any, out_shape: Any = None, **kw: Any) -> int:
    return flop_counter.sdpa_flop_count(q_shape, k_shape, v_shape)


def _cpu_sdpa_backward_flops(
    grad_shape: Any, q_shape: Any, k_shape: Any, v_shape: Any, *args: Any, out_shape: Any = None, **kw: Any
) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_shape, q_shape, k_shape, v_shape)


def flop_counter_mode() -> FlopCounterMode:
    """A silent ``FlopCounterMode`` that also counts the CPU flash-attention kernels, forward and backward."""
    aten = torch.ops.aten
    extra: dict[Any, Callable[..., int]] = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        extra[aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa_flops
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        extra[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _cpu_sdpa_backward_flops
    return FlopCounterMode(display=False, custom_mapping=extra)


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations (a multiply-add counts 2) that ``fn()`` executes, backward passes included."""
    with flop_counter_mode() as counter:
        fn()
    return int(counter.get_total_flops())


def _module_flops(counts: dict[str, dict[Any, int]], suffix: str) -> int:
    return sum(sum(ops.values()) for name, ops in counts.items() if name.endswith(suffix))


def video_flops(model: OmniCLIP, num_frames: int, image_size: int) -> dict[str, int]:
    """FLOPs of ``model.encode_video`` on one ``(1, T, 3, S, S)`` clip: ``total``, ``backbone``, ``pta``, ``spg``."""
    video = torch.zeros(1, num_frames, 3, image_size, image_size, device=model.device)
    with torch.no_grad(), flop_counter_mode() as counter:
        model.encode_video(video)
    counts = counter.get_flop_counts()
    total = sum(counts["Global"].values())
    pta, spg = _module_flops(counts, ".pta"), _module_flops(counts, ".spg")
    return {"total": total, "backbone": total - pta - spg, "pta": pta, "spg": spg}


def image_flops(clip: CLIP, image_size: int) -> int:
    """FLOPs of ``clip.encode_image`` on one ``(1, 3, S, S)`` image."""
    pixels = torch.zeros(1, 3, image_size, image_size, device=clip.logit_scale.device)
    with torch.no_grad():
        return count_flops(lambda: clip.encode_image(pixels))


def describe_model(
    clip_cfg: CLIPConfig,
    num_frames: int,
    image_size: int | None = None,
    config: ModelConfig | None = None,
    arch: str = "custom",
) -> ModelInfo:
    """Build the model on the meta device and count its parameters and per-clip FLOPs."""
    config = config or ModelConfig()
    size = image_size or clip_cfg.vision.image_size
    if size < clip_cfg.vision.patch_size:
        raise ValueError(f"--size {size} is smaller than one {clip_cfg.vision.patch_size}-pixel patch")
    with torch.device("meta"):
        model = build_model(CLIP(clip_cfg), num_frames, config)
    flops = video_flops(model, num_frames, size)
    return ModelInfo(
        arch=arch,
        variant=config.variant,
        num_frames=num_frames,
        image_size=size,
        params_total=count_parameters(model.parameters()),
        params_trainable=count_parameters(model.trainable_parameters()),
        params_pta=count_parameters(branch_parameters(model, "pta")),
        params_spg=count_parameters(branch_parameters(model, "spg")),
        gflops=flops["total"] / 1e9,
        gflops_backbone=flops["backbone"] / 1e9,
        gflops_pta=flops["pta"] / 1e9,
        gflops_spg=flops["spg"] / 1e9,
    )
