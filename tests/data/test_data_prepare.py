"""``omniclip prepare``: all-intra (``--gop 1``), small files copied only when their keyframes are close enough, and
frame folders (``--format frames``) that the training pipeline reads."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from omniclip.cli import main
from omniclip.data.dataset import VideoDataset
from omniclip.data.decode import open_video
from omniclip.data.encode import write_video
from omniclip.data.records import read_annotations


def _frames(n: int, h: int, w: int) -> np.ndarray:
    """A bright square moving over a gradient: (n, h, w, 3) uint8, every frame different."""
    base = np.broadcast_to(np.linspace(0, 200, w, dtype=np.uint8)[None, :, None], (h, w, 3))
    frames = np.repeat(base[None], n, axis=0).copy()
    for t in range(n):
        frames[t, h // 4 : h // 2, t % (w - 8) : t % (w - 8) + 8] = (250, 40, 40)
    return frames


def _keyframes(path: Path) -> list[bool]:
    with av.open(str(path)) as c:
        return [p.is_keyframe for p in c.demux(c.streams.video[0]) if p.size]


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, Path]:
    """Two videos: 40 frames of 64x96 with x264's default keyframe interval (one keyframe), and 24 of 48x48."""
    root = tmp_path / "videos"
    write_video(root / "a" / "big.mp4", _frames(40, 64, 96), fps=10)
    write_video(root / "b" / "small.mp4", _frames(24, 48, 48), fps=10)
    listing = tmp_path / "train.txt"
    listing.write_text("a/big.mp4 0\nb/small.mp4 1\n")
    return root, listing


def _prepare(listing: Path, root: Path, out: Path, *flags: str) -> int:
    return main(["prepare", str(listing), "--root", str(root), "--out", str(out), "--no-progress", *flags])


def test_gop_1_makes_every_frame_a_keyframe_also_in_small_files(dataset, tmp_path: Path) -> None:
    root, listing = dataset
    assert _keyframes(root / "b" / "small.mp4").count(True) == 1  # small, but one keyframe in 24 frames
    assert _prepare(listing, root, tmp_path / "intra", "--short-side", "48", "--gop", "1") == 0
    for rel in ("a/big.mp4", "b/small.mp4"):
        keys = _keyframes(tmp_path / "intra" / rel)
        assert len(keys) in (40, 24) and all(keys), rel  # all-intra: a small file is re-encoded, not copied
    assert _prepare(listing, root, tmp_path / "gop8", "--short-side", "48", "--gop", "8") == 0
    keys = _keyframes(tmp_path / "gop8" / "a" / "big.mp4")
    assert [i for i, k in enumerate(keys) if k] == [0, 8, 16, 24, 32]


def test_a_small_file_with_close_keyframes_is_copied(dataset, tmp_path: Path) -> None:
    root, listing = dataset
    write_video(root / "b" / "small.mp4", _frames(24, 48, 48), fps=10, gop=4)
    assert _prepare(listing, root, tmp_path / "out", "--short-side", "48", "--gop", "8") == 0
    assert (tmp_path / "out" / "b" / "small.mp4").read_bytes() == (root / "b" / "small.mp4").read_bytes()


def test_frame_folders_hold_the_frames_and_train_like_the_video(dataset, tmp_path: Path, capsys) -> None:
    root, listing = dataset
    out = tmp_path / "frames"
    assert _prepare(listing, root, out, "--short-side", "48", "--format", "frames", "--quality", "95") == 0
    assert "wrote 2 frame folders" in capsys.readouterr().out
    assert (out / "train.txt").read_text() == "a/big 0\nb/small 1\n"
    big = sorted((out / "a" / "big").iterdir())
    assert [p.name for p in big] == [f"img_{i:05d}.jpg" for i in range(1, 41)]
    assert Image.open(big[0]).size == (72, 48)  # short side 48, aspect kept
    assert len(list((out / "b" / "small").iterdir())) == 24 and not list(out.glob("**/.*"))
    # the frames are the video's frames, scaled (JPEG at 95 differs by a few levels)
    want = open_video(root / "b" / "small.mp4").read([0, 11, 23])
    got = open_video(out / "b" / "small").read([0, 11, 23])
    assert got.shape == want.shape and np.abs(got.astype(int) - want.astype(int)).mean() < 4
    records = read_annotations(out / "train.txt", out)
    item = VideoDataset(records, num_frames=8, mode="train", size=32)[0]
    assert item["video"] is not None and tuple(item["video"].shape) == (1, 8, 3, 32, 32)


def test_frame_folders_refuse_shards_and_bad_qualities(dataset, tmp_path: Path, capsys) -> None:
    root, listing = dataset
    assert _prepare(listing, root, tmp_path / "x", "--format", "frames", "--shards", "2") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--shards packs video files" in err[0], err
    with pytest.raises(SystemExit) as exit_:
        _prepare(listing, root, tmp_path / "y", "--format", "frames", "--quality", "0")
    assert exit_.value.code == 2 and "--quality: must be from 1 to 100, got 0" in capsys.readouterr().err
