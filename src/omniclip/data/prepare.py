"""Re-encode a dataset to a short side of 256 px (optionally into tar shards) so that decoding keeps up.

``omniclip prepare LIST --root R --out OUT`` decodes every video with PyAV, scales it so that its shorter side is
``short_side`` (smaller videos are copied unchanged), encodes H.264 with a short keyframe interval (cheap seeks),
writes it to ``OUT/<same relative path>.mp4`` and writes ``OUT/<list name>`` with the same lines and labels.
Frames are re-timed at a constant rate: frame ``i`` stays frame ``i`` (what the samplers index), variable frame
rates are not kept. With ``shards=N`` the videos go into ``OUT/shards/shard-0000.tar`` ... (uncompressed tar,
contiguous runs of the list) and the list lines read ``shards/shard-0000.tar#<relative path> <label>``;
``VideoDataset`` reads such members directly (``decode.read_tar_member``). Unreadable videos are left out and
listed in ``OUT/failed.txt``.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from omniclip.data.decode import DecodeError, split_tar_path
from omniclip.data.encode import VideoWriter
from omniclip.data.records import VideoRecord, read_annotations
from omniclip.data.transforms import short_side_size
from omniclip.files import write_text

log = logging.getLogger(__name__)


@dataclass
class PrepareReport:
    """What ``prepare_dataset`` wrote."""

    list_file: Path
    written: int
    failed: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)
    shards: list[Path] = field(default_factory=list)
    bytes_in: int = 0
    bytes_out: int = 0


def reencode(src: Path, dst: Path, *, short_side: int = 256, crf: int = 23, gop: int = 16, threads: int = 0) -> None:
    """Re-encode one video so that its shorter side is at most ``short_side`` (copy it if already small).

    Raises:
        DecodeError: The source cannot be decoded.
    """
    import av

    if split_tar_path(src) is not None:
        raise DecodeError("tar members cannot be prepared again; prepare the original files")
    if src.is_dir():
        raise DecodeError("a frame folder is already decoded; prepare re-encodes video files")
    if not src.is_file() or src.stat().st_size == 0:
        raise DecodeError("missing or empty file")
    try:
        with av.open(str(src), metadata_errors="ignore") as container:
            if not container.streams.video:
                raise DecodeError("no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            h, w = stream.codec_context.height, stream.codec_context.width
            if min(h, w) <= short_side and src.suffix.lower() == ".mp4":
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
                return
            th, tw = short_side_size(h, w, min(short_side, min(h, w)))
            th, tw = th + th % 2, tw + tw % 2  # yuv420p needs even sides
            rate = stream.average_rate or stream.guessed_rate or 25
            writer = VideoWriter(dst, tw, th, fps=float(rate), crf=crf, gop=gop, threads=threads)
            try:
                count = 0
                for frame in container.decode(stream):
                    writer.write(frame.reformat(width=tw, height=th, format="rgb24", interpolation="AREA").to_ndarray())
                    count += 1
                if count == 0:
                    raise DecodeError("no frame decoded")
            except BaseException:
                writer.abort()
                raise
            writer.close()
    except DecodeError:
        raise
    except Exception as err:
        raise DecodeError(f"{type(err).__name__}: {getattr(err, 'strerror', None) or err}") from err


def _relative(rec: VideoRecord, root: Path | None) -> str:
    path = rec.path if root is None else Path(os.path.relpath(rec.path, root))
    return str(path.with_suffix(".mp4"))


def _job(args: tuple[Path, Path, int, int, int, int]) -> str | None:
    src, dst, short_side, crf, gop, threads = args
    try:
        reencode(src, dst, short_side=short_side, crf=crf, gop=gop, threads=threads)
    except DecodeError as err:
        return str(err)
    return None


def _write_shards(out: Path, staging: Path, rels: list[str], shards: int) -> tuple[list[Path], dict[str, str]]:
    """Pack the files encoded under ``staging`` into ``shards`` tar files (contiguous runs) and delete ``staging``;
    returns the shards and rel -> new list path."""
    names, paths = {}, []
    for s in range(shards):
        members = [r for i, r in enumerate(rels) if i * shards // len(rels) == s]
        shard = out / "shards" / f"shard-{s:04d}.tar"
        shard.parent.mkdir(parents=True, exist_ok=True)
        tmp = shard.with_name(f".{shard.name}.tmp{os.getpid()}")
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for rel in members:
                tar.add(staging / rel, arcname=rel)
                names[rel] = f"shards/{shard.name}#{rel}"
        os.replace(tmp, shard)
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
) -> PrepareReport:
    """Re-encode every video of a list (see the module docstring); returns a ``PrepareReport``."""
    out = Path(out)
    records = read_annotations(list_file, root)
    root_path = Path(root) if root is not None else None
    rels = [_relative(r, root_path) for r in records]
    if out.resolve() == (root_path or Path(".")).resolve():
        raise ValueError(f"--out {out} must differ from the dataset root, or the originals would be overwritten")
    threads = 1 if workers > 1 else 0
    dest = out / ".staging" if shards > 0 else out
    jobs = [(r.path, dest / rel, short_side, crf, gop, threads) for r, rel in zip(records, rels, strict=True)]
    results: list[str | None] = []
    if workers > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            for res in pool.imap(_job, jobs, chunksize=2):
                results.append(res)
                if progress is not None:
                    progress(1)
    else:
        for job in jobs:
            results.append(_job(job))
            if progress is not None:
                progress(1)
    ok = [i for i, res in enumerate(results) if res is None]
    report = PrepareReport(out / Path(list_file).name, len(ok))
    report.failed = [(rels[i], res) for i, res in enumerate(results) if res is not None]
    report.bytes_in = sum(records[i].path.stat().st_size for i in ok)
    report.bytes_out = sum((dest / rels[i]).stat().st_size for i in ok)
    names = {rels[i]: rels[i] for i in ok}
    if shards > 0 and ok:
        report.shards, names = _write_shards(out, dest, [rels[i] for i in ok], min(shards, len(ok)))
    write_text(report.list_file, "".join(f"{names[rels[i]]} {records[i].label}\n" for i in ok))
    write_text(out / "failed.txt", "".join(f"{rel}\t{why}\n" for rel, why in report.failed))
    for rel, why in report.failed:
        log.warning("left out %s: %s", rel, why)
    return report
