"""Annotation lists and class-name files: every format parses; every malformed line names file and line."""

from __future__ import annotations

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
    out = write_list(records, tmp_path / "out.txt", tmp_path)
    assert out.read_text() == "v/a.mp4 2\ns.tar#m/b.mp4 0\n"
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
