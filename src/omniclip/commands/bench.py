"""``omniclip bench``: inference and training speed and memory of OmniCLIP, bare CLIP and X-CLIP in one run.

Examples::

    omniclip bench --arch tiny --frames 4 --size 32 --batch 2 --json bench.json
    omniclip bench --arch ViT-B-16 --frames 8 --size 224 --batch 32 --dtype bf16 --json runs/bench/b16.json
    omniclip bench --arch ViT-B-16 --bf16-weights --compile --variants frame_average,omniclip --max-batch
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from omniclip.cli import fraction, non_negative_int, positive_int, writable_file

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="speed and memory of OmniCLIP vs bare CLIP vs X-CLIP",
        description="Measure inference and training clips/s, peak memory, GFLOPs per clip and TFLOP/s of each model "
        "in one process; print a table and optionally write JSON.",
    )
    p.add_argument("--arch", default="tiny", help="CLIP preset: ViT-B-16, ViT-B-32, ViT-L-14, small, tiny (default)")
    p.add_argument("--frames", type=positive_int, default=8, help="frames per clip T (default 8)")
    p.add_argument("--size", type=positive_int, help="frame size in pixels (default: the preset's)")
    p.add_argument("--batch", type=positive_int, help="clips per step (default 32 on CUDA, 4 on the CPU)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1 ...")
    p.add_argument("--dtype", choices=["bf16", "fp32"], help="bf16 autocast or fp32 (default: bf16 on CUDA)")
    p.add_argument("--classes", type=positive_int, help="class texts to train against (default 400 CUDA, 16 CPU)")
    p.add_argument(
        "--variants",
        help="comma-separated subjects (default all): frame_average,vificlip,omniclip,pta,spg,serial,xclip",
    )
    p.add_argument("--modes", default="infer,train", help="infer,train (default both)")
    p.add_argument("--repeats", type=positive_int, default=5, help="timed passes; the median is reported (default 5)")
    p.add_argument("--warmup", type=non_negative_int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--batches", type=positive_int, default=3, help="pre-made input batches rotated (default 3)")
    p.add_argument("--compile", action="store_true", help="torch.compile the image encoders")
    p.add_argument("--bf16-weights", action="store_true", help="store frozen weights in bf16, trainable ones fp32")
    p.add_argument("--grad-checkpointing", action="store_true", help="activation checkpointing in training")
    p.add_argument("--cuda-graphs", action="store_true", help="replay steps as CUDA graphs (CUDA only)")
    p.add_argument("--full-finetune", action="store_true", help="train every CLIP weight in our variants")
    p.add_argument("--max-batch", action="store_true", help="search the largest training batch (with and without ckpt)")
    p.add_argument("--max-batch-limit", type=positive_int, help="largest batch tried (default 4096 CUDA, 4x CPU)")
    p.add_argument(
        "--max-batch-tolerance",
        type=fraction,
        default=0.0,
        help="stop bisecting within this fraction (default 0: exact)",
    )
    p.add_argument("--interleave", action="store_true", help="time all models taking turns (shared CPUs; no memory)")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's)")
    p.add_argument(
        "--seed", type=non_negative_int, default=0, help="seed of weights, inputs and class texts (default 0)"
    )
    p.add_argument("--json", type=Path, metavar="PATH", help="write the full report here")
    p.set_defaults(func=run_bench_command)


def run_bench_command(args: argparse.Namespace) -> int:
    from omniclip.bench import BenchConfig, format_table, run_bench
    from omniclip.files import write_json

    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(BenchConfig) if hasattr(args, f.name)}
    for key in ("variants", "modes"):  # comma-separated names; None keeps the default
        text = fields.pop(key)
        if text is not None:
            fields[key] = tuple(n.strip() for n in text.split(",") if n.strip())
            if not fields[key]:
                raise ValueError(f"--{key} is empty; give comma-separated names")
    if args.json is not None:
        writable_file(args.json, "--json")
    # The JSON file is rewritten after every model, so a run stopped early keeps what it measured.
    progress = (lambda partial: write_json(args.json, partial)) if args.json is not None else None
    report = run_bench(BenchConfig(**fields), progress)
    print(format_table(report))
    if args.json is not None:
        log.info("wrote %s", write_json(args.json, report))
    return 1 if any("error" in e for e in report["results"].values()) else 0
