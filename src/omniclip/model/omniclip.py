"""OmniCLIP: a CLIP whose image blocks carry PTA/SPG branches, as a video classifier against class-name texts.

Follows METHOD.md sections 4-5: the video embedding is the mean over frames of the projected class-token embeddings
(X-CLIP/ViFi-CLIP style); class embeddings come from CLIP's text tower on templates (open_clip's zero-shot
classifier), cached while the text side cannot change; logits are cosine similarities times CLIP's logit scale
clamped at 100. ``build_model`` in ``build.py`` constructs it; this module only runs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from omniclip.clip.model import CLIP
from omniclip.model.config import ModelConfig, check_templates
from omniclip.model.text import TextPrompt, class_embeddings

MAX_LOGIT_SCALE = 100.0
# Parameters without weight decay besides those with ndim < 2 (biases, norms, gates, logit scale).
NO_WEIGHT_DECAY_NAMES: tuple[str, ...] = (
    "temporal_embedding",
    "region_embedding",
    "gate",
    "text_prompt.context",
    "class_embedding",
    "positional_embedding",
    "token_embedding",
    "logit_scale",
)


class OmniCLIP(nn.Module):
    """Video classifier around a CLIP whose image blocks hold injected ``pta``/``spg`` branches.

    Attributes:
        clip: the CLIP model (branches live in ``clip.visual.transformer.resblocks.{i}.pta|spg``).
        num_frames: T the model was built for; other frame counts work (temporal embeddings interpolate).
        config: the ``ModelConfig`` it was built from.
        text_prompt: learnable text context (``text_prompt.context``) or None.
    """

    def __init__(self, clip: CLIP, num_frames: int, config: ModelConfig, text_prompt: TextPrompt | None = None) -> None:
        super().__init__()
        self.clip = clip
        self.num_frames = num_frames
        self.config = config
        self.text_prompt = text_prompt
        self._class_cache: dict[tuple[Any, ...], torch.Tensor] = {}

    @property
    def dtype(self) -> torch.dtype:
        return self.clip.dtype

    @property
    def device(self) -> torch.device:
        return self.clip.logit_scale.device

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, T, 3, H, W)`` float CLIP-normalised video -> ``(B, E)`` mean frame embedding, not normalised.

        Any T >= 1 works (temporal embeddings interpolate, see ``ModelConfig.pta_interpolate``); half/bf16 or
        non-contiguous inputs are cast/copied to the model's dtype.
        """
        if not isinstance(video, torch.Tensor) or video.ndim != 5:
            shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
            raise ValueError(
                f"expected a video batch of shape (B, T, 3, H, W), got {shape}; add a batch dim for one clip"
            )
        if video.shape[2] != 3:
            raise ValueError(
                f"expected 3 colour channels at dim 2 of (B, T, 3, H, W), got shape {tuple(video.shape)}; "
                "repeat grayscale frames to RGB and put channels before height and width"
            )
        if not video.is_floating_point():
            raise ValueError(
                f"expected a float CLIP-normalised video, got {video.dtype}; "
                "normalise uint8 frames first (omniclip.data.transforms.normalize)"
            )
        B, T = video.shape[:2]
        pixels = video.reshape(B * T, *video.shape[2:]).to(self.dtype)  # (B*T, 3, H, W)
        emb = self.clip.visual(pixels, num_frames=T)  # (B*T, E)
        return emb.view(B, T, -1).mean(dim=1)  # (B, E)

    def text_is_frozen(self) -> bool:
        """True when no text weight trains and there is no learnable context: class embeddings can be cached."""
        text = (p for n, p in self.clip.named_parameters() if not n.startswith("visual.") and n != "logit_scale")
        return self.text_prompt is None and not any(p.requires_grad for p in text)

    def encode_classes(self, names: Sequence[str], templates: Sequence[str] | None = None) -> torch.Tensor:
        """``(C, E)`` L2-normalised class embeddings, templates (default ``config.templates``) averaged per class.

        While ``text_is_frozen()`` the result is computed without gradients in the model's dtype (autocast off) and
        cached per names, templates, device and dtype; the cached tensor is returned as is. Otherwise gradients flow.
        """
        templates = tuple(templates) if templates is not None else self.config.templates
        check_templates(templates)
        names = list(names)
        if not self.text_is_frozen():
            return class_embeddings(self.clip, names, templates, self.text_prompt)
        key = (tuple(names), templates, self.device, self.dtype)
        if key not in self._class_cache:
            with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
                self._class_cache[key] = class_embeddings(self.clip, names, templates)
        return self._class_cache[key]

    def clear_class_cache(self) -> None:
        """Forget cached class embeddings (done automatically on ``load_state_dict`` and ``.to()``)."""
        self._class_cache.clear()

    def logit_scale(self) -> torch.Tensor:
        """CLIP's learnt temperature ``exp(logit_scale)`` clamped at 100 (CLIP's own training cap)."""
        return self.clip.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def forward(self, video: torch.Tensor, class_embeddings: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, C)`` = clamped logit scale x cosine(video embedding, class embedding)."""
        if class_embeddings.ndim != 2:
            raise ValueError(f"expected class embeddings of shape (C, E), got {tuple(class_embeddings.shape)}")
        v = F.normalize(self.encode_video(video), dim=-1)  # (B, E)
        if class_embeddings.shape[1] != v.shape[1]:
            raise ValueError(
                f"class embeddings have width {class_embeddings.shape[1]} but the video embedding has {v.shape[1]}; "
                "build them with this model's encode_classes"
            )
        c = F.normalize(class_embeddings.to(v.dtype), dim=-1)  # (C, E)
        return self.logit_scale().to(v.dtype) * v @ c.t()

    def named_trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` for every parameter that trains, in module order."""
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters that train: adapters, SPG, text context, logit scale (everything with ``full_finetune``)."""
        return [p for _, p in self.named_trainable_parameters()]

    def no_weight_decay(self) -> set[str]:
        """Names of trainable parameters to exclude from weight decay: ndim < 2, embeddings, gates, logit scale."""
        return {
            n
            for n, p in self.named_trainable_parameters()
            if p.ndim < 2 or any(key in n for key in NO_WEIGHT_DECAY_NAMES)
        }

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self.clear_class_cache()  # new text weights make cached class embeddings stale
        super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> OmniCLIP:
        self.clear_class_cache()
        return super()._apply(fn, *args, **kwargs)
