"""``omniclip index`` and ``omniclip search``: the planted moment first, incremental and resumed builds equal to one
uninterrupted build, another model refused, folders that are not indexes, unreadable videos."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from timeline_videos import colour_video

from omniclip.cli import main
from omniclip.clip import build_clip, save_clip
from omniclip.timeline import index as index_module
from omniclip.timeline.search import Hit, MomentIndex, rank

PLANTED = (5.0, 8.0)  # the yellow moment of b.mp4


@pytest.fixture
def videos(tmp_path: Path) -> Path:
    folder = tmp_path / "videos"
    colour_video(folder / "a.mp4", [("red", 6.0), ("blue", 6.0)])
    colour_video(folder / "b.mp4", [("green", 5.0), ("yellow", 3.0), ("green", 5.0)])
    colour_video(folder / "c.mp4", [("blue", 10.0)])
    return folder


def _index(out: Path, *videos: Path | str, extra: tuple[str, ...] = ()) -> int:
    return main(["index", *map(str, videos), "--clip", "omniclip-tiny", "--out", str(out), "--no-progress", *extra])


def _search(capsys, index: Path, query: str, *extra: str) -> dict:
    capsys.readouterr()
    assert main(["search", str(index), query, "--json", "--templates", "a {} shape.", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def _contents(index: Path) -> tuple[dict[str, torch.Tensor], list[dict]]:
    manifest = json.loads((index / "manifest.json").read_text())
    return load_file(str(index / manifest["embeddings"])), manifest["videos"]


def test_search_ranks_the_planted_moment_first(videos, tmp_path, capsys) -> None:
    index = tmp_path / "index"
    assert _index(index, videos) == 0
    found = _search(capsys, index, "yellow", "--top", "3")
    assert found["videos"] == 3 and found["windows"] == 5 + 6 + 4  # 12 s, 13 s (last window at 9 s) and 10 s
    best = found["hits"][0]
    assert Path(best["video"]).name == "b.mp4"
    assert best["start"] < PLANTED[1] and best["end"] > PLANTED[0]
    assert best["score"] > found["hits"][1]["score"]
    red = _search(capsys, index, "red", "--top", "1")["hits"][0]
    assert Path(red["video"]).name == "a.mp4" and red["start"] < 6.0


def test_rerun_embeds_only_new_or_changed_videos(videos, tmp_path, capsys) -> None:
    index = tmp_path / "index"
    assert _index(index, videos / "a.mp4", videos / "b.mp4") == 0
    shards = {p.name: p.stat().st_mtime_ns for p in (index / "shards").iterdir()}
    assert len(shards) == 2
    capsys.readouterr()
    assert _index(index, videos) == 0  # the folder now names c.mp4 too
    assert "(1 embedded now, 2 up to date, 0 unreadable)" in capsys.readouterr().out
    assert all((index / "shards" / name).stat().st_mtime_ns == t for name, t in shards.items())
    tensors, listed = _contents(index)
    assert [Path(v["video"]).name for v in listed] == ["a.mp4", "b.mp4", "c.mp4"]
    assert tensors["embeddings"].shape == (15, 64) and tensors["embeddings"].dtype == torch.float16
    assert tensors["video"].tolist() == [0] * 5 + [1] * 6 + [2] * 4

    before = json.loads((index / "manifest.json").read_text())["embeddings"]
    assert _index(index, videos) == 0
    assert "(0 embedded now, 3 up to date, 0 unreadable)" in capsys.readouterr().out
    assert json.loads((index / "manifest.json").read_text())["embeddings"] == before  # nothing rewritten

    colour_video(videos / "c.mp4", [("red", 6.0)])  # changed: embedded again, not added twice
    assert _index(index, videos) == 0
    assert "(1 embedded now, 2 up to date, 0 unreadable)" in capsys.readouterr().out
    tensors, listed = _contents(index)
    assert len(listed) == 3 and tensors["video"].tolist() == [0] * 5 + [1] * 6 + [2] * 2
    current = json.loads((index / "manifest.json").read_text())["embeddings"]
    assert sorted(p.name for p in index.glob("embeddings-*")) == [current]  # the old file is gone


def test_a_killed_build_resumes_with_nothing_lost_or_duplicated(videos, tmp_path, capsys, monkeypatch) -> None:
    whole = tmp_path / "whole"
    assert _index(whole, videos) == 0

    index = tmp_path / "index"
    real = index_module.embed_to_shard
    calls: list[Path] = []

    def killed_on_the_second_video(classifier, video, spec, shard, *args, **kwargs):
        calls.append(video)
        if len(calls) == 2:  # as a kill would: a half-written temporary shard, then the process ends
            (shard.parent / f".{shard.stem}.999-dead.tmp.safetensors").write_bytes(b"\0" * 10)
            raise KeyboardInterrupt
        return real(classifier, video, spec, shard, *args, **kwargs)

    monkeypatch.setattr(index_module, "embed_to_shard", killed_on_the_second_video)
    capsys.readouterr()
    assert _index(index, videos) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("omniclip index: error: interrupted;") and "run the same command again" in err[-1]
    assert not (index / "manifest.json").exists()  # not an index anyone may search yet
    assert main(["search", str(index), "yellow"]) == 2
    assert "is not complete" in capsys.readouterr().err

    monkeypatch.setattr(index_module, "embed_to_shard", real)
    assert _index(index, videos) == 0
    assert "(2 embedded now, 1 up to date, 0 unreadable)" in capsys.readouterr().out
    assert not list((index / "shards").glob(".*"))  # the dead writer's file is gone
    (got, got_videos), (want, want_videos) = _contents(index), _contents(whole)
    assert got_videos == want_videos
    for key in ("embeddings", "video", "start", "end"):
        assert torch.equal(got[key], want[key]), key


def test_another_model_is_refused(videos, tmp_path, capsys) -> None:
    index = tmp_path / "index"
    assert _index(index, videos / "a.mp4") == 0
    torch.manual_seed(1)
    other = save_clip(build_clip("tiny").eval(), tmp_path / "other.safetensors")
    capsys.readouterr()
    assert main(["search", str(index), "red", "--clip", str(other)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("omniclip search: error: index ") and "is another model" in err
    assert main(["index", str(videos / "b.mp4"), "--clip", str(other), "--out", str(index), "--no-progress"]) == 2
    assert "was built with another model" in capsys.readouterr().err
    assert main(["index", str(videos / "b.mp4"), "--clip", "omniclip-tiny", "--frames", "4", "--out", str(index)]) == 2
    assert "was built with another model" in capsys.readouterr().err  # 4 frames per window is another model too
    assert _search(capsys, index, "red")["videos"] == 1  # the index is untouched


def test_folders_that_are_not_indexes_are_refused(videos, tmp_path, capsys) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("x")
    index = ["index", str(videos), "--clip", "omniclip-tiny", "--out"]
    cases = [
        (["search", str(notes), "red"], "is not an omniclip index: it has no index.json"),
        (["search", str(notes / "todo.txt"), "red"], "is not an omniclip index: not a folder"),
        (["search", str(tmp_path / "nowhere"), "red"], "does not exist"),
        ([*index, str(notes)], "is not an omniclip index"),
        ([*index, str(notes / "todo.txt")], "is an existing file"),
        ([*index, str(notes / "todo.txt" / "i")], "lies under a file"),
    ]
    for argv, expected in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith(f"omniclip {argv[0]}: error: ") and expected in err[-1], (argv, err)
    assert sorted(p.name for p in notes.iterdir()) == ["todo.txt"]


def test_unreadable_videos_are_listed_and_the_rest_indexed(videos, tmp_path, capsys) -> None:
    (videos / "broken.mp4").write_text("not a video")
    index = tmp_path / "index"
    capsys.readouterr()
    assert _index(index, videos) == 1
    out, err = capsys.readouterr()
    assert "(3 embedded now, 0 up to date, 1 unreadable)" in out
    assert "omniclip index: skipped: cannot read video" in err and "broken.mp4" in err
    manifest = json.loads((index / "manifest.json").read_text())
    assert [Path(v["video"]).name for v in manifest["videos"]] == ["a.mp4", "b.mp4", "c.mp4"]
    assert len(manifest["failed"]) == 1 and manifest["failed"][0][0].endswith("broken.mp4")


def test_ranking_is_exact_and_overlapping_windows_count_once() -> None:
    torch.manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(3000, 32), dim=-1)
    video = torch.arange(3000) // 100  # 30 videos of 100 windows, 2 s apart, 4 s long
    start = (torch.arange(3000) % 100).float() * 2
    manifest = {"videos": [{"video": f"v{i}.mp4"} for i in range(30)]}
    found = MomentIndex(Path("x"), manifest, emb.half(), video.numpy(), start.numpy(), (start + 4).numpy())
    query = torch.nn.functional.normalize(torch.randn(32), dim=0)
    exact = emb.half().float() @ query
    hits = rank(found, query, top_k=50, merge_overlaps=False)
    assert [h.score for h in hits] == pytest.approx(exact.sort(descending=True).values[:50].tolist(), abs=1e-6)
    merged = rank(found, query, top_k=50)
    for i, h in enumerate(merged):
        assert not any(o.video == h.video and o.start < h.end and h.start < o.end for o in merged[:i])
    assert merged[0] == hits[0] and isinstance(merged[0], Hit)
    assert len(rank(found, query, top_k=3000, merge_overlaps=False)) == 3000


@pytest.mark.slow
def test_two_processes_build_the_index_one_process_builds(videos, tmp_path) -> None:
    one = tmp_path / "one"
    assert _index(one, videos) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "omniclip"]
    cmd += ["index", str(videos), "--clip", "omniclip-tiny", "--out", str(tmp_path / "two"), "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("windows of 3 videos named (3 embedded now") == 1  # rank 0 reports, once
    (got, got_videos), (want, want_videos) = _contents(tmp_path / "two"), _contents(one)
    assert [v["video"] for v in got_videos] == [v["video"] for v in want_videos]
    for key in ("embeddings", "video", "start", "end"):
        assert torch.equal(got[key], want[key]), key


@pytest.mark.slow
def test_sigterm_stops_indexing_with_one_line_and_the_next_run_finishes(tmp_path, capsys) -> None:
    folder = tmp_path / "videos"
    for i in range(8):
        colour_video(folder / f"v{i:02d}.mp4", [("red", 6.0), ("blue", 6.0)])
    index = tmp_path / "index"
    argv = ["index", str(folder), "--clip", "omniclip-tiny", "--out", str(index), "--no-progress", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "omniclip", *argv], env=env, stderr=subprocess.PIPE, text=True)

    def finished() -> int:  # pathlib's glob also matches a writer's hidden ``.name.<pid>.tmp.safetensors``
        return sum(not p.name.startswith(".") for p in index.glob("shards/*.safetensors"))

    deadline = time.monotonic() + 120
    while not finished() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)  # what a scheduler sends
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("omniclip index: error: interrupted;")
    assert not (index / "manifest.json").exists()
    done = finished()
    assert 1 <= done < 8

    capsys.readouterr()
    assert main(argv) == 0
    assert f"({8 - done} embedded now, {done} up to date, 0 unreadable)" in capsys.readouterr().out
    tensors, listed = _contents(index)
    assert len(listed) == 8 and tensors["video"].tolist() == [v for v in range(8) for _ in range(5)]


def test_a_list_file_names_videos_relative_to_itself(videos, tmp_path, capsys) -> None:
    listing = tmp_path / "videos.txt"
    listing.write_text("# my collection\nvideos/b.mp4\n\n" + str(videos / "a.mp4") + "\n")
    index = tmp_path / "index"
    assert main(["index", "--list", str(listing), "--clip", "omniclip-tiny", "--out", str(index), "--no-progress"]) == 0
    assert [Path(v["video"]).name for v in _contents(index)[1]] == ["a.mp4", "b.mp4"]
    capsys.readouterr()
    assert main(["index", "--clip", "omniclip-tiny", "--out", str(index)]) == 2
    assert capsys.readouterr().err.strip().endswith("no videos: name video files or folders, or give --list L")
    listing.write_text("videos/missing.mp4\n")
    assert main(["index", "--list", str(listing), "--clip", "omniclip-tiny", "--out", str(index)]) == 2
    assert "missing.mp4 does not exist" in capsys.readouterr().err
