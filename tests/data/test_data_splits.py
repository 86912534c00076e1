"""Protocol split files: reproducible from a seed, right class counts, errors for short classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from omniclip.data.records import VideoRecord, read_annotations, read_class_names
from omniclip.protocols import splits


def _records(per_class: list[int], root: Path) -> list[VideoRecord]:
    recs = [(root / f"c{c}" / f"v{k}.mp4", c) for c, n in enumerate(per_class) for k in range(n)]
    return [VideoRecord(p, c, i) for i, (p, c) in enumerate(recs)]


def test_data_few_shot_counts_reproducibility_and_order_independence(tmp_path: Path) -> None:
    records = _records([10, 7, 12, 5], tmp_path)
    a = splits.few_shot_records(records, 4, seed=3)
    assert np.bincount([r.label for r in a]).tolist() == [4, 4, 4, 4]
    assert [r.index for r in a] == list(range(16)) and len({r.path for r in a}) == 16
    assert [r.path for r in splits.few_shot_records(records[::-1], 4, seed=3)] == [r.path for r in a]
    others = [[r.path for r in splits.few_shot_records(records, 4, seed=s)] for s in range(4, 8)]
    assert any(o != [r.path for r in a] for o in others)
    with pytest.raises(ValueError, match=r"fewer than K=6 videos \(class 3: 5\)"):
        splits.few_shot_records(records, 6, seed=0)
    with pytest.raises(ValueError, match="class 4: 0"):
        splits.few_shot_records(records, 2, num_classes=5)


def test_data_class_subsets_and_base_novel_halves() -> None:
    subsets = splits.zero_shot_subsets(range(220), 160, num_splits=3, seed=0)
    assert [len(s) for s in subsets] == [160, 160, 160] and all(s == sorted(s) for s in subsets)
    assert len({tuple(s) for s in subsets}) == 3
    assert splits.zero_shot_subsets(range(220), 160, num_splits=3, seed=0) == subsets
    assert splits.zero_shot_subsets(range(220), 160, num_splits=1, seed=1) == subsets[1:2]
    with pytest.raises(ValueError, match="cannot draw"):
        splits.zero_shot_subsets(range(5), 6)
    sizes = {n: tuple(map(len, splits.base_novel_classes(n))) for n in (400, 51, 101, 174)}
    assert sizes == {400: (200, 200), 51: (26, 25), 101: (51, 50), 174: (87, 87)}
    assert splits.base_novel_classes(51)[1][0] == 26


def _write_list(path: Path, per_class: list[int]) -> Path:
    path.write_text("".join(f"c{c}/v{k}.mp4 {c}\n" for c, n in enumerate(per_class) for k in range(n)))
    return path


def test_data_split_files_written_and_readable(tmp_path: Path) -> None:
    train = _write_list(tmp_path / "train.txt", [6, 6, 6, 6, 6])
    test = _write_list(tmp_path / "test.txt", [3, 3, 3, 3, 3])
    classes = tmp_path / "classes.csv"
    classes.write_text("id,name\n" + "".join(f"{i},class {i}\n" for i in range(5)))
    out = tmp_path / "splits"
    files = splits.write_few_shot_splits(train, out, shots=[2, 4], seeds=[0, 1], root=tmp_path / "data")
    assert [f.name for f in files] == [f"train_{k}shot_seed{s}.txt" for k in (2, 4) for s in (0, 1)]
    again = splits.write_few_shot_splits(train, tmp_path / "again", shots=[2, 4], seeds=[0, 1], root=tmp_path / "data")
    assert [f.read_text() for f in files] == [f.read_text() for f in again]
    lines = files[0].read_text().splitlines()
    assert len(lines) == 10 and lines[0].startswith("c0/")  # still relative to the root
    zs = splits.write_zero_shot_splits(
        test, classes, out, size=3, num_splits=2, only=["class 1", "class 2", "class 4", "class 0"]
    )
    for lst, cls in zs:
        names = read_class_names(cls)
        assert len(names) == 3 and "class 3" not in names
        recs = read_annotations(lst)
        assert sorted({r.label for r in recs}) == [0, 1, 2] and len(recs) == 9
        for r in recs:  # labels point at the right names after relabelling
            assert names[r.label] == f"class {r.path.parts[0][1:]}"
    with pytest.raises(ValueError, match="not in"):
        splits.write_zero_shot_splits(test, classes, out, size=2, only=["class 9"])
    b2n = splits.write_base_novel_splits(train, test, classes, out / "b2n", shots=2, seeds=[0, 1, 2])
    assert read_class_names(b2n["base_classes"]) == ["class 0", "class 1", "class 2"]
    assert read_class_names(b2n["novel_classes"]) == ["class 3", "class 4"]
    for s in range(3):
        assert np.bincount([r.label for r in read_annotations(b2n[f"train_seed{s}"])]).tolist() == [2, 2, 2]
    novel = read_annotations(b2n["test_novel"])
    assert sorted({r.label for r in novel}) == [0, 1] and all(r.path.parts[0] in ("c3", "c4") for r in novel)
    assert len(read_annotations(b2n["test_base"])) == 9
    named = out / "base.txt"
    named.write_text("class 4\nCLASS_1\n")
    b2n = splits.write_base_novel_splits(train, test, classes, out / "named", shots=2, seeds=[0], base_file=named)
    assert read_class_names(b2n["base_classes"]) == ["class 4", "class 1"]
    assert read_class_names(b2n["novel_classes"]) == ["class 0", "class 2", "class 3"]
    assert {(r.label, r.path.parts[0]) for r in read_annotations(b2n["train_seed0"])} == {(0, "c4"), (1, "c1")}


HMDB_LIKE = ["brush_hair", "cartwheel", "catch", "pour", "pullup", "ride_bike"]  # a dataset's class file, by id


def test_data_published_base_classes_are_matched_by_name(tmp_path: Path) -> None:
    """ViFi-CLIP's HMDB base half is the second half of the ids, spelled with spaces: matched by name, not id."""
    base_file = tmp_path / "hmdb_51_base_labels.csv"
    base_file.write_text("id,name\n0,pour\n1,pullup\n2,ride bike\n")
    base, novel = splits.base_novel_from_file(base_file, HMDB_LIKE)
    assert (base, novel) == ([3, 4, 5], [0, 1, 2])
    assert splits.base_novel_classes(len(HMDB_LIKE)) == ([0, 1, 2], [3, 4, 5])  # the by-id default differs
    ssv2 = ["Pushing [something] from left to right", "Moving [something] up"]
    names = tmp_path / "names.txt"
    names.write_text("moving something up\nPUSHING SOMETHING  from left to right\n")  # one name per line
    assert splits.classes_named_in(names, ssv2) == [1, 0]  # the file's order


def test_data_class_files_that_do_not_fit_the_dataset_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "base.csv"
    bad.write_text("id,name\n0,pour\n1,ride bikes\n")
    with pytest.raises(ValueError, match=r"base.csv: class 1 'ride bikes' is not one of the 6 .*closest: 'ride_bike'"):
        splits.classes_named_in(bad, HMDB_LIKE)
    bad.write_text("id,name\n0,pour\n1,Pour\n")
    with pytest.raises(ValueError, match="class 1 'Pour' is named twice"):
        splits.classes_named_in(bad, HMDB_LIKE)
    bad.write_text("\n".join(HMDB_LIKE) + "\n")
    with pytest.raises(ValueError, match="no novel classes"):
        splits.base_novel_from_file(bad, HMDB_LIKE)
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        splits.classes_named_in(tmp_path / "missing.csv", HMDB_LIKE)
