"""TensorBoard scalars mirror ``metrics.jsonl``; without tensorboard installed the run still logs, with a warning."""

from __future__ import annotations

import builtins
import logging
from pathlib import Path

import pytest

from omniclip.config import load_config
from omniclip.runlog import RunLog, read_metrics
from omniclip.train.loop import train

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"


def _scalars(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tb_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_training_scalars_reach_tensorboard(tiny_clip_file, synthetic, tmp_path) -> None:
    pytest.importorskip("tensorboard")
    overrides = [f"clip.source={tiny_clip_file}", f"data.root={synthetic.root}", "train.max_steps=3"]
    train(load_config(SMOKE, [*overrides, "train.tensorboard=true"]), tmp_path / "run")
    scalars = _scalars(tmp_path / "run" / "tb")
    logged = read_metrics(tmp_path / "run", "train")
    assert [s for s, _ in scalars["train/loss"]] == [r["step"] for r in logged] == [1, 2, 3]
    assert [v for _, v in scalars["train/loss"]] == pytest.approx([r["loss"] for r in logged], rel=1e-6)
    assert {"train/lr", "train/grad_norm"} <= set(scalars)


def test_run_log_without_tensorboard_warns_and_keeps_metrics(tmp_path, monkeypatch, caplog) -> None:
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with caplog.at_level(logging.WARNING, logger="omniclip"):
        runlog = RunLog(tmp_path, tensorboard=True, log_file=False)
    runlog.write("train", step=1, loss=0.5)
    runlog.close()
    assert "tensorboard is not installed" in caplog.text
    assert read_metrics(tmp_path, "train")[0]["loss"] == 0.5 and not (tmp_path / "tb").exists()
