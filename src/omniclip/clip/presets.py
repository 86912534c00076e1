"""CLIP architecture presets, named as open_clip names them (``ViT-B-16``), plus tiny sizes for tests.

Numbers follow OpenAI's released models (Radford et al. 2021, Table 20) and open_clip's
``model_configs/*.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

Activation = Literal["quick_gelu", "gelu"]


@dataclass(frozen=True)
class VisionConfig:
    image_size: int = 224  # input resolution the positional embedding was trained at
    patch_size: int = 16  # square patch side in pixels
    width: int = 768  # D, token width
    layers: int = 12  # L, number of residual attention blocks
    heads: int = 12  # attention heads (OpenAI: width // 64)
    mlp_ratio: float = 4.0  # MLP hidden width / D

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


@dataclass(frozen=True)
class TextConfig:
    context_length: int = 77  # tokens per text, start and end included
    vocab_size: int = 49408  # BPE vocabulary size
    width: int = 512  # token width
    layers: int = 12  # residual attention blocks
    heads: int = 8  # attention heads
    mlp_ratio: float = 4.0  # MLP hidden width / width


@dataclass(frozen=True)
class CLIPConfig:
    embed_dim: int = 512  # E, the joint embedding size
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    activation: Activation = "quick_gelu"  # OpenAI uses QuickGELU; most OpenCLIP/LAION models use GELU

    def to_dict(self) -> dict[str, Any]:
        return {
            "embed_dim": self.embed_dim,
            "activation": self.activation,
            "vision": dict(self.vision.__dict__),
            "text": dict(self.text.__dict__),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CLIPConfig:
        known = {"embed_dim", "activation", "vision", "text"}
        if unknown := set(d) - known:
            raise ValueError(f"unknown CLIP config keys {sorted(unknown)}; valid keys: {sorted(known)}")
        return cls(
            embed_dim=int(d["embed_dim"]),
            activation=d.get("activation", "quick_gelu"),
            vision=VisionConfig(**d["vision"]),
            text=TextConfig(**d["text"]),
        )


def _vit(image_size: int, patch: int, width: int, layers: int) -> VisionConfig:
    return VisionConfig(image_size=image_size, patch_size=patch, width=width, layers=layers, heads=width // 64)


PRESETS: dict[str, CLIPConfig] = {
    "ViT-B-32": CLIPConfig(512, _vit(224, 32, 768, 12), TextConfig(width=512, layers=12, heads=8)),
    "ViT-B-16": CLIPConfig(512, _vit(224, 16, 768, 12), TextConfig(width=512, layers=12, heads=8)),
    "ViT-L-14": CLIPConfig(768, _vit(224, 14, 1024, 24), TextConfig(width=768, layers=12, heads=12)),
    "ViT-L-14-336": CLIPConfig(768, _vit(336, 14, 1024, 24), TextConfig(width=768, layers=12, heads=12)),
    # Small sizes for tests and laptops; same code paths as the real ones.
    "tiny": CLIPConfig(
        32,
        VisionConfig(image_size=32, patch_size=8, width=64, layers=2, heads=2),
        TextConfig(width=32, layers=2, heads=2),
    ),
    "small": CLIPConfig(
        128,
        VisionConfig(image_size=112, patch_size=16, width=192, layers=4, heads=3),
        TextConfig(width=128, layers=4, heads=2),
    ),
    # The embedded CLIP shipped in omniclip/assets, pretrained on the demo's rendered world (docs/embedded.md).
    "omniclip-tiny": CLIPConfig(
        64,
        VisionConfig(image_size=64, patch_size=8, width=128, layers=4, heads=4),
        TextConfig(width=64, layers=4, heads=2),
    ),
}

# OpenAI spells names with slashes and "@"; accept both spellings everywhere.
ALIASES: dict[str, str] = {
    "ViT-B/32": "ViT-B-32",
    "ViT-B/16": "ViT-B-16",
    "ViT-L/14": "ViT-L-14",
    "ViT-L/14@336px": "ViT-L-14-336",
    "ViT-L/14@336": "ViT-L-14-336",
}


def canonical_name(name: str) -> str:
    """Return the open_clip spelling of an architecture name (``ViT-B/16`` -> ``ViT-B-16``)."""
    return ALIASES.get(name, name)


def get_preset(name: str, **overrides: Any) -> CLIPConfig:
    """Look up a preset by name; ``overrides`` replace top-level fields (e.g. ``activation="gelu"``)."""
    key = canonical_name(name)
    if key not in PRESETS:
        raise ValueError(f"unknown CLIP architecture {name!r}; known: {', '.join(PRESETS)}")
    return replace(PRESETS[key], **overrides)
