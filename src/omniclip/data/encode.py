"""Video encoding with PyAV: write frames to mp4/mkv files atomically (synthetic data, tests, ``omniclip prepare``)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import cast

import numpy as np

# Pixel format each encoder is fed; libx264rgb with crf 0 is lossless in RGB, so decoded frames equal the input.
PIX_FMT = {"libx264": "yuv420p", "h264": "yuv420p", "libx264rgb": "rgb24", "mpeg4": "yuv420p", "ffv1": "bgr0"}


class VideoWriter:
    """Streamed encoding to a temporary file that replaces ``path`` on ``close`` (atomic).

    As a context manager it closes on a normal exit and aborts (deletes the partial file) on an exception.

    Args:
        path: Output file; the suffix picks the container (``.mp4``, ``.mkv``).
        width: Frame width (even for yuv420p codecs).
        height: Frame height (even for yuv420p codecs).
        fps: Frame rate (a float is approximated by a fraction).
        codec: ``libx264`` (default), ``libx264rgb`` (lossless RGB with ``crf=0``), ``mpeg4`` or ``ffv1`` (use .mkv).
        crf: Constant rate factor for x264 (None: encoder default 23).
        gop: Keyframe interval in frames (None: encoder default, 250 for x264).
        bframes: Number of B-frames for x264 (None: default).
        time_base: Stream time base for explicit ``pts`` (None: 1/fps).
        threads: Encoder threads (0: the encoder's choice).
    """

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        *,
        fps: float = 25,
        codec: str = "libx264",
        crf: int | None = None,
        gop: int | None = None,
        bframes: int | None = None,
        time_base: Fraction | None = None,
        threads: int = 0,
    ) -> None:
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.stem}.tmp{os.getpid()}{self.path.suffix}")
        self._container = av.open(str(self._tmp), mode="w")
        rate = Fraction(fps).limit_denominator(1001)
        stream = cast("av.VideoStream", self._container.add_stream(codec, rate=rate))  # a video codec
        stream.width, stream.height = width, height
        stream.pix_fmt = PIX_FMT.get(codec, "yuv420p")
        options: dict[str, object] = {}
        if crf is not None:
            options["crf"] = str(crf)
        if gop is not None:
            stream.codec_context.gop_size = gop
            options.update({"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"})
        if bframes is not None:
            options["bf"] = str(bframes)
        stream.options = options
        if threads:
            stream.codec_context.thread_count = threads
        if time_base is not None:
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
        self._stream = stream

    def write(self, frame: np.ndarray, pts: int | None = None) -> None:
        """Encode one uint8 (H, W, 3) RGB frame; ``pts`` in the stream time base (default: frame count)."""
        import av

        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        if pts is not None:
            vf.pts = pts
            vf.time_base = self._stream.codec_context.time_base
        for packet in self._stream.encode(vf):
            self._container.mux(packet)

    def close(self) -> Path:
        """Flush the encoder, close the file and move it into place."""
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Close and delete the partial file."""
        try:
            self._container.close()
        finally:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(
    path: str | Path,
    frames: np.ndarray | Iterable[np.ndarray],
    *,
    fps: float = 25,
    codec: str = "libx264",
    crf: int | None = None,
    gop: int | None = None,
    bframes: int | None = None,
    pts: Sequence[int] | None = None,
    time_base: Fraction | None = None,
) -> Path:
    """Encode uint8 (T, H, W, 3) RGB frames to ``path`` atomically; see ``VideoWriter`` for the options.

    ``pts`` with ``time_base`` gives each frame an explicit timestamp (variable frame rate files).
    """
    frames = [np.asarray(f, dtype=np.uint8) for f in frames]
    if not frames:
        raise ValueError(f"{path}: no frames to write")
    height, width = frames[0].shape[:2]
    with VideoWriter(
        path, width, height, fps=fps, codec=codec, crf=crf, gop=gop, bframes=bframes, time_base=time_base
    ) as writer:
        for i, frame in enumerate(frames):
            writer.write(frame, None if pts is None else int(pts[i]))
    return writer.path
