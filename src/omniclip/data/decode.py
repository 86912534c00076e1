"""Video decoding behind one small interface: open a video, read its info, read frames by index.

Backends: PyAV (default), PyAV decoding on an NVIDIA GPU (``pyav-cuda``: FFmpeg's NVDEC through PyAV's ``HWAccel``,
frames downloaded for the same RGB conversion; a codec NVDEC lacks falls back to the CPU), OpenCV and decord
(imported lazily, only when asked for), and folders of extracted frames (``img_00001.jpg`` mmaction2 naming or any
names, sorted naturally). A path ``shard.tar#member.mp4`` reads a member of an uncompressed tar shard through PyAV
without extracting it.

An entry reads only its own bytes: every FFmpeg input is opened by ``open_input`` with the file protocol only
(a list path is never read as a URL or an FFmpeg protocol such as ``concat:``), and FFmpeg may pick only a demuxer
of self-contained video files (``VIDEO_DEMUXERS``, judged on the detected format, not the file name), so
playlists, concat lists, image-sequence patterns, text (``tty``) and network descriptions (``sdp``) are refused
with ``DecodeError``. The OpenCV and decord backends run the same check (``check_input``) before opening a file.

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
import functools
import io
import logging
import os
import re
import tarfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from omniclip.data.transforms import short_side_size

log = logging.getLogger(__name__)

DECODERS = ("pyav", "pyav-cuda", "opencv", "decord")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SEEK_GAP = 12  # frames: below this, decoding forward is cheaper than a seek plus decoder flush
# FFmpeg demuxers of self-contained video files, matched against each name of the detected format: mov/mp4/3gp,
# matroska/webm, avi, mpeg-ts, mpeg-ps, flv, asf/wmv, ogg, nut, y4m. None of them opens another file or URL (the
# mov demuxer's external data references stay off), unlike hls, dash, concat, image2, sdp, tty or lavfi.
VIDEO_DEMUXERS = ("mov", "matroska", "avi", "mpegts", "mpeg", "flv", "asf", "ogg", "nut", "yuv4mpegpipe")
_INPUT_OPTIONS = {
    "format_whitelist": ",".join(VIDEO_DEMUXERS),
    "protocol_whitelist": "file",
    "enable_drefs": "0",
}


class DecodeError(RuntimeError):
    """A video could not be read (missing, truncated, no video stream, undecodable)."""


@dataclass(frozen=True)
class VideoInfo:
    """What a backend knows about a video before decoding it."""

    num_frames: int  # frames the backend will index (exact for PyAV and frame folders)
    fps: float  # average frame rate (0.0 when unknown, e.g. frame folders)
    width: int  # frame width in pixels
    height: int  # frame height in pixels
    header_frames: int | None = None  # frame count written in the container header, if any (may be wrong)
    num_keyframes: int | None = None  # keyframes found while indexing (PyAV), else None


class VideoReader:
    """An open video, read by index; ``read`` may be called several times. The backends subclass it."""

    info: VideoInfo

    def frames(self, indices: Sequence[int], short_side: int | None = None) -> list[np.ndarray]:
        """Frames at ``indices`` (any order, repeats allowed) as uint8 (H, W, 3) RGB arrays, one per index.

        A list, not a stack: a caller that crops copies only the crop (``VideoDataset``). ``short_side`` lets a
        backend that can scale cheaply (PyAV's swscale) shrink frames whose shorter side is larger; others ignore
        it, so callers still resize what they get.
        """
        raise NotImplementedError

    def read(self, indices: Sequence[int], short_side: int | None = None) -> np.ndarray:
        """``frames`` stacked: uint8 (T, H, W, 3) RGB."""
        return np.stack(self.frames(indices, short_side))

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check(self, indices: Sequence[int]) -> list[int]:
        idx = [int(i) for i in indices]
        bad = [i for i in idx if not 0 <= i < self.info.num_frames]
        if bad:
            raise ValueError(f"frame indices {bad[:4]} outside 0..{self.info.num_frames - 1}")
        return idx


def error_reason(err: BaseException) -> str:
    """Short reason for an exception (FFmpeg errors repeat the file name; ``strerror`` does not)."""
    return f"{type(err).__name__}: {getattr(err, 'strerror', None) or err}"


def fill_missing(got: dict[int, np.ndarray], idx: list[int], what: str) -> list[np.ndarray]:
    """``got[i]`` for ``i`` in ``idx``; a missing frame repeats the nearest earlier decoded one."""
    if not got:
        raise DecodeError("no frame could be decoded")
    have = sorted(got)
    out = []
    for i in idx:
        if i not in got:
            log.debug("%s: frame %d missing, repeating a neighbour", what, i)
            i = have[max(bisect.bisect_right(have, i) - 1, 0)]
        out.append(got[i])
    return out


class LRUCache:
    """A thread-safe map keeping the ``size`` most recently used entries (``size`` 0 keeps none)."""

    def __init__(self, size: int) -> None:
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._size = max(0, int(size))

    @property
    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            self._trim()

    def resize(self, size: int) -> None:
        """Keep at most ``size`` entries from now on, dropping the least recently used ones."""
        with self._lock:
            self._size = max(0, int(size))
            self._trim()

    def _trim(self) -> None:
        while len(self._data) > self._size:
            self._data.popitem(last=False)


# Demuxed frame indices (timestamps, keyframes) of the last files opened by PyAV in this process.
INDEX_CACHE = LRUCache(512)
_TAR_MEMBERS = LRUCache(64)  # member table (name -> offset, size) per tar file


# ----------------------------------------------------------------------------------------------- sources


def split_tar_path(path: str | Path) -> tuple[Path, str] | None:
    """``(tar_file, member)`` for a ``file.tar#member`` path, else None."""
    container, sep, member = str(path).partition("#")
    return (Path(container), member) if sep and container.endswith(".tar") else None


def read_tar_member(tar_path: Path, member: str) -> bytes:
    """Bytes of one member of an uncompressed tar file (member offsets are cached per tar file)."""
    if not tar_path.is_file():
        raise DecodeError(f"tar shard {tar_path} does not exist")
    key = (str(tar_path), tar_path.stat().st_mtime_ns)
    members = _TAR_MEMBERS.get(key)
    if members is None:
        with tarfile.open(tar_path, "r:") as tar:
            members = {m.name: (m.offset_data, m.size) for m in tar.getmembers() if m.isfile()}
        _TAR_MEMBERS.put(key, members)
    if member not in members:
        raise DecodeError(f"{tar_path} has no member {member!r}")
    offset, size = members[member]
    with open(tar_path, "rb") as f:
        f.seek(offset)
        return f.read(size)


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


def file_source(path: Path) -> tuple[Path | io.BytesIO, tuple]:
    """The bytes to open (an absolute file path, or a tar member in memory) and a key that changes with the file."""
    tar = split_tar_path(path)
    if tar is not None:
        data = read_tar_member(*tar)
        return io.BytesIO(data), (str(path), len(data), tar[0].stat().st_mtime_ns)
    if not path.is_file():
        if path.exists():
            raise DecodeError("not a regular file")
        if _SCHEME.match(str(path)):
            raise DecodeError("file does not exist (a path is a file name, never a URL or an FFmpeg protocol)")
        raise DecodeError("file does not exist")
    st = path.stat()
    if st.st_size == 0:
        raise DecodeError("empty file (0 bytes)")
    return path.absolute(), (str(path), st.st_size, st.st_mtime_ns)


_log_lock = threading.Lock()  # PyAV's log level is process-wide: one refused open is explained at a time


def _refusal(source: Path | io.BytesIO) -> str | None:
    """Why FFmpeg refused ``source`` under ``_INPUT_OPTIONS``, naming the detected format; None if not refused.

    FFmpeg names the refused format only in its log, which PyAV attaches to the exception while logging is on; so
    the (rare) refused open is repeated with logging on at PANIC level, which records errors but prints nothing.
    """
    import av
    import av.logging
    from av.format import ContainerFormat

    log_line = None
    with _log_lock:
        level = av.logging.get_level()
        if level is None:
            av.logging.set_level(av.logging.PANIC)
        try:
            _open_container(source).close()
        except av.error.ArgumentError as err:
            log_line = getattr(err, "log", None)
        except Exception:  # any other failure: no refusal to explain
            pass
        finally:
            if level is None:
                av.logging.set_level(None)
    if not log_line or "not on whitelist" not in log_line[2]:
        return None
    name = log_line[1]
    try:
        described = f"{name!r} ({ContainerFormat(name, 'r').long_name})"
    except Exception:  # the log names something other than a demuxer
        described = repr(name)
    return (
        f"refused: FFmpeg detects {described}, not a self-contained video file "
        "(mp4/mov, matroska/webm, avi, mpeg-ts/ps, flv, asf, ogg, nut, y4m)"
    )


def _open_container(source: Path | io.BytesIO, gpu: bool = False):
    import av

    hwaccel = None
    if gpu:
        from av.codec.hwaccel import HWAccel

        # the process's GPU: torchrun's LOCAL_RANK (a CUDA device index, as FFmpeg's CUDA device counts them)
        hwaccel = HWAccel("cuda", device=os.environ.get("LOCAL_RANK", "0"), allow_software_fallback=True)
    if isinstance(source, io.BytesIO):
        source.seek(0)
    # "file:" makes FFmpeg read the path as a file name even when it looks like a URL or "concat:...".
    target = source if isinstance(source, io.BytesIO) else f"file:{source}"
    return av.open(target, mode="r", metadata_errors="ignore", options=dict(_INPUT_OPTIONS), hwaccel=hwaccel)


def check_decoder(decoder: str) -> None:
    """Raise ``ValueError`` unless ``decoder`` can run here. Only ``pyav-cuda`` can fail: it needs a CUDA GPU for
    torch and an FFmpeg built with CUDA.

    Call it in the main process before the loader starts: a worker process may not touch CUDA itself.
    """
    if decoder != "pyav-cuda":
        return
    from av.codec.hwaccel import hwdevices_available

    if "cuda" not in hwdevices_available():
        raise ValueError("decoder 'pyav-cuda': this PyAV's FFmpeg was built without CUDA; use decoder 'pyav'")
    import torch

    if not torch.cuda.is_available():
        raise ValueError("decoder 'pyav-cuda' decodes on an NVIDIA GPU, and none is usable here; use decoder 'pyav'")


def worker_start(decoder: str) -> str | None:
    """How worker processes start for ``decoder``: ``"spawn"`` for ``pyav-cuda`` (CUDA does not work in a process
    forked from one that has initialised it), else None (the platform's default)."""
    return "spawn" if decoder == "pyav-cuda" else None


def open_input(source: Path | io.BytesIO, gpu: bool = False):
    """Open ``source`` (from ``file_source``) with PyAV, reading nothing but its own bytes; ``gpu``: decode on CUDA.

    Only the file protocol and the demuxers of ``VIDEO_DEMUXERS`` are allowed; the mov demuxer's external data
    references stay off.

    Raises:
        DecodeError: FFmpeg detects another format (the reason names it) or cannot open the input.
    """
    import av

    try:
        return _open_container(source, gpu)
    except av.error.ArgumentError as err:
        raise DecodeError(_refusal(source) or f"cannot open: {error_reason(err)}") from err
    except Exception as err:  # FFmpeg raises many error types for unreadable input
        raise DecodeError(f"cannot open: {error_reason(err)}") from err


def check_input(path: str | Path) -> Path | io.BytesIO:
    """Refuse a video file or tar member that FFmpeg would not open under ``open_input``'s rules.

    The OpenCV and decord backends call this before handing the file to their own FFmpeg.

    Returns:
        What was checked: the absolute file path, or the tar member's bytes.
    """
    source, _ = file_source(Path(path))
    open_input(source).close()
    if isinstance(source, io.BytesIO):
        source.seek(0)
    return source


# ----------------------------------------------------------------------------------------------- PyAV
class RGBConverter:
    """Decoded frames to RGB ``(H, W, 3)`` uint8 through one swscale context, on ``threads`` threads.

    ``frame.to_ndarray(format=...)`` and ``frame.reformat`` set up a new swscale context for every frame, on PyAV's
    default of one thread per core: that costs more than the conversion itself, and the threads compete with the
    loader's other workers and the model (a 602x256 JPEG frame beside two training runs: 0.1-0.4 ms against 0.4-4.6
    ms; docs/data.md). One converter per video keeps one context; the pixels are the same for any thread count.
    """

    def __init__(self, threads: int = 1, interpolation: str = "BILINEAR") -> None:
        self.threads = threads
        self.interpolation = interpolation
        self._scaler: Any = None

    def __call__(self, frame: Any, size: tuple[int, int] | None = None) -> np.ndarray:
        """``frame`` as RGB, resized to ``size`` (height, width) when given."""
        if self._scaler is None:
            from av.video.reformatter import VideoReformatter

            self._scaler = VideoReformatter()
        h, w = size or (frame.height, frame.width)
        rgb = self._scaler.reformat(
            frame, width=w, height=h, format="rgb24", interpolation=self.interpolation, threads=self.threads
        )
        return rgb.to_ndarray()


class PyAVReader(VideoReader):
    """PyAV reader with a demuxed timestamp index, forward decoding and keyframe seeks (see module docstring).

    Args:
        path: Video file or ``shard.tar#member`` path.
        threads: Decoder threads (1 suits data-loader workers; 0 lets FFmpeg choose).
        seek_gap: Seek to a later keyframe only when it skips more than this many frames.
        index_cache: Where demuxed frame indices are kept (default ``INDEX_CACHE``, shared by the process).
        gpu: Decode on the process's CUDA GPU (``pyav-cuda``; check ``check_decoder`` first).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        threads: int = 1,
        seek_gap: int = SEEK_GAP,
        index_cache: LRUCache | None = None,
        gpu: bool = False,
    ) -> None:
        self.path = Path(path)
        self.gpu = gpu
        self.seek_gap = seek_gap
        self.threads = threads
        self._cache = INDEX_CACHE if index_cache is None else index_cache
        self._size: tuple[int, int] | None = None
        self._convert = RGBConverter(threads)  # one swscale context for every frame of this video
        self._src, key = file_source(self.path)
        self._open()
        try:
            if not self._container.streams.video:
                raise DecodeError("no video stream")
            # self.keyframes: positions of the keyframes in presentation order (empty without usable timestamps)
            self._pts, self.keyframes, fallback = self._index(key)
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
                num_keyframes=len(self.keyframes) if self._pts else None,
            )
        except DecodeError:
            self.close()
            raise
        except Exception as err:
            self.close()
            raise DecodeError(error_reason(err)) from err

    def _open(self) -> None:
        """Open the file, or reopen it from the start: the one rewind that works for every container."""
        self.close()
        self._container = open_input(self._src, self.gpu)
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
        hit = self._cache.get(key)
        if hit is not None:
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
        self._cache.put(key, result)
        return result

    def frames(self, indices: Sequence[int], short_side: int | None = None) -> list[np.ndarray]:
        idx = self._check(indices)
        wanted = sorted(set(idx))
        h, w = self.info.height, self.info.width
        # swscale shrinks while converting to RGB: about 2x cheaper than full-size RGB plus a torch resize.
        self._size = short_side_size(h, w, short_side) if short_side is not None and min(h, w) > short_side else None
        try:
            got = self._read_seeking(wanted) if self._pts else {}
            missing = [i for i in wanted if i not in got]
            if missing:
                got.update(self._read_sequential(missing))
        except DecodeError:
            raise
        except Exception as err:
            raise DecodeError(f"decoding failed: {error_reason(err)}") from err
        return fill_missing(got, idx, str(self.path))

    def count_decodable(self) -> int:
        """Decode every frame from the start without converting it; returns how many decoded."""
        self._open()
        try:
            return sum(1 for _ in self._container.decode(self._stream))
        except Exception as err:
            raise DecodeError(f"decoding failed: {error_reason(err)}") from err

    def _read_seeking(self, wanted: list[int]) -> dict[int, np.ndarray]:
        position: dict[int | None, int] = {p: i for i, p in enumerate(self._pts)}
        wanted_set = set(wanted)
        got: dict[int, np.ndarray] = {}
        frames = None
        current = -1  # index of the last decoded frame
        for target in wanted:
            if target in got:
                continue
            key = self.keyframes[bisect.bisect_right(self.keyframes, target) - 1]
            if frames is None or current >= target or key - current > self.seek_gap:
                self._container.seek(self._pts[key], stream=self._stream, backward=True)
                frames = self._container.decode(self._stream)
            for frame in frames:
                i = position.get(frame.pts)
                if i is None:
                    continue
                current = i
                if i in wanted_set and i not in got:
                    got[i] = self._convert(frame, self._size)
                if i >= target:
                    break
            else:
                break  # stream ended early
        return got

    def _read_sequential(self, wanted: list[int]) -> dict[int, np.ndarray]:
        self._open()
        got: dict[int, np.ndarray] = {}
        wanted_set = set(wanted)
        for i, frame in enumerate(self._container.decode(self._stream)):
            if i in wanted_set:
                got[i] = self._convert(frame, self._size)
            if i >= wanted[-1]:
                break
        return got


# ----------------------------------------------------------------------------------------------- entry points
def available_decoders() -> list[str]:
    """Backends usable here (``pyav`` always; ``pyav-cuda`` with a CUDA GPU)."""
    import importlib.util

    names = ["pyav"]
    try:
        check_decoder("pyav-cuda")
        names.append("pyav-cuda")
    except ValueError:
        pass
    names += [n for n, mod in (("opencv", "cv2"), ("decord", "decord")) if importlib.util.find_spec(mod)]
    return names


def open_video(path: str | Path, decoder: str = "pyav") -> VideoReader:
    """Open a video file, tar member or frame folder with the named backend.

    Raises:
        DecodeError: The video cannot be read.
        ValueError: Unknown or uninstalled decoder.
    """
    from omniclip.data.backends import DecordReader, FrameFolderReader, OpenCVReader

    path = Path(path)
    if path.is_dir():
        return FrameFolderReader(path)
    readers: dict[str, Callable[[Path], VideoReader]] = {
        "pyav": PyAVReader,
        "pyav-cuda": functools.partial(PyAVReader, gpu=True),
        "opencv": OpenCVReader,
        "decord": DecordReader,
    }
    if decoder not in readers:
        raise ValueError(f"unknown decoder {decoder!r}; choose one of {DECODERS}")
    return readers[decoder](path)


def probe(path: str | Path, decoder: str = "pyav") -> VideoInfo:
    """Frame count, frame rate and size of a video (see ``VideoInfo``)."""
    with open_video(path, decoder) as video:
        return video.info


def read_frames(path: str | Path, indices: Sequence[int], decoder: str = "pyav") -> np.ndarray:
    """Decode the frames at ``indices`` as uint8 (T, H, W, 3) RGB."""
    with open_video(path, decoder) as video:
        return video.read(indices)
