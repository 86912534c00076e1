"""Pre-flight check of a dataset: which videos cannot be decoded, and why (``omniclip verify``).

Like mmaction2's ``check_videos``, but counted and listed instead of stopping at the first broken file. ``quick``
mode opens each video, indexes it and decodes its first, middle and last frames (catches missing, empty, garbage,
truncated files and files without a video stream); ``full`` mode decodes every frame.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing as mp
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from omniclip.data.decode import DecodeError, PyAVReader, check_decoder, open_video, worker_start
from omniclip.data.records import VideoRecord
from omniclip.files import write_text

CheckMode = Literal["quick", "full"]
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class VerifyReport:
    """Result of checking a list of videos."""

    total: int  # videos checked
    bad: list[tuple[VideoRecord, str]] = field(default_factory=list)  # (record, reason) per unreadable video, in order
    # videos whose header frame count differs from the frames indexed (readable, but their header count is not trusted)
    frame_count_mismatch: int = 0

    @property
    def good(self) -> int:
        return self.total - len(self.bad)


def check_video(rec: VideoRecord, decoder: str = "pyav", mode: CheckMode = "quick") -> tuple[str | None, bool]:
    """Check one video.

    Returns:
        (reason it is unreadable or None, whether the header frame count disagrees with the index).
    """
    try:
        with open_video(rec.path, decoder) as video:
            n = video.info.num_frames
            if mode == "quick":
                video.read(sorted({0, n // 2, n - 1}))
            elif isinstance(video, PyAVReader):
                decoded = video.count_decodable()
                if decoded < n:
                    return f"only {decoded} of {n} frames decode (truncated or corrupt)", False
            else:
                for start in range(0, n, 32):  # chunks keep memory bounded on long videos
                    video.read(range(start, min(start + 32, n)))
            header = video.info.header_frames
            return None, header is not None and header != n
    except (DecodeError, OSError) as err:
        return str(err), False


@contextlib.contextmanager
def worker_map(
    fn: Callable[[T], R], items: Iterable[T], *, workers: int, chunksize: int, start: str | None = "fork"
) -> Iterator[Iterator[R]]:
    """``fn`` over ``items`` in order: in ``workers`` processes (started by ``start``) when above 1, else here.

    The pool is terminated when the block exits, also on an exception.
    """
    if workers <= 1:
        yield map(fn, items)
        return
    with mp.get_context(start).Pool(workers) as pool:
        yield pool.imap(fn, items, chunksize=chunksize)


def verify_records(
    records: Sequence[VideoRecord],
    *,
    workers: int = 1,
    decoder: str = "pyav",
    mode: CheckMode = "quick",
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Check every video, ``workers`` processes in parallel; ``progress(1)`` after each."""
    check_decoder(decoder)
    report = VerifyReport(total=len(records))
    check = functools.partial(check_video, decoder=decoder, mode=mode)
    start = worker_start(decoder) or "fork"
    with worker_map(check, records, workers=workers, chunksize=4, start=start) as results:
        for rec, (reason, mismatch) in zip(records, results, strict=True):
            if reason is not None:
                report.bad.append((rec, reason))
            report.frame_count_mismatch += int(mismatch)
            if progress is not None:
                progress(1)
    return report


def write_bad_list(report: VerifyReport, path: str | Path) -> Path:
    """Write ``path<TAB>reason`` per unreadable video (empty file when all are readable)."""
    lines = [f"{rec.path}\t{reason.replace(chr(10), ' ')}\n" for rec, reason in report.bad]
    return write_text(path, "".join(lines))
