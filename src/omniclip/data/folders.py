"""Class folders as a dataset: ``root/<class>/**/<video>`` (or ``root/{train,val,test}/<class>/...``) to list files.

People keep videos as one folder per class (UCF101's raw layout, torchvision's ``ImageFolder``, Hugging Face's
``videofolder``). ``scan_class_folders`` reads such a tree without any list file: the class folders, sorted by name,
are the classes (label = position); a folder name becomes the text the prompts read with underscores and dashes
read as spaces (``opening_a_door`` -> ``opening a door``); the videos are the files with a ``VIDEO_SUFFIXES``
suffix anywhere under a class folder, sorted by path. A root whose folders are ``train/`` and ``val/`` (or
``validation/``) and/or ``test/``, each holding class folders, is a split on disk and used as such; otherwise
``draw_splits`` draws a stratified split, seeded per class. ``write_split_files`` writes the project's list files
(``path label``, paths relative to the root, read back exactly by ``read_annotations``), ``classes.csv`` (``id,name``
with the prompt text) and ``folders.csv`` (``id,folder,name``: which folder each class id came from).

What a tree may hold and what happens to it:

- hidden entries (``.name``, files or folders) and files that are not videos: skipped and counted;
- symlinks that lead outside the root, or nowhere: skipped and listed (links inside the root are followed once);
- videos whose path the list format cannot hold (a tab or line break, a ``.tar#`` part, bytes that are not UTF-8)
  and videos outside any class folder: skipped and listed;
- class folders left with no video: dropped with a warning;
- a class folder name that cannot name a class (empty once normalised, starting with ``#`` or a space, not
  UTF-8), and two folders whose names normalise to the same text (case ignored, as CLIP's tokenizer lowercases):
  refused, naming the folders;
- a class with fewer videos than the drawn split needs: refused, naming the class and its count.
"""

from __future__ import annotations

import logging
import math
import os
import re
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from omniclip.data.decode import split_tar_path
from omniclip.data.records import VideoRecord, csv_text, first_few, write_class_names, write_list
from omniclip.files import write_text

log = logging.getLogger(__name__)

# Files taken as videos (suffix, case-insensitive); FFmpeg reads them all. The one list: other modules import it here.
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ogv")
SPLITS = ("train", "val", "test")
SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "validation"), "test": ("test",)}
_LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")  # what str.splitlines (or a tab split) would cut at


@dataclass(frozen=True)
class ClassFolder:
    """One class: its label, its folder name on disk and the text the prompts read."""

    label: int  # position among the class folders sorted by name
    folder: str  # the folder name as on disk (the class id users see in folders.csv)
    name: str  # prompt text: underscores and dashes read as spaces (classes.csv)


@dataclass
class Skipped:
    """What a scan left out, for the warning lines of ``FolderDataset.notes``."""

    hidden: int = 0  # hidden files and folders (.name)
    not_video: Counter[str] = field(default_factory=Counter)  # suffix -> count of files that are not videos
    links: list[str] = field(default_factory=list)  # "rel -> target" of symlinks leaving the root or leading nowhere
    unlistable: list[str] = field(default_factory=list)  # "rel (why)" of videos the list format cannot hold
    loose: list[str] = field(default_factory=list)  # videos outside any class folder
    empty: list[str] = field(default_factory=list)  # class folders without a video (dropped)


@dataclass
class FolderDataset:
    """A scanned tree of class folders."""

    root: Path  # the folder scanned (as given, made absolute)
    classes: list[ClassFolder]  # the classes in label order
    # split -> ``(path relative to root, label)`` sorted by path; the one key ``"all"`` when there is no split on disk
    videos: dict[str, list[tuple[str, int]]]
    skipped: Skipped  # what the scan left out

    @property
    def on_disk(self) -> bool:
        """The tree holds its own train/val/test split."""
        return "all" not in self.videos

    def notes(self) -> list[str]:
        """One line per kind of thing the scan left out (empty when nothing was)."""
        s, out = self.skipped, []
        if s.hidden:
            out.append(f"skipped {s.hidden} hidden files or folders (names starting with '.')")
        if s.not_video:
            kinds = ", ".join(f"{suffix or 'no suffix'}: {n}" for suffix, n in sorted(s.not_video.items()))
            out.append(f"skipped {sum(s.not_video.values())} files that are not videos ({kinds})")
        for what, items in (
            ("symlinks that leave the root or lead nowhere", s.links),
            ("videos whose path a list file cannot hold (rename them)", s.unlistable),
            ("videos outside any class folder", s.loose),
        ):
            if items:
                out.append(f"skipped {len(items)} {what}: {first_few(items)}")
        if s.empty:
            out.append(f"dropped {len(s.empty)} class folders without videos: {first_few(s.empty)}")
        return out


def class_text(folder: str) -> str:
    """The prompt text of a class folder name: underscores and dashes read as spaces, runs of spaces as one."""
    return " ".join(folder.replace("_", " ").replace("-", " ").split())


def _list_problem(text: str, *, path: bool) -> str | None:
    """Why a class folder name or (``path``) a video path cannot be written in a list line and read back, or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if _LINE_BREAKS.search(text):
        return "holds a tab or line break"
    if text[0].isspace() or text.startswith("#") or (path and text[-1].isspace()):
        return "starts with a space or '#' (a list line would lose it)"
    if path and split_tar_path(text) is not None:
        return "reads as a tar member"
    if not path and not class_text(text):
        return "is empty once underscores and dashes read as spaces"
    return None


class _Walker:
    """Recursive, sorted listing of the videos under a folder; symlinks are followed only inside the root."""

    def __init__(self, root: Path, skipped: Skipped) -> None:
        self.root, self.real_root, self.skipped = root, os.path.realpath(root), skipped
        self.seen: set[str] = {self.real_root}

    def entries(self, folder: Path, rel: str) -> list[tuple[os.DirEntry[str], str]]:
        """``(entry, path relative to root)`` of a folder, sorted, without hidden entries and bad symlinks."""
        out = []
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            path = f"{rel}/{entry.name}" if rel else entry.name
            if entry.name.startswith("."):
                self.skipped.hidden += 1
                continue
            if entry.is_symlink():
                real = os.path.realpath(entry.path)
                if not os.path.exists(real) or os.path.commonpath([real, self.real_root]) != self.real_root:
                    self.skipped.links.append(f"{path} -> {os.readlink(entry.path)}")
                    continue
            out.append((entry, path))
        return out

    def videos(self, folder: Path, rel: str) -> list[str]:
        found: list[str] = []
        for entry, path in self.entries(folder, rel):
            if entry.is_dir():
                real = os.path.realpath(entry.path)
                if real not in self.seen:  # a link back to a folder already walked would list its videos twice
                    self.seen.add(real)
                    found.extend(self.videos(Path(entry.path), path))
            elif not entry.is_file() or Path(entry.name).suffix.lower() not in VIDEO_SUFFIXES:
                self.skipped.not_video[Path(entry.name).suffix.lower()] += 1
            elif problem := _list_problem(path, path=True):
                self.skipped.unlistable.append(f"{path!r} ({problem})")
            else:
                found.append(path)
        return found

    def top(self, folder: Path, rel: str) -> list[tuple[os.DirEntry[str], str]]:
        """The folders directly in ``folder``, marked as walked (a link into one of them is not walked again); the
        files there are skipped (videos listed as outside a class)."""
        dirs = []
        for entry, path in self.entries(folder, rel):
            if entry.is_dir():
                dirs.append((entry, path))
            elif entry.is_file() and Path(entry.name).suffix.lower() in VIDEO_SUFFIXES:
                self.skipped.loose.append(path)
            else:
                self.skipped.not_video[Path(entry.name).suffix.lower()] += 1
        self.seen.update(os.path.realpath(entry.path) for entry, _ in dirs)
        return dirs

    def class_folders(self, folder: Path, rel: str) -> dict[str, list[str]]:
        """Class folder name -> its videos, for the class folders directly in ``folder``."""
        return {entry.name: self.videos(Path(entry.path), path) for entry, path in self.top(folder, rel)}


def _split_folders(root: Path) -> dict[str, str]:
    """split -> folder name for a root that holds a split on disk (``train/`` and ``val/`` or ``test/``), else {}.

    Raises:
        ValueError: the root holds both ``val/`` and ``validation/``, or split folders and other folders.
    """
    dirs = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    found = {split: [n for n in names if n in dirs] for split, names in SPLIT_FOLDERS.items()}
    if not found["train"] or not (found["val"] or found["test"]):
        return {}
    if len(found["val"]) > 1:
        raise ValueError(f"{root} holds both val/ and validation/; keep one of them")
    others = sorted(dirs - {n for names in found.values() for n in names})
    if others:
        raise ValueError(
            f"{root} holds split folders (train/ ...) and also the folders {others[:5]}; put every class folder inside "
            "the split folders, or drop the split folders to have a split drawn"
        )
    return {split: names[0] for split, names in found.items() if names}


def scan_class_folders(root: str | Path) -> FolderDataset:
    """Read a tree of class folders (see the module docstring); nothing is written.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: no class folder holds a video, a class folder name cannot name a class, or two folder names
            normalise to the same text (naming both).
    """
    root = Path(root).absolute()
    if not root.is_dir():
        raise FileNotFoundError(f"video folder {root} does not exist (or is not a folder)")
    skipped = Skipped()
    walker = _Walker(root, skipped)
    split_dirs = _split_folders(root)
    if split_dirs:
        top = {entry.name: entry for entry, _ in walker.top(root, "")}
        per_split = {s: walker.class_folders(Path(top[d].path), d) for s, d in split_dirs.items() if d in top}
    else:
        per_split = {"all": walker.class_folders(root, "")}
    folders = sorted({name for classes in per_split.values() for name in classes})
    bad = [f"{name!r} {why}" for name in folders if (why := _list_problem(name, path=False))]
    if bad:
        raise ValueError(
            f"{root}: class folder {bad[0]}; rename it" + (f" (and {len(bad) - 1} more)" if bad[1:] else "")
        )
    skipped.empty = [name for name in folders if not any(classes.get(name) for classes in per_split.values())]
    folders = [name for name in folders if name not in skipped.empty]
    if not folders:
        raise ValueError(
            f"{root} holds no class folder with videos ({', '.join(VIDEO_SUFFIXES)}); expected "
            f"{root}/<class name>/<video> or {root}/train/<class name>/<video>"
        )
    seen: dict[str, str] = {}
    for name in folders:
        key = class_text(name).casefold()
        if key in seen:
            raise ValueError(
                f"{root}: class folders {seen[key]!r} and {name!r} both read as the class {class_text(name)!r} "
                "(underscores and dashes read as spaces, case ignored); rename or merge them"
            )
        seen[key] = name
    classes = [ClassFolder(i, name, class_text(name)) for i, name in enumerate(folders)]
    label = {c.folder: c.label for c in classes}
    videos = {
        split: sorted((path, label[name]) for name, paths in found.items() if name in label for path in paths)
        for split, found in per_split.items()
    }
    ds = FolderDataset(root, classes, videos, skipped)
    if ds.on_disk:
        untrained = [c.folder for c in classes if not any(lab == c.label for _, lab in videos.get("train", []))]
        if untrained:
            log.warning("%s: classes without training videos (train/ lacks them): %s", root, first_few(untrained))
    return ds


def _held_out(n: int, fraction: float) -> int:
    """Videos of a class of ``n`` held out for a split of ``fraction``: rounded half up, at least one."""
    return 0 if fraction <= 0 else max(1, math.floor(fraction * n + 0.5))


def draw_splits(
    ds: FolderDataset, *, val: float = 0.2, test: float = 0.0, seed: int = 0
) -> dict[str, list[VideoRecord]]:
    """The train/val(/test) records: the split on disk, or a stratified draw.

    The draw holds out ``round(fraction x n)`` videos (at least one) of each class of ``n`` videos for ``test``, then
    ``val``; the rest train. Each class is shuffled with its own generator seeded by ``(seed, crc32(folder))``, so a
    class's split depends on the seed and its own videos only (adding a class leaves the others' as they were).
    Records are ordered by label, then path; their paths are joined with the root.

    Raises:
        ValueError: a fraction outside [0, 1), or ``val + test >= 1``; a class too small for the split (named, with
            its count).
    """
    for key, frac in (("val", val), ("test", test)):
        if not 0 <= frac < 1:
            raise ValueError(f"--{key} must be a fraction in [0, 1), got {frac}")
    if val + test >= 1:
        raise ValueError(f"--val {val} + --test {test} leave no training videos; keep their sum below 1")
    if ds.on_disk:
        return {s: _records(ds, v) for s, v in ds.videos.items()}
    by_class: dict[int, list[str]] = {c.label: [] for c in ds.classes}
    for path, label in ds.videos["all"]:
        by_class[label].append(path)
    sizes = [(c.folder, len(by_class[c.label])) for c in ds.classes]
    short = [f"{folder!r} ({n} videos)" for folder, n in sizes if n - _held_out(n, val) - _held_out(n, test) < 1]
    if short:
        need = 1 + (val > 0) + (test > 0)
        raise ValueError(
            f"{ds.root}: classes with too few videos for a split with --val {val} --test {test} (each needs at least "
            f"{need}, one per list, and one left to train): {first_few(short)}; add videos, lower --val/--test, or "
            "move the folder out"
        )
    out: dict[str, list[tuple[str, int]]] = {s: [] for s in SPLITS if s == "train" or {"val": val, "test": test}[s]}
    for c in ds.classes:
        paths = by_class[c.label]
        rng = np.random.default_rng([seed, zlib.crc32(c.folder.encode("utf-8"))])
        order = [paths[i] for i in rng.permutation(len(paths))]
        n_test, n_val = _held_out(len(paths), test), _held_out(len(paths), val)
        parts = {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
        for split in out:
            out[split].extend((p, c.label) for p in sorted(parts[split]))
    return {s: _records(ds, v) for s, v in out.items()}


def _records(ds: FolderDataset, videos: list[tuple[str, int]]) -> list[VideoRecord]:
    ordered = sorted(videos, key=lambda v: (v[1], v[0]))
    return [VideoRecord(ds.root / path, label, i) for i, (path, label) in enumerate(ordered)]


def write_split_files(ds: FolderDataset, splits: dict[str, list[VideoRecord]], out: str | Path) -> dict[str, Path]:
    """Write ``<split>.txt`` per split, ``classes.csv`` and ``folders.csv`` into ``out``; returns name -> path.

    List paths are relative to ``ds.root`` in POSIX form; the files are byte-for-byte the same for the same input.
    """
    out = Path(out)
    written = {split: write_list(splits[split], out / f"{split}.txt", ds.root) for split in SPLITS if split in splits}
    written["classes"] = write_class_names([c.name for c in ds.classes], out / "classes.csv")
    folders = csv_text(["id", "folder", "name"], [(c.label, c.folder, c.name) for c in ds.classes])
    written["folders"] = write_text(out / "folders.csv", folders)
    return written
