"""The demo's timeline: a long video stitched from test clips, and how well each model finds its segments.

``stitch_video`` concatenates the decoded frames of test clips into one mp4, one clip per true segment, classes in a
seeded order in which every class appears equally often and no class follows itself; ``truth.csv`` holds the true
segments (start, end, class, source clip). ``localize`` runs ``omniclip.timeline`` on it with a trained checkpoint
and scores the result with ``omniclip.timeline.metrics`` (frame-level accuracy, mAP at temporal IoU 0.3 / 0.5 / 0.7).

The settings follow from the clips (docs/demo.md gives the measurements behind them):

- One clip per segment. Playing a clip twice, or two clips of one class in a row, puts a cut inside the segment (the
  shape jumps back, or another shape starts) that the truth does not have, and the models read the cut as motion.
- The window is one clip's duration (17 frames at 8 fps, 2.125 s): a window that lines up with a clip samples its
  frames 2, 6, 10 and 14, the frames the test clips are classified from.
- The stride is a quarter window, one step of the timeline's frame grid, so every clip has a window that holds only
  it wherever its cuts fall. With the default half-window stride that holds only where the cuts line up with the
  window grid, as here by construction and in a real video by chance.
- Smoothing and threshold are the timeline's defaults (3 windows, 0.5); the shortest segment kept is half a window
  (the default, one window, is as long as an action here and removes nearly every segment).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from omniclip.data.decode import open_video
from omniclip.data.encode import VideoWriter
from omniclip.data.records import csv_text, read_annotations
from omniclip.demo.dataset import DemoDataset
from omniclip.demo.recipes import LongVideoSpec
from omniclip.files import write_text
from omniclip.predict import load_model
from omniclip.timeline import Segment, Timeline, timeline
from omniclip.timeline.metrics import Localization, evaluate_timeline
from omniclip.timeline.scores import write_timeline

VIDEO = "long_video.mp4"
TRUTH = "truth.csv"
# Lossless H.264 in RGB: the windows see exactly the clips' decoded frames, and the same frames give the same bytes.
# A second lossy generation moves the scores: mpeg4 at its default rate (the dataset's codec) falls to 26 dB PSNR on
# some frames, and libx264 in yuv420p wrote different bytes on most runs for 32-px frames here.
CODEC, CRF = "libx264rgb", 0


@dataclass
class StitchedVideo:
    """The long video, its frame rate and its true segments."""

    path: Path
    truth_csv: Path
    fps: float
    duration: float  # seconds
    clip_seconds: float  # duration of one test clip: the timeline's window
    truth: list[Segment] = field(default_factory=list)  # score 1.0
    sources: list[str] = field(default_factory=list)  # the test clip of each segment, relative to the dataset


def segment_order(classes: int, segments: int, seed: int) -> list[int]:
    """Class index of each segment: rounds of seeded permutations, each class once per round (the last round cut
    short), and a round's first two classes swapped when the first would repeat the previous segment's class."""
    if classes < 2:
        raise ValueError(f"a long video needs at least 2 classes, got {classes}")
    rng = np.random.default_rng([seed, 0x7117E])
    order: list[int] = []
    while len(order) < segments:
        round_ = [int(c) for c in rng.permutation(classes)]
        if order and round_[0] == order[-1]:
            round_[0], round_[1] = round_[1], round_[0]
        order += round_
    return order[:segments]


def stitch_video(bench: DemoDataset, spec: LongVideoSpec, out: str | Path, seed: int) -> StitchedVideo:
    """Write ``out/long_video.mp4`` and ``out/truth.csv``; the same dataset, spec and seed write the same bytes.

    Raises:
        ValueError: a class has fewer test clips than segments in the video.
    """
    out = Path(out)
    names = bench.class_names
    clips: dict[int, list[str]] = {}  # test clips per class index, as the dataset's test.txt names them
    for record in read_annotations(bench.list_file("test")):
        clips.setdefault(record.label, []).append(str(record.path))
    order = segment_order(len(names), spec.segments, seed)
    rng = np.random.default_rng([seed, 0xC11B5])
    pools = {c: [str(p) for p in rng.permutation(clips.get(c, []))] for c in range(len(names))}
    fps = float(bench.spec.fps)
    size, rate = bench.spec.size, bench.spec.fps
    truth, sources, written = [], [], 0
    with VideoWriter(
        out / VIDEO, size, size, fps=rate, codec=CODEC, crf=CRF, time_base=Fraction(1, rate), threads=1
    ) as writer:
        for c in order:
            if not pools[c]:
                raise ValueError(
                    f"{bench.list_file('test')}: class {names[c]!r} has {len(clips.get(c, []))} test clips, "
                    f"the long video needs {order.count(c)}"
                )
            rel = pools[c].pop(0)
            with open_video(bench.root / rel) as reader:
                frames = reader.read(range(reader.info.num_frames))
            for i, frame in enumerate(frames):
                writer.write(frame, pts=written + i)
            truth.append(Segment(written / fps, (written + len(frames)) / fps, names[c], 1.0))
            sources.append(rel)
            written += len(frames)
    video = StitchedVideo(
        path=writer.path,
        truth_csv=out / TRUTH,
        fps=fps,
        duration=written / fps,
        clip_seconds=bench.spec.num_frames / fps,
        truth=truth,
        sources=sources,
    )
    rows = [[f"{s.start:.3f}", f"{s.end:.3f}", s.label, clip] for s, clip in zip(truth, sources, strict=True)]
    write_text(video.truth_csv, csv_text(["start", "end", "class", "clip"], rows))
    return video


@dataclass
class ModelTimeline:
    """One model's timeline of the long video and its scores."""

    name: str  # run folder, e.g. "supervised/omniclip"
    label: str  # what the printed line calls the model
    timeline: Timeline
    scores: Localization
    seconds: float  # wall time of loading the model, the timeline and its files
    cpu_seconds: float  # process CPU time of the same

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.name,
            "label": self.label,
            **self.scores.to_dict(),
            "segments": [
                {"start": round(s.start, 3), "end": round(s.end, 3), "class": s.label, "score": round(s.score, 5)}
                for s in self.timeline.segments
            ],
            "windows": len(self.timeline.starts),
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
        }


def localize(
    video: StitchedVideo, run_dir: str | Path, spec: LongVideoSpec, out: str | Path, *, name: str, label: str
) -> ModelTimeline:
    """The timeline of ``video`` with the checkpoint in ``run_dir`` (its own classes), scored against the truth;
    its ``timeline.json``, ``segments.csv``, ``timeline.png`` and ``report.html`` go into ``out``."""
    tick, cpu = time.perf_counter(), time.process_time()
    model = load_model(run_dir, kind="checkpoint")
    window = video.clip_seconds
    tl = timeline(
        model,
        video.path,
        window=window,
        stride=window * spec.stride,
        smooth=spec.smooth,
        threshold=spec.threshold,
        min_length=window * spec.min_length,
    )
    write_timeline(tl, out)
    return ModelTimeline(
        name=name,
        label=label,
        timeline=tl,
        scores=evaluate_timeline(tl, video.truth, video.fps),
        seconds=time.perf_counter() - tick,
        cpu_seconds=time.process_time() - cpu,
    )


@dataclass
class LongVideoResult:
    """The stitched video and every model's timeline of it."""

    spec: LongVideoSpec
    video: StitchedVideo
    models: list[ModelTimeline] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the whole step: stitching, timelines, their files
    cpu_seconds: float = 0.0  # process CPU time of the same

    def to_dict(self) -> dict[str, Any]:
        v = self.video
        return {
            **self.spec.to_dict(),
            "video": str(v.path),
            "truth": str(v.truth_csv),
            "fps": v.fps,
            "duration": v.duration,
            "window": v.clip_seconds,
            "models": [m.to_dict() for m in self.models],
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
        }


def run_long_video(
    bench: DemoDataset, spec: LongVideoSpec, out: str | Path, runs: Sequence[tuple[str, str, Path]], seed: int
) -> LongVideoResult:
    """Stitch the long video into ``out`` and localize with each ``(name, label, run folder)``; each model's files go
    into ``out/<last part of its name>``."""
    tick, cpu = time.perf_counter(), time.process_time()
    out = Path(out)
    video = stitch_video(bench, spec, out, seed)
    result = LongVideoResult(spec, video)
    for name, label, run_dir in runs:
        result.models.append(localize(video, run_dir, spec, out / Path(name).name, name=name, label=label))
    result.seconds, result.cpu_seconds = time.perf_counter() - tick, time.process_time() - cpu
    return result
