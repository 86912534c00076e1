"""Class folders as a dataset via ``omniclip splits folders``: exact lists, seeded draws, what is skipped or refused."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from omniclip.cli import main
from omniclip.data.records import read_annotations, read_class_names


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small real video, copied wherever a tree needs a video (the scan reads names, never frames)."""
    from omniclip.data.synthetic import write_index_video

    return write_index_video(tmp_path_factory.mktemp("v") / "v.mp4", 4, 16, codec="mpeg4")


def _tree(root: Path, video: Path, files: list[str]) -> Path:
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(video, root / rel)
    return root


ODD = [
    "opening a door/clip 1.mp4",  # spaces in the class folder and the file name
    "opening a door/nested/deeper/clip_2.MP4",  # nested, suffix in capitals
    "opening a door/take,3.mp4",  # a comma: its line is tab-separated
    "high_jump/a.mkv",
    "high_jump/b.webm",
    "high_jump/c.avi",
    "high_jump/d.mov",
    "high_jump/e.mp4",
    "Straße-überqueren/x.mp4",  # unicode and a dash
    "Straße-überqueren/y.mp4",
    "Straße-überqueren/z.mp4",
]


@pytest.fixture
def odd_tree(tmp_path: Path, video: Path) -> Path:
    root = _tree(tmp_path / "my videos", video, ODD)
    (root / "empty_class").mkdir()
    (root / "only text").mkdir()
    (root / "only text" / "notes.txt").write_text("not a video")
    (root / "notes.txt").write_text("a stray text file")
    (root / "high_jump" / "readme.txt").write_text("")
    shutil.copyfile(video, root / "high_jump" / ".hidden.mp4")
    (root / ".DS_Store").write_text("")
    outside = tmp_path / "elsewhere"
    _tree(outside, video, ["far.mp4", "cls/g.mp4"])
    (root / "high_jump" / "link.mp4").symlink_to(outside / "far.mp4")  # a file leaving the root
    (root / "linked_class").symlink_to(outside / "cls")  # a class folder leaving the root
    (root / "opening a door" / "also_e.mp4").symlink_to(root / "high_jump" / "e.mp4")  # inside the root: kept
    (root / "opening a door" / "gone.mp4").symlink_to(tmp_path / "nowhere.mp4")  # leads nowhere
    return root


# seed 0, --val 0.25 --test 0.2: a class of n videos holds out round(n/4) for val and round(n/5) for test, at least one
LISTS = {
    "train.txt": (
        "Straße-überqueren/z.mp4 0\n"
        "high_jump/b.webm 1\n"
        "high_jump/d.mov 1\n"
        "high_jump/e.mp4 1\n"
        "opening a door/nested/deeper/clip_2.MP4 2\n"
        "opening a door/take,3.mp4\t2\n"  # the comma would read as a CSV separator: a tab ends the path
    ),
    "val.txt": "Straße-überqueren/x.mp4 0\nhigh_jump/a.mkv 1\nopening a door/also_e.mp4 2\n",
    "test.txt": "Straße-überqueren/y.mp4 0\nhigh_jump/c.avi 1\nopening a door/clip 1.mp4 2\n",
    "classes.csv": "id,name\n0,Straße überqueren\n1,high jump\n2,opening a door\n",
    "folders.csv": "id,folder,name\n0,Straße-überqueren,Straße überqueren\n1,high_jump,high jump\n"
    "2,opening a door,opening a door\n",
}


def test_folders_lists_are_exact_reproducible_and_read_back(odd_tree: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "lists"
    args = ["splits", "folders", str(odd_tree), "--out", str(out), "--val", "0.25", "--test", "0.2"]
    assert main(args) == 0
    captured = capsys.readouterr()
    files = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    assert {name: data.decode() for name, data in files.items()} == LISTS
    for split in ("train", "val", "test"):  # read back exactly: paths relative to the root, labels last
        lines = LISTS[f"{split}.txt"].splitlines()
        records = read_annotations(out / f"{split}.txt", odd_tree)
        assert [(r.path, r.label) for r in records] == [
            (odd_tree / line.rsplit(None, 1)[0], int(line.rsplit(None, 1)[1])) for line in lines
        ]
        assert all(r.path.is_file() for r in records)
    assert read_class_names(out / "classes.csv") == ["Straße überqueren", "high jump", "opening a door"]
    err = captured.err  # what was left out, one line each
    assert "skipped 2 hidden files or folders" in err
    assert "skipped 3 files that are not videos (.txt: 3)" in err
    assert "skipped 3 symlinks that leave the root or lead nowhere" in err
    for link in ("linked_class -> ", "high_jump/link.mp4 -> ", "opening a door/gone.mp4 -> "):
        assert link in err
    assert "dropped 2 class folders without videos: empty_class, only text" in err
    assert f"3 classes, 6 train / 3 val / 3 test videos; list paths are relative to {odd_tree}" in captured.out
    # the same seed writes the same bytes; another seed draws another split
    assert main([*args[:4], str(tmp_path / "again"), *args[5:]]) == 0
    assert {p.name: p.read_bytes() for p in sorted((tmp_path / "again").iterdir())} == files
    assert main([*args[:4], str(tmp_path / "seed1"), *args[5:], "--seed", "1"]) == 0
    assert (tmp_path / "seed1" / "train.txt").read_bytes() != files["train.txt"]


def test_folders_split_on_disk_is_used_as_it_is(tmp_path: Path, video: Path, capsys) -> None:
    root = _tree(
        tmp_path / "split",
        video,
        ["train/cat/a.mp4", "train/cat/b.mp4", "train/dog/c.mp4", "val/cat/d.mp4", "val/dog/e.mp4", "test/dog/f.mp4"],
    )
    (root / "README.md").write_text("")
    out = tmp_path / "lists"
    assert main(["splits", "folders", str(root), "--out", str(out), "--val", "0.5", "--seed", "3"]) == 0
    assert "the split on disk (train, val, test/) is used as it is" in capsys.readouterr().out
    assert (out / "train.txt").read_text() == "train/cat/a.mp4 0\ntrain/cat/b.mp4 0\ntrain/dog/c.mp4 1\n"
    assert (out / "val.txt").read_text() == "val/cat/d.mp4 0\nval/dog/e.mp4 1\n"
    assert (out / "test.txt").read_text() == "test/dog/f.mp4 1\n"
    assert (out / "classes.csv").read_text() == "id,name\n0,cat\n1,dog\n"
    (root / "validation").mkdir()  # two val folders
    assert main(["splits", "folders", str(root), "--out", str(out)]) == 2
    assert "holds both val/ and validation/" in capsys.readouterr().err
    (root / "validation").rmdir()
    (root / "bird").mkdir()  # a class folder beside the split folders
    assert main(["splits", "folders", str(root), "--out", str(out)]) == 2
    assert "also the folders ['bird']" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("files", "flags", "message"),
    [
        (["opening_a_door/a.mp4", "Opening-a-door/b.mp4"], [], "class folders 'Opening-a-door' and 'opening_a_door'"),
        (["cat/a.mp4", "cat/b.mp4", "dog/c.mp4"], [], r"too few videos .* 'dog' \(1 videos\)"),
        (["cat/a.mp4", "cat/b.mp4"], ["--test", "0.1"], r"each needs at least 3"),
        (["cat/a.mp4", "___/b.mp4"], [], "class folder '___' is empty once underscores and dashes read as spaces"),
        (["cat/a.mp4", "#tag/b.mp4"], [], "class folder '#tag' starts with a space or '#'"),
        (["cat/notes.txt", "loose.mp4"], [], "holds no class folder with videos"),
        (["cat/a.mp4", "cat/b.mp4"], ["--val", "0.6", "--test", "0.4"], "leave no training videos"),
    ],
)
def test_folders_refusals_are_one_line(tmp_path: Path, video: Path, capsys, files, flags, message) -> None:
    root = _tree(tmp_path / "root", video, files)
    assert main(["splits", "folders", str(root), "--out", str(tmp_path / "out"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert re.search(message, err), err
    assert not (tmp_path / "out" / "train.txt").exists()


def test_folders_fraction_flags_are_checked_when_parsed(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["splits", "folders", str(tmp_path), "--out", str(tmp_path / "out"), "--val", "1.5"])
    assert exit_info.value.code == 2
    assert "argument --val: must be in [0, 1), got 1.5" in capsys.readouterr().err


def test_folders_skip_and_list_names_a_list_cannot_hold(tmp_path: Path, video: Path, capsys) -> None:
    root = _tree(tmp_path / "root", video, ["cat/a.mp4", "cat/b.mp4", "cat/tab\there.mp4", "cat/x.tar#y.mp4"])
    os.symlink(root / "cat", root / "cat" / "loop")  # a link back to a walked folder lists nothing twice
    assert main(["splits", "folders", str(root), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "skipped 2 videos whose path a list file cannot hold (rename them)" in err
    assert "'cat/tab\\there.mp4' (holds a tab or line break)" in err
    assert "'cat/x.tar#y.mp4' (reads as a tar member)" in err
    listed = (tmp_path / "out" / "train.txt").read_text() + (tmp_path / "out" / "val.txt").read_text()
    assert sorted(listed.splitlines()) == ["cat/a.mp4 0", "cat/b.mp4 0"]
