"""Every output is written whole or not at all, with the mode the umask asks for (readable by a teammate)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from omniclip.files import atomic_path, writable_dir, write_json, write_text


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_files_get_the_mode_the_umask_asks_for(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        written = [write_text(tmp_path / "a.txt", "x"), write_json(tmp_path / "b.json", {"a": 1})]
        with atomic_path(tmp_path / "c.bin") as tmp:
            tmp.write_bytes(b"\0")
        written.append(tmp_path / "c.bin")
    finally:
        os.umask(old)
    assert [_mode(p) for p in written] == [0o666 & ~umask] * 3


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path: Path) -> None:
    target = write_text(tmp_path / "sub" / "state.json", "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.json"]


def test_writable_dir_names_what_is_in_the_way(tmp_path: Path) -> None:
    assert writable_dir(tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is an existing file"):
        writable_dir(tmp_path / "file")
    with pytest.raises(ValueError, match=r"lies under a file \(.*/file\)$"):
        writable_dir(tmp_path / "file" / "run" / "deeper")
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == []
