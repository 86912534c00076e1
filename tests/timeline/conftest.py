"""Fixtures of the timeline tests: videos of known colours and the shipped tiny CLIP (``omniclip-tiny``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from timeline_videos import colour_video


@pytest.fixture
def make_video(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str, plan: Sequence[tuple[str, float]], fps: int = 10) -> Path:
        return colour_video(tmp_path / name, plan, fps)

    return make


@pytest.fixture(scope="session")
def tiny():
    from omniclip import load_model

    return load_model("omniclip-tiny")
