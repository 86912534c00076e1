"""What the bench measures: a model with an inference call, a training loss, its trainable parameters and switches.

A ``Subject`` hides whose model it is: ``build_omniclip_subject`` wraps ``omniclip.model.build_model`` for every
variant (``frame_average`` is bare CLIP averaging its frame embeddings), ``omniclip.bench.xclip`` wraps transformers'
``XCLIPModel``. Both are trained against C class texts as PROTOCOLS.md describes; the texts are synthetic token ids
(start token, 6-14 words, end token), since their content does not change the compute and the bench then needs no
tokenizer vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from omniclip.clip.model import build_clip
from omniclip.clip.presets import CLIPConfig
from omniclip.model import build_model
from omniclip.precision import DtypeName, autocast, cast_frozen_

Batch = dict[str, torch.Tensor]  # "video" (B, T, 3, H, W) float, "label" (B,) int64


@dataclass
class Subject:
    """One model under test: ``infer`` runs without gradients, ``loss`` builds what a training step backpropagates."""

    name: str
    model: nn.Module
    infer: Callable[[Batch], torch.Tensor]
    loss: Callable[[Batch], torch.Tensor]
    trainable: list[nn.Parameter]
    set_checkpointing: Callable[[bool], None]
    compile_targets: list[nn.Module]  # modules ``--compile`` compiles in place (the encoders)
    info: dict[str, Any] = field(default_factory=dict)


def class_tokens(
    num_classes: int, context_length: int, vocab_size: int, *, seed: int = 0, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic class texts: ``(C, L)`` token ids laid out as CLIP's tokenizer lays them out, and their mask.

    Each row is ``[start, w_1 .. w_k, end, 0 ...]`` with k in 6..14, start = ``vocab_size - 2`` and end =
    ``vocab_size - 1`` (the highest id, where CLIP pools).
    """
    g = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(num_classes, context_length, dtype=torch.long)
    mask = torch.zeros_like(tokens)
    lengths = torch.randint(6, 15, (num_classes,), generator=g).clamp(max=context_length - 2)
    for i, k in enumerate(lengths.tolist()):
        words = torch.randint(1, vocab_size - 2, (k,), generator=g)
        tokens[i, : k + 2] = torch.cat([torch.tensor([vocab_size - 2]), words, torch.tensor([vocab_size - 1])])
        mask[i, : k + 2] = 1
    return tokens.to(device), mask.to(device)


def make_batch(batch: int, frames: int, size: int, num_classes: int, *, device: torch.device, seed: int = 0) -> Batch:
    """A random fp32 CLIP-normalised video batch ``(B, T, 3, S, S)`` and labels in ``[0, C)``, made on ``device``."""
    g = torch.Generator(device=device).manual_seed(seed)
    video = torch.randn(batch, frames, 3, size, size, generator=g, device=device)
    label = torch.randint(0, num_classes, (batch,), generator=g, device=device)
    return {"video": video, "label": label}


def build_omniclip_subject(
    variant: str,
    clip_cfg: CLIPConfig,
    frames: int,
    *,
    device: torch.device,
    dtype: DtypeName,
    num_classes: int,
    bf16_weights: bool = False,
    full_finetune: bool = False,
    graph_safe: bool = False,
) -> Subject:
    """OmniCLIP (or a baseline variant of ``ModelConfig.variant``) around a random CLIP, with cached class texts.

    Args:
        variant: ``omniclip``, ``frame_average``, ``pta``, ``spg`` or ``serial``.
        clip_cfg: the CLIP architecture (its ``vision.image_size`` is the clip resolution).
        frames: T.
        device: where to build and run.
        dtype: ``bf16`` runs under bf16 autocast, ``fp32`` without.
        num_classes: C class texts the logits are computed against.
        bf16_weights: store frozen parameters in bf16 (``cast_frozen_``).
        full_finetune: train every CLIP weight (the text tower then runs in every training step).
        graph_safe: autocast without its weight-cast cache, as CUDA-graph capture needs.
    """
    clip = build_clip(clip_cfg).to(device)
    model = build_model(clip, frames, variant=variant, full_finetune=full_finetune)
    cast = cast_frozen_(model, torch.bfloat16) if bf16_weights else 0
    tokens, _ = class_tokens(num_classes, clip_cfg.text.context_length, clip_cfg.text.vocab_size, device=device)
    text_frozen = model.text_is_frozen()
    # Computed once, like OmniCLIP.encode_classes' cache: inference never runs the text tower, and neither does
    # training while the text side is frozen; a trained text tower runs in every training step.
    with torch.no_grad():
        cached = F.normalize(model.clip.encode_text(tokens), dim=-1)  # (C, E)

    def infer(batch: Batch) -> torch.Tensor:
        with torch.no_grad(), autocast(device, dtype, cache=not graph_safe):
            return model(batch["video"], cached)

    def loss(batch: Batch) -> torch.Tensor:
        with autocast(device, dtype, cache=not graph_safe):
            classes = cached if text_frozen else F.normalize(model.clip.encode_text(tokens), dim=-1)
            logits = model(batch["video"], classes)  # (B, C)
        return F.cross_entropy(logits.float(), batch["label"])

    def set_checkpointing(on: bool) -> None:
        model.clip.visual.transformer.grad_checkpointing = on
        model.clip.transformer.grad_checkpointing = on

    trainable = model.trainable_parameters()
    info = {
        "kind": "omniclip",
        "variant": variant,
        "params_total": sum(p.numel() for p in model.parameters()),
        "params_trainable": sum(p.numel() for p in trainable),
        "params_cast_to_bf16": cast,
        "class_embeddings": "computed once (text tower frozen)" if text_frozen else "text tower runs every step",
        "infer_output": "logits against cached class embeddings",
    }
    return Subject(variant, model, infer, loss, trainable, set_checkpointing, [model.clip.visual], info)
