"""Train the same recipe over several seeds on the harder temporal benchmark and report the spread (docs/model.md).

Each run is an ordinary ``omniclip train`` (supervised unless ``--protocol few_shot``, the demo's "hard" budget: 14
classes, 8 frames, batch 8) in its own process with ``--threads`` torch threads (default 1); ``--jobs`` run side by
side. A setting is a name and config overrides:

    .venv/bin/python benchmarks/seed_study.py --seeds 0 1 2 3 4 --jobs 2 \\
        --setting "default" --setting "clip 10" train.grad_clip=10 --variants omniclip frame_average

Prints one Markdown row per (setting, variant): top-1 per seed, mean, std, worst, best, within-pair accuracy and the
largest gradient norm of each run; ``--json`` keeps everything.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from omniclip.config import apply_overrides
from omniclip.demo.dataset import ensure_dataset
from omniclip.demo.recipes import BUDGETS, Budget, RunSpec, run_overrides
from omniclip.demo.report import group_metrics, read_confusion
from omniclip.runlog import read_metrics


def run_one(
    out: Path,
    data_root: Path,
    budget: Budget,
    setting: str,
    overrides: list[str],
    variant: str,
    seed: int,
    protocol: str,
    steps: int | None,
    threads: int,
) -> dict:
    run = RunSpec(f"{variant}", variant, protocol, variant)  # type: ignore[arg-type]
    raw = run_overrides(budget, run, data_root=str(data_root), clip="omniclip-tiny", seed=seed, steps=steps)
    raw = apply_overrides(raw, overrides)
    run_dir = out / setting.replace(" ", "_") / variant / f"seed_{seed}"
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    config = run_dir.parent / f"seed_{seed}.yaml"
    config.write_text(yaml.safe_dump(raw))
    confusion = run_dir / "eval" / "test" / "confusion.csv"
    tick = time.perf_counter()
    if not confusion.is_file():
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        cmd = [
            sys.executable,
            "-m",
            "omniclip",
            "train",
            "--config",
            str(config),
            "--output",
            str(run_dir),
            "--overwrite",
        ]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            return {"setting": setting, "variant": variant, "seed": seed, "error": proc.stderr.strip()[-400:]}
    seconds = time.perf_counter() - tick
    names, matrix = read_confusion(confusion)
    metrics = group_metrics(names, matrix, budget.dataset.group_map)
    train_rows = read_metrics(run_dir, "train")
    return {
        "setting": setting,
        "variant": variant,
        "seed": seed,
        "seconds": seconds,
        "metrics": metrics,
        "max_grad_norm": max(r["grad_norm"] for r in train_rows),
        "final_loss": statistics.fmean(r["loss"] for r in train_rows[-20:]),
        "group_norms": {
            k: statistics.median(r[k] for r in train_rows if k in r)
            for k in train_rows[-1]
            if k.startswith("grad_norm_")
        },
        "logit_scale": train_rows[-1].get("logit_scale"),
    }


def summary_rows(results: list[dict]) -> list[str]:
    lines = [
        "| setting | variant | top-1 per seed | mean | std | worst | best | within pair | max grad norm | s/run |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    keys = list(dict.fromkeys((r["setting"], r["variant"]) for r in results))
    for setting, variant in keys:
        runs = sorted(
            (r for r in results if (r["setting"], r["variant"]) == (setting, variant)), key=lambda r: r["seed"]
        )
        ok = [r for r in runs if "metrics" in r]
        if not ok:
            lines.append(f"| {setting} | {variant} | failed: {runs[0].get('error', '')[:80]} |")
            continue
        top1 = [r["metrics"]["all"] for r in ok]
        std = statistics.stdev(top1) if len(top1) > 1 else 0.0
        pair = statistics.fmean(r["metrics"]["within pair"] for r in ok)
        grads = " / ".join(f"{r['max_grad_norm']:.0f}" for r in ok)
        lines.append(
            f"| {setting} | {variant} | {' / '.join(f'{v:.1f}' for v in top1)} | {statistics.fmean(top1):.1f} | "
            f"{std:.1f} | {min(top1):.1f} | {max(top1):.1f} | {pair:.1f} | {grads} | "
            f"{statistics.fmean(r['seconds'] for r in ok):.0f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/seed-study"))
    parser.add_argument("--budget", default="hard", choices=list(BUDGETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--variants", nargs="+", default=["omniclip"])
    parser.add_argument("--protocol", default="supervised", choices=["supervised", "few_shot"])
    parser.add_argument("--steps", type=int, help="optimizer steps per run (default: the budget's)")
    parser.add_argument(
        "--train-clips", type=int, help="training clips a class (default: the budget's); the other splits stay"
    )
    parser.add_argument(
        "--setting",
        nargs="+",
        action="append",
        metavar=("NAME", "KEY=VALUE"),
        help="a named setting and its config overrides (repeat); default: one setting 'default'",
    )
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--json", type=Path, help="write every run's numbers here")
    args = parser.parse_args()
    settings = [(s[0], s[1:]) for s in (args.setting or [["default"]])]
    if args.train_clips is not None and args.train_clips < 1:
        parser.error(f"--train-clips must be at least 1, got {args.train_clips}")
    budget = BUDGETS[args.budget]
    if args.train_clips:
        budget = dataclasses.replace(budget, dataset=dataclasses.replace(budget.dataset, train=args.train_clips))
    data = ensure_dataset(args.out / "data", budget.dataset).root
    tasks = [
        (name, overrides, variant, seed)
        for name, overrides in settings
        for variant in args.variants
        for seed in args.seeds
    ]
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [
            pool.submit(run_one, args.out, data, budget, *task, args.protocol, args.steps, args.threads)
            for task in tasks
        ]
        results = []
        for f in futures:
            r = f.result()
            results.append(r)
            top1 = r.get("metrics", {}).get("all", math.nan)
            print(
                f"{r['setting']} {r['variant']} seed {r['seed']}: {top1:.1f} "
                f"({r.get('seconds', 0):.0f} s) {r.get('error', '')}",
                flush=True,
            )
    print("\n".join(summary_rows(results)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
