"""``omniclip train`` and ``omniclip eval``: run a protocol from a config, or evaluate a checkpoint under one.

Examples::

    omniclip train --config configs/few_shot/hmdb51_vitb16.yaml protocol.shots=16 train.lr=2e-4
    omniclip train --config configs/supervised/k400_vitb16_8f.yaml --output runs/k400 --resume
    torchrun --nproc_per_node=8 -m omniclip train --config configs/supervised/k400_vitb16_8f.yaml
    omniclip eval --config configs/zero_shot/ucf101_vitb16.yaml --checkpoint runs/zero_shot/k400/ViT-B-16_32f/<time>
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from functools import partial
from pathlib import Path

from omniclip.config import RunConfig, load_config
from omniclip.dist import DistInfo, broadcast_object, process_group
from omniclip.precision import amp_dtype
from omniclip.protocols.runners import evaluate_protocol, run_protocol
from omniclip.runlog import default_run_dir
from omniclip.train.checkpoint import load_trained_model
from omniclip.train.loop import NonFiniteLossError, build_train_model, train

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train and evaluate under a protocol (config file + key=value overrides)")
    _common(p)
    p.add_argument("--output", help="run directory (default runs/<protocol>/<dataset>/<arch>_<T>f/<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output (default: the newest run)")
    p.set_defaults(func=run_train)
    e = subparsers.add_parser("eval", help="evaluate a checkpoint (or plain CLIP) under a config's protocol")
    _common(e)
    e.add_argument("--checkpoint", help="run directory, checkpoint folder or model.safetensors (omit: plain CLIP)")
    e.add_argument("--output", help="where reports go (default <checkpoint run>/eval-<config name>)")
    e.set_defaults(func=run_eval)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="YAML file holding the differences from the defaults")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.lr=1e-4")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides, e.g. protocol.shots=8")


def _config(args: argparse.Namespace) -> RunConfig:
    return load_config(args.config, [*args.set, *args.overrides])


def run_train(args: argparse.Namespace) -> int:
    cfg = _config(args)
    with process_group(cfg.train.device) as dist:
        try:
            run_dir = Path(broadcast_object(str(_train_dir(args, cfg)) if dist.is_main else None))  # type: ignore[arg-type]
            fit = partial(_fit, dist=dist)
            summary = run_protocol(
                cfg,
                run_dir,
                fit=fit,
                device=dist.device,
                amp_dtype=amp_dtype(dist.device, cfg.train.amp),
                resume=args.resume,
            )
        except NonFiniteLossError as err:  # raised on every rank at the same step (the loss is all-reduced)
            print(f"omniclip train: stopped: {err}", file=sys.stderr)
            return 1
        if dist.is_main:
            print(json.dumps({"run_dir": str(run_dir), **summary}, indent=2))
        return 0


def _fit(cfg: RunConfig, run_dir: Path, resume: bool, *, dist: DistInfo):
    return train(cfg, run_dir, resume=resume, dist=dist).model


def _train_dir(args: argparse.Namespace, cfg: RunConfig) -> Path:
    if args.output:
        return Path(args.output)
    d = default_run_dir(cfg.protocol.name, cfg.data.dataset, cfg.clip.source, cfg.data.num_frames)
    if not args.resume:
        return d
    runs = sorted(p for p in d.parent.glob("*") if p.is_dir())
    if not runs:
        raise FileNotFoundError(f"--resume: no earlier run under {d.parent}; pass --output RUN_DIR")
    return runs[-1]


def run_eval(args: argparse.Namespace) -> int:
    cfg = _config(args)
    with process_group(cfg.train.device) as dist:
        if args.checkpoint:
            model, meta = load_trained_model(args.checkpoint, device=dist.device)
            base = Path(args.checkpoint)
            base = base if base.is_dir() else base.parent
        else:
            model, base = build_train_model(cfg, dist.device).eval(), Path("runs") / "eval" / cfg.data.dataset
        out = Path(args.output) if args.output else base / f"eval-{Path(args.config).stem}"
        summary = evaluate_protocol(
            cfg, model, out, device=dist.device, amp_dtype=amp_dtype(dist.device, cfg.train.amp)
        )
        if dist.is_main:
            print(json.dumps({"output": str(out), **summary}, indent=2))
        return 0
