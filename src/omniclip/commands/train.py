"""``omniclip train`` and ``omniclip eval``: run a protocol from a config, or evaluate a checkpoint under one.

``train --data FOLDER`` trains on a folder of class folders without a config: the split is drawn (or read from
``train/``, ``val/``, ``test/`` folders), written into ``<run>/data/`` once the run folder is locked, and the config
comes from the recipe of ``omniclip.recipe`` (docs/own-data.md), a ``--config`` file if given, and overrides.

Examples::

    omniclip train --data my_videos/                         # a folder of class folders: no config, no lists
    omniclip train --data my_videos/ --clip omniclip-tiny --shots 8 --output runs/mine train.epochs=20
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
import shlex
import sys
from contextlib import ExitStack
from functools import partial
from pathlib import Path

from omniclip.cli import fraction, non_negative_int, positive_int
from omniclip.config import RunConfig, load_config
from omniclip.dist import DistInfo, on_main, process_group
from omniclip.files import writable_dir
from omniclip.precision import amp_dtype
from omniclip.protocols.runners import evaluate_protocol, run_protocol
from omniclip.recipe import DATA_DIR, FolderRun, folder_run
from omniclip.runlog import default_run_dir, empty_run_dir, run_contents, run_lock
from omniclip.train.checkpoint import find_checkpoint, load_trained_model
from omniclip.train.loop import NonFiniteLossError, build_train_model, train

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train and evaluate: on a folder of class folders (--data), or under a config's protocol (--config)",
    )
    _common(p, config_required=False)
    _data_flags(p)
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


def _data_flags(p: argparse.ArgumentParser) -> None:
    d = p.add_argument_group("a folder of class folders (--data; docs/own-data.md)")
    d.add_argument(
        "--data",
        type=Path,
        metavar="FOLDER",
        help="FOLDER/<class>/**/<video> (or FOLDER/{train,val,test}/<class>/...): no config needed",
    )
    d.add_argument("--clip", metavar="SOURCE", help="CLIP to start from (default ViT-B/16; omniclip-tiny: fast)")
    d.add_argument("--shots", type=positive_int, help="few-shot: train on K videos per class (default: all of them)")
    d.add_argument("--val", type=fraction, default=None, help="fraction of each class held out as val (default 0.2)")
    d.add_argument("--test", type=fraction, default=None, help="fraction of each class held out as test (default 0)")
    d.add_argument("--split-seed", type=non_negative_int, default=None, help="seed of the drawn split (default 0)")


def _common(p: argparse.ArgumentParser, config_required: bool = True) -> None:
    p.add_argument(
        "--config",
        required=config_required,
        help="YAML file holding the differences from the defaults"
        + ("" if config_required else " (with --data: laid over the recipe)"),
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.lr=1e-4")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides, e.g. protocol.shots=8")


def _config(args: argparse.Namespace) -> RunConfig:
    return load_config(args.config, [*args.set, *args.overrides])


def run_train(args: argparse.Namespace) -> int:
    if args.resume and args.overwrite:
        raise ValueError("--resume continues the run in --output and --overwrite deletes it; pass one of them")
    folder = _folder_run(args)
    cfg = folder.config() if folder is not None else _config(args)
    with process_group(cfg.train.device) as dist, ExitStack() as held:
        try:
            # rank 0 chooses the folder and locks it for the whole run (then writes a --data run's lists into it);
            # a refusal reaches every rank
            run_dir = Path(on_main(dist, lambda: str(_claim_run_dir(args, cfg, held, folder))))
            if folder is not None:
                cfg = folder.config(run_dir / DATA_DIR)
            fit = partial(_fit, dist=dist, allow_other_backbone=args.allow_other_backbone)
            amp = amp_dtype(dist.device, cfg.train.amp)
            summary = run_protocol(cfg, run_dir, fit=fit, device=dist.device, amp_dtype=amp, resume=args.resume)
        except NonFiniteLossError as err:  # raised on every rank at the same step (the loss is all-reduced)
            print(f"omniclip train: stopped: {err}", file=sys.stderr)
            return 1
        if dist.is_main and folder is not None:
            print(folder_report(run_dir, summary, [Path(name).stem for name in cfg.data.test_lists]))
        elif dist.is_main:
            print(json.dumps({"run_dir": str(run_dir), **summary}, indent=2))
        return 0


FOLDER_ONLY = ("clip", "shots", "val", "test", "split_seed")


def _folder_run(args: argparse.Namespace) -> FolderRun | None:
    """The --data run (scanned and split, nothing written), or None for a --config run.

    Raises:
        ValueError: neither --config nor --data, or a --data flag without --data.
    """
    if args.data is None:
        given = [f"--{k.replace('_', '-')}" for k in FOLDER_ONLY if getattr(args, k) is not None]
        if args.config is None:
            raise ValueError("give --data FOLDER (a folder of class folders) or --config FILE")
        if given:
            raise ValueError(f"{', '.join(given)} go with --data FOLDER; with --config set the config keys instead")
        return None
    data_dir = None
    if args.resume and args.output:
        if not Path(args.output).is_dir():
            raise FileNotFoundError(f"--resume: run folder {args.output} does not exist; drop --resume to start there")
        data_dir = Path(args.output) / DATA_DIR
    return folder_run(
        args.data,
        clip=args.clip,
        shots=args.shots,
        val=0.2 if args.val is None else args.val,
        test=0.0 if args.test is None else args.test,
        seed=args.split_seed or 0,
        config_file=args.config,
        overrides=[*args.set, *args.overrides],
        resume=args.resume,
        data_dir=data_dir,
    )


def folder_report(run_dir: Path, summary: dict, held_out: list[str]) -> str:
    """What a --data run prints at its end: the held-out accuracy, where things are, and how to use the model.

    ``held_out`` names the evaluated lists (their stems: ``val``, ``test``).
    """
    lines = []
    for name in held_out:
        metrics = summary.get("splits", {}).get(name)
        if metrics:
            lines.append(
                f"held-out {name}: {metrics['num_scored']} of {metrics['num_videos']} videos scored, "
                f"top-1 {_pct(metrics['top1'])}, top-5 {_pct(metrics['top5'])}, "
                f"mean class accuracy {_pct(metrics['mean_class_accuracy'])}"
            )
    if "seeds" in summary:  # several seeds (protocol.seeds): one model per seed
        top1, seeds = summary["summary"]["top1"], ", ".join(summary["seeds"])
        lines.append(
            f"held-out {', '.join(held_out)}: top-1 {top1['mean']:.1f}% ± {top1['std']:.1f} over seeds {seeds} "
            f"(worst {top1['worst']:.1f}%, best {top1['best']:.1f}%)"
        )
    model = run_dir if (run_dir / "checkpoints").is_dir() else next(iter(sorted(run_dir.glob("seed_*"))), run_dir)
    reports = [model / "eval" / name for name in held_out]
    lines += [f"report: {r}/ (metrics.json, per_class.csv, confusion.png)" for r in reports if r.is_dir()]
    ckpt = shlex.quote(str(model))
    lines += [
        f"run: {run_dir}/ (config.yaml, checkpoints/, results.json); lists: {run_dir / DATA_DIR}/",
        "classify new videos (files or folders):",
        f"  omniclip predict NEW_VIDEOS/ --checkpoint {ckpt}",
        "see when each class happens in a long video:",
        f"  omniclip timeline LONG_VIDEO.mp4 --checkpoint {ckpt} --out {shlex.quote(str(run_dir / 'timeline'))}",
    ]
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}%"


def _fit(cfg: RunConfig, run_dir: Path, resume: bool, *, dist: DistInfo, allow_other_backbone: bool):
    return train(cfg, run_dir, resume=resume, dist=dist, allow_other_backbone=allow_other_backbone).model


def _claim_run_dir(args: argparse.Namespace, cfg: RunConfig, held: ExitStack, folder: FolderRun | None) -> Path:
    """The run folder, writable and locked (held until ``held`` closes); emptied with --overwrite; a --data run's
    lists written into ``<run>/data`` (or, resumed, found there).

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
    if folder is not None:
        folder.write(run_dir / DATA_DIR)
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
            find_checkpoint(args.checkpoint)  # a mistyped path fails before an output folder is made
            base = Path(args.checkpoint)
            base = base if base.is_dir() else base.parent
        else:
            base = Path("runs") / "eval" / cfg.data.dataset
        out = Path(args.output) if args.output else base / f"eval-{Path(args.config).stem}"
        on_main(dist, lambda: writable_dir(out, "--output"))  # before any model is loaded or clip decoded
        if args.checkpoint:
            model, _ = load_trained_model(
                args.checkpoint, device=dist.device, allow_other_backbone=args.allow_other_backbone
            )
        else:
            model = build_train_model(cfg, dist.device).eval()
        summary = evaluate_protocol(cfg, model, out, device=dist.device)  # in cfg.train's precision
        if dist.is_main:
            print(json.dumps({"output": str(out), **summary}, indent=2))
        return 0
