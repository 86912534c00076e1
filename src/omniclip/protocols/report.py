"""Evaluation reports on disk: metrics JSON, per-class CSV, confusion-matrix picture, failures, split summaries, curves.

The confusion matrix and per-class table are what mmaction2 users reach for (USERS.md); protocols that average
over splits (PROTOCOLS.md: HMDB51/UCF101 three test splits) report mean +- std with ``summarize_splits``.
Every file is written atomically (temporary file, then ``os.replace``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from omniclip.data.records import csv_text
from omniclip.files import pyplot, save_figure, write_text
from omniclip.protocols.evaluate import EvalResult

METRICS = ("top1", "top5", "mean_class_accuracy")
LABELLED_CLASSES = 30  # up to this many classes the confusion picture names each row and column
ANNOTATED_CLASSES = 12  # up to this many it also prints the count in each cell


def write_eval_report(result: EvalResult, out_dir: str | Path, class_names: Sequence[str]) -> dict[str, Path]:
    """Write ``metrics.json``, ``per_class.csv``, ``confusion.csv``, ``confusion.png`` and ``failed.txt``.

    Returns:
        The written files by name (``"metrics"``, ``"per_class"``, ``"confusion_csv"``, ``"confusion"``, ``"failed"``).
    """
    if len(class_names) != result.num_classes:
        raise ValueError(
            f"{len(class_names)} class names for a result over {result.num_classes} classes; "
            "pass the class list the model was evaluated with"
        )
    out = Path(out_dir)
    paths = {
        "metrics": out / "metrics.json",
        "per_class": out / "per_class.csv",
        "confusion_csv": out / "confusion.csv",
        "confusion": out / "confusion.png",
        "failed": out / "failed.txt",
    }
    write_text(paths["metrics"], json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n")
    write_text(paths["per_class"], _per_class_csv(result, class_names))
    write_text(paths["confusion_csv"], _confusion_csv(result.confusion, class_names))
    write_text(paths["failed"], "".join(f"{i}\t{err}\n" for i, err in result.failed))
    plot_confusion(result.confusion, class_names, paths["confusion"])
    return paths


def _per_class_csv(result: EvalResult, class_names: Sequence[str]) -> str:
    counts, acc = result.confusion.sum(axis=1), result.per_class_accuracy
    rows = [
        [c, name, int(counts[c]), int(result.confusion[c, c]), "" if math.isnan(acc[c]) else f"{acc[c]:.4f}"]
        for c, name in enumerate(class_names)
    ]
    return csv_text(["class_id", "name", "num_videos", "correct", "accuracy"], rows)


def _confusion_csv(confusion: np.ndarray, class_names: Sequence[str]) -> str:
    rows = [[name, *row] for name, row in zip(class_names, confusion.tolist(), strict=True)]
    return csv_text(["true\\predicted", *class_names], rows)


def plot_confusion(confusion: np.ndarray, class_names: Sequence[str], out_png: str | Path) -> Path:
    """Draw the row-normalised confusion matrix (each row sums to 1: recall per class) as a PNG.

    Readable from 5 to 400 classes: class names label the axes only up to ``LABELLED_CLASSES`` classes,
    and cell counts are printed only up to ``ANNOTATED_CLASSES``.
    """
    plt = pyplot()
    from matplotlib import colors

    C = confusion.shape[0]
    rows = confusion.sum(axis=1, keepdims=True)
    rates = np.divide(confusion, rows, out=np.zeros(confusion.shape, dtype=float), where=rows > 0)
    side = min(16.0, 4.0 + 0.25 * min(C, LABELLED_CLASSES) + 0.02 * C)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    # Many classes spread errors thinly: a square-root colour scale keeps the off-diagonal mass visible.
    many = C > LABELLED_CLASSES
    norm = colors.PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0) if many else colors.Normalize(0.0, 1.0)
    im = ax.imshow(rates, cmap="Blues", norm=norm, interpolation="nearest")
    label = "fraction of the true class" + (" (square-root scale)" if many else "")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=label)
    if C <= LABELLED_CLASSES:
        ax.set_xticks(range(C), [str(n) for n in class_names], rotation=90, fontsize=8)
        ax.set_yticks(range(C), [str(n) for n in class_names], fontsize=8)
    if C <= ANNOTATED_CLASSES:
        for r in range(C):
            for c in range(C):
                if confusion[r, c]:
                    color = "white" if rates[r, c] > 0.5 else "black"
                    ax.text(c, r, str(confusion[r, c]), ha="center", va="center", fontsize=7, color=color)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"confusion matrix ({C} classes, {int(confusion.sum())} videos)")
    fig.tight_layout()
    return save_figure(fig, Path(out_png))


def summarize_splits(results: Sequence[EvalResult] | Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation of each accuracy over splits (e.g. HMDB51's three test splits).

    ``std`` is the sample standard deviation (ddof=1, what "mean +- std over 3 splits" tables usually mean;
    0.0 for one split); ``population_std`` (ddof=0) is given too. Results may be ``EvalResult`` or their
    ``to_dict()``; a metric is summarised when every result has it.
    """
    if not results:
        raise ValueError("summarize_splits needs at least one result")
    dicts = [r.to_dict() if isinstance(r, EvalResult) else dict(r) for r in results]
    summary: dict[str, Any] = {"num_splits": len(dicts), "std": "sample (ddof=1)"}
    for key in METRICS:
        if not all(d.get(key) is not None for d in dicts):
            continue
        values = np.array([float(d[key]) for d in dicts])
        summary[key] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "population_std": float(values.std(ddof=0)),
            "values": values.tolist(),
        }
    for key in ("num_videos", "num_scored", "num_failed"):
        if all(key in d for d in dicts):
            summary[key] = int(sum(int(d[key]) for d in dicts))
    return summary


def plot_curves(metrics_jsonl: str | Path, out_png: str | Path) -> Path:
    """Plot loss and accuracy against the step from a JSON-lines metrics file (one object per line).

    The x axis is ``step`` (else ``iter``/``iteration``/``epoch``, else the line number). Keys containing ``loss``
    go in the first panel, accuracy keys (``top1``, ``top5``, ``acc``, ``mean_class``) in the second; a key seen only
    on some lines (evaluation every few steps) is drawn at the steps where it appears. Lines with a ``kind``
    (``omniclip.runlog`` records) name their series ``"<kind> <key>"``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line is not a JSON object (names the line), or nothing plottable was found.
    """
    path = Path(metrics_jsonl)
    if not path.is_file():
        raise FileNotFoundError(f"metrics file {path} does not exist")
    series: dict[str, tuple[list[float], list[float]]] = {}
    xlabel = "line"
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{lineno}: not JSON ({err.msg}); expected one JSON object per line") from err
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        xkey = next((k for k in ("step", "iter", "iteration", "epoch") if _is_number(row.get(k))), None)
        x = float(row[xkey]) if xkey else float(lineno)
        xlabel = xkey or xlabel
        kind = row.get("kind")
        for key, value in row.items():
            if key != xkey and _panel(key) is not None and _is_number(value) and math.isfinite(value):
                name = f"{kind} {key}" if isinstance(kind, str) else key  # RunLog records: "train loss"
                xs, ys = series.setdefault(name, ([], []))
                xs.append(x)
                ys.append(float(value))
    panels = [[k for k in series if _panel(k) == p] for p in ("loss", "accuracy")]
    panels = [keys for keys in panels if keys]
    if not panels:
        raise ValueError(f"{path} has no loss or accuracy values to plot (keys containing 'loss', 'top1', 'acc')")
    plt = pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 3.5 * len(panels)), sharex=True, squeeze=False)
    for ax, keys in zip(axes[:, 0], panels, strict=True):
        for key in sorted(keys):
            xs, ys = series[key]
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=key)
        ax.set_ylabel("loss" if _panel(keys[0]) == "loss" else "accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[-1, 0].set_xlabel(xlabel)
    fig.tight_layout()
    return save_figure(fig, Path(out_png))


def _panel(key: str) -> str | None:
    k = key.lower()
    if "loss" in k:
        return "loss"
    if any(s in k for s in ("top1", "top5", "acc", "mean_class")):
        return "accuracy"
    return None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
