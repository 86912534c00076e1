"""Shared fixtures: seeds and tiny models, so the whole suite runs on two CPU cores."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)  # two xdist workers on two cores


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first: xdist hands out one test at a time (``--maxschedchunk=1`` in pyproject.toml), so the two
    workers start the long end-to-end runs early and share the short tests after them, instead of one worker running
    a five-minute test alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: the order is kept otherwise


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny_clip():
    """A randomly initialised tiny CLIP (same code as ViT-B/16, smaller numbers)."""
    from omniclip.clip import build_clip

    return build_clip("tiny").eval()
