"""``omniclip predict`` (classify videos with your class names) and ``omniclip export`` (encoder + class embeddings).

Examples::

    omniclip predict clip.mp4 --clip ViT-B/16 --classes "archery,juggling,surfing"
    omniclip predict a.mp4 b.mp4 --checkpoint runs/few_shot/hmdb51/ViT-B-16_8f/2026-11-26 --top-k 3 --json
    omniclip predict videos/ --checkpoint runs/few_shot/hmdb51/ViT-B-16_8f/2026-11-26   # every video under videos/
    omniclip export --checkpoint runs/.../checkpoint --out exported/hmdb51
    omniclip export --clip omniclip-tiny --classes "archery,juggling" --out exported/tiny --format onnx
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, cast

from omniclip.cli import positive_int
from omniclip.files import writable_dir

PREDICT_PRECISION = "auto (default): frozen weights in bf16 where this machine computes bf16 fast (AMX CPUs), else fp32"
EXPORT_PRECISION = (
    "fp32 (default: an export runs on any machine); bf16 stores the frozen weights in bf16 (half the size, fast only "
    "where bf16 is native); auto: what is fastest on this machine"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    from omniclip.precision import PRECISION_NAMES

    p = subparsers.add_parser(
        "predict",
        help="classify videos with your own class names",
        description="Rank class names for each video (softmax over classes, averaged over views). A video that "
        "cannot be read is reported on stderr and skipped; the exit code is then 1.",
    )
    p.add_argument(
        "videos", nargs="+", metavar="VIDEO", help="video files, or folders: every video under them (sorted)"
    )
    _add_model_args(p)
    p.add_argument("--precision", choices=PRECISION_NAMES, default="auto", help=PREDICT_PRECISION)
    p.add_argument("--top-k", type=positive_int, default=5, help="classes shown per video (default 5)")
    p.add_argument("--views", default="1x1", help="clips x crops per video, e.g. 4x3 (default 1x1)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_predict)

    e = subparsers.add_parser(
        "export",
        help="export the video encoder and the class-text embeddings",
        description="Write video_encoder.pt2 (or .onnx), class_embeddings.safetensors, "
        "class_names.json and export.json into --out.",
    )
    _add_model_args(e)
    e.add_argument("--precision", choices=PRECISION_NAMES, default="fp32", help=EXPORT_PRECISION)
    e.add_argument("--out", required=True, type=Path, help="export directory")
    e.add_argument(
        "--format",
        dest="fmt",
        choices=["torch-export", "onnx"],
        default="torch-export",
        help="encoder format (default torch-export; onnx needs `pip install onnx onnxscript`)",
    )
    e.set_defaults(func=run_export)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    source_options(p)
    class_options(p, "archery,juggling")
    p.add_argument(
        "--templates",
        action="append",
        metavar="T",
        help='text template such as "a video of a person {}." (repeat to average several; default: the model\'s)',
    )
    frames_option(p, "clip")
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    p.add_argument(
        "--allow-other-backbone",
        action="store_true",
        help="use a checkpoint on CLIP weights other than those it was trained on (refused by default)",
    )


# The model and class options of predict, export, timeline, index and search, and reading them back.
DEVICE_HELP = "cpu, cuda, cuda:1 ... (default cpu)"


def source_options(
    p: argparse.ArgumentParser,
    *,
    required: bool = True,
    metavars: tuple[str, str] = ("SOURCE", "CKPT"),
    run: str = "directory",
) -> None:
    """``--clip`` or ``--checkpoint``: where the model comes from (``run``: what the help calls a run's folder)."""
    src = p.add_mutually_exclusive_group(required=required)
    clip_help = "CLIP weights: file, HF folder, ViT-B/16, omniclip-tiny (zero-shot)"
    src.add_argument("--clip", metavar=metavars[0], help=clip_help)
    src.add_argument(
        "--checkpoint", metavar=metavars[1], help=f"trained run {run}, checkpoint folder or model.safetensors"
    )


def frames_option(p: argparse.ArgumentParser, per: str) -> None:
    p.add_argument("--frames", type=positive_int, default=None, help=f"frames per {per} T (CLIP weights: default 8)")


def class_options(p: argparse.ArgumentParser, example: str) -> None:
    """``--classes`` or ``--classes-file``; ``example`` shows names for --classes."""
    names = p.add_mutually_exclusive_group()
    names.add_argument("--classes", help=f'comma-separated class names, e.g. "{example}"')
    names.add_argument("--classes-file", type=Path, metavar="F", help="class names: one per line, or an id,name CSV")


def classes_from_args(args: argparse.Namespace, example: str) -> list[str] | None:
    """The names of --classes or --classes-file; None when neither is given (the checkpoint's classes)."""
    if args.classes is not None:
        names = [c.strip() for c in args.classes.split(",")]
        if not any(names):
            raise ValueError(f"--classes is empty; give names such as --classes '{example}'")
        return names
    if args.classes_file is not None:
        from omniclip.data.records import read_class_names

        names = read_class_names(args.classes_file)
        if not names:
            raise ValueError(f"--classes-file {args.classes_file} names no class")
        return names
    return None


def load_from_args(args: argparse.Namespace, device: str, **options: Any):
    """The classifier of --clip or --checkpoint and --frames on ``device`` (``options`` go to ``load_model``)."""
    from omniclip.predict import SourceKind, load_model

    kind: SourceKind = "checkpoint" if args.checkpoint else "clip"
    return load_model(args.checkpoint or args.clip, device=device, num_frames=args.frames, kind=kind, **options)


def _load(args: argparse.Namespace):
    return load_from_args(args, args.device, allow_other_backbone=args.allow_other_backbone, precision=args.precision)


def run_predict(args: argparse.Namespace) -> int:
    from omniclip.predict import Prediction, VideoReadError, check_class_names, parse_views, predict, video_files

    videos = video_files(args.videos)  # missing paths and empty folders end here, before the model loads
    parse_views(args.views)
    classifier = _load(args)
    given = classes_from_args(args, "archery,juggling")
    classes = check_class_names(given if given is not None else classifier.class_names)
    classifier.class_embeddings(classes, args.templates)  # bad templates or overlong names: before any video
    rows: list[dict[str, object]] = []
    for video in videos:
        try:
            found = predict(
                classifier, video, classes=classes, templates=args.templates, top_k=args.top_k, views=args.views
            )
            preds = cast(list[Prediction], found)  # one path gives one list of predictions
        except VideoReadError as err:  # one unreadable file does not stop the others
            reason = str(err).replace("\n", " ")
            print(f"omniclip predict: skipped: {reason}", file=sys.stderr, flush=True)
            rows.append({"video": str(video), "error": reason})
            continue
        rows.append(
            {"video": str(video), "predictions": [{"class": p.name, "probability": p.probability} for p in preds]}
        )
        if not args.json:
            width = max(len(p.name) for p in preds)
            print(video)
            for rank, p in enumerate(preds, start=1):
                print(f"  {rank:>2}. {p.name:<{width}}  {p.probability:7.2%}", flush=rank == len(preds))
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    failed = sum("error" in row for row in rows)
    if failed:
        print(f"omniclip predict: {failed} of {len(videos)} videos could not be read", file=sys.stderr)
    return 1 if failed else 0


def run_export(args: argparse.Namespace) -> int:
    from omniclip.export import export_model

    writable_dir(args.out, "--out")
    classifier = _load(args)
    classes = classes_from_args(args, "archery,juggling")
    paths = export_model(classifier, args.out, classes=classes, templates=args.templates, fmt=args.fmt)
    for name, path in paths.items():
        print(f"{name:<10} {path}")
    return 0
