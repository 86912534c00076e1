"""The embedded tiny CLIP: its name and where its weights and training record live in the package.

``omniclip.clip.load_clip("omniclip-tiny")`` loads it. The weights are reproduced by ``omniclip pretrain-tiny``
(``omniclip.embedded.pretrain``) from procedurally generated image-caption pairs (``omniclip.embedded.captions``);
docs/embedded.md describes the recipe and the measured zero-shot accuracies.
"""

from __future__ import annotations

from pathlib import Path

from omniclip.assets import ASSETS

EMBEDDED_CLIP = "omniclip-tiny"


def embedded_path(name: str = EMBEDDED_CLIP) -> Path:
    """Path of an embedded model's weights, ``omniclip/assets/<name>.safetensors`` (may not exist)."""
    return ASSETS / f"{name}.safetensors"


def record_path(name: str = EMBEDDED_CLIP) -> Path:
    """Path of an embedded model's training record, ``omniclip/assets/<name>.json``."""
    return ASSETS / f"{name}.json"


__all__ = ["ASSETS", "EMBEDDED_CLIP", "embedded_path", "record_path"]
