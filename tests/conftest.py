"""Shared fixtures: seeds and tiny models, so the whole suite runs on two CPU cores."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)  # two xdist workers on two cores


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny_clip():
    """A randomly initialised tiny CLIP (same code as ViT-B/16, smaller numbers)."""
    from omniclip.clip import build_clip

    return build_clip("tiny").eval()
