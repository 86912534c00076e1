"""Hostile dataset entries: an entry reads only its own file's bytes, through every decoder and every command.

Each attack is built for real: the file outside the dataset root is a valid video, so an entry that managed to
read it would be reported readable (and copied by ``prepare``).
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest

from omniclip.cli import main
from omniclip.data.decode import INDEX_CACHE, LRUCache, PyAVReader, available_decoders
from omniclip.data.encode import write_video
from omniclip.data.synthetic import index_frame, write_index_video

NOTES = "".join(f"Notes about the dataset, line {i}: nothing to see here.\n" for i in range(120))


@pytest.fixture
def hostile(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """A root with one good video and hostile entries; returns (root, list, entry -> expected reason text)."""
    outside = tmp_path / "outside"
    secret = write_index_video(outside / "secret.mp4", 12, 32)
    root = tmp_path / "root"
    write_index_video(root / "ok.mp4", 12, 32)
    bad = root / "bad"
    bad.mkdir()
    (bad / "pl.m3u8").write_text(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\n../../outside/secret.mp4\n#EXT-X-ENDLIST\n"
    )
    (bad / "abs.m3u8").write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\n{secret}\n#EXT-X-ENDLIST\n")
    (bad / "cc.txt").write_text("ffconcat version 1.0\nfile '../../outside/secret.mp4'\n")
    (bad / "cc_abs.txt").write_text(f"ffconcat version 1.0\nfile '{secret}'\n")
    (bad / "cc_in.ffconcat").write_text("ffconcat version 1.0\nfile '../ok.mp4'\nfile '../ok.mp4'\n")
    (root / "notes.txt").write_text(NOTES)
    from PIL import Image

    for i in range(4):  # img_%03d.png exists literally, so the entry passes the existence check
        Image.fromarray(index_frame(i, 32)).save(bad / ("img_%03d.png" if i == 0 else f"img_{i:03d}.png"))
    with tarfile.open(root / "shard.tar", "w") as tar:
        tar.add(bad / "cc_in.ffconcat", arcname="cc.ffconcat")
        tar.add(root / "ok.mp4", arcname="ok.mp4")
    # Names that FFmpeg would read as protocols (with --root . they reach it unprefixed); each also exists as a
    # literal path holding garbage, which is what the entry must read if anything.
    for name in ("file:..", "concat:.."):
        decoy = root / name / "outside" / "secret.mp4"
        decoy.parent.mkdir(parents=True)
        decoy.write_bytes(b"\x17" * 3000)
    expected = {
        "ok.mp4": "",
        "bad/pl.m3u8": "'hls'",
        "bad/abs.m3u8": "'hls'",
        "bad/cc.txt": "'concat'",
        "bad/cc_abs.txt": "'concat'",
        "bad/cc_in.ffconcat": "'concat'",
        "notes.txt": "'tty'",
        "bad/img_%03d.png": "'image2'",
        "shard.tar#cc.ffconcat": "'concat'",
        "shard.tar#ok.mp4": "",
        "file:../outside/secret.mp4": "cannot open",
        "concat:../outside/secret.mp4": "cannot open",
        "http://127.0.0.1:9/secret.mp4": "never a URL",
    }
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{entry} {i}\n" for i, entry in enumerate(expected)))
    return root, listing, expected


def _bad_list(path: Path, entries: dict[str, str]) -> dict[str, str]:
    """List entry -> reason from a ``path<TAB>reason`` file written with ``--root .`` (paths as pathlib spells them)."""
    by_path = {str(Path(e)): e for e in entries}
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    return {by_path[p]: why for p, why in rows}


@pytest.mark.parametrize("decoder", available_decoders())
def test_data_hostile_entries_are_unreadable_with_their_reason(hostile, tmp_path, monkeypatch, decoder) -> None:
    root, listing, expected = hostile
    monkeypatch.chdir(root)  # --root . hands FFmpeg the list's own text: "concat:...", "file:..."
    out = tmp_path / "bad.txt"
    args = ["verify", str(listing), "--root", ".", "--out", str(out), "--decoder", decoder, "--no-progress"]
    assert main(args) == 1
    bad = _bad_list(out, expected)
    if decoder == "opencv":  # OpenCV cannot read tar members at all
        for member in ("shard.tar#ok.mp4", "shard.tar#cc.ffconcat"):
            assert "cannot read tar members" in bad.pop(member)
            del expected[member]
    readable = sorted(e for e, why in expected.items() if not why)
    assert sorted(set(expected) - set(bad)) == readable
    for entry, why in bad.items():
        assert expected[entry] in why, (entry, why)
        if expected[entry].startswith("'"):
            assert why.startswith("refused: FFmpeg detects") and "not a self-contained video file" in why


def test_data_training_reads_no_hostile_entry(hostile, monkeypatch) -> None:
    from omniclip.data.dataset import VideoDataset
    from omniclip.data.records import read_annotations

    root, listing, expected = hostile
    monkeypatch.chdir(root)
    items = list(VideoDataset(read_annotations(listing, "."), num_frames=2, mode="test", size=32))
    assert [item["error"] is None for item in items] == [not why for why in expected.values()]


def test_data_prepare_copies_no_hostile_entry(hostile, tmp_path, monkeypatch) -> None:
    root, listing, expected = hostile
    monkeypatch.chdir(root)
    out = tmp_path / "out"
    assert main(["prepare", str(listing), "--root", ".", "--out", str(out), "--no-progress"]) == 1
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == ["failed.txt", "list.txt", "ok.mp4"]
    assert (out / "list.txt").read_text() == "ok.mp4 0\n"
    failed = _bad_list(out / "failed.txt", expected)  # named by source path, not output path
    assert sorted(failed) == sorted(e for e in expected if e != "ok.mp4")
    assert "'tty'" in failed["notes.txt"] and "'hls'" in failed["bad/pl.m3u8"]


def test_data_frame_folders_stay_inside_the_root(tmp_path: Path, capsys) -> None:
    from PIL import Image

    elsewhere = tmp_path / "photos"
    elsewhere.mkdir()
    for i in range(3):
        Image.fromarray(index_frame(i, 32)).save(elsewhere / f"img_{i + 1:05d}.png")
    root = tmp_path / "root"
    (root / "frames" / "own").mkdir(parents=True)
    (root / "frames" / "mixed").mkdir()
    for i in range(3):
        Image.fromarray(index_frame(i, 32)).save(root / "frames" / "own" / f"img_{i + 1:05d}.png")
        (root / "frames" / "mixed" / f"img_{i + 1:05d}.png").symlink_to(elsewhere / f"img_{i + 1:05d}.png")
    (root / "frames" / "linked").symlink_to(elsewhere, target_is_directory=True)
    listing = tmp_path / "frames.txt"
    listing.write_text("frames/own 3 0\nframes/mixed 3 1\n")
    out = tmp_path / "bad.txt"
    assert main(["verify", str(listing), "--root", str(root), "--out", str(out), "--no-progress"]) == 1
    assert out.read_text() == f"{root / 'frames/mixed'}\tframe img_00001.png is a symlink leading out of its folder\n"
    listing.write_text("frames/own 3 0\nframes/linked 3 1\n")
    assert main(["verify", str(listing), "--root", str(root), "--out", str(out), "--no-progress"]) == 2
    assert "frames.txt:2: frame folder 'frames/linked' resolves outside the dataset root" in capsys.readouterr().err
    allowed = ["verify", str(listing), "--root", str(root), "--allow-outside-root", "--out", str(out), "--no-progress"]
    assert main(allowed) == 0


def test_data_prepare_refuses_two_sources_for_one_output(tmp_path: Path, capsys) -> None:
    root = tmp_path / "root"
    write_index_video(root / "bad" / "clash.mp4", 6, 32)
    frames = np.stack([index_frame(i, 32) for i in range(6)])
    write_video(root / "bad" / "clash.avi", frames, codec="mpeg4")
    listing = tmp_path / "list.txt"
    listing.write_text("bad/clash.avi 0\nbad/clash.mp4 1\n")
    out = tmp_path / "out"
    assert main(["prepare", str(listing), "--root", str(root), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad/clash.avi and " in err and "bad/clash.mp4 would both be written" in err
    assert not list(out.rglob("*.mp4"))  # refused before encoding anything


def test_data_prepare_names_failed_sources_and_encodes_a_repeated_source_once(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write_index_video(root / "a.mp4", 6, 32)
    (root / "broken.avi").write_bytes(b"RIFF" + b"\x00" * 400)
    listing = tmp_path / "list.txt"
    listing.write_text("a.mp4 0\nbroken.avi 1\na.mp4 0\n")
    out = tmp_path / "out"
    assert main(["prepare", str(listing), "--root", str(root), "--out", str(out), "--no-progress"]) == 1
    assert [line.split("\t")[0] for line in (out / "failed.txt").read_text().splitlines()] == [str(root / "broken.avi")]
    assert (out / "list.txt").read_text() == "a.mp4 0\na.mp4 0\n"


def test_data_index_cache_is_an_object_with_an_explicit_size(tmp_path: Path) -> None:
    path = write_index_video(tmp_path / "v.mp4", 10, 32)
    cache = LRUCache(2)
    for _ in range(2):
        with PyAVReader(path, index_cache=cache) as video:
            assert video.info.num_frames == 10
    assert len(cache) == 1 and cache.size == 2
    for i in range(3):
        cache.put(i, ([i], [0], 1))
    assert len(cache) == 2 and cache.get(0) is None and cache.get(2) == ([2], [0], 1)
    cache.resize(0)
    assert len(cache) == 0
    before = INDEX_CACHE.size
    INDEX_CACHE.resize(3)  # the module's cache, as the throughput measurement sizes it
    try:
        assert INDEX_CACHE.size == 3
    finally:
        INDEX_CACHE.resize(before)
