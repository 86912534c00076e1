"""The X-CLIP peer as a bench subject: transformers' ``XCLIPModel`` with random weights, sized like our CLIP.

X-CLIP (Ni et al. 2022) adds cross-frame message tokens to every image block, a multi-frame integration transformer
(MIT) and a video-conditioned text prompt generator, and trains every weight. Its size follows the CLIP preset:
same patch size, width, depth, heads, text tower and embedding size; the MIT and the prompt generator use the
embedding width (transformers requires ``mit_hidden_size == projection_dim``). transformers is optional: without it
the bench reports X-CLIP as skipped.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
import torch.nn.functional as F

from omniclip.bench.subjects import Batch, Subject, class_tokens
from omniclip.clip.presets import CLIPConfig
from omniclip.precision import DtypeName, autocast


def xclip_available() -> bool:
    """True when ``transformers`` (which provides ``XCLIPModel``) can be imported."""
    return importlib.util.find_spec("transformers") is not None


def xclip_config(clip_cfg: CLIPConfig, frames: int, size: int) -> Any:
    """An ``XCLIPConfig`` matching ``clip_cfg`` at ``frames`` frames of ``size`` pixels."""
    from transformers import XCLIPConfig

    v, t, E = clip_cfg.vision, clip_cfg.text, clip_cfg.embed_dim
    act = clip_cfg.activation
    vision = {
        "hidden_size": v.width,
        "intermediate_size": round(v.width * v.mlp_ratio),
        "num_hidden_layers": v.layers,
        "num_attention_heads": v.heads,
        "mit_hidden_size": E,  # must equal projection_dim
        "mit_intermediate_size": 4 * E,
        "mit_num_hidden_layers": 1,
        "mit_num_attention_heads": max(1, E // 64),
        "image_size": size,
        "patch_size": v.patch_size,
        "num_frames": frames,
        "hidden_act": act,
    }
    text = {
        "hidden_size": t.width,
        "intermediate_size": round(t.width * t.mlp_ratio),
        "num_hidden_layers": t.layers,
        "num_attention_heads": t.heads,
        "vocab_size": t.vocab_size,
        "max_position_embeddings": t.context_length,
        "hidden_act": act,
        "pad_token_id": 0,
        "bos_token_id": t.vocab_size - 2,
        "eos_token_id": t.vocab_size - 1,  # must lie inside the vocabulary, also for tiny vocabularies
    }
    return XCLIPConfig(
        text_config=text,
        vision_config=vision,
        projection_dim=E,
        prompt_num_attention_heads=max(1, E // 64),
        prompt_hidden_act=act,
    )


def build_xclip_subject(
    clip_cfg: CLIPConfig,
    frames: int,
    size: int,
    *,
    device: torch.device,
    dtype: DtypeName,
    num_classes: int,
    graph_safe: bool = False,
) -> Subject:
    """X-CLIP with random weights, fully trained against ``num_classes`` class texts (its text tower runs each step).

    ``infer`` computes video features (image tower and MIT, as ``get_video_features``), the figure X-CLIP's own
    inference of a video embedding costs; ``loss`` runs the whole model: both towers, MIT and prompt generator.
    """
    from transformers import XCLIPModel

    config = xclip_config(clip_cfg, frames, size)
    config._attn_implementation = "sdpa"
    model = XCLIPModel(config).to(device)  # type: ignore[arg-type]  # transformers types .to's wrapper for models only
    tokens, mask = class_tokens(num_classes, clip_cfg.text.context_length, clip_cfg.text.vocab_size, device=device)

    def infer(batch: Batch) -> torch.Tensor:
        with torch.no_grad(), autocast(device, dtype, cache=not graph_safe):
            out = model.get_video_features(pixel_values=batch["video"])
        return out if isinstance(out, torch.Tensor) else out.pooler_output  # older transformers return the tensor

    def loss(batch: Batch) -> torch.Tensor:
        with autocast(device, dtype, cache=not graph_safe):
            out = model(input_ids=tokens, pixel_values=batch["video"], attention_mask=mask)
        return F.cross_entropy(out.logits_per_video.float(), batch["label"])

    def set_checkpointing(on: bool) -> None:
        # transformers 5 renamed gradient_checkpointing_* to activation_checkpointing_*; older ones have only the former
        prefix = "activation" if hasattr(model, "activation_checkpointing_enable") else "gradient"
        if on:
            kwargs = {f"{prefix}_checkpointing_kwargs": {"use_reentrant": False}}
            getattr(model, f"{prefix}_checkpointing_enable")(**kwargs)
        else:
            getattr(model, f"{prefix}_checkpointing_disable")()

    trainable = [p for p in model.parameters() if p.requires_grad]
    info = {
        "kind": "xclip",
        "variant": "xclip",
        "params_total": sum(p.numel() for p in model.parameters()),
        "params_trainable": sum(p.numel() for p in trainable),
        "params_cast_to_bf16": 0,
        "class_embeddings": "text tower and prompt generator run every step (all weights train)",
        "infer_output": "video features (image tower + MIT), no text",
    }
    return Subject("xclip", model, infer, loss, trainable, set_checkpointing, [model.vision_model], info)
