"""``omniclip demo``: what temporal modelling adds over CLIP's frame average, on embedded data with the embedded CLIP.

Examples::

    omniclip demo                                  # ~5 minutes on two CPU cores; outputs in omniclip-demo/
    omniclip demo --budget full --out demo-full    # longer runs, more data, better numbers
    omniclip demo --steps 200 --seed 1 --threads 4
"""

from __future__ import annotations

import argparse
import logging
import shlex
from pathlib import Path

from omniclip.embedded import EMBEDDED_CLIP

# The engine logs every checkpoint at INFO; the demo prints its own progress lines instead (-v shows everything).
QUIET_LOGGERS = ("omniclip.train", "omniclip.protocols", "omniclip.clip", "omniclip.predict", "omniclip.runlog")


def register(subparsers: argparse._SubParsersAction) -> None:
    from omniclip.demo.recipes import BUDGETS

    p = subparsers.add_parser(
        "demo",
        help="train OmniCLIP and CLIP frame averaging on embedded motion videos and compare them",
        description=__doc__.split("\n")[0],
    )
    p.add_argument("--out", type=Path, default=Path("omniclip-demo"), help="output folder (default omniclip-demo/)")
    p.add_argument(
        "--budget",
        choices=list(BUDGETS),
        default="quick",
        help="quick: ~5 min on 2 CPU cores (default); full: more data and steps; test: the tests' reduced mode",
    )
    p.add_argument("--steps", type=int, help="optimizer steps per training run (default: the budget's)")
    p.add_argument("--seed", type=int, default=0, help="training seed (init, order, few-shot draw); default 0")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: the demo's models are tiny, and more threads only wait for each other)",
    )
    p.add_argument("--clip", default=EMBEDDED_CLIP, help=f"CLIP weights to start from (default {EMBEDDED_CLIP})")
    p.add_argument("--no-predict", action="store_true", help="skip the closing `omniclip predict`")
    p.set_defaults(func=run_demo_command)


def run_demo_command(args: argparse.Namespace) -> int:
    import torch

    from omniclip.demo.run import DemoOptions, run_demo

    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    options = DemoOptions(out=args.out, budget=args.budget, steps=args.steps, seed=args.seed, clip=args.clip)
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    try:
        if not args.verbose:
            for name in QUIET_LOGGERS:
                logging.getLogger(name).setLevel(logging.WARNING)
        result = run_demo(options, say=lambda line: print(line, flush=True))
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    print(f"\n{result.table}\n")
    print("pair: prediction in the right twin pair (left/right, up/down, growing/shrinking, appearing/disappearing);")
    print("within pair: of those, the right member; frame averaging cannot tell twins apart (50% = coin toss).")
    if result.long_video is not None:
        from omniclip.demo.report import timeline_lines

        print("\n" + "\n".join(timeline_lines(result.long_video.to_dict())))
        video = result.long_video.video
        print(f"long video: {len(video.truth)} test clips, {video.duration:.0f} s, truth in {video.truth_csv};")
        print("frame acc: share of its time points given the true class; mAP: true segments found (temporal IoU).")
    threads = torch.get_num_threads()
    print(f"total {result.seconds:.0f} s with {threads} torch thread{'s' if threads > 1 else ''}")
    if not args.no_predict:
        _predict(result.files["predict_video"], result.out)
    print("\noutputs:")
    for name in ("table", "results", "figure", "timeline", "data"):
        print(f"  {name:<8} {result.files[name]}")
    print(f"  runs     {result.out}/<protocol>/<model>/ (config.yaml, metrics.jsonl, checkpoints/, eval/)")
    print(f"  video    {result.files['long_video']}/ (long_video.mp4, truth.csv, <model>/report.html, timeline.json)")
    return 0


def _predict(video: Path, out: Path) -> None:
    from omniclip import cli

    for run in ("supervised/omniclip", "supervised/frame_average"):
        argv = ["predict", str(video), "--checkpoint", str(out / run), "--top-k", "3"]
        print(f"\n$ omniclip {shlex.join(argv)}", flush=True)
        if code := cli.main(argv):
            raise ValueError(f"omniclip predict exited with {code}")
