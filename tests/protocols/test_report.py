"""Report files (metrics JSON, per-class CSV, confusion PNG, failures), split summaries and metric curves."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from omniclip.protocols.evaluate import compute_metrics
from omniclip.protocols.report import plot_confusion, plot_curves, summarize_splits, write_eval_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _result(num_classes: int, n: int, seed: int = 0, failed=()):
    rng = np.random.default_rng(seed)
    scores = {i: (int(i % num_classes), rng.dirichlet(np.ones(num_classes))) for i in range(n)}
    return compute_metrics(scores, list(failed), num_classes)


def test_write_eval_report_files(tmp_path: Path) -> None:
    names = ["archery", "juggling, balls", "surfing", "yoga", "bowling"]  # a comma must survive the CSV
    res = _result(5, 12, failed=[(12, "moov atom not found"), (13, "EOF")])
    paths = write_eval_report(res, tmp_path / "eval", names)
    assert set(paths) == {"metrics", "per_class", "confusion_csv", "confusion", "failed"}
    metrics = json.loads(paths["metrics"].read_text())
    assert metrics["top1"] == pytest.approx(res.top1) and metrics["num_failed"] == 2
    with paths["per_class"].open() as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == names
    assert sum(int(r["num_videos"]) for r in rows) == 12
    for r, acc in zip(rows, res.per_class_accuracy, strict=True):
        assert float(r["accuracy"]) == pytest.approx(acc, abs=1e-4)
        c = int(r["class_id"])
        assert int(r["correct"]) == res.confusion[c, c] and int(r["num_videos"]) == res.confusion[c].sum()
    with paths["confusion_csv"].open() as f:
        table = list(csv.reader(f))
    assert table[0][1:] == names and np.array([row[1:] for row in table[1:]], dtype=int).sum() == 12
    assert paths["confusion"].read_bytes()[:8] == PNG_MAGIC
    assert paths["failed"].read_text().splitlines() == ["12\tmoov atom not found", "13\tEOF"]
    assert not [p for p in (tmp_path / "eval").iterdir() if p.name.startswith(".")]  # no temporary files left


def test_report_rejects_wrong_class_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="3 class names for a result over 5 classes"):
        write_eval_report(_result(5, 10), tmp_path, ["a", "b", "c"])


def test_empty_classes_written_as_blank_accuracy(tmp_path: Path) -> None:
    res = _result(4, 2)  # classes 2 and 3 have no videos
    paths = write_eval_report(res, tmp_path, list("abcd"))
    rows = list(csv.DictReader(paths["per_class"].open()))
    assert [r["accuracy"] for r in rows[2:]] == ["", ""] and [r["num_videos"] for r in rows] == ["1", "1", "0", "0"]


@pytest.mark.parametrize("num_classes", [5, 400])
def test_confusion_png_for_few_and_many_classes(tmp_path: Path, num_classes: int) -> None:
    rng = np.random.default_rng(0)
    conf = rng.integers(0, 3, size=(num_classes, num_classes))
    out = plot_confusion(conf, [f"class {i}" for i in range(num_classes)], tmp_path / "c.png")
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert 400 <= width <= 2000 and 400 <= height <= 2000


def test_summarize_splits_mean_and_std() -> None:
    dicts = [
        {"top1": 70.0, "top5": 90.0, "mean_class_accuracy": 69.0, "num_videos": 10, "num_scored": 9, "num_failed": 1},
        {"top1": 72.0, "top5": 91.0, "mean_class_accuracy": 71.0, "num_videos": 10, "num_scored": 10, "num_failed": 0},
        {"top1": 74.0, "top5": 95.0, "mean_class_accuracy": 70.0, "num_videos": 10, "num_scored": 10, "num_failed": 0},
    ]
    s = summarize_splits(dicts)
    assert s["num_splits"] == 3 and s["std"].startswith("sample")
    assert s["top1"]["mean"] == pytest.approx(72.0)
    assert s["top1"]["std"] == pytest.approx(2.0)  # sqrt(((-2)^2 + 0 + 2^2) / 2)
    assert s["top1"]["population_std"] == pytest.approx(math.sqrt(8 / 3))
    assert s["top5"]["mean"] == pytest.approx(92.0) and s["top1"]["values"] == [70.0, 72.0, 74.0]
    assert s["num_videos"] == 30 and s["num_failed"] == 1


def test_summarize_splits_accepts_eval_results_and_one_split() -> None:
    res = _result(3, 9)
    s = summarize_splits([res])
    assert s["top1"] == {"mean": res.top1, "std": 0.0, "population_std": 0.0, "values": [res.top1]}
    two = summarize_splits([res, _result(3, 9, seed=1)])
    assert two["mean_class_accuracy"]["values"][0] == pytest.approx(res.mean_class_accuracy)
    with pytest.raises(ValueError, match="at least one"):
        summarize_splits([])


def test_plot_curves(tmp_path: Path) -> None:
    lines = [json.dumps({"step": s, "loss": 2.0 / (s + 1), "lr": 1e-3}) for s in range(20)]
    lines.insert(10, json.dumps({"step": 10, "val/top1": 40.0, "val/top5": 80.0}))
    lines.append("")
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(lines))
    out = plot_curves(path, tmp_path / "plots" / "curves.png")
    assert out.read_bytes()[:8] == PNG_MAGIC
    runlog = tmp_path / "run" / "metrics.jsonl"  # as omniclip.runlog.RunLog writes it
    runlog.parent.mkdir()
    runlog.write_text(
        '{"kind": "train", "time": 1.0, "step": 1, "epoch": 0, "loss": 2.3, "lr": 0.0001, "grad_norm": 1.2}\n'
        '{"kind": "train", "time": 2.0, "step": 10, "epoch": 0, "loss": 1.9, "lr": 0.0002, "grad_norm": 0.9}\n'
        '{"kind": "epoch", "time": 3.0, "step": 10, "epoch": 0, "failed_videos": 0}\n'
        '{"kind": "eval", "time": 4.0, "step": 10, "top1": 41.5, "top5": 80.0}\n'
    )
    assert plot_curves(runlog, tmp_path / "run" / "curves.png").read_bytes()[:8] == PNG_MAGIC


def test_plot_curves_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        plot_curves(tmp_path / "missing.jsonl", tmp_path / "x.png")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 0, "loss": 1.0}\n{"step": 1, "loss": \n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not JSON"):
        plot_curves(bad, tmp_path / "x.png")
    nothing = tmp_path / "lr.jsonl"
    nothing.write_text('{"step": 0, "lr": 1.0}\n')
    with pytest.raises(ValueError, match="no loss or accuracy"):
        plot_curves(nothing, tmp_path / "x.png")
