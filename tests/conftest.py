"""Shared fixtures: seeds and tiny models, so the whole suite runs on two CPU cores."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)  # two xdist workers on two cores


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest tests (``slow(minutes=...)``) first, then the other slow ones, then the rest.

    xdist hands out one test at a time (``--maxschedchunk=1`` in pyproject.toml) after a first two consecutive tests
    per worker, so each long test is followed by a short one: the two workers start the long end-to-end runs at once
    and share the short tests after them, instead of one worker running a seven-minute test alone at the end.
    """

    def minutes(item: pytest.Item) -> float:
        slow = item.get_closest_marker("slow")
        return -1.0 if slow is None else float(slow.kwargs.get("minutes", 0.0))

    ordered = sorted(items, key=minutes, reverse=True)  # stable: the collection order is kept otherwise
    longest = [item for item in ordered if minutes(item) > 0]
    rest = ordered[len(longest) :]
    paired = [item for i, long in enumerate(longest) for item in (long, *rest[i : i + 1])]
    items[:] = paired + rest[len(longest) :]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny_clip():
    """A randomly initialised tiny CLIP (same code as ViT-B/16, smaller numbers)."""
    from omniclip.clip import build_clip

    return build_clip("tiny").eval()
