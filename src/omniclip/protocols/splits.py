"""Protocol split files: K-shot training lists, zero-shot class subsets and base-to-novel splits, seeded.

Recipes follow PROTOCOLS.md (X-CLIP / ViFi-CLIP / TC-CLIP lineage):

- few-shot: K videos per class drawn from the training list with a seed (PROTOCOLS.md draws once, from train
  split 1). Within a class, candidates are ordered by path before drawing, so the result depends on the seed and the
  set of videos, not on the list order. A class with fewer than K videos is an error.
- zero-shot: class subsets (e.g. K600's 220 classes new w.r.t. K400 -> 3 subsets of 160), either named by files
  (the published ``ZS_split{1,2,3}_K600.csv`` of X-CLIP / ViFi-CLIP) or drawn at random, subset ``k`` with seed
  ``seed + k``; the videos of a subset are relabelled 0..C'-1, with their own class file.
- base-to-novel: base classes named by a file (the published ViFi-CLIP halves, e.g. ``hmdb_51_base_labels.csv``),
  or else the first half of the class ids (rounded up: K400 200/200, HMDB 26/25, UCF 51/50, SSv2 87/87); novel =
  the rest; K shots per base class for each of 3 seeds; novel labels become 0..N-1.

Files name classes by name, matched to the dataset's class file regardless of case, underscores, brackets and
spacing ("ride_bike" = "ride bike", "Pushing [something] from left to right" = "pushing something from left to
right"), so the published lists work with any dataset copy whatever its class ids.

Everything is written as plain ``path label`` lists plus ``id,name`` class files.
"""

from __future__ import annotations

import difflib
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from omniclip.data.records import VideoRecord, read_annotations, read_class_names, write_class_names, write_list

log = logging.getLogger(__name__)


def few_shot_records(
    records: Sequence[VideoRecord], shots: int, *, seed: int = 0, num_classes: int | None = None
) -> list[VideoRecord]:
    """Draw ``shots`` videos per class.

    Args:
        records: Candidate videos (a training list).
        shots: K, videos per class.
        seed: Draw seed.
        num_classes: Classes that must all be present (0..C-1); default: the labels present.

    Returns:
        K x C records ordered by (label, path), re-indexed 0..n-1.

    Raises:
        ValueError: A class has fewer than K videos (naming the class and its count).
    """
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    by_class: dict[int, list[VideoRecord]] = defaultdict(list)
    for rec in records:
        by_class[rec.label].append(rec)
    classes = range(num_classes) if num_classes is not None else sorted(by_class)
    short = [(c, len(by_class.get(c, []))) for c in classes if len(by_class.get(c, [])) < shots]
    if short:
        detail = ", ".join(f"class {c}: {n}" for c, n in short[:10])
        raise ValueError(f"{len(short)} classes have fewer than K={shots} videos ({detail}); lower the shots")
    rng = np.random.default_rng(seed)
    chosen: list[VideoRecord] = []
    for c in classes:
        pool = sorted(by_class[c], key=lambda r: str(r.path))
        pick = sorted(rng.choice(len(pool), size=shots, replace=False).tolist())
        chosen.extend(pool[i] for i in pick)
    return [VideoRecord(r.path, r.label, i, r.num_frames) for i, r in enumerate(chosen)]


def check_shots(records: Sequence[VideoRecord], shots: int, num_classes: int, *, source: str | Path) -> None:
    """A given K-shot list must hold exactly ``shots`` videos of each of the classes 0..num_classes-1.

    Raises:
        ValueError: naming the list and the first classes whose counts differ (or the out-of-range labels).
    """
    labels = [r.label for r in records]
    outside = sorted({c for c in labels if not 0 <= c < num_classes})
    if outside:
        raise ValueError(f"{source}: labels {outside[:5]} are outside 0..{num_classes - 1} (the run's classes)")
    counts = np.bincount(labels, minlength=num_classes)
    wrong = [(c, int(n)) for c, n in enumerate(counts) if n != shots]
    if wrong:
        detail = ", ".join(f"class {c}: {n}" for c, n in wrong[:5])
        raise ValueError(f"{source}: {len(wrong)} classes do not have K={shots} videos ({detail})")


def zero_shot_subsets(classes: Sequence[int], size: int, *, num_splits: int = 3, seed: int = 0) -> list[list[int]]:
    """``num_splits`` subsets of ``size`` class ids drawn from ``classes``, subset ``k`` with seed ``seed + k``; each
    in ascending order."""
    pool = sorted(set(int(c) for c in classes))
    if not 0 < size <= len(pool):
        raise ValueError(f"cannot draw {size} classes from {len(pool)}")
    draws = [np.random.default_rng(seed + k).choice(len(pool), size=size, replace=False) for k in range(num_splits)]
    return [sorted(pool[i] for i in draw) for draw in draws]


def base_novel_classes(num_classes: int, base: int = 0) -> tuple[list[int], list[int]]:
    """Base = the first ``base`` class ids (default: the first half, rounded up), novel = the rest."""
    base = base or (num_classes + 1) // 2
    if not 0 < base < num_classes:
        raise ValueError(f"base classes {base} must be between 1 and {num_classes - 1}")
    return list(range(base)), list(range(base, num_classes))


def class_key(name: str) -> str:
    """A class name with case, underscores, square brackets and runs of spaces ignored."""
    return " ".join(name.replace("_", " ").replace("[", "").replace("]", "").lower().split())


def classes_named_in(path: str | Path, class_names: Sequence[str]) -> list[int]:
    """Ids (positions in ``class_names``) of the classes a class file names, in that file's order.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a name matches no class (with the closest one) or comes twice, naming the file and its entry.
    """
    index: dict[str, int] = {}
    for i, name in enumerate(class_names):
        index.setdefault(class_key(name), i)
    ids: list[int] = []
    for entry, name in enumerate(read_class_names(path)):
        key = class_key(name)
        if key not in index:
            close = difflib.get_close_matches(key, list(index), n=1)
            hint = f"; closest: {class_names[index[close[0]]]!r}" if close else ""
            raise ValueError(
                f"{path}: class {entry} {name!r} is not one of the {len(class_names)} dataset classes{hint}"
            )
        if index[key] in ids:
            raise ValueError(f"{path}: class {entry} {name!r} is named twice")
        ids.append(index[key])
    return ids


def base_novel_from_file(path: str | Path, class_names: Sequence[str]) -> tuple[list[int], list[int]]:
    """Base = the classes ``path`` names (its order), novel = every other class (id order)."""
    base = classes_named_in(path, class_names)
    novel = [c for c in range(len(class_names)) if c not in base]
    if not novel:
        raise ValueError(f"{path} names all {len(class_names)} classes as base: no novel classes are left")
    return base, novel


def relabel(records: Sequence[VideoRecord], classes: Sequence[int]) -> list[VideoRecord]:
    """Keep videos of ``classes``; label = position in ``classes``; re-indexed 0..n-1 in list order."""
    new = {int(c): i for i, c in enumerate(classes)}
    kept = [r for r in records if r.label in new]
    return [VideoRecord(r.path, new[r.label], i, r.num_frames) for i, r in enumerate(kept)]


# ----------------------------------------------------------------------------------------------- file writers
def write_few_shot_splits(
    list_file: str | Path,
    out_dir: str | Path,
    *,
    shots: Sequence[int],
    seeds: Sequence[int] = (0,),
    root: str | Path | None = None,
    num_classes: int | None = None,
) -> list[Path]:
    """Write ``train_{K}shot_seed{s}.txt`` for every K and seed; returns the files written."""
    records = read_annotations(list_file, root)
    written = []
    for k in shots:
        for seed in seeds:
            chosen = few_shot_records(records, k, seed=seed, num_classes=num_classes)
            written.append(write_list(chosen, Path(out_dir) / f"train_{k}shot_seed{seed}.txt", root))
            log.info("%s: %d videos (%d per class)", written[-1], len(chosen), k)
    return written


def write_zero_shot_splits(
    list_file: str | Path,
    class_file: str | Path,
    out_dir: str | Path,
    *,
    size: int,
    num_splits: int = 3,
    seed: int = 0,
    root: str | Path | None = None,
    only: Sequence[str] | None = None,
) -> list[tuple[Path, Path]]:
    """Write ``{stem}_subset{k}.txt`` (relabelled videos) and ``{stem}_subset{k}_classes.csv`` per subset.

    Args:
        list_file: Evaluation list (e.g. K600 val).
        class_file: Its class names.
        out_dir: Output folder.
        size: Classes per subset (160 for K600).
        num_splits: Subsets to draw.
        seed: Seed of subset 0.
        root: Dataset root of the list.
        only: Class names to draw from (e.g. the 220 classes new w.r.t. K400); default every class.
    """
    names = read_class_names(class_file)
    records = read_annotations(list_file, root)
    pool = list(range(len(names)))
    if only is not None:
        index = {n: i for i, n in enumerate(names)}
        unknown = [n for n in only if n not in index]
        if unknown:
            raise ValueError(f"{len(unknown)} class names not in {class_file}: {unknown[:5]}")
        pool = sorted(index[n] for n in only)
    stem, written = Path(list_file).stem, []
    for k, subset in enumerate(zero_shot_subsets(pool, size, num_splits=num_splits, seed=seed)):
        videos = relabel(records, subset)
        lst = write_list(videos, Path(out_dir) / f"{stem}_subset{k}.txt", root)
        cls = write_class_names([names[c] for c in subset], Path(out_dir) / f"{stem}_subset{k}_classes.csv")
        missing = sorted(set(range(len(subset))) - {r.label for r in videos})
        if missing:
            log.warning("%s: %d classes have no video", lst, len(missing))
        written.append((lst, cls))
    return written


def write_base_novel_splits(
    train_list: str | Path,
    test_list: str | Path,
    class_file: str | Path,
    out_dir: str | Path,
    *,
    shots: int = 16,
    seeds: Sequence[int] = (0, 1, 2),
    root: str | Path | None = None,
    base_file: str | Path | None = None,
) -> dict[str, Path]:
    """Write base/novel class files, ``train_base_{K}shot_seed{s}.txt`` per seed, ``test_base.txt`` and
    ``test_novel.txt`` (novel labels 0..N-1); returns name -> path.

    Base classes are those ``base_file`` names (e.g. ViFi-CLIP's ``hmdb_51_base_labels.csv``), else the first half.
    """
    names = read_class_names(class_file)
    base, novel = base_novel_from_file(base_file, names) if base_file else base_novel_classes(len(names))
    out = Path(out_dir)
    files = {
        "base_classes": write_class_names([names[c] for c in base], out / "base_classes.csv"),
        "novel_classes": write_class_names([names[c] for c in novel], out / "novel_classes.csv"),
    }
    train = relabel(read_annotations(train_list, root), base)
    for seed in seeds:
        chosen = few_shot_records(train, shots, seed=seed, num_classes=len(base))
        files[f"train_seed{seed}"] = write_list(chosen, out / f"train_base_{shots}shot_seed{seed}.txt", root)
    test = read_annotations(test_list, root)
    files["test_base"] = write_list(relabel(test, base), out / "test_base.txt", root)
    files["test_novel"] = write_list(relabel(test, novel), out / "test_novel.txt", root)
    return files
