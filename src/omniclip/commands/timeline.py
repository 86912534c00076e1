"""``omniclip timeline`` (when things happen in one long video), ``omniclip index`` and ``omniclip search`` (where
moments are in a collection).

Examples::

    omniclip timeline match.mp4 --clip ViT-B/16 --classes "serve,rally,celebration" --out runs/timeline/match
    omniclip timeline long.mp4 --checkpoint runs/few_shot/hmdb51/ViT-B-16_8f/2026-11-26 --out out/long --window 8
    omniclip index videos/ --clip ViT-B/16 --out runs/index/home
    torchrun --nproc_per_node=4 -m omniclip index --list videos.txt --clip ViT-B/16 --out runs/index/home
    omniclip search runs/index/home "someone opening a door" --top 5 --html results.html
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omniclip.cli import non_negative_seconds, positive_int, positive_seconds, probability, writable_file
from omniclip.commands.predict import (
    DEVICE_HELP,
    class_options,
    classes_from_args,
    frames_option,
    load_from_args,
    source_options,
)
from omniclip.files import writable_dir, write_text

CLASSES_EXAMPLE = "serve,rally,celebration"


def _model_args(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    source_options(p, required=required, metavars=("SRC", "RUN"), run="folder")
    frames_option(p, "window")


def _window_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--window", type=positive_seconds, help="seconds per window (default T x 0.5 s: 4 s for T=8)")
    p.add_argument("--stride", type=positive_seconds, help="seconds between window starts (default: half the window)")
    p.add_argument("--batch", type=positive_int, default=16, help="windows per forward pass (default 16)")


def register(subparsers: argparse._SubParsersAction) -> None:
    t = subparsers.add_parser(
        "timeline",
        help="when each class happens in one long video",
        description="Score every window of a video against your class names, smooth, threshold and merge the windows "
        "into segments; write timeline.json, segments.csv, timeline.png and report.html into --out.",
    )
    t.add_argument("video", metavar="VIDEO", help="one video file")
    _model_args(t)
    class_options(t, CLASSES_EXAMPLE)
    t.add_argument("--templates", action="append", metavar="T", help="text template (repeat to average several)")
    t.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    _window_args(t)
    t.add_argument("--smooth", type=positive_int, default=3, help="windows in the moving average (default 3)")
    t.add_argument("--threshold", type=probability, default=0.5, help="probability that labels a window (0.5)")
    t.add_argument("--min-length", type=non_negative_seconds, help="shortest segment in seconds (default: window)")
    t.add_argument("--top-k", type=positive_int, help="timeline.json keeps the k best classes per window")
    t.add_argument("--device", default="cpu", help=DEVICE_HELP)
    t.set_defaults(func=run_timeline)

    i = subparsers.add_parser(
        "index",
        help="embed every window of many videos into a searchable index",
        description="Embed every window of every video into INDEX (incremental: new or changed videos only; "
        "resumable after a kill). Unreadable videos are listed and skipped; the exit code is then 1.",
    )
    i.add_argument("videos", nargs="*", metavar="VIDEO", help="video files or folders (every video under them)")
    i.add_argument("--list", type=Path, metavar="L", help="a file naming one video per line (relative to its folder)")
    _model_args(i)
    i.add_argument("--out", required=True, type=Path, metavar="INDEX", help="index folder")
    _window_args(i)
    i.add_argument("--device", default="auto", help="auto (this rank's GPU if any, default), cpu, cuda ...")
    i.add_argument("--no-progress", action="store_true", help="no progress bar")
    i.set_defaults(func=run_index)

    s = subparsers.add_parser(
        "search",
        help="find moments in an index with a text query",
        description="Rank the windows of INDEX by cosine similarity to the query (one fp16 matrix pass). The index's "
        "own model embeds the query; another model is refused.",
    )
    s.add_argument("index", type=Path, metavar="INDEX", help="index folder (omniclip index)")
    s.add_argument("query", help='what happens, e.g. "someone opening a door"')
    s.add_argument("--top", type=positive_int, default=10, help="hits shown (default 10)")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.add_argument("--html", type=Path, metavar="OUT", help="also write a results page")
    s.add_argument("--templates", action="append", metavar="T", help='text template around the query (default "{}")')
    s.add_argument("--all-windows", action="store_true", help="keep windows that overlap a better one of their video")
    _model_args(s, required=False)
    s.add_argument("--device", default="cpu", help="cpu, cuda ... (default cpu)")
    s.set_defaults(func=run_search)


def _check_window(args: argparse.Namespace) -> None:
    if args.window is not None and args.stride is not None and args.stride > args.window:
        raise ValueError(f"--stride {args.stride:g} s is longer than --window {args.window:g} s; parts would be unseen")


def run_timeline(args: argparse.Namespace) -> int:
    from omniclip.timeline.scores import check_video, timeline, write_timeline

    video = check_video(args.video)
    classes = classes_from_args(args, CLASSES_EXAMPLE)  # None: the checkpoint's
    _check_window(args)
    writable_dir(args.out, "--out")
    tl = timeline(
        load_from_args(args, args.device),
        video,
        classes,
        templates=args.templates,
        window=args.window,
        stride=args.stride,
        smooth=args.smooth,
        threshold=args.threshold,
        min_length=args.min_length,
        batch_size=args.batch,
    )
    paths = write_timeline(tl, args.out, top_k=args.top_k)
    rate = len(tl.starts) / tl.seconds if tl.seconds > 0 else float("inf")
    print(f"{video}: {tl.duration:.1f} s, {len(tl.starts)} windows ({rate:.1f} windows/s), {len(tl.segments)} segments")
    for s in tl.segments:
        print(f"  {s.start:9.2f} {s.end:9.2f}  {s.label}  {s.score:.3f}")
    for name, path in paths.items():
        print(f"{name:<9} {path}")
    return 0


def _list_videos(args: argparse.Namespace) -> list[Path]:
    from omniclip.predict import video_files

    named: list[str | Path] = list(args.videos)
    if args.list is not None:
        if not args.list.is_file():
            raise FileNotFoundError(f"--list {args.list} does not exist")
        entries = [line.strip() for line in args.list.read_text(encoding="utf-8").splitlines()]
        named += [args.list.parent / e for e in entries if e and not e.startswith("#")]  # an absolute one: kept as is
    if not named:
        raise ValueError("no videos: name video files or folders, or give --list L")
    return video_files(named)


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler's kill) ends indexing like Ctrl-C: finished shards stay, one line says how to resume."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_index(args: argparse.Namespace) -> int:
    from omniclip.dist import process_group
    from omniclip.timeline.index import build_index, check_index_folder, model_record
    from omniclip.timeline.windows import window_spec

    videos = _list_videos(args)
    _check_window(args)
    check_index_folder(args.out)  # before the model loads
    with process_group(args.device) as info:
        classifier = load_from_args(args, str(info.device))
        spec = window_spec(classifier, args.window, args.stride)
        record = model_record(classifier, args.checkpoint or args.clip, "checkpoint" if args.checkpoint else "clip")
        try:
            with _terminate_as_interrupt():
                result = build_index(
                    classifier, videos, args.out, spec, record, batch_size=args.batch, progress=not args.no_progress
                )
        except KeyboardInterrupt:
            print(
                f"omniclip index: error: interrupted; {args.out} keeps every video embedded so far: run the same "
                "command again to resume",
                file=sys.stderr,
            )
            return 2
    if info.rank != 0:
        return 1 if result.failed else 0
    for video, err in result.failed:
        print(f"omniclip index: skipped: cannot read video {video}: {err}", file=sys.stderr)
    rate = result.windows / result.seconds if result.seconds > 0 else 0.0
    print(
        f"{args.out}: {result.rows} windows of {result.videos} videos named ({result.embedded} embedded now, "
        f"{result.skipped} up to date, {len(result.failed)} unreadable); {result.windows} windows in "
        f"{result.seconds:.1f} s ({rate:.1f} windows/s)"
    )
    if result.failed:
        print(f"omniclip index: {len(result.failed)} of {len(videos)} videos could not be read", file=sys.stderr)
    return 1 if result.failed else 0


def run_search(args: argparse.Namespace) -> int:
    from omniclip.timeline.search import index_model, load_index, search

    found = load_index(args.index)
    if args.html is not None:
        writable_file(args.html, "--html")
    if not args.query.strip():
        raise ValueError("the query is empty; describe the moment, e.g. 'someone opening a door'")
    model = load_from_args(args, args.device) if (args.clip or args.checkpoint) else index_model(found, args.device)
    result = search(
        found, args.query, model=model, top_k=args.top, templates=args.templates, merge_overlaps=not args.all_windows
    )
    summary = f"{result.rows} windows of {result.videos} videos searched in {1000 * result.seconds:.1f} ms"
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        for rank, hit in enumerate(result.hits, start=1):
            print(f"{rank:>3}. {hit.score:.4f}  {hit.start:9.2f} {hit.end:9.2f}  {hit.video}")
        print(summary, file=sys.stderr)
    if args.html is not None:
        from omniclip.timeline.pages import search_html

        page = search_html(args.query, [h.to_dict() for h in result.hits], args.html.parent, summary)
        path = write_text(args.html, page)
        print(f"results page: {path}", file=sys.stderr)
    return 0
