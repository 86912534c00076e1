"""Video decoding behind one small interface: open a video, read its info, read frames by index.

Backends: PyAV (default), OpenCV and decord (imported lazily, only when asked for), and folders of extracted
frames (``img_00001.jpg`` mmaction2 naming or any names, sorted naturally). A path ``shard.tar#member.mp4``
reads a member of an uncompressed tar shard through PyAV without extracting it.

Frame index ``i`` always means the ``i``-th frame in presentation order, whatever the frame rate does:

- PyAV demuxes the file once (no decoding) to list every packet's timestamp and keyframe flag. That gives the exact
  frame count (container headers are often wrong), the timestamp of each index (correct for variable frame rate)
  and the keyframes to seek to. Reading sorts the asked indices, decodes forward, and seeks to a later keyframe only
  when that skips more than ``seek_gap`` frames; so files with one keyframe, or many asked frames close together,
  are decoded straight through, and sparse frames from long files cost a seek each. Indices are cached per file.
- OpenCV (``backends.py``) trusts ``CAP_PROP_FRAME_COUNT`` (a header estimate) and reads forward with ``grab``.
- If a backend produces fewer frames than the count it reported, a missing frame repeats the nearest earlier
  decoded frame (the nearest later one at the start). If it produces no frame at all, ``DecodeError`` is raised.
"""

from __future__ import annotations

import bisect
import io
import logging
import tarfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)

DECODERS = ("pyav", "opencv", "decord")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SEEK_GAP = 12  # frames: below this, decoding forward is cheaper than a seek plus decoder flush
_INDEX_CACHE = {"size": 512}  # demuxed indices kept per process (see set_index_cache)


class DecodeError(RuntimeError):
    """A video could not be read (missing, truncated, no video stream, undecodable)."""


@dataclass(frozen=True)
class VideoInfo:
    """What a backend knows about a video before decoding it.

    Attributes:
        num_frames: Frames the backend will index (exact for PyAV and frame folders).
        fps: Average frame rate (0.0 when unknown, e.g. frame folders).
        width: Frame width in pixels.
        height: Frame height in pixels.
        header_frames: Frame count written in the container header, if any (may be wrong).
        num_keyframes: Keyframes found while indexing (PyAV), else None.
    """

    num_frames: int
    fps: float
    width: int
    height: int
    header_frames: int | None = None
    num_keyframes: int | None = None


class VideoReader(Protocol):
    """An open video; ``read`` may be called several times."""

    info: VideoInfo

    def read(self, indices: Sequence[int], short_side: int | None = None) -> np.ndarray:
        """Frames at ``indices`` (any order, repeats allowed) as uint8 (T, H, W, 3) RGB.

        ``short_side`` lets a backend that can scale cheaply (PyAV's swscale) shrink frames whose shorter side is
        larger; others ignore it, so callers still resize what they get.
        """
        ...

    def close(self) -> None: ...

    def __enter__(self) -> VideoReader: ...

    def __exit__(self, *exc: object) -> None: ...


class ReaderBase:
    """Context-manager plumbing and index checks shared by the readers."""

    info: VideoInfo

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        pass

    def _check(self, indices: Sequence[int]) -> list[int]:
        idx = [int(i) for i in indices]
        bad = [i for i in idx if not 0 <= i < self.info.num_frames]
        if bad:
            raise ValueError(f"frame indices {bad[:4]} outside 0..{self.info.num_frames - 1}")
        return idx


def _why(err: BaseException) -> str:
    """Short reason for an exception (FFmpeg errors repeat the file name; ``strerror`` does not)."""
    return f"{type(err).__name__}: {getattr(err, 'strerror', None) or err}"


def fill_missing(got: dict[int, np.ndarray], idx: list[int], what: str) -> np.ndarray:
    """Stack ``got[i]`` for ``i`` in ``idx``; a missing frame repeats the nearest earlier decoded one."""
    if not got:
        raise DecodeError("no frame could be decoded")
    have = sorted(got)
    out = []
    for i in idx:
        if i not in got:
            pos = bisect.bisect_right(have, i) - 1
            log.debug("%s: frame %d missing, repeating a neighbour", what, i)
            out.append(got[have[max(pos, 0)]])
        else:
            out.append(got[i])
    return np.stack(out)


# ----------------------------------------------------------------------------------------------- sources
_tar_members: OrderedDict[tuple[str, int], dict[str, tuple[int, int]]] = OrderedDict()
_tar_lock = threading.Lock()


def split_tar_path(path: str | Path) -> tuple[Path, str] | None:
    """``(tar_file, member)`` for a ``file.tar#member`` path, else None."""
    text = str(path)
    container, sep, member = text.partition("#")
    if sep and container.endswith(".tar"):
        return Path(container), member
    return None


def read_tar_member(tar_path: Path, member: str) -> bytes:
    """Bytes of one member of an uncompressed tar file (member offsets are cached per tar file)."""
    if not tar_path.is_file():
        raise DecodeError(f"tar shard {tar_path} does not exist")
    key = (str(tar_path), tar_path.stat().st_mtime_ns)
    with _tar_lock:
        members = _tar_members.get(key)
    if members is None:
        with tarfile.open(tar_path, "r:") as tar:
            members = {m.name: (m.offset_data, m.size) for m in tar.getmembers() if m.isfile()}
        with _tar_lock:
            _tar_members[key] = members
            while len(_tar_members) > 64:
                _tar_members.popitem(last=False)
    if member not in members:
        raise DecodeError(f"{tar_path} has no member {member!r}")
    offset, size = members[member]
    with open(tar_path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def file_source(path: Path) -> tuple[str | io.BytesIO, tuple]:
    """What PyAV opens, plus a cache key that changes when the file changes."""
    tar = split_tar_path(path)
    if tar is not None:
        data = read_tar_member(*tar)
        return io.BytesIO(data), (str(path), len(data), tar[0].stat().st_mtime_ns)
    if not path.is_file():
        raise DecodeError("file does not exist" if not path.exists() else "not a regular file")
    st = path.stat()
    if st.st_size == 0:
        raise DecodeError("empty file (0 bytes)")
    return str(path), (str(path), st.st_size, st.st_mtime_ns)


# ----------------------------------------------------------------------------------------------- PyAV
_pts_index: OrderedDict[tuple, tuple[list[int], list[int], int | None]] = OrderedDict()
_index_lock = threading.Lock()


class PyAVReader(ReaderBase):
    """PyAV reader with a demuxed timestamp index, forward decoding and keyframe seeks (see module docstring).

    Args:
        path: Video file or ``shard.tar#member`` path.
        threads: Decoder threads (1 suits data-loader workers; 0 lets FFmpeg choose).
        seek_gap: Seek to a later keyframe only when it skips more than this many frames.
    """

    def __init__(self, path: str | Path, *, threads: int = 1, seek_gap: int = SEEK_GAP) -> None:
        self.path = Path(path)
        self.seek_gap = seek_gap
        self.threads = threads
        self._size: tuple[int, int] | None = None
        self._src, key = file_source(self.path)
        try:
            self._open()
        except Exception as err:  # FFmpeg raises many error types for unreadable input
            raise DecodeError(f"cannot open: {_why(err)}") from err
        try:
            if not self._container.streams.video:
                raise DecodeError("no video stream")
            self._pts, self._keys, fallback = self._index(key)
            count = len(self._pts) if self._pts else (fallback or 0)
            if count == 0:
                raise DecodeError("the video stream has no frames")
            ctx = self._stream.codec_context
            rate = self._stream.average_rate or self._stream.guessed_rate
            self.info = VideoInfo(
                num_frames=count,
                fps=float(rate) if rate else 0.0,
                width=int(ctx.width),
                height=int(ctx.height),
                header_frames=int(self._stream.frames) or None,
                num_keyframes=len(self._keys) if self._pts else None,
            )
        except DecodeError:
            self.close()
            raise
        except Exception as err:
            self.close()
            raise DecodeError(_why(err)) from err

    def _open(self) -> None:
        import av

        if isinstance(self._src, io.BytesIO):
            self._src.seek(0)
        self._container = av.open(self._src, mode="r", metadata_errors="ignore")
        if self._container.streams.video:
            self._stream = self._container.streams.video[0]
            if self.threads != 1:
                self._stream.thread_type = "AUTO"
                self._stream.codec_context.thread_count = self.threads

    def close(self) -> None:
        container = getattr(self, "_container", None)
        if container is not None:
            container.close()
            del self._container

    def _index(self, key: tuple) -> tuple[list[int], list[int], int | None]:
        """Sorted frame timestamps and the positions of keyframes; ([], [], count) without usable timestamps."""
        with _index_lock:
            hit = _pts_index.get(key)
            if hit is not None:
                _pts_index.move_to_end(key)
                return hit
        stamps, keyflags = [], []
        for packet in self._container.demux(self._stream):
            if packet.size == 0:
                continue  # flush packet
            stamps.append(packet.pts if packet.pts is not None else packet.dts)
            keyflags.append(bool(packet.is_keyframe))
        if stamps and None not in stamps and len(set(stamps)) == len(stamps):
            order = np.argsort(np.asarray(stamps, dtype=np.int64), kind="stable")
            pts = [int(stamps[i]) for i in order]
            keys = [pos for pos, i in enumerate(order) if keyflags[i]] or [0]
            result: tuple[list[int], list[int], int | None] = (pts, keys, len(pts))
        else:
            result = ([], [], len(stamps))  # no usable timestamps: decode straight through, count outputs
        with _index_lock:
            _pts_index[key] = result
            while len(_pts_index) > _INDEX_CACHE["size"]:
                _pts_index.popitem(last=False)
        return result

    def read(self, indices: Sequence[int], short_side: int | None = None) -> np.ndarray:
        idx = self._check(indices)
        wanted = sorted(set(idx))
        self._size = None
        h, w = self.info.height, self.info.width
        if short_side is not None and min(h, w) > short_side:
            # swscale shrinks while converting to RGB: about 2x cheaper than full-size RGB plus a torch resize.
            self._size = (
                (short_side, max(1, round(w * short_side / h)))
                if h <= w
                else (max(1, round(h * short_side / w)), short_side)
            )
        try:
            got = self._read_seeking(wanted) if self._pts else {}
            missing = [i for i in wanted if i not in got]
            if missing:
                got.update(self._read_sequential(missing))
        except DecodeError:
            raise
        except Exception as err:
            raise DecodeError(f"decoding failed: {_why(err)}") from err
        return fill_missing(got, idx, str(self.path))

    def count_decodable(self) -> int:
        """Decode every frame from the start without converting it; returns how many decoded."""
        self.close()
        self._open()
        try:
            return sum(1 for _ in self._container.decode(self._stream))
        except Exception as err:
            raise DecodeError(f"decoding failed: {_why(err)}") from err

    def _convert(self, frame) -> np.ndarray:
        if self._size is None:
            return frame.to_ndarray(format="rgb24")
        h, w = self._size
        return frame.reformat(width=w, height=h, format="rgb24", interpolation="BILINEAR").to_ndarray()

    def _read_seeking(self, wanted: list[int]) -> dict[int, np.ndarray]:
        position: dict[int | None, int] = {p: i for i, p in enumerate(self._pts)}
        wanted_set = set(wanted)
        got: dict[int, np.ndarray] = {}
        frames = None
        current = -1  # index of the last decoded frame
        for target in wanted:
            if target in got:
                continue
            key = self._keys[bisect.bisect_right(self._keys, target) - 1]
            if frames is None or current >= target or key - current > self.seek_gap:
                self._container.seek(self._pts[key], stream=self._stream, backward=True)
                frames = self._container.decode(self._stream)
            for frame in frames:
                i = position.get(frame.pts)
                if i is None:
                    continue
                current = i
                if i in wanted_set and i not in got:
                    got[i] = self._convert(frame)
                if i >= target:
                    break
            else:
                break  # stream ended early
        return got

    def _read_sequential(self, wanted: list[int]) -> dict[int, np.ndarray]:
        # Reopening is the one rewind that works for every container, timestamps or not.
        self.close()
        self._open()
        got: dict[int, np.ndarray] = {}
        last = wanted[-1]
        wanted_set = set(wanted)
        for i, frame in enumerate(self._container.decode(self._stream)):
            if i in wanted_set:
                got[i] = self._convert(frame)
            if i >= last:
                break
        return got


def set_index_cache(size: int) -> None:
    """Keep the demuxed frame index of up to ``size`` files per process (0 disables it, e.g. for benchmarks)."""
    with _index_lock:
        _INDEX_CACHE["size"] = max(0, int(size))
        while len(_pts_index) > _INDEX_CACHE["size"]:
            _pts_index.popitem(last=False)


# ----------------------------------------------------------------------------------------------- entry points
def available_decoders() -> list[str]:
    """Backends importable here (``pyav`` always)."""
    import importlib.util

    names = ["pyav"]
    names += [n for n, mod in (("opencv", "cv2"), ("decord", "decord")) if importlib.util.find_spec(mod)]
    return names


def open_video(path: str | Path, decoder: str = "pyav", **options) -> VideoReader:
    """Open a video file, tar member or frame folder with the named backend.

    Raises:
        DecodeError: The video cannot be read.
        ValueError: Unknown or uninstalled decoder.
    """
    from omniclip.data.backends import DecordReader, FrameFolderReader, OpenCVReader

    path = Path(path)
    if path.is_dir():
        return FrameFolderReader(path)
    if decoder == "pyav":
        return PyAVReader(path, **options)
    if decoder == "opencv":
        try:
            import cv2  # noqa: F401
        except ImportError as err:
            raise ValueError("decoder 'opencv' needs opencv-python-headless; pip install it or use pyav") from err
        return OpenCVReader(path, **options)
    if decoder == "decord":
        return DecordReader(path)
    raise ValueError(f"unknown decoder {decoder!r}; choose one of {DECODERS}")


def probe(path: str | Path, decoder: str = "pyav") -> VideoInfo:
    """Frame count, frame rate and size of a video (see ``VideoInfo``)."""
    with open_video(path, decoder) as video:
        return video.info


def read_frames(path: str | Path, indices: Sequence[int], decoder: str = "pyav") -> np.ndarray:
    """Decode the frames at ``indices`` as uint8 (T, H, W, 3) RGB."""
    with open_video(path, decoder) as video:
        return video.read(indices)
