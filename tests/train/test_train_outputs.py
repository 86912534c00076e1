"""A run folder and an export are readable by a teammate: every file gets the umask's mode, as config.yaml does."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from omniclip import cli


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_run_folder_and_an_export_are_readable_by_others(umask_022, smoke_args, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli.main(["train", "--output", str(run), *smoke_args, "train.epochs=1"]) == 0
    exported = tmp_path / "export"
    assert cli.main(["export", "--checkpoint", str(run), "--out", str(exported)]) == 0
    files = [p for p in [*run.rglob("*"), *exported.rglob("*")] if p.is_file()]
    kinds = {p.name for p in files}
    for expected in ("config.yaml", "metrics.jsonl", "model.safetensors", "optimizer.safetensors", "state.json"):
        assert expected in kinds
    for expected in ("metrics.json", "per_class.csv", "confusion.csv", "confusion.png", "video_encoder.pt2"):
        assert expected in kinds
    private = {str(p.relative_to(tmp_path)): oct(_mode(p)) for p in files if _mode(p) != 0o644}
    assert not private
    folders = [p for p in [*run.rglob("*"), *exported.rglob("*")] if p.is_dir()]
    assert all(_mode(p) == 0o755 for p in folders)
