"""Annotation lists: parse video lists into ``VideoRecord`` objects and read class-name files.

Formats follow the X-CLIP / ViFi-CLIP / mmaction2 lineage (PROTOCOLS.md, "Data formats"):

- ``video``: ``relative/path.mp4 <label>`` separated by spaces, a tab or a comma;
- ``rawframes``: mmaction2 raw-frame lists ``frame_dir total_frames label``;
- ``csv``: a CSV file with a header naming a path column (``path``, ``video``, ``filename``, ``file``, ``youtube_id``)
  and a label column (``label``, ``label_id``, ``class_id``, ``class``).

Paths are relative to a dataset root. Absolute paths and ``..`` paths that leave the root are refused unless
``allow_outside_root=True``. A path may name a member of an uncompressed tar shard as ``shard-0000.tar#member.mp4``
(written by ``omniclip prepare --shards``).
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from omniclip.files import write_text

ListFormat = Literal["auto", "video", "rawframes", "csv"]

PATH_COLUMNS = ("path", "video", "filename", "file", "video_path", "youtube_id")
LABEL_COLUMNS = ("label", "label_id", "class_id", "class", "target")
TAR_SEPARATOR = "#"


@dataclass(frozen=True)
class VideoRecord:
    """One annotated video.

    Attributes:
        path: Video file, frame folder, or ``shard.tar#member`` path (already joined with the dataset root).
        label: Integer class id.
        index: Position in the annotation list; the video id used in evaluation.
        num_frames: Frame count from a raw-frame list, else None (probed when decoding).
    """

    path: Path
    label: int
    index: int
    num_frames: int | None = None


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _split_line(line: str) -> list[str]:
    if "\t" in line:
        return [p.strip() for p in line.split("\t") if p.strip()]
    if "," in line:
        return [p.strip() for p in line.split(",")]
    return line.split()


def detect_format(first_line: str) -> Literal["video", "rawframes", "csv"]:
    """Guess a list format from its first non-empty line."""
    parts = _split_line(first_line)
    if "," in first_line and not _is_int(parts[-1]):
        return "csv"
    if len(parts) >= 3 and _is_int(parts[-1]) and _is_int(parts[-2]):
        return "rawframes"
    return "video"


def resolve_path(rel: str, root: Path | None, *, allow_outside_root: bool, where: str) -> Path:
    """Join ``rel`` with ``root``, refusing paths that leave the root unless allowed.

    Args:
        rel: Path text from the list (may contain ``#member`` after a ``.tar`` file).
        root: Dataset root, or None for paths relative to the current directory.
        allow_outside_root: Accept absolute paths and ``..`` escapes.
        where: ``file:line`` used in error messages.
    """
    container, sep, member = rel.partition(TAR_SEPARATOR)
    if not (sep and container.endswith(".tar")):
        container, sep, member = rel, "", ""
    path = Path(container)
    if not allow_outside_root:
        if path.is_absolute():
            raise ValueError(
                f"{where}: absolute path {rel!r} is refused; use paths relative to the dataset root, "
                "or pass allow_outside_root=True (--allow-outside-root)"
            )
        if ".." in Path(os.path.normpath(container)).parts:
            raise ValueError(
                f"{where}: path {rel!r} leaves the dataset root; pass allow_outside_root=True "
                "(--allow-outside-root) to accept it"
            )
    full = path if root is None or path.is_absolute() else Path(root) / path
    return Path(f"{full}{sep}{member}") if sep else full


def _parse_csv(text: str, where: str) -> list[tuple[int, str, str, str | None]]:
    reader = csv.reader(io.StringIO(text))
    header = [h.strip().lower() for h in next(reader)]
    path_col = next((header.index(c) for c in PATH_COLUMNS if c in header), None)
    label_col = next((header.index(c) for c in LABEL_COLUMNS if c in header), None)
    if path_col is None or label_col is None:
        raise ValueError(
            f"{where}:1: CSV header {header} needs a path column (one of {list(PATH_COLUMNS)}) "
            f"and a label column (one of {list(LABEL_COLUMNS)})"
        )
    frames_col = header.index("total_frames") if "total_frames" in header else None
    rows: list[tuple[int, str, str, str | None]] = []
    for lineno, row in enumerate(reader, start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) != len(header):
            raise ValueError(f"{where}:{lineno}: expected {len(header)} CSV fields {header}, got {len(row)}: {row}")
        frames = row[frames_col].strip() if frames_col is not None else None
        rows.append((lineno, row[path_col].strip(), row[label_col].strip(), frames))
    return rows


def _parse_plain(text: str, fmt: str, where: str) -> list[tuple[int, str, str, str | None]]:
    rows: list[tuple[int, str, str, str | None]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = _split_line(line)
        if fmt == "rawframes":
            if len(parts) < 3:
                raise ValueError(f"{where}:{lineno}: expected 'frame_dir total_frames label', got {line!r}")
            rows.append((lineno, " ".join(parts[:-2]), parts[-1], parts[-2]))
        else:
            if len(parts) < 2:
                raise ValueError(f"{where}:{lineno}: expected 'path label', got {line!r}")
            rows.append((lineno, " ".join(parts[:-1]), parts[-1], None))
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
        ValueError: A malformed line, naming the file and line number.
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
    for lineno, rel, label, frames in rows:
        at = f"{where}:{lineno}"
        if not _is_int(label) or int(label) < 0:
            raise ValueError(f"{at}: label {label!r} is not a non-negative integer")
        if frames is not None and (not _is_int(frames) or int(frames) < 0):
            raise ValueError(f"{at}: frame count {frames!r} is not a non-negative integer")
        if not rel:
            raise ValueError(f"{at}: empty path")
        path = resolve_path(rel, root_path, allow_outside_root=allow_outside_root, where=at)
        records.append(VideoRecord(path, int(label), len(records), int(frames) if frames is not None else None))
    return records


def read_class_names(path: str | Path) -> list[str]:
    """Read class names from an ``id,name`` CSV (header optional) or a file with one name per line.

    Ids must be 0..C-1 (any order); the result is ordered by id.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: Duplicate or missing ids, or a malformed row (naming file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class-name file {path} does not exist")
    lines = [(n, ln.strip()) for n, ln in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1)]
    lines = [(n, ln) for n, ln in lines if ln]
    if not lines:
        raise ValueError(f"{path}: no class names")
    rows = [(n, next(csv.reader([ln]))) for n, ln in lines]
    if not all(len(r) >= 2 and _is_int(r[0].strip()) for _, r in rows[1:] or rows):
        return [ln for _, ln in lines]  # one name per line
    if not _is_int(rows[0][1][0].strip()):
        rows = rows[1:]  # header such as "id,name"
    names: dict[int, str] = {}
    for n, row in rows:
        if len(row) < 2 or not _is_int(row[0].strip()):
            raise ValueError(f"{path}:{n}: expected 'id,name', got {','.join(row)!r}")
        cid = int(row[0])
        if cid in names:
            raise ValueError(f"{path}:{n}: class id {cid} appears twice")
        names[cid] = ",".join(row[1:]).strip()
    missing = sorted(set(range(len(names))) - set(names))
    if missing:
        raise ValueError(f"{path}: class ids must be 0..{len(names) - 1}; missing {missing[:5]}")
    return [names[i] for i in range(len(names))]


def write_list(records: list[VideoRecord], path: str | Path, root: str | Path | None = None) -> Path:
    """Write records as a ``path label`` list (paths relative to ``root`` when given), atomically."""
    path = Path(path)
    lines = []
    for rec in records:
        text = str(rec.path)
        if root is not None:
            text = os.path.relpath(text, root) if TAR_SEPARATOR not in text else _relative_tar(text, Path(root))
        lines.append(f"{text} {rec.label}\n")
    write_text(path, "".join(lines))
    return path


def _relative_tar(text: str, root: Path) -> str:
    container, _, member = text.partition(TAR_SEPARATOR)
    return f"{os.path.relpath(container, root)}{TAR_SEPARATOR}{member}"
