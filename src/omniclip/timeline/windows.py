"""Windows of a long video: one front-to-back decode, frames sampled on a time grid, shared by overlapping windows.

A window of ``window`` seconds holds T frames, one at the middle of each of its T equal segments (the test-time
segment sampling of ``omniclip.data``). So the frames sit on a global grid of step ``g = window / T`` at times
``(j + 0.5) * g``, and a window starting at grid point ``j0`` reads points ``j0 .. j0 + T - 1``. Window starts are
``hop = round(stride / g)`` grid points apart: overlapping windows reuse the same decoded, resized and cropped
frames, and only the grid points a later window still needs are kept (at most T). Memory therefore does not grow
with the video's length. ``VideoWindows.grid`` yields the grid frames, ``WindowCutter`` says which windows they
complete, and ``embed.py`` turns them into embeddings in batches.

Each grid point takes the frame shown at that moment (the last frame whose timestamp is not after it). Times are
measured from the first frame. The last window is aligned with the video's end when the regular ones stop short of
it; a video shorter than one window gives one window over what exists (its grid frames repeated to T).

Frames are prepared as the test pipeline of ``omniclip.data`` prepares them: the short side resized to
``S * 256 / 224``, then the centre ``S x S`` cropped. Here swscale (bilinear) does every resize while converting to
RGB, enlarging too, and numpy crops: the decoding thread runs no torch operation, whose threads would compete with
the model's. Input is opened by ``omniclip.data.decode.open_input`` (file protocol and self-contained video demuxers
only).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from omniclip.data.decode import DecodeError, RGBConverter, file_source, open_input
from omniclip.data.transforms import short_side_size
from omniclip.predict import VideoClassifier

log = logging.getLogger(__name__)

SECONDS_PER_FRAME = 0.5  # default grid step g: the default window is T * 0.5 s (4 s for T = 8)


@dataclass(frozen=True)
class WindowSpec:
    """How a video is cut into windows.

    Attributes:
        window: seconds one window covers.
        stride: seconds between window starts, rounded to a multiple of ``window / num_frames``.
        num_frames: T, frames per window.
        size: S, side of the square crop.
    """

    window: float
    stride: float
    num_frames: int
    size: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.window) and self.window > 0):
            raise ValueError(f"--window must be a positive number of seconds, got {self.window}")
        if not (math.isfinite(self.stride) and self.stride > 0):
            raise ValueError(f"--stride must be a positive number of seconds, got {self.stride}")
        if self.stride > self.window + 1e-9:
            raise ValueError(
                f"--stride {self.stride:g} s is longer than --window {self.window:g} s: parts of the video would "
                "never be seen; use a stride of at most the window"
            )

    @property
    def step(self) -> float:
        """g, seconds between grid frames."""
        return self.window / self.num_frames

    @property
    def hop(self) -> int:
        """Grid points between window starts (at least 1, at most T)."""
        return min(self.num_frames, max(1, round(self.stride / self.step)))

    @property
    def short_side(self) -> int:
        return round(self.size * 256 / 224)

    def to_dict(self) -> dict[str, Any]:
        """The settings as written into outputs; ``stride`` is the effective (grid-rounded) one."""
        return {"window": self.window, "stride": self.hop * self.step, "frames": self.num_frames, "size": self.size}


def window_spec(classifier: VideoClassifier, window: float | None = None, stride: float | None = None) -> WindowSpec:
    """The spec for ``classifier``: ``window`` defaults to T x 0.5 s, ``stride`` to half the window."""
    window = float(window) if window is not None else classifier.num_frames * SECONDS_PER_FRAME
    stride = float(stride) if stride is not None else window / 2
    return WindowSpec(window=window, stride=stride, num_frames=classifier.num_frames, size=classifier.image_size)


@contextmanager
def video_stream(path: str | Path) -> Iterator[tuple[Any, Any]]:
    """``(container, its first video stream)`` of ``path``, opened as ``open_input`` opens it; closed after.

    Raises:
        DecodeError: not a readable video file (the reason names what FFmpeg found), or no video stream.
    """
    source, _ = file_source(Path(path))
    with open_input(source) as container:
        if not container.streams.video:
            raise DecodeError("no video stream")
        yield container, container.streams.video[0]


class Window(NamedTuple):
    """One window: its time span in seconds and its frames, uint8 ``(T, 3, S, S)``."""

    start: float
    end: float
    frames: torch.Tensor


class Span(NamedTuple):
    """Which grid points make one window (in order, repeats allowed) and its time span in seconds."""

    points: list[int]
    start: float
    end: float


class WindowCutter:
    """Decides, as grid points arrive, which windows are complete (the rules of the module docstring)."""

    def __init__(self, spec: WindowSpec) -> None:
        self.T, self.hop, self.g = spec.num_frames, spec.hop, spec.step
        self.next_start = 0  # grid point where the next regular window starts
        self.last_end = 0  # grid point where the last regular window ended

    def arrived(self, filled: int) -> list[Span]:
        """The window completed by grid point ``filled - 1`` (none or one)."""
        if filled != self.next_start + self.T:
            return []
        start, self.last_end = self.next_start, filled
        self.next_start += self.hop
        return [Span(list(range(start, filled)), start * self.g, filled * self.g)]

    def finish(self, filled: int, duration: float) -> list[Span]:
        """After the last grid point: a window aligned with the end, or the one window of a short video."""
        if filled >= self.T and self.last_end < filled:  # the regular windows stop short of the end
            first = filled - self.T
            return [Span(list(range(first, filled)), first * self.g, min(filled * self.g, duration))]
        if filled < self.T:  # shorter than one window: its grid points repeated to T
            return [Span([i * filled // self.T for i in range(self.T)], 0.0, duration)]
        return []

    def oldest_needed(self, filled: int) -> int:
        """Grid points before this one are in no future window."""
        return max(0, min(self.next_start, filled - self.T))


class VideoWindows:
    """The grid frames and windows of one video, decoding it once; ``duration`` is set when the decoding ends.

    Raises (while iterating):
        DecodeError: the file cannot be opened, has no video stream or no decodable frame.
    """

    def __init__(self, path: str | Path, spec: WindowSpec) -> None:
        self.path = Path(path)
        self.spec = spec
        self.duration: float | None = None
        self._rgb = RGBConverter()  # one swscale context, on the decoding thread alone

    def __iter__(self) -> Iterator[Window]:
        """Windows in order, each with its T frames (overlapping windows share the same arrays)."""
        return self.cut(self.grid())

    def cut(self, grid: Iterator[tuple[int, np.ndarray]]) -> Iterator[Window]:
        """The windows of ``grid`` (this video's ``grid()``, perhaps decoded ahead in another thread), in order."""
        cutter = WindowCutter(self.spec)
        kept: dict[int, np.ndarray] = {}
        filled = 0

        def window(span: Span) -> Window:  # its frames stacked: (T, 3, S, S)
            return Window(span.start, span.end, torch.from_numpy(np.stack([kept[i] for i in span.points])))

        for j, frame in grid:
            kept[j] = frame
            filled = j + 1
            yield from map(window, cutter.arrived(filled))
            for old in range(min(kept), cutter.oldest_needed(filled)):
                del kept[old]
        assert self.duration is not None
        yield from map(window, cutter.finish(filled, self.duration))

    def _convert(self, frame: Any) -> np.ndarray:
        """A decoded frame -> uint8 ``(3, S, S)``: swscale resizes the short side while converting to RGB, numpy
        crops the centre. No torch operation runs here: this is the decoding thread, and torch's intra-op threads
        would compete with the model's."""
        short, size = self.spec.short_side, self.spec.size
        th, tw = short_side_size(int(frame.height), int(frame.width), short)
        rgb = self._rgb(frame, (th, tw))
        top, left = (th - size) // 2, (tw - size) // 2
        return np.ascontiguousarray(rgb[top : top + size, left : left + size].transpose(2, 0, 1))  # (3, S, S)

    def grid(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(j, frame)`` for every grid point j = 0, 1, ...: the frame shown at ``(j + 0.5) * g``, uint8
        ``(3, S, S)``; at least one point (a video shorter than half a step gives its last frame)."""
        g = self.spec.step
        with video_stream(self.path) as (container, stream):
            stream.thread_type = "AUTO"  # FFmpeg's own threads: decoding runs beside the model
            stream.codec_context.thread_count = 0  # 0: FFmpeg picks the count
            rate = stream.average_rate or stream.guessed_rate
            filled = 0  # grid points given so far
            prev: Any = None  # last decoded frame, not yet converted
            prev_x: np.ndarray | None = None  # its conversion, once needed
            t0: float | None = None
            t_prev = 0.0
            gap = 1.0 / float(rate) if rate else 0.04  # frame duration, refined from timestamps
            for frame, t in self._frames(container, stream, gap):
                t0 = t if t0 is None else t0
                t -= t0
                while prev is not None and (filled + 0.5) * g < t:  # grid points shown before this frame
                    prev_x = self._convert(prev) if prev_x is None else prev_x
                    yield filled, prev_x
                    filled += 1
                if prev is not None and t > t_prev:
                    gap = t - t_prev
                prev, prev_x, t_prev = frame, None, t
            if prev is None:
                raise DecodeError("no frame could be decoded")
            self.duration = t_prev + gap
            while filled == 0 or (filled + 0.5) * g < self.duration:
                prev_x = self._convert(prev) if prev_x is None else prev_x
                yield filled, prev_x
                filled += 1

    def _frames(self, container: Any, stream: Any, gap: float) -> Iterator[tuple[Any, float]]:
        """Decoded frames with their time in seconds; a decoding error after some frames ends the video there."""
        count = 0
        decoded = container.decode(stream)
        while True:
            try:
                frame = next(decoded)
            except StopIteration:
                return
            except Exception as err:  # FFmpeg raises many error types for damaged input
                if count == 0:
                    raise DecodeError(f"decoding failed: {type(err).__name__}: {err}") from err
                log.warning("%s: decoding stopped after %d frames (%s); the rest is left out", self.path, count, err)
                return
            t = frame.time
            yield frame, float(t) if t is not None else count * gap
            count += 1
