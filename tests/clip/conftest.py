"""OpenAI's TorchScript archive layout, for every test that writes such a file (``trace_openai_archive``)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn


class OpenAIArchive(nn.Module):
    """A module whose state dict is laid out as OpenAI's released TorchScript archives are (plus scalar buffers)."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        for name, child in clip.named_children():
            setattr(self, name, child)
        for name in ("positional_embedding", "text_projection", "logit_scale"):
            setattr(self, name, getattr(clip, name))
        self.clip = [clip]  # a plain list: not registered, so no duplicate keys
        cfg = clip.cfg  # type: ignore[attr-defined]
        self.register_buffer("input_resolution", torch.tensor(cfg.vision.image_size))
        self.register_buffer("context_length", torch.tensor(cfg.text.context_length))
        self.register_buffer("vocab_size", torch.tensor(cfg.text.vocab_size))

    def forward(self, pixels: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.clip[0](pixels, tokens)[0]


def _trace(clip: nn.Module) -> torch.jit.ScriptModule:
    """``clip`` traced in OpenAI's layout at its own image size (tracer warnings silenced); shares its modules."""
    size = clip.cfg.vision.image_size  # type: ignore[attr-defined]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.trace(OpenAIArchive(clip), (torch.randn(1, 3, size, size), torch.ones(1, 77).long()))


@pytest.fixture
def trace_openai_archive() -> Callable[[nn.Module], torch.jit.ScriptModule]:
    return _trace
