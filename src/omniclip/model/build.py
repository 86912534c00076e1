"""build_model: map a ModelConfig onto a CLIP, wiring PTA/SPG into its image blocks and choosing what trains.

Follows METHOD.md sections 1-3 and the injection pattern of torchtune's ``TransformerSelfAttentionLayer``: branches are
assigned to ``block.pta``/``block.spg`` of ``clip.visual.transformer.resblocks``, so pretrained keys never move and
new keys are additive (``visual.transformer.resblocks.3.pta.up.weight``).
"""

from __future__ import annotations

import logging
import math
from typing import Any, cast

import torch
from torch import nn

from omniclip.clip.model import CLIP, ResidualAttentionBlock
from omniclip.model.config import ModelConfig
from omniclip.model.omniclip import OmniCLIP
from omniclip.model.prompts import SelfPromptGenerator
from omniclip.model.temporal import ParallelTemporalAdapter
from omniclip.model.text import TextPrompt

log = logging.getLogger(__name__)


def resolve_layers(layers: tuple[int, ...] | None, num_layers: int, default: range, key: str) -> list[int]:
    """Block indices in ``[0, L)`` (negative ones count from the end); ``None`` gives ``default``."""
    if layers is None:
        return list(default)
    out = []
    for i in layers:
        if not -num_layers <= i < num_layers:
            raise ValueError(
                f"model.{key}: block {i} does not exist; the image tower has {num_layers} (0..{num_layers - 1})"
            )
        out.append(i % num_layers)
    if len(set(out)) != len(out):
        raise ValueError(f"model.{key}: {list(layers)} names a block twice")
    return sorted(out)


def branch_width(width: int, ratio: float) -> int:
    """Bottleneck width ``round(D * ratio)``, at least 1."""
    return max(1, round(width * ratio))


def attach_branches(clip: CLIP, num_frames: int, config: ModelConfig) -> tuple[list[int], list[int]]:
    """Put PTA/SPG modules (fp32, on the CLIP's device) into the selected image blocks; returns their indices."""
    blocks = cast(list[ResidualAttentionBlock], clip.visual.transformer.resblocks)
    L, D = len(blocks), clip.visual.cfg.width
    if any(b.pta is not None or b.spg is not None for b in blocks):
        raise ValueError("this CLIP already carries PTA/SPG branches; build_model needs a fresh CLIP")
    pta_layers = resolve_layers(config.pta_layers, L, range(L), "pta_layers") if config.has_pta else []
    spg_layers = resolve_layers(config.spg_layers, L, range(L // 2, L), "spg_layers") if config.has_spg else []
    with torch.device(clip.logit_scale.device):  # built in place: no CPU copy for a GPU or meta model
        for i in pta_layers:
            blocks[i].pta = ParallelTemporalAdapter(
                D,
                branch_width(D, config.pta_ratio),
                config.pta_heads,
                num_frames,
                config.pta_interpolate,
                temporal_init_std=config.temporal_init_std,
                qk_norm=config.qk_norm,
            )
            blocks[i].pta_mode = "serial" if config.variant == "serial" else "parallel"
        for i in spg_layers:
            blocks[i].spg = SelfPromptGenerator(
                D,
                branch_width(D, config.spg_ratio),
                config.spg_heads,
                config.spg_scales,
                config.spg_mixing,
                config.spg_window,
                num_frames,
                config.pta_interpolate,
                grid=(clip.visual.cfg.grid, clip.visual.cfg.grid),
                temporal_init_std=config.temporal_init_std,
                qk_norm=config.qk_norm,
            )
    return pta_layers, spg_layers


def set_trainable(model: OmniCLIP, config: ModelConfig) -> None:
    """Freeze the CLIP backbone unless ``full_finetune``; branches, text context and (by default) logit scale train,
    and with ``train_image_layernorms`` the image tower's LayerNorms."""
    for p in model.clip.parameters():
        p.requires_grad_(config.full_finetune)
    if config.train_image_layernorms:
        for module in model.clip.visual.modules():
            if isinstance(module, nn.LayerNorm):
                module.requires_grad_(True)
    for weight in branch_parameters(model, "pta") + branch_parameters(model, "spg"):
        weight.requires_grad_(True)
    if model.text_prompt is not None:
        model.text_prompt.requires_grad_(True)
    model.clip.logit_scale.requires_grad_(config.full_finetune or config.train_logit_scale)


def build_model(clip: CLIP, num_frames: int, config: ModelConfig | None = None, **overrides: Any) -> OmniCLIP:
    """Build OmniCLIP (or a baseline variant) around ``clip``, which is modified in place and owned by the result.

    Args:
        clip: a CLIP from ``omniclip.clip`` (``build_clip`` or ``load_clip``) without branches yet.
        num_frames: T the temporal embeddings are built for (other counts interpolate).
        config: the model config (default ``ModelConfig()``); ``overrides`` replace its fields.

    Raises:
        ValueError: unknown override key, invalid value, or block indices outside the image tower.
    """
    if not isinstance(clip, CLIP):
        raise ValueError(f"build_model needs an omniclip.clip.CLIP, got {type(clip).__name__}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    config = (config or ModelConfig()).replace(**overrides) if overrides else (config or ModelConfig())
    context_length = clip.positional_embedding.shape[0]
    if config.text_context >= context_length - 2:
        raise ValueError(f"model.text_context={config.text_context} leaves no room in {context_length} text tokens")
    pta_layers, spg_layers = attach_branches(clip, num_frames, config)
    with torch.device(clip.logit_scale.device):
        prompt = TextPrompt(config.text_context, clip.cfg.text.width) if config.text_context else None
    if config.logit_scale is not None:
        with torch.no_grad():
            clip.logit_scale.fill_(math.log(config.logit_scale))
    model = OmniCLIP(clip, num_frames, config, prompt)
    set_trainable(model, config)
    clip.visual.transformer.grad_checkpointing = config.grad_checkpointing
    clip.transformer.grad_checkpointing = config.grad_checkpointing
    image_blocks = cast(list[ResidualAttentionBlock], clip.visual.transformer.resblocks)
    for i, block in enumerate(image_blocks):
        block.drop_path = config.drop_path * i / max(1, len(image_blocks) - 1)
    log.debug(
        "built %s: PTA in blocks %s, SPG in blocks %s, %d trainable parameters",
        config.variant,
        pta_layers,
        spg_layers,
        count_parameters(model.trainable_parameters()),
    )
    return model


def count_parameters(params: list[nn.Parameter] | Any) -> int:
    """Number of scalars in an iterable of tensors."""
    return sum(int(p.numel()) for p in params)


def branch_parameters(model: OmniCLIP, kind: str) -> list[torch.Tensor]:
    """All parameters of the ``pta`` or ``spg`` branches of the image blocks."""
    branches = (getattr(block, kind) for block in model.clip.visual.transformer.resblocks)
    return [p for branch in branches if branch is not None for p in branch.parameters()]
