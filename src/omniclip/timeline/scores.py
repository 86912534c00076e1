"""The timeline of one video: class probabilities for every window and the segments read from them.

``timeline(model, "video.mp4", classes=[...])`` decodes the video once (``windows.py``), scores each window as
``omniclip predict`` scores a clip (softmax over the classes of the clamped logit scale times the cosine between the
window's video embedding and each class's text embedding), and finds segments (``segments.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omniclip.data.decode import DecodeError
from omniclip.data.records import csv_text
from omniclip.files import save_figure, write_json, write_text
from omniclip.predict import VideoClassifier, VideoReadError, check_class_names
from omniclip.timeline.embed import embed_video
from omniclip.timeline.segments import Segment, SegmentConfig, find_segments
from omniclip.timeline.windows import VideoWindows, WindowSpec, video_stream, window_spec

log = logging.getLogger(__name__)


@dataclass
class Timeline:
    """Per-window class probabilities of one video and the segments found in them (times in seconds)."""

    video: Path
    duration: float
    classes: list[str]
    spec: WindowSpec
    segment_config: SegmentConfig
    starts: list[float]  # window starts
    ends: list[float]  # window ends
    probabilities: np.ndarray  # (N, C) softmax over the classes, per window
    smoothed: np.ndarray  # (N, C) after the moving average
    segments: list[Segment]
    source: str = ""  # where the model came from
    seconds: float = 0.0  # wall time of decoding and scoring

    def to_dict(self, top_k: int | None = None) -> dict[str, Any]:
        """JSON-ready: settings, windows (all class probabilities, or the ``top_k`` best) and segments."""
        windows = []
        for start, end, probs in zip(self.starts, self.ends, self.probabilities, strict=True):
            row: dict[str, Any] = {"start": round(start, 3), "end": round(end, 3)}
            if top_k is None:
                row["probabilities"] = [round(float(p), 5) for p in probs]
            else:
                best = np.argsort(-probs, kind="stable")[:top_k]
                row["top"] = [[self.classes[c], round(float(probs[c]), 5)] for c in best]
            windows.append(row)
        return {
            "video": str(self.video),
            "duration": round(self.duration, 3),
            "model": self.source,
            "classes": self.classes,
            **self.spec.to_dict(),
            "segmentation": self.segment_config.to_dict(self.spec.window),
            "windows": windows,
            "segments": [
                {"start": round(s.start, 3), "end": round(s.end, 3), "class": s.label, "score": round(s.score, 5)}
                for s in self.segments
            ],
        }


def check_video(path: str | Path) -> Path:
    """``path`` as a Path, checked before any work: it exists, is a file, and FFmpeg finds a video stream in it.

    Raises:
        FileNotFoundError: missing.
        VideoReadError: not a video file, or no video stream (a ``ValueError``).
        ValueError: a folder.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"video {path} is a folder; give one video file")
    if not path.is_file():
        raise FileNotFoundError(f"video {path} does not exist")
    try:
        with video_stream(path):
            pass
    except DecodeError as err:
        raise VideoReadError(f"cannot read video {path}: {err}") from err
    return path


def timeline(
    model: VideoClassifier,
    video: str | Path,
    classes: Sequence[str] | None = None,
    *,
    templates: Sequence[str] | None = None,
    window: float | None = None,
    stride: float | None = None,
    smooth: int = 3,
    threshold: float = 0.5,
    min_length: float | None = None,
    batch_size: int = 16,
) -> Timeline:
    """Class probabilities of every window of ``video`` and the segments they form.

    Args:
        model: from ``omniclip.load_model``.
        video: one video file.
        classes: class names (a trained checkpoint's own classes when omitted).
        templates: text templates; the model's when omitted.
        window: seconds per window (default T x 0.5 s: 4 s for 8 frames).
        stride: seconds between window starts (default half the window), rounded to a multiple of window / T.
        smooth: windows in the moving average of the probabilities (1: none).
        threshold: smallest smoothed probability that labels a window with its best class.
        min_length: shortest segment kept, in seconds (default: the window).
        batch_size: windows per forward pass.

    Raises:
        FileNotFoundError: the video does not exist.
        VideoReadError: the video cannot be decoded (no video stream, not a video file, no decodable frame).
        ValueError: no classes, bad class names or a bad option.
    """
    path = check_video(video)
    names = check_class_names(classes if classes is not None else model.class_names)
    spec = window_spec(model, window, stride)
    seg_config = SegmentConfig(smooth=smooth, threshold=threshold, min_length=min_length)
    text = model.class_embeddings(names, templates).float().cpu()  # (C, E), normalised
    scale = model.logit_scale
    began = time.perf_counter()
    windows = VideoWindows(path, spec)
    starts: list[float] = []
    ends: list[float] = []
    probs: list[torch.Tensor] = []
    try:
        for batch in embed_video(model, windows, batch_size):
            starts += batch.starts
            ends += batch.ends
            probs.append((scale * batch.embeddings @ text.T).softmax(dim=-1))  # (B, C)
    except DecodeError as err:
        raise VideoReadError(f"cannot read video {path}: {err}") from err
    assert windows.duration is not None  # set when the iteration ended normally
    duration = windows.duration
    ends = [min(e, duration) for e in ends]
    table = torch.cat(probs).numpy().astype(np.float64)  # (N, C)
    segments, smoothed = find_segments(starts, ends, table, names, duration, seg_config, spec.window)
    seconds = time.perf_counter() - began
    log.info("%s: %.1f s, %d windows in %.1f s, %d segments", path, duration, len(starts), seconds, len(segments))
    return Timeline(
        video=path,
        duration=duration,
        classes=names,
        spec=spec,
        segment_config=seg_config,
        starts=starts,
        ends=ends,
        probabilities=table,
        smoothed=smoothed,
        segments=segments,
        source=model.source,
        seconds=seconds,
    )


def write_timeline(tl: Timeline, out: str | Path, *, top_k: int | None = None) -> dict[str, Path]:
    """Write ``timeline.json``, ``segments.csv``, ``timeline.png`` and ``report.html`` into ``out``.

    Each file is written whole (``omniclip.files``); the report comes last and links the video relative to ``out``.
    """
    from omniclip.timeline.pages import timeline_figure, timeline_html

    out = Path(out)
    rows = [[f"{s.start:.3f}", f"{s.end:.3f}", s.label, f"{s.score:.5f}"] for s in tl.segments]
    return {
        "timeline": write_json(out / "timeline.json", tl.to_dict(top_k)),
        "segments": write_text(out / "segments.csv", csv_text(["start", "end", "class", "score"], rows)),
        "figure": save_figure(timeline_figure(tl), out / "timeline.png"),
        "report": write_text(out / "report.html", timeline_html(tl, out)),
    }
