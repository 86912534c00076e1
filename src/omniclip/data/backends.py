"""Decoder backends besides PyAV: OpenCV, decord (both optional) and folders of extracted frames.

They implement ``decode.VideoReader``; ``decode.open_video`` picks one. See ``decode`` for the frame-index rules.
OpenCV and decord open files through their own FFmpeg, without PyAV's input rules: ``decode.check_input`` first
checks with PyAV that the file is a self-contained video file (the same refusals as the PyAV backend), and they
get its absolute path, so FFmpeg never reads it as a URL or an FFmpeg protocol.
"""

from __future__ import annotations

import importlib
import io
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from omniclip.data.decode import (
    IMAGE_SUFFIXES,
    DecodeError,
    RGBConverter,
    VideoInfo,
    VideoReader,
    check_input,
    fill_missing,
    split_tar_path,
)

OPENCV_SEEK_GAP = 64  # frames: OpenCV grabs forward up to this far, and sets CAP_PROP_POS_FRAMES beyond it


def _import(module: str, decoder: str, package: str) -> Any:
    """The optional decoder library ``module``; when it is missing, a ValueError says what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ValueError(f"decoder {decoder!r} needs {package}; pip install it or use pyav") from err


class OpenCVReader(VideoReader):
    """OpenCV (FFmpeg backend) reader: header frame count, forward ``grab``, ``CAP_PROP_POS_FRAMES`` for long gaps."""

    def __init__(self, path: str | Path) -> None:
        cv2 = _import("cv2", "opencv", "opencv-python-headless")
        self.path = Path(path)
        if split_tar_path(self.path) is not None:
            raise DecodeError("OpenCV cannot read tar members; use the pyav decoder")
        source = check_input(self.path)
        self._cap = cv2.VideoCapture(str(source), cv2.CAP_FFMPEG)
        if not self._cap.isOpened():
            raise DecodeError("OpenCV cannot open the file")
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if count <= 0:
            self.close()
            raise DecodeError("OpenCV reports no frames")
        self.info = VideoInfo(
            num_frames=count,
            fps=float(self._cap.get(cv2.CAP_PROP_FPS)),
            width=int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            header_frames=count,
        )
        self._next = 0

    def close(self) -> None:
        cap = getattr(self, "_cap", None)
        if cap is not None:
            cap.release()
            del self._cap

    def frames(self, indices: Sequence[int], short_side: int | None = None) -> list[np.ndarray]:
        import cv2

        idx = self._check(indices)
        got: dict[int, np.ndarray] = {}
        for target in sorted(set(idx)):
            if target < self._next or target - self._next > OPENCV_SEEK_GAP:
                self._cap.set(cv2.CAP_PROP_POS_FRAMES, target)
                self._next = target
            ok = True
            while ok and self._next < target:
                ok = self._cap.grab()
                self._next += 1
            ok, bgr = self._cap.read() if ok else (False, None)
            if not ok or bgr is None:
                break  # the header promised more frames than the file has
            self._next += 1
            got[target] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return fill_missing(got, idx, str(self.path))


class DecordReader(VideoReader):
    """decord reader (optional; decord is unmaintained since 2021)."""

    def __init__(self, path: str | Path) -> None:
        decord = _import("decord", "decord", "decord")
        self.path = Path(path)
        source = check_input(self.path)
        try:
            self._vr = decord.VideoReader(
                source if isinstance(source, io.BytesIO) else str(source), ctx=decord.cpu(0), num_threads=1
            )
            height, width = self._vr[0].shape[:2]
        except Exception as err:
            raise DecodeError(f"decord cannot open: {err}") from err
        self.info = VideoInfo(len(self._vr), float(self._vr.get_avg_fps()), int(width), int(height), len(self._vr))

    def frames(self, indices: Sequence[int], short_side: int | None = None) -> list[np.ndarray]:
        return list(self.read(indices))

    def read(self, indices: Sequence[int], short_side: int | None = None) -> np.ndarray:
        idx = self._check(indices)
        try:
            return self._vr.get_batch(idx).asnumpy()
        except Exception as err:
            raise DecodeError(f"decord failed: {err}") from err


# ----------------------------------------------------------------------------------------------- frame folders
_DIGITS = re.compile(r"(\d+)")


def _natural_key(name: str) -> list:
    """``2.png`` before ``10.png``: runs of digits compare as numbers."""
    return [int(t) if t.isdigit() else t for t in _DIGITS.split(name)]


def _frame_files(folder: Path) -> list[str]:
    """The image file names of a frame folder in natural order, hidden files left out.

    Each must be a regular file, and a symlink must stay in the folder. Names, not paths: a folder holds hundreds of
    frames and a clip reads eight (building a ``Path`` per frame took more time than listing the folder).
    """
    real = os.path.realpath(folder)
    names = []
    with os.scandir(folder) as entries:
        for entry in entries:
            name = entry.name
            if name.startswith(".") or not name.lower().endswith(IMAGE_SUFFIXES):
                continue  # hidden files are not frames (macOS copies leave "._img_00001.jpg" metadata beside them)
            if entry.is_symlink() and os.path.dirname(os.path.realpath(entry.path)) != real:
                raise DecodeError(f"frame {name} is a symlink leading out of its folder")
            if not entry.is_file():
                raise DecodeError(f"frame {name} is not a regular file")
            names.append(name)
    return _natural_sort(names)


def _natural_sort(names: list[str]) -> list[str]:
    """``names`` sorted by ``_natural_key``; a plain sort when that gives the same order, as it does for the usual
    ``img_00001.jpg``: ASCII names of one length whose every character position is a digit in all or in none (its
    digit runs are then of one width at the same places). A 250-frame folder lists in a tenth of the time."""
    if len(set(map(len, names))) == 1 and all(map(str.isascii, names)):
        table = np.frombuffer("".join(names).encode("ascii"), dtype=np.uint8).reshape(len(names), -1)
        digit = (table >= ord("0")) & (table <= ord("9"))
        if (digit == digit[0]).all():
            return sorted(names)
    return sorted(names, key=_natural_key)


class FrameFolderReader(VideoReader):
    """A folder of extracted frames, sorted naturally (``img_00001.jpg``, ``2.png`` < ``10.png``).

    It reads only the regular image files of the folder: a frame that is a symlink out of the folder is refused
    (``records.read_annotations`` refuses a folder that resolves outside the dataset root). JPEG frames go through
    FFmpeg's JPEG decoder, strict about damage (``err_detect=explode``), straight from the file's bytes, with no
    demuxer: 0.4-0.6x the time of Pillow's decode and copy out (docs/data.md). A frame it refuses, and every other
    format, is read by Pillow, whose error names the damage. Every frame must have the first frame's size.
    """

    def __init__(self, path: str | Path) -> None:
        from PIL import Image

        self.path = Path(path)
        self._names = _frame_files(self.path)
        if not self._names:
            raise DecodeError(f"no frame images ({', '.join(IMAGE_SUFFIXES)}) in the folder")
        with Image.open(self.path / self._names[0]) as img:
            width, height = img.size
        self.info = VideoInfo(len(self._names), 0.0, width, height)
        self._jpeg: Any = None  # FFmpeg's JPEG decoder, made at the first JPEG frame
        self._rgb = RGBConverter()  # its frames' conversion to RGB

    def image(self, i: int) -> np.ndarray:
        """Frame ``i`` as RGB (H, W, 3) uint8; ``DecodeError`` when it cannot be read or has another size."""
        name = self._names[i]
        path = os.path.join(self.path, name)
        rgb = self._ffmpeg_jpeg(path) if name.lower().endswith((".jpg", ".jpeg")) else None
        if rgb is None:
            from PIL import Image

            try:
                with Image.open(path) as img:
                    rgb = np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
            except OSError as err:
                raise DecodeError(f"{name}: {err}") from err
        if rgb.shape[:2] != (self.info.height, self.info.width):
            h, w = rgb.shape[:2]
            raise DecodeError(f"{name} is {w}x{h}, the folder's first frame {self.info.width}x{self.info.height}")
        return rgb

    def _ffmpeg_jpeg(self, path: str) -> np.ndarray | None:
        import av

        if self._jpeg is None:
            self._jpeg = av.CodecContext.create("mjpeg", "r")
            self._jpeg.options = {"err_detect": "explode"}  # a truncated file is an error, not a grey stripe
        try:
            with open(path, "rb") as file:
                frames = self._jpeg.decode(av.Packet(file.read()))
            return self._rgb(frames[0]) if len(frames) == 1 else None
        except (av.error.FFmpegError, OSError, ValueError):
            self._jpeg = None  # a fresh decoder for the next frame
            return None

    def frames(self, indices: Sequence[int], short_side: int | None = None) -> list[np.ndarray]:
        idx = self._check(indices)
        cache = {i: self.image(i) for i in sorted(set(idx))}
        return [cache[i] for i in idx]
