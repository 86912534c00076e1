"""Pre-flight check of a dataset: which videos cannot be decoded, and why (``omniclip verify``).

Like mmaction2's ``check_videos``, but counted and listed instead of stopping at the first broken file. ``quick``
mode opens each video, indexes it and decodes its first, middle and last frames (catches missing, empty, garbage,
truncated files and files without a video stream); ``full`` mode decodes every frame.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from omniclip.data.decode import DecodeError, PyAVReader, open_video
from omniclip.data.records import VideoRecord
from omniclip.files import write_text

CheckMode = Literal["quick", "full"]


@dataclass
class VerifyReport:
    """Result of checking a list of videos.

    Attributes:
        total: Videos checked.
        bad: (record, reason) for each unreadable video, in list order.
        frame_count_mismatch: Videos whose header frame count differs from the frames indexed (readable, but
            header counts are not to be trusted for them).
    """

    total: int
    bad: list[tuple[VideoRecord, str]] = field(default_factory=list)
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


def _check_star(args: tuple[VideoRecord, str, str]) -> tuple[int, str | None, bool]:
    rec, decoder, mode = args
    reason, mismatch = check_video(rec, decoder, mode)  # type: ignore[arg-type]
    return rec.index, reason, mismatch


def verify_records(
    records: Sequence[VideoRecord],
    *,
    workers: int = 1,
    decoder: str = "pyav",
    mode: CheckMode = "quick",
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Check every video, ``workers`` processes in parallel; ``progress(1)`` after each."""
    by_index = {r.index: r for r in records}
    jobs = [(r, decoder, mode) for r in records]
    report = VerifyReport(total=len(records))
    bad: dict[int, str] = {}

    def collect(results) -> None:
        for index, reason, mismatch in results:
            if reason is not None:
                bad[index] = reason
            report.frame_count_mismatch += int(mismatch)
            if progress is not None:
                progress(1)

    if workers > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            collect(pool.imap_unordered(_check_star, jobs, chunksize=4))
    else:
        collect(map(_check_star, jobs))
    report.bad = [(by_index[i], bad[i]) for i in sorted(bad)]
    return report


def write_bad_list(report: VerifyReport, path: str | Path) -> Path:
    """Write ``path<TAB>reason`` per unreadable video (empty file when all are readable)."""
    lines = [f"{rec.path}\t{reason.replace(chr(10), ' ')}\n" for rec, reason in report.bad]
    return write_text(path, "".join(lines))
