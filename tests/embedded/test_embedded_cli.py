"""``omniclip pretrain-tiny``: writes weights and record, reproduces its file byte for byte, evaluates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from omniclip.cli import main
from omniclip.clip import load_clip
from omniclip.embedded.pretrain import compare_with_shipped

ARGS = ["--steps", "2", "--batch-size", "8", "--eval-images", "16"]


def test_embedded_cli_writes_the_same_file_twice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert main(["pretrain-tiny", "--out", str(a), *ARGS]) == 0
    assert main(["pretrain-tiny", "--out", str(b), *ARGS]) == 0
    assert a.read_bytes() == b.read_bytes()
    record = json.loads(a.with_suffix(".json").read_text())
    assert record["steps"] == 2 and record["pretrain"]["batch_size"] == 8
    assert record["file_bytes"] == a.stat().st_size and record["weights_dtype"] == "float16"
    assert set(record["zero_shot"]["accuracy"]) == {"seen", "unseen"}
    assert record["torch_version"] == torch.__version__
    model = load_clip(a)
    assert model.dtype == torch.float32
    assert "seen" in capsys.readouterr().out


def test_embedded_cli_eval_reports_accuracies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.safetensors"
    assert main(["pretrain-tiny", "--out", str(out), *ARGS]) == 0
    capsys.readouterr()
    assert main(["pretrain-tiny", "--eval", "--weights", str(out), "--eval-images", "8", "--eval-seed", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["split", "shape", "color", "size", "position", "pair"]
    assert [line.split()[0] for line in lines[1:]] == ["seen", "unseen", "chance"]


def test_embedded_cli_explains_mistakes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pretrain-tiny"]) == 2
    assert "--out PATH" in capsys.readouterr().err
    assert main(["pretrain-tiny", "--out", str(tmp_path / "m.pt")]) == 2
    assert "must end in .safetensors" in capsys.readouterr().err
    assert main(["pretrain-tiny", "--eval", "--weights", str(tmp_path / "missing.safetensors")]) == 2
    assert "missing.safetensors" in capsys.readouterr().err


def test_embedded_cli_says_whether_it_reproduced_the_shipped_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.safetensors"
    assert main(["pretrain-tiny", "--out", str(out), *ARGS]) == 0
    assert "another recipe than the shipped omniclip-tiny" in capsys.readouterr().out
    record = json.loads(out.with_suffix(".json").read_text())
    shipped = {**record, "torch_version": "0.0", "machine": "elsewhere"}
    assert "reproduced bit for bit" in compare_with_shipped(record, shipped)
    differs = compare_with_shipped(record, {**shipped, "sha256": "0" * 64})
    assert "differs from the shipped" in differs and "elsewhere" in differs
    assert "no shipped" in compare_with_shipped(record, None)
