"""``omniclip pretrain-tiny``: reproduce the embedded tiny CLIP, or measure its zero-shot accuracy.

Examples::

    omniclip pretrain-tiny --out /tmp/omniclip-tiny.safetensors    # the shipped recipe; says if the bytes are the same
    omniclip pretrain-tiny --out /tmp/t.safetensors --steps 50 --seed 1     # a quick variant
    omniclip pretrain-tiny --eval                                           # zero-shot accuracy of omniclip-tiny
    omniclip pretrain-tiny --eval --weights /tmp/t.safetensors --eval-seed 7

An interrupted run leaves ``<out stem>.state.pt`` beside ``--out``; the same command resumes it and writes the same
bytes as an uninterrupted run.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from omniclip.cli import non_negative_int, positive_int, writable_file
from omniclip.embedded import EMBEDDED_CLIP, record_path

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    from omniclip.embedded.pretrain import EVAL_SEED, PretrainConfig

    defaults = PretrainConfig()
    p = subparsers.add_parser(
        "pretrain-tiny",
        help="pretrain the embedded tiny CLIP on generated image-caption pairs, or evaluate it zero-shot",
        description=__doc__.split("\n")[0],
    )
    p.add_argument("--out", type=Path, help="safetensors file to write; the training record goes beside it (.json)")
    p.add_argument(
        "--steps", type=positive_int, default=defaults.steps, help=f"optimiser steps (default {defaults.steps})"
    )
    p.add_argument(
        "--seed", type=non_negative_int, default=defaults.seed, help=f"init and data seed (default {defaults.seed})"
    )
    p.add_argument("--batch-size", type=positive_int, default=defaults.batch_size, help="pairs per step")
    p.add_argument(
        "--threads", type=positive_int, default=defaults.threads, help="torch threads (fixed for bit-exact runs)"
    )
    p.add_argument("--eval", action="store_true", help="only report zero-shot accuracies of --weights")
    p.add_argument(
        "--weights", default=EMBEDDED_CLIP, help="model for --eval: a file or a name (default omniclip-tiny)"
    )
    p.add_argument(
        "--eval-seed", type=non_negative_int, default=EVAL_SEED, help="seed of the freshly drawn evaluation images"
    )
    p.add_argument("--eval-images", type=positive_int, default=1024, help="images per split (seen and unseen pairs)")
    p.set_defaults(func=run)


def _print_accuracy(accuracy: dict[str, dict[str, float]], chance: dict[str, float]) -> None:
    print(f"{'split':8s} " + " ".join(f"{k:>8s}" for k in chance))
    for split, scores in accuracy.items():
        print(f"{split:8s} " + " ".join(f"{scores[k]:8.3f}" for k in chance))
    print(f"{'chance':8s} " + " ".join(f"{v:8.3f}" for v in chance.values()))


def run(args: argparse.Namespace) -> int:
    from omniclip.clip import load_clip
    from omniclip.embedded.pretrain import (
        PretrainConfig,
        chance_levels,
        compare_with_shipped,
        deterministic,
        pretrain,
        save_embedded,
        zero_shot_accuracy,
    )

    if args.eval and args.out is None:
        with deterministic(args.threads):
            accuracy = zero_shot_accuracy(load_clip(args.weights), seed=args.eval_seed, images=args.eval_images)
        _print_accuracy(accuracy, chance_levels())
        return 0
    if args.out is None:
        raise ValueError("pass --out PATH to pretrain (e.g. --out omniclip-tiny.safetensors) or --eval to evaluate")
    if args.out.suffix != ".safetensors":
        raise ValueError(f"--out {args.out} must end in .safetensors (the record is written beside it as .json)")
    writable_file(args.out, "--out")
    shipped_file = record_path()
    shipped = json.loads(shipped_file.read_text()) if shipped_file.is_file() else None  # read before --out replaces it
    cfg = PretrainConfig(steps=args.steps, seed=args.seed, batch_size=args.batch_size, threads=args.threads)
    state = args.out.with_name(f"{args.out.stem}.state.pt")  # resumed if the run is interrupted
    model, history = pretrain(cfg, state_file=state)
    record_file, record = save_embedded(
        model, args.out, cfg, history, wall_time_s=history[-1]["seconds"], eval_seed=args.eval_seed,
        eval_images=args.eval_images,
    )  # fmt: skip
    state.unlink(missing_ok=True)
    print(f"wrote {args.out} ({record['file_bytes'] / 1e6:.1f} MB, sha256 {record['sha256'][:16]}) and {record_file}")
    print(json.dumps({"wall_time_s": record["wall_time_s"], "final_loss": record["final_loss"]}))
    _print_accuracy(record["zero_shot"]["accuracy"], record["zero_shot"]["chance"])
    print(compare_with_shipped(record, shipped))
    return 0
