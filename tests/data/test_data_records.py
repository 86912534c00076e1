"""Annotation lists and class-name files: every format parses; every malformed line names file and line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from omniclip.data.records import VideoRecord, read_annotations, read_class_names, write_list


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text",
    [
        "a/x.mp4 3\nb/y.mp4 0\n",
        "a/x.mp4\t3\nb/y.mp4\t0\n",
        "a/x.mp4,3\nb/y.mp4,0\n",
        "\n# comment\na/x.mp4 3\n\nb/y.mp4   0\n",
        "path,label\na/x.mp4,3\nb/y.mp4,0\n",
        "video,label\na/x.mp4,3\nb/y.mp4,0\n",
        "label,filename,extra\n3,a/x.mp4,q\n0,b/y.mp4,r\n",
    ],
    ids=["space", "tab", "comma", "blank-and-comments", "csv-path", "csv-video", "csv-reordered"],
)
def test_data_video_list_formats(tmp_path: Path, text: str) -> None:
    records = read_annotations(_write(tmp_path, "list.txt", text), tmp_path / "root")
    assert records == [
        VideoRecord(tmp_path / "root" / "a/x.mp4", 3, 0),
        VideoRecord(tmp_path / "root" / "b/y.mp4", 0, 1),
    ]


def test_data_rawframe_list_and_paths_with_spaces(tmp_path: Path) -> None:
    records = read_annotations(_write(tmp_path, "raw.txt", "frames/v1 120 4\nframes/v2 7 1\n"), tmp_path)
    assert [(r.path.name, r.num_frames, r.label) for r in records] == [("v1", 120, 4), ("v2", 7, 1)]
    spaced = read_annotations(_write(tmp_path, "sp.txt", "my clips/a b.mp4 2\n"), tmp_path, fmt="video")
    assert spaced[0].path == tmp_path / "my clips/a b.mp4" and spaced[0].label == 2


@pytest.mark.parametrize(
    ("text", "fmt", "line", "what"),
    [
        ("a.mp4 1\nb.mp4\n", "auto", 2, "expected 'path label'"),
        ("a.mp4 1\nb.mp4 x\n", "auto", 2, "not a non-negative integer"),
        ("a.mp4 1\nb.mp4 -2\n", "auto", 2, "not a non-negative integer"),
        ("d1 10 1\nd2 2\n", "rawframes", 2, "frame_dir total_frames label"),
        ("d1 10 1\nd2 x 2\n", "rawframes", 2, "frame count"),
        ("path,label\na.mp4,1\nb.mp4,1,9\n", "auto", 3, "expected 2 CSV fields"),
        ("name,score\na.mp4,1\n", "csv", 1, "needs a path column"),
    ],
)
def test_data_malformed_lines_name_file_and_line(tmp_path: Path, text: str, fmt: str, line: int, what: str) -> None:
    path = _write(tmp_path, "bad.txt", text)
    with pytest.raises(ValueError, match=rf"bad\.txt:{line}: .*{what}"):
        read_annotations(path, tmp_path, fmt=fmt)


def test_data_paths_leaving_the_root_are_refused_unless_allowed(tmp_path: Path) -> None:
    for text, what in (("/abs/x.mp4 1\n", "absolute path"), ("ok.mp4 0\n../up/x.mp4 1\n", "leaves the dataset")):
        path = _write(tmp_path, "esc.txt", text)
        with pytest.raises(ValueError, match=rf"esc\.txt:\d: .*{what}.*allow_outside_root"):
            read_annotations(path, tmp_path / "root")
        records = read_annotations(path, tmp_path / "root", allow_outside_root=True)
        assert records[-1].label == 1
    inside = read_annotations(_write(tmp_path, "in.txt", "a/../b.mp4 1\n"), tmp_path)
    assert inside[0].path == tmp_path / "a/../b.mp4"


def test_data_tar_member_paths_and_missing_or_empty_lists(tmp_path: Path) -> None:
    rec = read_annotations(_write(tmp_path, "t.txt", "shards/s-0000.tar#a/b.mp4 5\n"), tmp_path)[0]
    assert str(rec.path) == f"{tmp_path}/shards/s-0000.tar#a/b.mp4"
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_annotations(tmp_path / "nope.txt")
    with pytest.raises(ValueError, match="empty"):
        read_annotations(_write(tmp_path, "e.txt", "\n\n"))


def test_data_write_list_round_trips(tmp_path: Path) -> None:
    records = [VideoRecord(tmp_path / "v" / "a.mp4", 2, 0), VideoRecord(tmp_path / "s.tar#m/b.mp4", 0, 1)]
    records.append(VideoRecord(tmp_path / "v" / "a, b.mp4", 1, 2))  # a comma would read as a CSV separator
    out = write_list(records, tmp_path / "out.txt", tmp_path)
    assert out.read_text() == "v/a.mp4 2\ns.tar#m/b.mp4 0\nv/a, b.mp4\t1\n"
    assert read_annotations(out, tmp_path) == records


@pytest.mark.parametrize(
    "text",
    [
        "id,name\n0,archery\n1,juggling balls\n2,surfing\n",
        "0,archery\n1,juggling balls\n2,surfing\n",
        "archery\njuggling balls\nsurfing\n",
        "id,name\n2,surfing\n0,archery\n1,juggling balls\n",
    ],
)
def test_data_class_names(tmp_path: Path, text: str) -> None:
    assert read_class_names(_write(tmp_path, "c.csv", text)) == ["archery", "juggling balls", "surfing"]


def test_data_class_name_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="appears twice"):
        read_class_names(_write(tmp_path, "d.csv", "id,name\n0,a\n0,b\n"))
    with pytest.raises(ValueError, match="missing"):
        read_class_names(_write(tmp_path, "m.csv", "id,name\n0,a\n2,b\n"))
    with pytest.raises(FileNotFoundError):
        read_class_names(tmp_path / "none.csv")


def test_data_list_paths_are_kept_exactly_as_written(tmp_path: Path) -> None:
    text = "my  clips/a  b.mp4 2\ntabbed dir/x y.mp4\t3\n"
    records = read_annotations(_write(tmp_path, "sp.txt", text), tmp_path, fmt="video")
    assert [(r.path, r.label) for r in records] == [
        (tmp_path / "my  clips/a  b.mp4", 2),
        (tmp_path / "tabbed dir/x y.mp4", 3),
    ]
    commas = read_annotations(_write(tmp_path, "c.txt", "a, b.mp4,1\nc,d.mp4,0\n"), tmp_path)
    assert [r.path.name for r in commas] == ["a, b.mp4", "c,d.mp4"]
    raw = read_annotations(_write(tmp_path, "r.txt", "frames/v  1 12 4\n"), tmp_path, fmt="rawframes")
    assert (raw[0].path.name, raw[0].num_frames, raw[0].label) == ("v  1", 12, 4)
    quoted = read_annotations(_write(tmp_path, "q.csv", 'path,label\n"x, y.mp4",5\n'), tmp_path)
    assert (quoted[0].path.name, quoted[0].label) == ("x, y.mp4", 5)


@pytest.mark.parametrize("label", ["1_0", "+3", "\u0663", "1.0"])
def test_data_labels_are_plain_digits(tmp_path: Path, label: str) -> None:
    with pytest.raises(ValueError, match=rf"l\.txt:2: label '{re.escape(label)}' is not a non-negative integer"):
        read_annotations(_write(tmp_path, "l.txt", f"a.mp4 0\nb.mp4 {label}\n"), tmp_path, fmt="video")
    with pytest.raises(ValueError, match=r"f\.txt:1: frame count '1_2'"):
        read_annotations(_write(tmp_path, "f.txt", "d 1_2 3\n"), tmp_path, fmt="rawframes")


def test_data_repeated_videos_are_kept_with_a_warning_naming_the_lines(tmp_path: Path, caplog) -> None:
    text = "a.mp4 1\nb.mp4 2\n\na.mp4 1\nb.mp4 3\nc.mp4 0\n"
    with caplog.at_level("WARNING", logger="omniclip.data.records"):
        records = read_annotations(_write(tmp_path, "dup.txt", text), tmp_path)
    assert len(records) == 5  # each line is still a video to read and score
    (message,) = [r.getMessage() for r in caplog.records]
    assert "dup.txt: 2 lines repeat" in message
    assert "line 4 repeats line 1" in message and "line 5 repeats line 2" in message


def test_data_csv_comma_errors_name_file_and_line(tmp_path: Path) -> None:
    text = "path,label,name\na.mp4,1,archery\nb.mp4,2,juggling, balls\n"
    with pytest.raises(ValueError, match=r"n\.csv:3: expected 3 CSV fields \(path, label, name\), got 4.*quote"):
        read_annotations(_write(tmp_path, "n.csv", text), tmp_path)
    quoted = read_annotations(_write(tmp_path, "ok.csv", text.replace("juggling, balls", '"juggling, balls"')))
    assert [r.label for r in quoted] == [1, 2]
    with pytest.raises(ValueError, match=r"u\.csv:3: a quoted CSV field runs over lines 3-4"):
        read_annotations(_write(tmp_path, "u.csv", 'path,label\na.mp4,1\n"b.mp4,2\nc.mp4,3\n'))


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('id,name\n0,"juggling, balls"\n1,surfing\n', ["juggling, balls", "surfing"]),
        ("id,name\n0,juggling, balls\n1,surfing\n", ["juggling, balls", "surfing"]),
        ("archery, field\n1, 2, 3 go\n", None),  # first line has no id: read as a header
        ("archery\n1,2,3 go\n", ["archery", "1,2,3 go"]),  # one name per line: no header, first line has no id
    ],
)
def test_data_class_names_with_commas(tmp_path: Path, text: str, names: list[str] | None) -> None:
    path = _write(tmp_path, "c.csv", text)
    if names is None:
        with pytest.raises(ValueError, match=r"c\.csv: read as an 'id,name' CSV with header line 1: .*missing \[0\]"):
            read_class_names(path)
    else:
        assert read_class_names(path) == names


def test_data_class_names_must_be_distinct(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"d\.csv:4: class name 'archery' repeats line 2"):
        read_class_names(_write(tmp_path, "d.csv", "id,name\n0,archery\n1,surfing\n2, archery\n"))
    with pytest.raises(ValueError, match=r"p\.txt:3: class name 'surfing' repeats line 2"):
        read_class_names(_write(tmp_path, "p.txt", "archery\nsurfing\nsurfing\n"))
    with pytest.raises(ValueError, match=r"i\.csv:3: expected 'id,name', got '1_0,b'"):
        read_class_names(_write(tmp_path, "i.csv", "id,name\n0,a\n1_0,b\n"))
    with pytest.raises(ValueError, match=r"e\.csv:2: empty class name"):
        read_class_names(_write(tmp_path, "e.csv", "0,a\n1,\n"))
