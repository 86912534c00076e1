"""``omniclip timeline``: the right segments in a video of known colours, windows on their time grid, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from timeline_videos import CLASSES, MODEL, TEMPLATES

import omniclip
from omniclip.cli import main
from omniclip.data.encode import write_video
from omniclip.timeline.segments import SegmentConfig, find_segments, smooth_probabilities
from omniclip.timeline.windows import VideoWindows, WindowSpec

PLAN = [("red", 8.0), ("blue", 10.0), ("green", 8.0)]  # true boundaries at 8 s and 18 s; 26 s long


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_timeline_finds_the_coloured_segments(make_video, tiny, tmp_path, capsys) -> None:
    video = make_video("three.mp4", PLAN)
    out = tmp_path / "out"
    assert main(["timeline", str(video), *MODEL, "--classes", ",".join(CLASSES), "--out", str(out)]) == 0
    assert "3 segments" in capsys.readouterr().out

    rows = _rows(out / "segments.csv")
    assert [r["class"] for r in rows] == ["red", "blue", "green"]
    starts, ends = [float(r["start"]) for r in rows], [float(r["end"]) for r in rows]
    stride = 2.0  # default for T = 8: window 4 s, stride 2 s; a boundary is found within one stride
    assert starts[0] == 0.0 and ends[-1] == pytest.approx(26.0, abs=0.01)
    assert ends[0] == pytest.approx(8.0, abs=stride) and ends[1] == pytest.approx(18.0, abs=stride)
    assert ends[:-1] == starts[1:]  # nothing in between: no class was unclear long enough
    assert all(float(r["score"]) > 0.7 for r in rows)

    data = json.loads((out / "timeline.json").read_text())
    assert data["classes"] == CLASSES and data["frames"] == 8 and data["window"] == 4.0 and data["stride"] == 2.0
    assert data["duration"] == pytest.approx(26.0, abs=0.01)
    assert [w["start"] for w in data["windows"]] == [2.0 * k for k in range(12)]  # 0..22: the last ends at 26
    assert all(sum(w["probabilities"]) == pytest.approx(1.0, abs=1e-3) for w in data["windows"])
    assert [s["class"] for s in data["segments"]] == ["red", "blue", "green"]
    assert (out / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 'src="../three.mp4"' in (out / "report.html").read_text()

    found = omniclip.timeline(tiny, video, CLASSES, templates=TEMPLATES)  # the library returns the same
    assert [(round(s.start, 3), round(s.end, 3), s.label) for s in found.segments] == [
        (float(r["start"]), float(r["end"]), r["class"]) for r in rows
    ]


def test_top_k_keeps_the_best_classes_per_window(make_video, tmp_path) -> None:
    video = make_video("two.mp4", [("red", 3.0), ("green", 3.0)])
    argv = ["timeline", str(video), *MODEL, "--classes", ",".join(CLASSES), "--out", str(tmp_path / "o")]
    assert main([*argv, "--top-k", "2", "--window", "2", "--stride", "1"]) == 0
    data = json.loads((tmp_path / "o" / "timeline.json").read_text())
    assert data["window"] == 2.0 and data["stride"] == 1.0
    assert data["windows"][0]["top"][0][0] == "red" and data["windows"][-1]["top"][0][0] == "green"
    assert all(len(w["top"]) == 2 and "probabilities" not in w for w in data["windows"])


def _grey_video(path: Path, frames: int) -> Path:
    """Lossless RGB video at 10 fps whose frame i is uniformly grey at level 4 * i."""
    levels = 4 * np.arange(frames, dtype=np.uint8)
    frames_rgb = np.broadcast_to(levels[:, None, None, None], (frames, 16, 16, 3))
    return write_video(path, frames_rgb, fps=10, codec="libx264rgb", crf=0)


def _windows(path: Path) -> list[tuple[float, float, list[int]]]:
    spec = WindowSpec(window=2.0, stride=1.0, num_frames=4, size=16)  # grid step 0.5 s, windows 2 grid steps apart
    return [(w.start, w.end, [int(f[0, 0, 0]) // 4 for f in w.frames]) for w in VideoWindows(path, spec)]


def test_windows_read_the_frame_shown_at_each_grid_time(tmp_path) -> None:
    # grid time (j + 0.5) * 0.5 s shows frame floor(10 * t): 2, 7, 12, ...
    got = _windows(_grey_video(tmp_path / "five.mp4", 50))  # 5.0 s: 10 grid points
    assert got == [
        (0.0, 2.0, [2, 7, 12, 17]),
        (1.0, 3.0, [12, 17, 22, 27]),
        (2.0, 4.0, [22, 27, 32, 37]),
        (3.0, 5.0, [32, 37, 42, 47]),
    ]
    # 5.5 s: 11 grid points; the regular windows stop at 5.0 s, so a last one is aligned with the end
    got = _windows(_grey_video(tmp_path / "longer.mp4", 55))
    assert [w[:2] for w in got] == [(0.0, 2.0), (1.0, 3.0), (2.0, 4.0), (3.0, 5.0), (3.5, 5.5)]
    assert got[-1][2] == [37, 42, 47, 52]


def test_a_video_shorter_than_one_window_gives_one_window(make_video, tmp_path) -> None:
    got = _windows(_grey_video(tmp_path / "short.mp4", 12))  # 1.2 s: grid points at 0.25 and 0.75 s
    assert got == [(0.0, pytest.approx(1.2), [2, 2, 7, 7])]
    one = _windows(_grey_video(tmp_path / "one.mp4", 1))  # a single frame
    assert one == [(0.0, pytest.approx(0.1), [0, 0, 0, 0])]

    video = make_video("brief.mp4", [("blue", 1.5)])
    out = tmp_path / "out"
    assert main(["timeline", str(video), *MODEL, "--classes", ",".join(CLASSES), "--out", str(out)]) == 0
    data = json.loads((out / "timeline.json").read_text())
    assert [(w["start"], w["end"]) for w in data["windows"]] == [(0.0, 1.5)]
    assert [(r["start"], r["end"], r["class"]) for r in _rows(out / "segments.csv")] == [("0.000", "1.500", "blue")]


def test_segments_are_smoothed_thresholded_and_short_runs_removed() -> None:
    classes = ["a", "b"]
    a, b, unclear = [0.9, 0.1], [0.1, 0.9], [0.5, 0.5]
    probs = np.array([a, a, a, b, a, a, a, a, unclear, unclear, unclear, unclear, b, b, b, b])
    starts = [float(i) for i in range(16)]  # windows 2 s long, 1 s apart: window i owns [i + 0.5, i + 1.5)
    ends = [s + 2.0 for s in starts]
    # the lone "b" window is smoothed away; the unclear stretch (4 windows) is a gap, not a segment
    segs, smoothed = find_segments(starts, ends, probs, classes, 18.0, SegmentConfig(smooth=3, threshold=0.6), 2.0)
    assert smoothed[3].tolist() == pytest.approx([(0.9 + 0.1 + 0.9) / 3, (0.1 + 0.9 + 0.1) / 3])
    assert [(s.label, s.start, s.end) for s in segs] == [("a", 0.0, 9.5), ("b", 11.5, 18.0)]
    # without smoothing the lone "b" is a run of 1 s: shorter than min_length 2, removed, and the "a"s are joined
    segs, _ = find_segments(starts, ends, probs, classes, 18.0, SegmentConfig(smooth=1, threshold=0.6), 2.0)
    assert [(s.label, s.start, s.end) for s in segs] == [("a", 0.0, 8.5), ("b", 12.5, 18.0)]
    assert segs[0].score == pytest.approx((7 * 0.9 + 0.1) / 8)
    keep_all = SegmentConfig(smooth=1, threshold=0.6, min_length=0)
    segs, _ = find_segments(starts, ends, probs, classes, 18.0, keep_all, 2.0)
    assert [s.label for s in segs] == ["a", "b", "a", "b"]
    assert smooth_probabilities(np.array([[1.0], [0.0], [0.0], [1.0]]), 2).ravel().tolist() == [0.5, 0.0, 0.5, 1.0]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", "does not exist"),
        ("text", "cannot read video"),
        ("audio", "no video stream"),
        ("no-classes", "--classes is empty"),
        ("stride", "longer than --window"),
        ("out-under-file", "lies under a file"),
    ],
)
def test_bad_input_ends_with_one_line_and_writes_nothing(make_video, tmp_path, capsys, case, expected) -> None:
    video = make_video("ok.mp4", [("red", 2.0)])
    out = tmp_path / "out"
    args = ["--classes", ",".join(CLASSES), "--out", str(out)]
    if case == "missing":
        video = tmp_path / "nope.mp4"
    elif case == "text":
        video = tmp_path / "notes.mp4"
        video.write_text("not a video\n")
    elif case == "audio":
        video = _audio_only(tmp_path / "sound.mkv")
    elif case == "no-classes":
        args = ["--classes", " , ", "--out", str(out)]
    elif case == "stride":
        args += ["--window", "2", "--stride", "3"]
    elif case == "out-under-file":
        (tmp_path / "file").write_text("x")
        args = ["--classes", "red", "--out", str(tmp_path / "file" / "out")]
    capsys.readouterr()
    assert main(["timeline", str(video), *MODEL, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("omniclip timeline: error: ") and expected in err[-1], err
    assert not (out / "timeline.json").exists() and not (out / "report.html").exists()


def _audio_only(path: Path) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        stream.layout = "mono"
        for i in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
            frame.sample_rate, frame.pts = 8000, i * 800
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_windows_are_encoded_like_the_model_encodes_a_clip(tiny, make_video) -> None:
    from omniclip.timeline.embed import encode_windows

    video = make_video("clip.mp4", [("yellow", 4.0)])
    window = next(iter(VideoWindows(video, WindowSpec(4.0, 2.0, tiny.num_frames, tiny.image_size))))
    emb = encode_windows(tiny, window.frames[None])
    from omniclip.data.transforms import normalize

    with torch.no_grad():
        ref = tiny.model.encode_video(normalize(window.frames[None]))
    assert torch.allclose(emb, torch.nn.functional.normalize(ref, dim=-1), atol=1e-6)


def test_shared_frame_embeddings_equal_whole_clips(tiny, make_video) -> None:
    # zero-shot CLIP embeds frames on their own: each grid frame is encoded once and shared by overlapping windows
    from omniclip.timeline.embed import embed_video, frames_independent

    assert frames_independent(tiny)
    video = make_video("mixed.mp4", [("red", 3.0), ("green", 4.0), ("blue", 2.3)])  # 9.3 s: a last aligned window
    for spec in (WindowSpec(4.0, 2.0, 8, 64), WindowSpec(4.0, 1.0, 8, 64), WindowSpec(20.0, 10.0, 8, 64)):
        got = [b for b in embed_video(tiny, VideoWindows(video, spec), 3, share_frames=True)]
        want = [b for b in embed_video(tiny, VideoWindows(video, spec), 3, share_frames=False, prefetch=False)]
        assert sum((b.starts for b in got), []) == sum((b.starts for b in want), [])
        assert sum((b.ends for b in got), []) == sum((b.ends for b in want), [])
        got_emb, want_emb = torch.cat([b.embeddings for b in got]), torch.cat([b.embeddings for b in want])
        assert torch.allclose(got_emb, want_emb, atol=1e-5), (spec, (got_emb - want_emb).abs().max())
