"""Windows of a long video: one front-to-back decode, frames sampled on a time grid, shared by overlapping windows.

A window of ``window`` seconds holds T frames, one at the middle of each of its T equal segments (the test-time
segment sampling of ``omniclip.data``). So the frames sit on a global grid of step ``g = window / T`` at times
``(j + 0.5) * g``, and a window starting at grid point ``j0`` reads points ``j0 .. j0 + T - 1``. Window starts are
``hop = round(stride / g)`` grid points apart: overlapping windows reuse the same decoded, resized and cropped
frames, kept in a ring buffer of T frames. Memory therefore does not grow with the video's length.

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
import queue
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from omniclip.data import transforms as tf
from omniclip.data.decode import DecodeError, file_source, open_input
from omniclip.precision import amp_dtype, autocast
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


def check_video_stream(path: str | Path) -> None:
    """Open ``path`` as ``open_input`` does and check that it has a video stream; nothing is decoded.

    Raises:
        DecodeError: not a readable video file (the reason names what FFmpeg found), or no video stream.
    """
    source, _ = file_source(Path(path))
    container = open_input(source)
    try:
        if not container.streams.video:
            raise DecodeError("no video stream")
    finally:
        container.close()


class Window(NamedTuple):
    """One window: its time span in seconds and its frames, uint8 ``(T, 3, S, S)``."""

    start: float
    end: float
    frames: torch.Tensor


class VideoWindows:
    """Iterate over the windows of one video, decoding it once; ``duration`` is set when the iteration ends.

    Raises (while iterating):
        DecodeError: the file cannot be opened, has no video stream or no decodable frame.
    """

    def __init__(self, path: str | Path, spec: WindowSpec, *, threads: int = 0) -> None:
        self.path = Path(path)
        self.spec = spec
        self.threads = threads
        self.duration: float | None = None

    def _convert(self, frame: Any) -> np.ndarray:
        """A decoded frame -> uint8 ``(3, S, S)``: swscale resizes the short side while converting to RGB, numpy
        crops the centre. No torch operation runs here: this is the decoding thread, and torch's intra-op threads
        would compete with the model's."""
        short, size = self.spec.short_side, self.spec.size
        h, w = int(frame.height), int(frame.width)
        th, tw = (short, max(1, round(w * short / h))) if h <= w else (max(1, round(h * short / w)), short)
        if (th, tw) == (h, w):
            rgb = frame.to_ndarray(format="rgb24")
        else:
            rgb = frame.reformat(width=tw, height=th, format="rgb24", interpolation="BILINEAR").to_ndarray()
        top, left = (th - size) // 2, (tw - size) // 2
        return np.ascontiguousarray(rgb[top : top + size, left : left + size].transpose(2, 0, 1))  # (3, S, S)

    def __iter__(self) -> Iterator[Window]:
        spec = self.spec
        T, g, hop = spec.num_frames, spec.step, spec.hop
        source, _ = file_source(self.path)
        container = open_input(source)
        try:
            if not container.streams.video:
                raise DecodeError("no video stream")
            stream = container.streams.video[0]
            if self.threads != 1:
                stream.thread_type = "AUTO"  # FFmpeg's own threads: decoding runs beside the model
                stream.codec_context.thread_count = self.threads
            rate = stream.average_rate or stream.guessed_rate
            ring: deque[np.ndarray] = deque(maxlen=T)  # frames of the last T grid points
            filled = 0  # grid points filled so far
            next_start = 0  # grid point where the next regular window starts
            last_end = 0  # grid point where the last emitted window ends
            prev: Any = None  # last decoded frame, not yet converted
            prev_x: np.ndarray | None = None  # its conversion, once needed
            t0: float | None = None
            t_prev = 0.0
            gap = 1.0 / float(rate) if rate else 0.04  # frame duration, refined from timestamps
            for frame, t in self._frames(container, stream, gap):
                if t0 is None:
                    t0 = t
                t -= t0
                while prev is not None and (filled + 0.5) * g < t:
                    if prev_x is None:
                        prev_x = self._convert(prev)
                    ring.append(prev_x)
                    filled += 1
                    if filled == next_start + T:
                        yield Window(next_start * g, filled * g, _stack(ring))
                        last_end, next_start = filled, next_start + hop
                if prev is not None and t > t_prev:
                    gap = t - t_prev
                prev, prev_x, t_prev = frame, None, t
            if prev is None:
                raise DecodeError("no frame could be decoded")
            self.duration = t_prev + gap
            while (filled + 0.5) * g < self.duration:
                if prev_x is None:
                    prev_x = self._convert(prev)
                ring.append(prev_x)
                filled += 1
                if filled == next_start + T:
                    yield Window(next_start * g, filled * g, _stack(ring))
                    last_end, next_start = filled, next_start + hop
            if filled >= T and last_end < filled:  # the regular windows stop short of the end
                yield Window((filled - T) * g, min(filled * g, self.duration), _stack(ring))
            elif filled < T:  # shorter than one window: its grid frames (or its last frame) repeated to T
                frames = list(ring) or [self._convert(prev)]
                pick = [i * len(frames) // T for i in range(T)]
                yield Window(0.0, self.duration, _stack([frames[i] for i in pick]))
        finally:
            container.close()

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


def _stack(frames: Any) -> torch.Tensor:
    return torch.from_numpy(np.stack(list(frames)))  # (T, 3, S, S)


def encode_windows(classifier: VideoClassifier, frames: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, T, 3, S, S)`` -> ``(B, E)`` float32 L2-normalised video embeddings (bf16 autocast on a GPU)."""
    device = classifier.device
    with torch.no_grad(), autocast(device, amp_dtype(device, "auto")):
        emb = classifier.model.encode_video(tf.normalize(frames.to(device, non_blocking=True)))  # (B, E)
    return F.normalize(emb.float(), dim=-1).cpu()


class WindowBatch(NamedTuple):
    """Embeddings of consecutive windows of one video: ``starts``/``ends`` in seconds, ``embeddings`` ``(B, E)``."""

    starts: list[float]
    ends: list[float]
    embeddings: torch.Tensor


_DONE = object()


def embed_video(
    classifier: VideoClassifier, windows: VideoWindows, batch_size: int = 16, *, prefetch: bool = True
) -> Iterator[WindowBatch]:
    """Embed every window of ``windows`` in batches of ``batch_size``.

    With ``prefetch`` a thread decodes the next windows while the model encodes the current batch (at most two
    batches wait, so memory stays bounded). Errors of the decoding thread are raised here.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    source: Iterator[Any] = _prefetched(iter(windows), 2 * batch_size) if prefetch else iter(windows)
    pending: list[Window] = []
    for item in source:
        pending.append(item)
        if len(pending) == batch_size:
            yield _encode(classifier, pending)
            pending = []
    if pending:
        yield _encode(classifier, pending)


def _encode(classifier: VideoClassifier, windows: list[Window]) -> WindowBatch:
    frames = torch.stack([w.frames for w in windows])  # (B, T, 3, S, S)
    return WindowBatch([w.start for w in windows], [w.end for w in windows], encode_windows(classifier, frames))


def _prefetched(items: Iterator[Any], depth: int) -> Iterator[Any]:
    """``items`` produced by a daemon thread through a bounded queue; the consumer may stop early."""
    box: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as err:  # handed to the consumer, raised there
            put(err)

    thread = threading.Thread(target=produce, name="omniclip-windows", daemon=True)
    thread.start()
    try:
        while True:
            item = box.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
