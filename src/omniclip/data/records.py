"""Annotation lists: parse video lists into ``VideoRecord`` objects and read class-name files.

Formats follow the X-CLIP / ViFi-CLIP / mmaction2 lineage (PROTOCOLS.md, "Data formats"):

- ``video``: ``relative/path.mp4 <label>`` separated by spaces, a tab or a comma;
- ``rawframes``: mmaction2 raw-frame lists ``frame_dir total_frames label``;
- ``csv``: a CSV file with a header naming a path column (``path``, ``video``, ``filename``, ``file``, ``youtube_id``)
  and a label column (``label``, ``label_id``, ``class_id``, ``class``); a quoted field may hold commas.

In ``video`` and ``rawframes`` lines the numbers are the last fields and the path is everything before them, exactly
as written (inner spaces and commas included). Numbers are plain ASCII digits. A video listed twice is kept (it is
read and scored twice) with a warning naming both lines.

Paths are relative to a dataset root. Absolute paths and ``..`` paths that leave the root are refused unless
``allow_outside_root=True``, and so is a frame folder that resolves outside the root through a symlink. A path may
name a member of an uncompressed tar shard as ``shard-0000.tar#member.mp4`` (written by ``omniclip prepare
--shards``).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from omniclip.data.decode import split_tar_path
from omniclip.files import write_text

log = logging.getLogger(__name__)

ListFormat = Literal["auto", "video", "rawframes", "csv"]

PATH_COLUMNS = ("path", "video", "filename", "file", "video_path", "youtube_id")
LABEL_COLUMNS = ("label", "label_id", "class_id", "class", "target")


@dataclass(frozen=True)
class VideoRecord:
    """One annotated video."""

    path: Path  # video file, frame folder, or ``shard.tar#member`` path (already joined with the dataset root)
    label: int  # integer class id
    index: int  # position in the annotation list; the video id used in evaluation
    num_frames: int | None = None  # frame count from a raw-frame list, else None (probed when decoding)


def first_few(items: Sequence[str], n: int = 5, sep: str = ", ") -> str:
    """The first ``n`` items joined by ``sep``, then ``, and K more`` when there are more (for messages)."""
    more = f", and {len(items) - n} more" if len(items) > n else ""
    return sep.join(items[:n]) + more


def _is_int(text: str) -> bool:
    """Plain ASCII digits only (``int`` would also take ``1_0``, ``+3``, `` 7`` and non-ASCII digits)."""
    return re.fullmatch(r"[0-9]+", text) is not None


def _split_line(line: str, trailing: int) -> tuple[str, list[str]] | None:
    """``(path, last fields)`` of a stripped list line, or None when it has too few fields.

    Fields are separated by tabs if the line has one, else by commas if it has one, else by whitespace; the path is
    everything before the ``trailing`` last fields, as written.
    """
    if "\t" in line:
        parts = [p.strip() for p in line.split("\t")]
        parts = [parts[0], *(p for p in parts[1:] if p)]  # repeated tabs
        path, fields = "\t".join(parts[:-trailing]), parts[-trailing:]
    elif "," in line:
        parts = line.rsplit(",", trailing)
        path, fields = parts[0].strip(), [p.strip() for p in parts[1:]]
    else:
        match = re.fullmatch(r"(.*?)" + r"\s+(\S+)" * trailing, line)
        if match is None:
            return None
        path, fields = match.group(1), list(match.groups()[1:])
    if len(fields) != trailing or not path:
        return None
    return path, fields


def detect_format(first_line: str) -> Literal["video", "rawframes", "csv"]:
    """Guess a list format from its first non-empty line."""
    line = first_line.strip()
    if "," in line and "\t" not in line and not _is_int(line.rsplit(",", 1)[-1].strip()):
        return "csv"
    raw = _split_line(line, 2)
    if raw is not None and all(_is_int(f) for f in raw[1]):
        return "rawframes"
    return "video"


def resolve_path(rel: str, root: Path | None, *, allow_outside_root: bool, where: str) -> Path:
    """Join ``rel`` with ``root``, refusing paths that leave the root unless allowed.

    A frame folder whose real location (symlinks resolved) is outside the real dataset root leaves it too.

    Args:
        rel: Path text from the list (may contain ``#member`` after a ``.tar`` file).
        root: Dataset root, or None for paths relative to the current directory.
        allow_outside_root: Accept absolute paths and ``..`` escapes.
        where: ``file:line`` used in error messages.
    """
    tar = split_tar_path(rel)
    path = tar[0] if tar is not None else Path(rel)
    if not allow_outside_root:
        if path.is_absolute():
            raise ValueError(
                f"{where}: absolute path {rel!r} is refused; use paths relative to the dataset root, "
                "or pass allow_outside_root=True (--allow-outside-root)"
            )
        if ".." in Path(os.path.normpath(path)).parts:
            raise ValueError(
                f"{where}: path {rel!r} leaves the dataset root; pass allow_outside_root=True "
                "(--allow-outside-root) to accept it"
            )
    full = path if root is None or path.is_absolute() else root / path
    if tar is not None:
        return Path(f"{full}#{tar[1]}")
    if root is not None and not allow_outside_root and full.is_dir():
        real, real_root = os.path.realpath(full), os.path.realpath(root)
        if os.path.commonpath([real, real_root]) != real_root:
            raise ValueError(
                f"{where}: frame folder {rel!r} resolves outside the dataset root (to {real}) through a symlink; "
                "pass allow_outside_root=True (--allow-outside-root) to accept it"
            )
    return full


def _parse_csv(text: str, where: str) -> list[tuple[int, str, str, str | None]]:
    reader = csv.reader(io.StringIO(text))
    csv_rows: list[tuple[int, list[str]]] = []  # quoted fields may hold commas, not line breaks
    for fields in reader:
        lineno = len(csv_rows) + 1
        if reader.line_num != lineno:
            raise ValueError(
                f"{where}:{lineno}: a quoted CSV field runs over lines {lineno}-{reader.line_num} (unclosed quote?)"
            )
        csv_rows.append((lineno, fields))
    header = [h.strip().lower() for h in csv_rows[0][1]]
    path_col = next((header.index(c) for c in PATH_COLUMNS if c in header), None)
    label_col = next((header.index(c) for c in LABEL_COLUMNS if c in header), None)
    if path_col is None or label_col is None:
        raise ValueError(
            f"{where}:1: CSV header {header} needs a path column (one of {list(PATH_COLUMNS)}) "
            f"and a label column (one of {list(LABEL_COLUMNS)})"
        )
    frames_col = header.index("total_frames") if "total_frames" in header else None
    rows: list[tuple[int, str, str, str | None]] = []
    for lineno, row in csv_rows[1:]:
        if not row or not "".join(row).strip():
            continue
        if len(row) != len(header):
            raise ValueError(
                f"{where}:{lineno}: expected {len(header)} CSV fields ({', '.join(header)}), got {len(row)}: "
                f"{row}; quote a field that contains a comma"
            )
        frames = row[frames_col].strip() if frames_col is not None else None
        rows.append((lineno, row[path_col].strip(), row[label_col].strip(), frames))
    return rows


def _parse_plain(text: str, fmt: str, where: str) -> list[tuple[int, str, str, str | None]]:
    numbers = 2 if fmt == "rawframes" else 1  # rawframes: total_frames, then the label
    rows: list[tuple[int, str, str, str | None]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        split = _split_line(line, numbers)
        if split is None:
            expected = "frame_dir total_frames label" if numbers == 2 else "path label"
            raise ValueError(f"{where}:{lineno}: expected '{expected}', got {line!r}")
        rows.append((lineno, split[0], split[1][-1], split[1][0] if numbers == 2 else None))
    return rows


def read_annotations(
    list_file: str | Path,
    root: str | Path | None = None,
    *,
    fmt: ListFormat = "auto",
    allow_outside_root: bool = False,
) -> list[VideoRecord]:
    """Read an annotation list into records, in file order.

    Args:
        list_file: The list file.
        root: Dataset root the paths are relative to (None: relative to the current directory).
        fmt: ``auto`` (detected from the first line), ``video``, ``rawframes`` or ``csv``.
        allow_outside_root: Accept absolute paths and paths leaving the root.

    Returns:
        Records with ``index`` = position in the list.

    Raises:
        FileNotFoundError: The list file does not exist.
        ValueError: A malformed line, or a path leaving the root, naming the file and line number.
    """
    list_file = Path(list_file)
    if not list_file.is_file():
        raise FileNotFoundError(f"annotation list {list_file} does not exist")
    text = list_file.read_text(encoding="utf-8-sig")
    where = str(list_file)
    first = next((ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")), None)
    if first is None:
        raise ValueError(f"{where}: the annotation list is empty")
    kind = detect_format(first) if fmt == "auto" else fmt
    if kind not in ("video", "rawframes", "csv"):
        raise ValueError(f"unknown list format {fmt!r}; use auto, video, rawframes or csv")
    rows = _parse_csv(text, where) if kind == "csv" else _parse_plain(text, kind, where)
    root_path = Path(root) if root is not None else None
    records: list[VideoRecord] = []
    listed_at: dict[Path, int] = {}  # path -> the line that first lists it
    repeats = []
    for lineno, rel, label, frames in rows:
        at = f"{where}:{lineno}"
        if not _is_int(label):
            raise ValueError(f"{at}: label {label!r} is not a non-negative integer")
        if frames is not None and not _is_int(frames):
            raise ValueError(f"{at}: frame count {frames!r} is not a non-negative integer")
        if not rel:
            raise ValueError(f"{at}: empty path")
        path = resolve_path(rel, root_path, allow_outside_root=allow_outside_root, where=at)
        records.append(VideoRecord(path, int(label), len(records), int(frames) if frames is not None else None))
        if path in listed_at:
            repeats.append(f"line {lineno} repeats line {listed_at[path]} ({path})")
        else:
            listed_at[path] = lineno
    if repeats:
        log.warning(
            "%s: %d lines repeat the video of an earlier line (it is read and scored once per line): %s",
            where,
            len(repeats),
            first_few(repeats, sep="; "),
        )
    return records


def read_class_names(path: str | Path) -> list[str]:
    """Read class names from an ``id,name`` CSV (header optional) or a file with one name per line.

    Ids must be 0..C-1 (any order); the result is ordered by id. A CSV name may be quoted; an unquoted name keeps
    its commas (the name is everything after the id). The file is a CSV when its first line, or the line after a
    header, reads ``<digits>,<name>``. Names must be distinct and non-empty.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: Duplicate or missing ids, a repeated or empty name, or a malformed row (naming file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class-name file {path} does not exist")
    text = path.read_text(encoding="utf-8-sig")
    lines = [(n, ln.strip()) for n, ln in enumerate(text.splitlines(), 1) if ln.strip()]
    if not lines:
        raise ValueError(f"{path}: no class names")
    rows = [(n, next(csv.reader([ln]))) for n, ln in lines]  # line by line: a quote never swallows lines

    def is_id_row(row: list[str]) -> bool:
        return len(row) >= 2 and _is_int(row[0].strip())

    header = len(rows[0][1]) >= 2 and not is_id_row(rows[0][1])  # such as "id,name"
    if not (is_id_row(rows[0][1]) or (header and len(rows) > 1 and is_id_row(rows[1][1]))):
        entries = lines  # one name per line
    else:
        by_id: dict[int, tuple[int, str]] = {}
        for n, row in rows[1:] if header else rows:
            if not is_id_row(row):
                raise ValueError(f"{path}:{n}: expected 'id,name', got {','.join(row)!r}")
            cid = int(row[0])
            if cid in by_id:
                raise ValueError(f"{path}:{n}: class id {cid} appears twice (first on line {by_id[cid][0]})")
            by_id[cid] = (n, ",".join(row[1:]).strip())  # an unquoted name keeps its commas
        missing = sorted(set(range(len(by_id))) - set(by_id))
        if missing:
            read_as = f"an 'id,name' CSV with header line {rows[0][0]}" if header else "an 'id,name' CSV"
            raise ValueError(f"{path}: read as {read_as}: class ids must be 0..{len(by_id) - 1}; missing {missing[:5]}")
        entries = [by_id[i] for i in range(len(by_id))]
    seen: dict[str, int] = {}
    for n, name in entries:
        if not name:
            raise ValueError(f"{path}:{n}: empty class name")
        if name in seen:
            raise ValueError(f"{path}:{n}: class name {name!r} repeats line {seen[name]}")
        seen[name] = n
    return [name for _, name in entries]


def write_list(records: Sequence[VideoRecord], path: str | Path, root: str | Path | None = None) -> Path:
    """Write records as ``path label`` lines (paths relative to ``root`` when given), atomically.

    A path holding a comma is followed by a tab (a comma would read as a CSV field separator).
    """
    lines = []
    for rec in records:
        tar = split_tar_path(rec.path)
        text = str(rec.path)
        if root is not None:
            text = os.path.relpath(tar[0], root) + f"#{tar[1]}" if tar else os.path.relpath(rec.path, root)
        lines.append(f"{text}{chr(9) if ',' in text else ' '}{rec.label}\n")
    return write_text(path, "".join(lines))


def csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """CSV text with ``\\n`` line ends; a field holding a comma or a quote is quoted (``read_class_names`` reads it)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def write_class_names(names: Sequence[str], path: str | Path) -> Path:
    """Write an ``id,name`` CSV with a header, as ``read_class_names`` reads it, atomically."""
    return write_text(path, csv_text(["id", "name"], enumerate(names)))
