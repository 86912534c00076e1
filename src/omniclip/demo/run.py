"""``run_demo``: the dataset, zero-shot evaluation, few-shot and supervised training of OmniCLIP and frame averaging,
and the timeline of a long video with both supervised models.

Every step goes through the engine: the dataset is written by ``omniclip.data.synthetic``, training runs are
``omniclip.protocols.runners.run_protocol`` around ``omniclip.train.loop.train`` (what ``omniclip train`` runs), the
zero-shot row is ``evaluate_protocol`` (what ``omniclip eval`` runs without a checkpoint), the timelines are
``omniclip.timeline`` (``long_video.py``). The demo reads the confusion matrices those write, and adds the table, the
figures and ``results.json``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from omniclip.clip.weights import resolve_source
from omniclip.config import RunConfig
from omniclip.demo.dataset import DemoDataset, ensure_dataset, num_videos
from omniclip.demo.long_video import LongVideoResult, run_long_video
from omniclip.demo.recipes import BUDGETS, RUNS, Budget, RunSpec, run_config, training_videos
from omniclip.demo.report import (
    RunResult,
    format_table,
    group_metrics,
    plot_demo,
    plot_long_video,
    read_confusion,
    read_curve,
    timeline_lines,
)
from omniclip.dist import DistInfo, init_distributed
from omniclip.embedded import EMBEDDED_CLIP
from omniclip.files import write_json, write_text
from omniclip.model import OmniCLIP
from omniclip.protocols.report import plot_curves
from omniclip.protocols.runners import evaluate_protocol, run_protocol
from omniclip.train.loop import TrainResult, build_train_model, train

log = logging.getLogger(__name__)

LONG_VIDEO = "timeline"  # folder of the long video, its truth and each model's timeline files
PREDICT_VIDEO = "videos/test/appearing_0000.mp4"  # the test video `omniclip demo` ends with
# The supervised runs whose timelines of the long video are scored: (run folder, name in the printed lines).
TIMELINE_RUNS = (("supervised/omniclip", "OmniCLIP"), ("supervised/frame_average", "frame average"))


@dataclass(frozen=True)
class DemoOptions:
    """What ``omniclip demo`` was asked for."""

    out: Path = Path("omniclip-demo")  # output folder: data/, one folder per run, results, figure
    budget: str = "quick"  # a key of BUDGETS
    steps: int | None = None  # optimizer steps per training run (None = the budget's)
    seed: int = 0  # training seed: initialisation, order, augmentation and the few-shot draw
    clip: str = EMBEDDED_CLIP  # CLIP weights every run starts from


@dataclass
class DemoResult:
    """What a finished demo leaves behind."""

    out: Path
    budget: Budget
    runs: list[RunResult] = field(default_factory=list)
    table: str = ""
    files: dict[str, Path] = field(default_factory=dict)  # results.json, results.md, demo.png, timeline.png, data
    seconds: float = 0.0
    long_video: LongVideoResult | None = None  # the closing timeline


def write_dataset(out: Path, budget: Budget, say: Callable[[str], None]) -> DemoDataset:
    """The dataset under ``out/data`` (written at first use, with a progress bar)."""
    spec = budget.dataset
    total = num_videos(spec)
    with tqdm(total=total, unit="video", dynamic_ncols=True, leave=False) as bar:
        bench = ensure_dataset(out / "data", spec, progress=bar.update)
    say(
        f"{'wrote' if bench.created else 'reusing'} {total} videos in {bench.root} ({len(spec.classes)} classes, "
        f"{spec.train}/{spec.val}/{spec.test} train/val/test per class, {spec.num_frames} frames of {spec.size} px)"
    )
    return bench


def measure_run(run: RunSpec, cfg: RunConfig, run_dir: Path, budget: Budget, dist: DistInfo) -> RunResult:
    """Train and evaluate one run with the engine, timed, with the group accuracies of its test confusion matrix and
    its loss curve."""
    tick = time.perf_counter()
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a rerun replaces the run: no stale checkpoints or metrics lines
    trained: list[TrainResult] = []

    def fit(stage_cfg: RunConfig, stage: Path, resume: bool) -> OmniCLIP:  # the engine's loop, keeping its result
        trained.append(train(stage_cfg, stage, resume=resume, dist=dist))
        return trained[-1].model

    if run.protocol == "zero_shot":
        evaluate_protocol(cfg, build_train_model(cfg, dist.device).eval(), run_dir, device=dist.device)
        confusion_csv = run_dir / "test" / "confusion.csv"
    else:
        run_protocol(cfg, run_dir, fit=fit, device=dist.device)
        plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")
        confusion_csv = run_dir / "eval" / "test" / "confusion.csv"
    steps = trained[-1].step if trained else 0
    names, confusion = read_confusion(confusion_csv)
    return RunResult(
        name=run.name,
        label=run.label,
        protocol=run.protocol,
        videos=training_videos(budget, run.protocol),
        steps=steps,
        seconds=time.perf_counter() - tick,
        metrics=group_metrics(names, confusion, budget.dataset.group_map),
        curve=read_curve(run_dir / "metrics.jsonl") if steps else [],
    )


def run_demo(options: DemoOptions, say: Callable[[str], None] = log.info) -> DemoResult:
    """Run the whole demo into ``options.out``; ``say`` receives one line per stage.

    Raises:
        ValueError: an unknown budget, a non-positive step count, or a launch by ``torchrun`` (several processes).
        FileNotFoundError: the CLIP weights are missing.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(
            "omniclip demo runs in one process; launch it without torchrun. "
            "For several processes use `torchrun ... -m omniclip train --config configs/...`"
        )
    if options.budget not in BUDGETS:
        raise ValueError(f"unknown demo budget {options.budget!r}; choose one of {', '.join(BUDGETS)}")
    budget = BUDGETS[options.budget]
    if options.steps is not None and options.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {options.steps}")
    resolve_source(options.clip)  # a missing CLIP fails before any work
    start, out = time.perf_counter(), Path(options.out)
    result = DemoResult(out=out, budget=budget)
    stages = len(RUNS) + 3
    say(f"[1/{stages}] dataset")
    bench = write_dataset(out, budget, say)
    dist = init_distributed("auto")
    for i, run in enumerate(RUNS, start=2):
        cfg = run_config(
            budget, run, data_root=str(bench.root), clip=options.clip, seed=options.seed, steps=options.steps
        )
        say(f"[{i}/{stages}] {run.protocol.replace('_', '-')}: {run.label} -> {out / run.name}")
        row = measure_run(run, cfg, out / run.name, budget, dist)
        result.runs.append(row)
        m = row.metrics
        groups = ", ".join(f"{g} {m[g]:.1f}" for g in budget.dataset.group_map)
        say(f"      top-1 {m['all']:.1f}%  ({groups}; within pair {m['within pair']:.1f})  {row.seconds:.0f} s")
    spec = budget.long_video
    say(f"[{stages - 1}/{stages}] timeline of a long video of {spec.segments} test clips -> {out / LONG_VIDEO}")
    runs = [(name, label, out / name) for name, label in TIMELINE_RUNS]
    result.long_video = run_long_video(bench, spec, out / LONG_VIDEO, runs, options.seed)
    for line in timeline_lines(result.long_video.to_dict()):
        say(f"      {line}")
    say(f"[{stages}/{stages}] report")
    result.seconds = time.perf_counter() - start
    write_outputs(result, options, bench)
    return result


def write_outputs(result: DemoResult, options: DemoOptions, bench: DemoDataset) -> None:
    """``results.md`` (the table), ``results.json`` (everything), ``demo.png`` (bars and curves) and
    ``timeline.png`` (the long video's true segments and both models')."""
    out, budget = result.out, result.budget
    result.table = format_table(result.runs, budget.shots, budget.dataset.group_map)
    title = f"omniclip demo: budget {budget.name}, seed {options.seed}, CLIP {options.clip}, T={budget.num_frames}"
    files = {
        "table": out / "results.md",
        "results": out / "results.json",
        "figure": out / "demo.png",
        "timeline": out / "timeline.png",
        "long_video": out / LONG_VIDEO,
        "data": bench.root,
        "predict_video": bench.root / PREDICT_VIDEO,
    }
    write_text(files["table"], result.table + "\n")
    write_json(files["results"], _summary(result, options))
    plot_demo(result.runs, files["figure"], title, budget.dataset.group_map)
    if result.long_video is not None:
        lv = result.long_video
        plot_long_video(
            lv,
            files["timeline"],
            f"omniclip demo: timeline of {lv.video.path.name} ({len(lv.video.truth)} test clips, "
            f"{lv.video.duration:.0f} s), seed {options.seed}",
        )
    result.files = files


def _summary(result: DemoResult, options: DemoOptions) -> dict[str, Any]:
    budget = result.budget
    return {
        "budget": budget.name,
        "seed": options.seed,
        "clip": options.clip,
        "steps_override": options.steps,
        "num_frames": budget.num_frames,
        "batch_size": budget.batch_size,
        "shots": budget.shots,
        "lr": budget.lr,
        "dataset": budget.dataset.to_dict(),
        "runs": [r.to_dict() for r in result.runs],
        "timeline": result.long_video.to_dict() if result.long_video is not None else None,
        "seconds": result.seconds,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
    }


def load_summary(out: str | Path) -> dict[str, Any]:
    """Read ``results.json`` of a finished demo."""
    path = Path(out) / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run `omniclip demo --out {out}` first")
    return json.loads(path.read_text())
