"""Fixtures for the training tests: a tiny CLIP saved to a file, a small synthetic video dataset and the same kind of
clips as PNG frame folders, written once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke.yaml"
CLASSES = ["moving left", "moving right", "growing", "shrinking"]


@pytest.fixture(scope="session")
def tiny_clip_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny CLIP (seed 0) written with ``save_clip``."""
    from omniclip.clip import build_clip
    from omniclip.clip.weights import save_clip

    torch.manual_seed(0)
    return save_clip(build_clip("tiny"), tmp_path_factory.mktemp("clip") / "tiny.safetensors")


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory):
    """4 classes: 4 training and 2 test videos each, 8 frames of 32 px; three test splits; a list with a broken file.

    ``test3.txt`` holds 7 entries (odd, for two processes), one of them unreadable; ``broken_train.txt`` adds an
    unreadable video to the training list.
    """
    from omniclip.data.synthetic import write_synthetic_dataset

    ds = write_synthetic_dataset(
        tmp_path_factory.mktemp("data"),
        classes=CLASSES,
        videos_per_class=0,
        splits={"train": 4, "test": 2},
        num_frames=8,
        size=32,
        seed=0,
        codec="mpeg4",  # byte-identical on every run (threaded libx264 is not), so runs compared with each other agree
    )
    test = ds.test.read_text().splitlines(keepends=True)
    (ds.root / "test1.txt").write_text("".join(test))
    (ds.root / "test2.txt").write_text("".join(reversed(test)))
    (ds.root / "test3.txt").write_text("".join(test[:3] + ["videos/broken.mp4 1\n"] + test[3:6]))
    (ds.root / "videos" / "broken.mp4").write_bytes(b"not a video")
    train = ds.train.read_text().splitlines(keepends=True)
    (ds.root / "broken_train.txt").write_text("".join(train[:3] + ["videos/broken.mp4 0\n"] + train[3:]))
    return ds


@pytest.fixture(scope="session")
def frame_folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A training set of PNG frame folders drawn by the synthetic renderer: 4 videos per class of 8 frames, 32 px.

    PNG is lossless and no video encoder is involved, so the frames read back are exactly the rendered ones and the
    golden losses do not move with an FFmpeg update. Holds ``train.txt`` and ``classes.csv``.
    """
    from PIL import Image

    from omniclip.data.synthetic import render_video

    root = tmp_path_factory.mktemp("frames")
    lines = []
    for label, name in enumerate(CLASSES):
        for k in range(4):
            frames, _ = render_video(name, num_frames=8, size=32, rng=np.random.default_rng([label, k]))
            (root / f"{label}_{k}").mkdir()
            for t, frame in enumerate(frames):
                Image.fromarray(frame).save(root / f"{label}_{k}" / f"img_{t + 1:05d}.png")
            lines.append(f"{label}_{k} {label}\n")
    (root / "train.txt").write_text("".join(lines))
    (root / "classes.csv").write_text("id,name\n" + "".join(f"{i},{n}\n" for i, n in enumerate(CLASSES)))
    return root


@pytest.fixture
def smoke_args(tiny_clip_file: Path, synthetic) -> list[str]:
    """``--config configs/smoke.yaml`` pointed at the tiny CLIP and the synthetic data."""
    return ["--config", str(SMOKE), f"clip.source={tiny_clip_file}", f"data.root={synthetic.root}"]
