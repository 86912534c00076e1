"""ModelConfig: which OmniCLIP variant to build and every open design choice of METHOD.md as a switch.

Defaults are the choices documented (with their reasons and measurements) in ``docs/model.md``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from omniclip.model.prompts import MIXING_MODES, Mixing
from omniclip.model.temporal import TEMPORAL_INIT_STD

Variant = Literal["omniclip", "frame_average", "pta", "spg", "serial"]
VARIANTS: tuple[str, ...] = ("omniclip", "frame_average", "pta", "spg", "serial")


@dataclass(frozen=True)
class ModelConfig:
    variant: Variant = "omniclip"  # omniclip = PTA + SPG; frame_average = CLIP per frame; pta; spg; serial = AIM-like
    pta_layers: tuple[int, ...] | None = None  # blocks that get a PTA (negative counts from the end); None = all
    pta_ratio: float = 0.25  # PTA bottleneck d = round(D * pta_ratio); ViT-B/16: 192
    pta_heads: int | None = None  # heads of the PTA temporal attention; None = max(1, d // 64)
    pta_interpolate: bool = True  # other frame counts interpolate the temporal embeddings; False raises instead
    temporal_init_std: float = TEMPORAL_INIT_STD  # std of the PTA and SPG temporal embeddings at init
    qk_norm: bool = False  # LayerNorm on each head's queries and keys in the PTA's and SPG's attention over frames
    spg_layers: tuple[int, ...] | None = None  # blocks that get an SPG; None = the last half (L // 2 .. L - 1)
    spg_ratio: float = 0.25  # SPG prompt width d = round(D * spg_ratio)
    spg_heads: int | None = None  # heads of the SPG mixing and cross-attention; None = max(1, d // 64)
    spg_scales: tuple[int, ...] = (1, 2, 4)  # region grids pooled per frame: 1 + 4 + 16 = 21 prompts
    spg_mixing: Mixing = "both"  # temporal mixing of prompts: attention, difference, both or none
    spg_window: int = 0  # neighbouring frames each side whose prompts a frame attends to; 0 = its own
    text_context: int = 0  # learnable text context tokens after the start token (CoOp-style); 0 = off
    full_finetune: bool = False  # train every CLIP weight too (ViFi-CLIP style); default trains adapters only
    train_image_layernorms: bool = False  # train the image tower's LayerNorm weights and biases too (rest frozen)
    train_logit_scale: bool = True  # learn CLIP's logit scale (clamped at 100 in the logits)
    logit_scale: float | None = None  # the logit scale to start from, in (0, 100]; None keeps the checkpoint's
    grad_checkpointing: bool = False  # recompute each transformer block in backward to save activation memory
    # Stochastic depth of the image tower in training: a clip skips a block's branches (attention with the adapters,
    # and the MLP) with a chance rising linearly from 0 at the first block to drop_path at the last, as in timm's ViTs
    drop_path: float = 0.0
    templates: tuple[str, ...] = ("a video of a person {}.",)  # class-name templates, '{}' marks the name

    def __post_init__(self) -> None:
        for name in ("pta_layers", "spg_layers", "spg_scales", "templates"):  # YAML gives lists
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        if self.variant not in VARIANTS:
            raise ValueError(f"model.variant: unknown {self.variant!r}; expected one of {', '.join(VARIANTS)}")
        for name in ("pta_ratio", "spg_ratio"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"model.{name} must be in (0, 1], got {getattr(self, name)}")
        for name in ("pta_heads", "spg_heads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1 or null, got {getattr(self, name)}")
        for name in ("pta_layers", "spg_layers"):
            self._check_layers(name)
        if not self.spg_scales or any(not isinstance(s, int) or s < 1 for s in self.spg_scales):
            raise ValueError(f"model.spg_scales must be positive integers, got {self.spg_scales}")
        if len(set(self.spg_scales)) != len(self.spg_scales):
            raise ValueError(f"model.spg_scales has duplicates: {self.spg_scales}")
        if self.spg_mixing not in MIXING_MODES:
            raise ValueError(
                f"model.spg_mixing: unknown {self.spg_mixing!r}; expected one of {', '.join(MIXING_MODES)}"
            )
        if not 0 <= self.drop_path < 1:
            raise ValueError(f"model.drop_path must be in [0, 1), got {self.drop_path}")
        if self.logit_scale is not None and not 0 < self.logit_scale <= 100:
            raise ValueError(f"model.logit_scale must be in (0, 100] or null, got {self.logit_scale}")
        if not 0 < self.temporal_init_std < math.inf:
            raise ValueError(f"model.temporal_init_std must be positive and finite, got {self.temporal_init_std}")
        if self.spg_window < 0:
            raise ValueError(f"model.spg_window must be >= 0, got {self.spg_window}")
        if self.text_context < 0:
            raise ValueError(f"model.text_context must be >= 0, got {self.text_context}")
        check_templates(self.templates, "model.templates")

    def _check_layers(self, name: str) -> None:
        layers = getattr(self, name)
        if layers is None:
            return
        if not layers or any(not isinstance(i, int) for i in layers):
            raise ValueError(f"model.{name} must be null (default) or a non-empty list of block indices, got {layers}")
        if len(set(layers)) != len(layers):
            raise ValueError(f"model.{name} has duplicates: {layers}")

    @property
    def has_pta(self) -> bool:
        return self.variant in ("omniclip", "pta", "serial")

    @property
    def has_spg(self) -> bool:
        return self.variant in ("omniclip", "spg")

    def to_dict(self) -> dict[str, Any]:
        """Plain types (lists for tuples), for YAML and checkpoints."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Inverse of ``to_dict``; unknown keys are an error that lists the valid ones."""
        return cls().replace(**d)

    def replace(self, **overrides: Any) -> ModelConfig:
        """A copy with ``overrides``; unknown keys are an error that lists the valid ones."""
        valid = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(overrides) - set(valid))
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; valid keys: {', '.join(valid)}")
        return dataclasses.replace(self, **overrides)


def check_templates(templates: tuple[str, ...] | list[str], where: str = "templates") -> None:
    """Raise ValueError unless every template is a string with exactly one ``{}`` slot that formats cleanly."""
    if not templates:
        raise ValueError(f"{where}: at least one template is needed, e.g. 'a video of a person {{}}.'")
    for t in templates:
        if not isinstance(t, str) or t.count("{}") != 1:
            raise ValueError(f"{where}: template {t!r} must contain exactly one '{{}}' where the class name goes")
        try:
            t.format("x")
        except (IndexError, KeyError, ValueError) as err:
            raise ValueError(
                f"{where}: template {t!r} does not format ({err}); escape other braces as '{{{{ }}}}'"
            ) from err
