"""A moment index on disk: the embedding of every window of every video, built incrementally and resumably.

Layout of an index folder::

    INDEX/index.json                         what the folder is: format, model (source, fingerprint), windows
    INDEX/shards/<key>.safetensors           one video's windows: embeddings fp16 (n, E), start/end float32 (n,)
    INDEX/embeddings-<token>.safetensors     every shard merged: embeddings (N, E) fp16, video int32, start, end
    INDEX/manifest.json                      written last: the videos, row counts and the embeddings file's name

Every file is written whole or not at all (``omniclip.files``). A video's shard records the video's size and mtime;
a later run skips videos whose shard matches and embeds new or changed ones. A killed run loses at most the video it
was embedding: its finished shards stay, and the next run merges them. The merge writes a new embeddings file, then
the manifest that names it, then deletes the old file; so the manifest always describes a complete index, and a
folder without a manifest is not one yet. Under ``torchrun`` each rank embeds a share of the videos and rank 0 merges
once, after every rank has finished.

The model's fingerprint (SHA-256 of its configuration, frame count, crop size and every weight) is stored, and an
index refuses to be extended or queried with another model: embeddings of two models are not comparable.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from omniclip import dist
from omniclip.clip.weights import fingerprint
from omniclip.data.decode import DecodeError
from omniclip.files import save_safetensors, writable_dir, write_json
from omniclip.predict import VideoClassifier
from omniclip.timeline.embed import embed_video
from omniclip.timeline.windows import VideoWindows, WindowSpec, video_stream

log = logging.getLogger(__name__)

FORMAT = "omniclip-index"
VERSION = 1
SETTINGS = "index.json"
MANIFEST = "manifest.json"
SHARDS = "shards"


def model_fingerprint(classifier: VideoClassifier) -> str:
    """``sha256:<hex>`` over the model's configuration, T, S and every weight (floating ones as float32)."""
    model = classifier.model
    config = {k: v for k, v in dataclasses.asdict(model.config).items() if k != "grad_checkpointing"}
    head = {"config": config, "frames": classifier.num_frames, "size": classifier.image_size}
    return fingerprint(head, model.state_dict())


@dataclass(frozen=True)
class ModelRecord:
    """Which model an index was built with: enough to load it again and to check it is the same."""

    source: str  # absolute path of a file or folder, or a name ("omniclip-tiny", "ViT-B/16")
    kind: str  # "clip" or "checkpoint"
    fingerprint: str
    frames: int
    size: int

    def short(self) -> str:
        return f"{self.source} ({self.fingerprint[:19]})"


def model_record(classifier: VideoClassifier, source: str, kind: str) -> ModelRecord:
    path = Path(source)
    where = str(path.resolve()) if path.exists() else source
    return ModelRecord(where, kind, model_fingerprint(classifier), classifier.num_frames, classifier.image_size)


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path``; ValueError naming the file when it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a readable {what}: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a readable {what}: expected a JSON object")
    return data


def read_settings(index: Path) -> dict[str, Any]:
    """The ``index.json`` of ``index``; ValueError when the folder is not an omniclip index."""
    if not index.is_dir():
        raise ValueError(f"{index} is not an omniclip index: not a folder")
    path = index / SETTINGS
    if not path.is_file():
        raise ValueError(f"{index} is not an omniclip index: it has no {SETTINGS} (build one with omniclip index)")
    data = read_json(path, "index settings file")
    if data.get("format") != FORMAT or data.get("version") != VERSION:
        raise ValueError(
            f"{path} is not an omniclip index version {VERSION} (format {data.get('format')!r}, "
            f"version {data.get('version')!r})"
        )
    return data


def check_index_folder(index: Path) -> dict[str, Any] | None:
    """Before any model loads: ``index`` is an index (its settings are returned), an empty folder, or a folder that
    can be made.

    Raises:
        ValueError: ``index`` is a file, lies under a file, cannot be written, or is a folder holding other files.
    """
    if index.exists() and not index.is_dir():
        raise ValueError(f"--out {index} is an existing file, not an index folder")
    if index.is_dir() and any(index.iterdir()):
        return read_settings(index)
    writable_dir(index, "--out")
    return None


def open_index_folder(index: Path, record: ModelRecord, spec: WindowSpec) -> dict[str, Any]:
    """Make ``index`` an index for ``record`` and ``spec``, or check that it already is one (rank 0 only).

    Raises:
        ValueError: the folder holds something else, or an index of another model or other windows.
    """
    wanted = {"format": FORMAT, "version": VERSION, "model": dataclasses.asdict(record), "windows": spec.to_dict()}
    settings = check_index_folder(index)
    if settings is not None:
        have = settings.get("model", {}).get("fingerprint")
        if have != record.fingerprint:
            raise ValueError(
                f"{index} was built with another model ({settings.get('model', {}).get('source')}, {have}); "
                f"{record.short()} cannot extend it: index into another folder"
            )
        if settings.get("windows") != wanted["windows"]:
            raise ValueError(
                f"{index} was built with windows {settings.get('windows')}, not {wanted['windows']}: "
                "give the same --window/--stride or index into another folder"
            )
        return settings
    write_json(index / SETTINGS, wanted)
    return wanted


def shard_path(index: Path, video: Path) -> Path:
    """The shard of a video, named by a hash of its absolute path."""
    return index / SHARDS / f"{hashlib.sha256(str(video.absolute()).encode()).hexdigest()[:24]}.safetensors"


def file_state(video: Path) -> dict[str, int]:
    st = video.stat()
    return {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def shard_meta(path: Path) -> dict[str, Any] | None:
    """A shard's metadata, or None when the file is unreadable (then it is embedded again)."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        return json.loads(meta.get(FORMAT, "null"))
    except Exception as err:  # a damaged shard is rebuilt, not trusted
        log.warning("%s is unreadable (%s); its video is embedded again", path, err)
        return None


def estimate_windows(video: Path, spec: WindowSpec) -> int:
    """Windows of ``video`` from its container's duration (0 when unknown); only for the progress bar."""
    try:
        with video_stream(video) as (container, _):
            seconds = (container.duration or 0) / 1_000_000
    except (DecodeError, OSError):
        return 0
    return max(1, math.ceil((seconds - spec.window) / (spec.hop * spec.step)) + 1)


@dataclass
class IndexResult:
    """What one ``build_index`` run did."""

    index: Path
    videos: int = 0  # videos named
    embedded: int = 0  # videos embedded now (this rank, or all ranks on rank 0)
    skipped: int = 0  # videos whose shard was up to date
    windows: int = 0  # windows embedded now
    failed: list[tuple[str, str]] = field(default_factory=list)  # (video, error) of unreadable videos
    rows: int = 0  # windows in the whole index after the merge
    seconds: float = 0.0


def embed_to_shard(
    classifier: VideoClassifier,
    video: Path,
    spec: WindowSpec,
    shard: Path,
    record: ModelRecord,
    *,
    batch_size: int,
    on_windows: Callable[[int], object],
) -> int:
    """Embed every window of ``video`` and write its shard atomically; returns the window count."""
    state = file_state(video)
    windows = VideoWindows(video, spec)
    embeddings, starts, ends = [], [], []
    for batch in embed_video(classifier, windows, batch_size):
        embeddings.append(batch.embeddings.half())
        starts += batch.starts
        ends += batch.ends
        on_windows(len(batch.starts))
    assert windows.duration is not None
    meta = {"video": str(video.absolute()), **state, "fingerprint": record.fingerprint, "duration": windows.duration}
    tensors = {
        "embeddings": torch.cat(embeddings).contiguous(),  # (n, E) fp16
        "start": torch.tensor(starts, dtype=torch.float32),
        "end": torch.tensor([min(e, windows.duration) for e in ends], dtype=torch.float32),
    }
    save_safetensors(shard, tensors, metadata={FORMAT: json.dumps(meta)})
    return len(starts)


def pending_videos(index: Path, videos: Sequence[Path], fingerprint: str) -> list[Path]:
    """The videos without an up-to-date shard (new, changed since, or embedded by another model)."""
    todo = []
    for video in videos:
        meta = shard_meta(shard_path(index, video))
        fresh = (
            meta is not None
            and meta.get("video") == str(video.absolute())
            and meta.get("fingerprint") == fingerprint
            and {k: meta.get(k) for k in ("size", "mtime_ns")} == file_state(video)
        )
        if not fresh:
            todo.append(video)
    return todo


def remove_stale_files(index: Path) -> None:
    """Temporary files of killed writers (``.name.<pid>-<token>.tmp.suffix``)."""
    for folder in (index, index / SHARDS):
        for path in folder.glob(".*.tmp*"):
            path.unlink(missing_ok=True)


def build_index(
    classifier: VideoClassifier,
    videos: Sequence[str | Path],
    index: str | Path,
    spec: WindowSpec,
    record: ModelRecord,
    *,
    batch_size: int = 16,
    progress: bool = True,
) -> IndexResult:
    """Embed the windows of ``videos`` into ``index`` (see the module docstring); every rank calls it.

    Unreadable videos are listed in the result (and the manifest), never fatal. Raises ValueError when ``index`` is
    not an index of this model and these windows.
    """
    from tqdm import tqdm

    index = Path(index)
    began = time.perf_counter()
    paths = [Path(v) for v in videos]

    def prepare() -> None:  # rank 0 only; a refusal reaches every rank
        open_index_folder(index, record, spec)
        remove_stale_files(index)
        (index / SHARDS).mkdir(exist_ok=True)

    dist.on_main(dist.DistInfo(rank=dist.get_rank()), prepare)
    todo = pending_videos(index, paths, record.fingerprint)
    mine = todo[dist.get_rank() :: dist.get_world_size()]
    result = IndexResult(index=index, videos=len(paths), skipped=len(paths) - len(todo))
    total = sum(estimate_windows(v, spec) for v in mine)
    bar = tqdm(total=total, unit="win", desc="windows", disable=not progress or dist.get_rank() != 0, smoothing=0.1)
    try:
        for video in mine:
            shard = shard_path(index, video)
            try:
                result.windows += embed_to_shard(
                    classifier, video, spec, shard, record, batch_size=batch_size, on_windows=bar.update
                )
                result.embedded += 1
            except (DecodeError, OSError) as err:
                result.failed.append((str(video), str(err)))
            bar.total = max(bar.total, bar.n)
    finally:
        bar.close()
    parts: list[Any] = dist.all_gather_object((result.embedded, result.windows, result.failed))
    result.embedded = sum(p[0] for p in parts)
    result.windows = sum(p[1] for p in parts)
    result.failed = sorted(f for p in parts for f in p[2])
    if dist.get_rank() == 0:
        result.rows = merge_index(index, record, result.failed)
    dist.barrier()
    result.seconds = time.perf_counter() - began
    return result


def merge_index(index: Path, record: ModelRecord, failed: Sequence[tuple[str, str]] = ()) -> int:
    """Merge every shard of ``index`` (sorted by video path) into a new embeddings file, then the manifest.

    Nothing is rewritten when the manifest already lists exactly the shards present. Returns the row count.
    """
    from safetensors.torch import load_file

    shards = []
    for path in sorted((index / SHARDS).glob("[!.]*.safetensors")):  # not a writer's temporary file
        meta = shard_meta(path)
        if meta is not None and meta.get("fingerprint") == record.fingerprint:
            shards.append((meta, path))
    shards.sort(key=lambda s: s[0]["video"])
    listed = [(m["video"], m["size"], m["mtime_ns"]) for m, _ in shards]
    old = read_json(index / MANIFEST, "index manifest") if (index / MANIFEST).is_file() else {}
    if old and [(v["video"], v["size"], v["mtime_ns"]) for v in old.get("videos", [])] == listed:
        old["failed"] = [list(f) for f in failed]
        write_json(index / MANIFEST, old)
        return int(old.get("rows", 0))
    parts, table = [], []
    rows = 0
    for i, (meta, path) in enumerate(shards):
        tensors = load_file(str(path))
        n = int(tensors["embeddings"].shape[0])
        table.append({**meta, "windows": n, "first_row": rows})
        rows += n
        parts.append({**tensors, "video": torch.full((n,), i, dtype=torch.int32)})
    dim = int(parts[0]["embeddings"].shape[1]) if parts else 0
    empty = {
        "embeddings": torch.zeros(0, dim, dtype=torch.float16),
        "video": torch.zeros(0, dtype=torch.int32),
        "start": torch.zeros(0),
        "end": torch.zeros(0),
    }
    merged = {key: torch.cat([none, *(p[key] for p in parts)]) for key, none in empty.items()}
    name = f"embeddings-{secrets.token_hex(6)}.safetensors"
    save_safetensors(index / name, merged)
    settings = read_settings(index)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "complete": True,
        "model": settings["model"],
        "windows": settings["windows"],
        "embeddings": name,
        "rows": rows,
        "dim": dim,
        "videos": [{k: v for k, v in t.items() if k != "fingerprint"} for t in table],
        "failed": [list(f) for f in failed],
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(index / MANIFEST, manifest)
    for path in index.glob("embeddings-*.safetensors"):
        if path.name != name:
            path.unlink(missing_ok=True)
    log.info("%s: %d windows of %d videos merged into %s", index, rows, len(table), name)
    return rows
