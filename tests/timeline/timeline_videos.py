"""Videos with known segments: a coloured square whose colour changes at known times. The shipped tiny CLIP names
colours perfectly (docs/embedded.md), so the classes are colours."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from omniclip.data.encode import write_video
from omniclip.data.synthetic import COLORS

CLASSES = ["red", "blue", "green", "yellow"]
TEMPLATES = ["a {} shape."]
MODEL = ["--clip", "omniclip-tiny", "--templates", TEMPLATES[0]]


def colour_frames(plan: Sequence[tuple[str, float]], fps: int = 10, height: int = 48, width: int = 64) -> np.ndarray:
    """Frames of a square on a dark background whose colour follows ``plan``: (colour, seconds) in order."""
    frames = []
    for colour, seconds in plan:
        frame = np.full((height, width, 3), 20, dtype=np.uint8)
        frame[height // 6 : height - height // 6, width // 4 : width - width // 4] = COLORS[colour]
        frames += [frame] * round(seconds * fps)
    return np.stack(frames)


def colour_video(path: Path, plan: Sequence[tuple[str, float]], fps: int = 10) -> Path:
    """An H.264 (yuv420p) mp4 that browsers play, following ``plan``."""
    return write_video(path, colour_frames(plan, fps), fps=fps, codec="libx264")
