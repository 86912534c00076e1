"""Re-encode a dataset to a short side of 256 px (optionally into tar shards) so that decoding keeps up.

``omniclip prepare LIST --root R --out OUT`` decodes every video with PyAV, scales it so that its shorter side is
``short_side`` (smaller videos whose keyframes are at most ``gop`` frames apart are copied unchanged), encodes H.264
with a short keyframe interval (cheap seeks), writes it to ``OUT/<same relative path>.mp4`` and writes
``OUT/<list name>`` with the same lines and labels. ``gop=1`` makes every frame a keyframe (all-intra): a sampled
frame is decoded alone, at the price of larger files. ``fmt="frames"`` writes each video as a folder of JPEG frames
instead (``OUT/<relative path without suffix>/img_00001.jpg`` ..., at ``quality``), the layout ``FrameFolderReader``
reads: no video decoding at all, one image per sampled frame. docs/data.md measures what each buys.
Frames are re-timed at a constant rate: frame ``i`` stays frame ``i`` (what the samplers index), variable frame
rates are not kept. With ``shards=N`` the videos go into ``OUT/shards/shard-0000.tar`` ... (uncompressed tar,
contiguous runs of the list) and the list lines read ``shards/shard-0000.tar#<relative path> <label>``;
``VideoDataset`` reads such members directly (``decode.read_tar_member``). Unreadable videos are left out and
listed (source path and reason) in ``OUT/failed.txt``. Sources are opened like every decoder input
(``decode.open_input``: a self-contained video file, nothing else read). Two different sources that would be written
to the same output (``a.avi`` and ``a.mp4``) are refused before anything is encoded; a source listed twice is
encoded once and keeps both list lines.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tarfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from omniclip.data.check import worker_map
from omniclip.data.decode import DecodeError, RGBConverter, error_reason, file_source, open_input, split_tar_path
from omniclip.data.encode import VideoWriter
from omniclip.data.records import VideoRecord, read_annotations
from omniclip.data.transforms import short_side_size
from omniclip.files import atomic_path, write_text

log = logging.getLogger(__name__)

PrepareFormat = Literal["mp4", "frames"]
FRAME_NAME = "img_{:05d}.jpg"  # frame i (from 0) of a frame folder is FRAME_NAME.format(i + 1)


@dataclass
class PrepareReport:
    """What ``prepare_dataset`` wrote."""

    list_file: Path
    written: int
    failed: list[tuple[str, str]] = field(default_factory=list)  # (source path, reason)
    shards: list[Path] = field(default_factory=list)
    bytes_in: int = 0
    bytes_out: int = 0


@contextlib.contextmanager
def _open_source(src: Path) -> Iterator[tuple[Any, Any]]:
    """``(container, first video stream)`` of a source video file, opened as ``decode.open_input`` opens it.

    Raises:
        DecodeError: A tar member, a frame folder, or not a readable, self-contained video file.
    """
    if split_tar_path(src) is not None:
        raise DecodeError("tar members cannot be prepared again; prepare the original files")
    if src.is_dir():
        raise DecodeError("a frame folder is already decoded; prepare re-encodes video files")
    with open_input(file_source(src)[0]) as container:
        if not container.streams.video:
            raise DecodeError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        yield container, stream


def _scaled_frames(container, stream, height: int, width: int) -> Iterator[np.ndarray]:
    """Every frame as RGB ``(height, width, 3)`` uint8, area-scaled by one scaler; ``DecodeError`` if there is none."""
    convert = RGBConverter(interpolation="AREA")
    frame = None
    for frame in container.decode(stream):
        yield convert(frame, (height, width))
    if frame is None:
        raise DecodeError("no frame decoded")


def reencode(src: Path, dst: Path, *, short_side: int = 256, crf: int = 23, gop: int = 16, threads: int = 0) -> None:
    """Re-encode one video so that its shorter side is at most ``short_side`` (copy it if already small).

    Raises:
        DecodeError: The source is not a self-contained video file (see ``decode.open_input``) or has no frame.
    """
    with _open_source(src) as (container, stream):
        h, w = stream.codec_context.height, stream.codec_context.width
        small = min(h, w) <= short_side and "mp4" in container.format.name.split(",") and src.suffix.lower() == ".mp4"
        if small and longest_gop(container, stream) <= gop:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            return
        if small:
            container.seek(0)  # back to the start after the keyframe scan
        th, tw = short_side_size(h, w, min(short_side, h, w))
        th, tw = th + th % 2, tw + tw % 2  # yuv420p needs even sides
        rate = stream.average_rate or stream.guessed_rate or 25
        with VideoWriter(dst, tw, th, fps=float(rate), crf=crf, gop=gop, threads=threads) as writer:
            for rgb in _scaled_frames(container, stream, th, tw):
                writer.write(rgb)


def longest_gop(container, stream) -> int:
    """The most packets from one keyframe to the next (1 = every frame a keyframe); demuxes the whole stream."""
    longest = run = 0
    for packet in container.demux(stream):
        if packet.size == 0:
            continue  # flush packet
        run = 1 if packet.is_keyframe else run + 1
        longest = max(longest, run)
    return longest


def extract_frames(src: Path, dst: Path, *, short_side: int = 256, quality: int = 90) -> int:
    """Decode one video into the folder ``dst`` as ``img_00001.jpg`` ... (JPEG at ``quality``), short side at most
    ``short_side``; written beside ``dst`` and renamed into place. Returns the number of frames.

    Raises:
        DecodeError: The source is not a self-contained video file or has no frame.
    """
    from PIL import Image

    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        count = 0
        with _open_source(src) as (container, stream):
            h, w = stream.codec_context.height, stream.codec_context.width
            for rgb in _scaled_frames(container, stream, *short_side_size(h, w, min(short_side, h, w))):
                Image.fromarray(rgb).save(tmp / FRAME_NAME.format(count + 1), quality=quality)
                count += 1
        shutil.rmtree(dst, ignore_errors=True)
        os.replace(tmp, dst)
        return count
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _relative(rec: VideoRecord, root: Path | None, fmt: PrepareFormat) -> str:
    path = rec.path if root is None else Path(os.path.relpath(rec.path, root))
    return str(path.with_suffix(".mp4" if fmt == "mp4" else ""))


def _job(args: tuple[Path, Path, int, int, int, int, PrepareFormat, int]) -> str | None:
    src, dst, short_side, crf, gop, threads, fmt, quality = args
    try:
        if fmt == "frames":
            extract_frames(src, dst, short_side=short_side, quality=quality)
        else:
            reencode(src, dst, short_side=short_side, crf=crf, gop=gop, threads=threads)
    except DecodeError as err:
        return str(err)
    except Exception as err:  # FFmpeg and PIL raise many error types for unreadable input
        return error_reason(err)
    return None


def disk_bytes(path: Path) -> int:
    """Bytes of a file, or of the files of a folder."""
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file()) if path.is_dir() else path.stat().st_size


def _write_shards(out: Path, staging: Path, rels: list[str], shards: int) -> tuple[list[Path], dict[str, str]]:
    """Pack the files encoded under ``staging`` into ``shards`` tar files (contiguous runs) and delete ``staging``;
    returns the shards and rel -> new list path."""
    names, paths = {}, []
    for s in range(shards):
        members = [r for i, r in enumerate(rels) if i * shards // len(rels) == s]
        shard = out / "shards" / f"shard-{s:04d}.tar"
        with atomic_path(shard) as tmp, tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for rel in members:
                tar.add(staging / rel, arcname=rel)
                names[rel] = f"shards/{shard.name}#{rel}"
        paths.append(shard)
    shutil.rmtree(staging)
    return paths, names


def prepare_dataset(
    list_file: str | Path,
    out: str | Path,
    *,
    root: str | Path | None = None,
    short_side: int = 256,
    shards: int = 0,
    crf: int = 23,
    gop: int = 16,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
    fmt: PrepareFormat = "mp4",
    quality: int = 90,
) -> PrepareReport:
    """Re-encode every video of a list, or extract its frames (``fmt="frames"``; see the module docstring).

    Raises:
        ValueError: ``out`` is the dataset root, two sources would be written to one output, frame folders into
            shards, or a bad ``fmt``, ``gop`` or ``quality``.
    """
    if fmt not in ("mp4", "frames"):
        raise ValueError(f"format must be mp4 or frames, got {fmt!r}")
    if fmt == "frames" and shards > 0:
        raise ValueError("--shards packs video files; frame folders are written as folders (drop --shards)")
    if gop < 1:
        raise ValueError(f"--gop must be at least 1 (1 = every frame a keyframe), got {gop}")
    if not 1 <= quality <= 100:
        raise ValueError(f"--quality must be a JPEG quality from 1 to 100, got {quality}")
    out = Path(out)
    records = read_annotations(list_file, root)
    root_path = Path(root) if root is not None else None
    rels = [_relative(r, root_path, fmt) for r in records]
    if out.resolve() == (root_path or Path(".")).resolve():
        raise ValueError(f"--out {out} must differ from the dataset root, or the originals would be overwritten")
    sources: dict[str, Path] = {}  # output -> its one source, in list order
    for rec, rel in zip(records, rels, strict=True):
        first = sources.setdefault(rel, rec.path)
        if os.path.normpath(first) != os.path.normpath(rec.path):
            raise ValueError(
                f"{list_file}: {first} and {rec.path} would both be written to {out / rel}; "
                "rename one of them (prepare names outputs by the path without its extension)"
            )
    threads = 1 if workers > 1 else 0
    dest = out / ".staging" if shards > 0 else out
    jobs = [(src, dest / rel, short_side, crf, gop, threads, fmt, quality) for rel, src in sources.items()]
    per_output = Counter(rels)  # list lines per output, for progress
    outcome: dict[str, str | None] = {}  # output -> None or why its source failed
    with worker_map(_job, jobs, workers=workers, chunksize=2) as outputs:
        for rel, res in zip(sources, outputs, strict=True):
            outcome[rel] = res
            if progress is not None:
                progress(per_output[rel])
    done = [rel for rel, why in outcome.items() if why is None]
    report = PrepareReport(out / Path(list_file).name, len(done))
    report.failed = [(str(sources[rel]), why) for rel, why in outcome.items() if why is not None]
    report.bytes_in = sum(sources[rel].stat().st_size for rel in done)
    report.bytes_out = sum(disk_bytes(dest / rel) for rel in done)
    names = {rel: rel for rel in done}
    if shards > 0 and done:
        report.shards, names = _write_shards(out, dest, done, min(shards, len(done)))
    lines = [f"{names[rel]} {rec.label}\n" for rec, rel in zip(records, rels, strict=True) if outcome[rel] is None]
    write_text(report.list_file, "".join(lines))
    write_text(out / "failed.txt", "".join(f"{src}\t{why}\n" for src, why in report.failed))
    for src, why in report.failed:
        log.warning("left out %s: %s", src, why)
    return report
