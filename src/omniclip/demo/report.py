"""The demo's results: accuracy per class group from the engine's confusion matrices, the table and the figures.

Besides top-1 per group, two numbers separate what frame averaging can and cannot see: **pair** is the fraction of
videos whose prediction lands in the right twin pair (e.g. {moving left, moving right}: the axis of motion, which
single frames show), and **within pair** is the fraction of those that also get the member of the pair right (the
direction, which only the order of frames shows; 50% is a coin toss).

The closing timeline (``long_video.py``) gets one printed line per model and a figure of the true segments above
each model's segments and per-time-point classes.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from omniclip.demo.dataset import GROUPS, twins_of
from omniclip.files import pyplot, save_figure
from omniclip.timeline.segments import label_runs

if TYPE_CHECKING:
    from omniclip.demo.long_video import LongVideoResult

GroupMap = Mapping[str, Sequence[str]]  # group name -> classes, each group made of twin pairs


@dataclass
class RunResult:
    """One row of the table: what ran, how it scored, how long it took."""

    name: str  # run folder relative to the demo output
    label: str  # model description
    protocol: str  # zero_shot | few_shot | supervised
    videos: int  # training videos
    steps: int  # optimizer steps done
    seconds: float  # wall-clock time of training and evaluation
    metrics: dict[str, float] = field(default_factory=dict)  # all, each group, pair, within pair -> accuracy in %
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, training loss)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "curve": [list(p) for p in self.curve]}


def read_confusion(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Class names and the (C, C) count matrix (rows: true class) from ``write_eval_report``'s ``confusion.csv``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the table is not square or holds a non-integer count (names the line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"confusion matrix {path} not found; run the evaluation first")
    rows = list(csv.reader(path.read_text().splitlines()))
    names = rows[0][1:]
    counts = []
    for lineno, row in enumerate(rows[1:], start=2):
        if len(row) != len(names) + 1:
            raise ValueError(f"{path}:{lineno}: {len(row) - 1} counts for {len(names)} classes")
        try:
            counts.append([int(v) for v in row[1:]])
        except ValueError:
            raise ValueError(f"{path}:{lineno}: counts must be integers") from None
    if len(counts) != len(names):
        raise ValueError(f"{path}: {len(counts)} rows for {len(names)} classes")
    return names, np.asarray(counts, dtype=np.int64).reshape(len(names), len(names))


def _percent(num: float, den: float) -> float:
    return 100.0 * num / den if den else math.nan


def group_metrics(names: Sequence[str], confusion: np.ndarray, groups: GroupMap = GROUPS) -> dict[str, float]:
    """Top-1 over all videos and per group, plus the pair and within-pair accuracies (in %).

    The twins are consecutive classes of a group (a class, then its time reversal).
    """
    index = {n: i for i, n in enumerate(names)}
    out = {"all": _percent(np.trace(confusion), confusion.sum())}
    for group, members in groups.items():
        rows = [index[m] for m in members if m in index]
        out[group] = _percent(sum(confusion[r, r] for r in rows), confusion[rows].sum())
    twin_of = {index[a]: index[b] for a, b in twins_of(groups.items()) if a in index and b in index}
    twin_of |= {b: a for a, b in twin_of.items()}
    rows = sorted(twin_of)
    in_pair = sum(confusion[r, r] + confusion[r, twin_of[r]] for r in rows)
    out["pair"] = _percent(in_pair, confusion[rows].sum())
    out["within pair"] = _percent(sum(confusion[r, r] for r in rows), in_pair)
    return out


def read_curve(metrics_jsonl: str | Path) -> list[tuple[int, float]]:
    """(step, loss) of the ``train`` records of a run's ``metrics.jsonl``."""
    rows = [json.loads(line) for line in Path(metrics_jsonl).read_text().splitlines() if line.strip()]
    return [(int(row["step"]), float(row["loss"])) for row in rows if row.get("kind") == "train" and "loss" in row]


def format_table(results: Sequence[RunResult], shots: int, groups: GroupMap = GROUPS) -> str:
    """The results as a Markdown table (accuracies in %, one decimal)."""
    columns = ("all", *groups, "pair", "within pair")
    head = ["training", "model", "videos", "steps", *columns, "time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    for r in results:
        protocol = r.protocol.replace("_", "-") + (f" (K={shots})" if r.protocol == "few_shot" else "")
        cells = [protocol, r.label, str(r.videos), str(r.steps)]
        cells += ["–" if math.isnan(r.metrics[c]) else f"{r.metrics[c]:.1f}" for c in columns]
        cells.append(f"{r.seconds:.0f} s")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average over ``window`` values (shorter at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def plot_demo(results: Sequence[RunResult], out_png: str | Path, title: str = "", groups: GroupMap = GROUPS) -> Path:
    """Accuracy per class group (bars, one per run) beside the training-loss curves of the trained runs."""
    plt = pyplot()
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(13, 4.6), gridspec_kw={"width_ratios": [1.6, 1]})
    chance = 100.0 / sum(len(m) for m in groups.values())
    bars_at = ["all", *groups, "within pair"]
    width = 0.8 / max(1, len(results))
    colors = {"frame_average": ["#bbbbbb", "#8c8c8c", "#555555"], "omniclip": ["#9ecae1", "#3182bd"]}
    used = {"frame_average": 0, "omniclip": 0}
    for k, r in enumerate(results):
        family = "omniclip" if "OmniCLIP" in r.label and r.protocol != "zero_shot" else "frame_average"
        color = colors[family][min(used[family], len(colors[family]) - 1)]
        used[family] += 1
        xs = np.arange(len(bars_at)) + (k - (len(results) - 1) / 2) * width
        label = f"{r.protocol.replace('_', '-')}: {r.label}"
        bars.bar(xs, [r.metrics[g] for g in bars_at], width, color=color, label=label, edgecolor="white")
        if r.curve:
            steps, losses = zip(*r.curve, strict=True)
            style = "-" if family == "omniclip" else "--"
            curves.plot(steps, losses, style, color=color, alpha=0.25, linewidth=0.8)
            curves.plot(steps, smooth(losses, max(1, len(losses) // 20)), style, color=color, label=label)
    bars.axhline(chance, color="black", linewidth=0.8, linestyle=":", label=f"chance ({chance:.1f}%)")
    bars.axhline(50, color="red", linewidth=0.8, linestyle=":", label="coin toss within a pair (50%)")
    bars.set_xticks(range(len(bars_at)), bars_at)
    bars.set_ylabel("test top-1 (%)")
    bars.set_ylim(0, 105)
    bars.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.08), ncol=2)
    bars.set_title("accuracy by class group")
    curves.set_xlabel("optimizer step")
    curves.set_ylabel("training loss (faint: per step; solid: moving average)")
    curves.set_title("training curves")
    curves.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, Path(out_png))


def timeline_lines(result: dict[str, Any]) -> list[str]:
    """One line per model from ``LongVideoResult.to_dict()``: frame-level accuracy and mAP at each IoU (in %)."""
    lines = []
    for m in result["models"]:
        ious = "/".join(m["mAP"])
        maps = "/".join(f"{100 * v:.1f}" for v in m["mAP"].values())
        lines.append(f"timeline: {m['label']} frame acc {100 * m['frame_accuracy']:.1f} %, mAP@{ious} = {maps} %")
    return lines


def plot_long_video(result: LongVideoResult, out_png: str | Path, title: str = "") -> Path:
    """Lanes over time: the true segments, then per model its segments and its class at each time point, with the
    time points it gets wrong marked below."""
    plt = pyplot()
    video, classes = result.video, result.models[0].timeline.classes if result.models else []
    # Twins share a hue (dark, light: tab20's pairs), so a wrong twin shows as the right colour in the wrong shade.
    cmap = plt.get_cmap("tab20")
    colors = [cmap(i % cmap.N) for i in range(len(classes))]
    index = {c: i for i, c in enumerate(classes)}
    lanes = 1 + 2 * len(result.models)
    fig, ax = plt.subplots(figsize=(13, 1.6 + 0.55 * lanes))
    names = ["truth"]
    row = lanes - 1

    def segments(segs: Sequence[Any], y: float) -> None:
        for s in segs:
            ax.broken_barh([(s.start, s.end - s.start)], (y, 0.7), facecolors=colors[index[s.label]], edgecolor="white")

    segments(video.truth, row)
    for m in result.models:
        sc = m.scores
        row -= 1
        segments(m.timeline.segments, row)
        names.append(f"{m.label}: segments\nmAP@0.5 {100 * sc.mean_ap.get(0.5, math.nan):.1f} %")
        row -= 1
        step = 1.0 / video.fps
        for label, a, b in label_runs(sc.predicted_at):
            ax.broken_barh([(sc.times[a] - step / 2, (b - a) * step)], (row + 0.2, 0.5), facecolors=colors[label])
        wrong = (sc.predicted_at != sc.truth_at) & (sc.truth_at >= 0)
        for bad, a, b in label_runs(wrong.astype(np.int64)):
            if bad:
                ax.broken_barh([(sc.times[a] - step / 2, (b - a) * step)], (row, 0.12), facecolors="black")
        names.append(f"{m.label}: per time point\nframe acc {100 * sc.frame_accuracy:.1f} %")
    for s in video.truth[1:]:
        ax.axvline(s.start, color="#999999", linewidth=0.6, linestyle=":")
    ax.set_yticks([lanes - 1 - r + 0.35 for r in range(lanes)], names, fontsize=8)
    ax.set_ylim(-0.1, lanes)
    ax.set_xlim(0, video.duration)
    ax.set_xlabel("time (s); dotted: true boundaries; black ticks: time points whose class is wrong")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[i]) for i in range(len(classes))]
    ax.legend(handles, classes, fontsize=7, ncol=len(classes), loc="lower center", bbox_to_anchor=(0.5, 1.0))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, Path(out_png))
