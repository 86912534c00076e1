"""``omniclip train`` and ``omniclip eval``: run a protocol from a config, or evaluate a checkpoint under one.

Examples::

    omniclip train --config configs/few_shot/hmdb51_vitb16.yaml protocol.shots=16 train.lr=2e-4
    omniclip train --config configs/supervised/k400_vitb16_8f.yaml --output runs/k400 --resume
    omniclip train --config configs/supervised/k400_vitb16_8f.yaml --output runs/k400 --overwrite
    torchrun --nproc_per_node=8 -m omniclip train --config configs/supervised/k400_vitb16_8f.yaml
    omniclip eval --config configs/zero_shot/ucf101_vitb16.yaml --checkpoint runs/zero_shot/k400/ViT-B-16_32f/<time>
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from contextlib import ExitStack
from functools import partial
from pathlib import Path

from omniclip.config import RunConfig, load_config
from omniclip.dist import DistInfo, process_group
from omniclip.files import writable_dir
from omniclip.precision import amp_dtype
from omniclip.protocols.runners import evaluate_protocol, run_protocol
from omniclip.runlog import default_run_dir, empty_run_dir, run_contents, run_lock
from omniclip.train.checkpoint import find_checkpoint, load_trained_model
from omniclip.train.loop import NonFiniteLossError, build_train_model, on_main, train

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train and evaluate under a protocol (config file + key=value overrides)")
    _common(p)
    p.add_argument("--output", help="run directory (default runs/<protocol>/<dataset>/<arch>_<T>f/<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output (default: the newest run)")
    p.add_argument("--overwrite", action="store_true", help="delete what --output holds, then start a new run there")
    _backbone_flag(p)
    p.set_defaults(func=run_train)
    e = subparsers.add_parser("eval", help="evaluate a checkpoint (or plain CLIP) under a config's protocol")
    _common(e)
    e.add_argument("--checkpoint", help="run directory, checkpoint folder or model.safetensors (omit: plain CLIP)")
    e.add_argument("--output", help="where reports go (default <checkpoint run>/eval-<config name>)")
    _backbone_flag(e)
    e.set_defaults(func=run_eval)


def _backbone_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-other-backbone",
        action="store_true",
        help="use the checkpoint on a CLIP whose weights differ from the one it was trained from (warned)",
    )


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="YAML file holding the differences from the defaults")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.lr=1e-4")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides, e.g. protocol.shots=8")


def _config(args: argparse.Namespace) -> RunConfig:
    return load_config(args.config, [*args.set, *args.overrides])


def run_train(args: argparse.Namespace) -> int:
    if args.resume and args.overwrite:
        raise ValueError("--resume continues the run in --output and --overwrite deletes it; pass one of them")
    cfg = _config(args)
    with process_group(cfg.train.device) as dist, ExitStack() as held:
        try:
            # rank 0 chooses the folder and locks it for the whole run; a refusal reaches every rank
            run_dir = Path(on_main(dist, lambda: str(_claim_run_dir(args, cfg, held))))
            fit = partial(_fit, dist=dist, allow_other_backbone=args.allow_other_backbone)
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


def _fit(cfg: RunConfig, run_dir: Path, resume: bool, *, dist: DistInfo, allow_other_backbone: bool):
    return train(cfg, run_dir, resume=resume, dist=dist, allow_other_backbone=allow_other_backbone).model


def _claim_run_dir(args: argparse.Namespace, cfg: RunConfig, held: ExitStack) -> Path:
    """The run folder, writable and locked (held until ``held`` closes); emptied with --overwrite.

    Raises:
        ValueError: the folder cannot be written, another run holds its lock, or it holds a run and neither
            --resume nor --overwrite was given.
    """
    run_dir = _train_dir(args, cfg)
    if args.resume and not run_dir.exists():
        raise FileNotFoundError(f"--resume: run folder {run_dir} does not exist; drop --resume to start a run there")
    writable_dir(run_dir, "--output")
    held.enter_context(run_lock(run_dir))
    if run_contents(run_dir) and not args.resume:
        if not args.overwrite:
            raise ValueError(
                f"run folder {run_dir} is not empty; continue its run with --resume, or delete it and start over "
                "with --overwrite"
            )
        log.warning("--overwrite: deleting what %s holds", run_dir)
        empty_run_dir(run_dir)
    return run_dir


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
            base = Path(args.checkpoint)
            base = base if base.is_dir() else base.parent
        else:
            base = Path("runs") / "eval" / cfg.data.dataset
        out = Path(args.output) if args.output else base / f"eval-{Path(args.config).stem}"
        if args.checkpoint:
            find_checkpoint(args.checkpoint)  # a mistyped path fails before an output folder is made
        on_main(dist, lambda: writable_dir(out, "--output"))  # before any model is loaded or clip decoded
        if args.checkpoint:
            model, meta = load_trained_model(
                args.checkpoint, device=dist.device, allow_other_backbone=args.allow_other_backbone
            )
        else:
            model = build_train_model(cfg, dist.device).eval()
        summary = evaluate_protocol(
            cfg, model, out, device=dist.device, amp_dtype=amp_dtype(dist.device, cfg.train.amp)
        )
        if dist.is_main:
            print(json.dumps({"output": str(out), **summary}, indent=2))
        return 0
