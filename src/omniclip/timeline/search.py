"""Moment search: rank every window of an index against a text query with one pass over its fp16 embeddings.

The index's embeddings are memory-mapped, not read into memory first. Scores are cosine similarities: the query's
L2-normalised text embedding against each window's L2-normalised video embedding, computed as one fp16 matrix-vector
product (PyTorch accumulates in float32). The best candidates are then scored again in float32, so
the reported scores do not carry fp16 rounding. Overlapping windows of one video are one moment: by default only the
best window of each overlapping group is returned.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omniclip.predict import SourceKind, VideoClassifier, load_model
from omniclip.timeline.index import (
    FORMAT,
    MANIFEST,
    SETTINGS,
    VERSION,
    ModelRecord,
    model_fingerprint,
    read_json,
    read_settings,
)

QUERY_TEMPLATES = ("{}",)  # a query is a sentence already; --templates adds wording around it
_DTYPES = {"F16": np.float16, "F32": np.float32, "I32": np.int32}


@dataclass(frozen=True)
class Hit:
    """One ranked window: a video, its time span in seconds and the cosine similarity to the query."""

    video: str
    start: float
    end: float
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"video": self.video, "start": round(self.start, 3), "end": round(self.end, 3), "score": self.score}


@dataclass
class MomentIndex:
    """A complete index, memory-mapped: ``embeddings`` ``(N, E)`` fp16 and per-row video id, start and end."""

    path: Path
    manifest: dict[str, Any]
    embeddings: torch.Tensor
    video: np.ndarray
    start: np.ndarray
    end: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def videos(self) -> list[str]:
        return [v["video"] for v in self.manifest["videos"]]

    @property
    def model(self) -> ModelRecord:
        return ModelRecord(**self.manifest["model"])


def read_safetensors_mapped(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file as copy-on-write memory maps (nothing is read until used)."""
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
    except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from None
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _DTYPES:
            raise ValueError(f"{path}: tensor {name!r} has dtype {info['dtype']}, expected one of {sorted(_DTYPES)}")
        begin, end = info["data_offsets"]
        shape, dtype = tuple(info["shape"]), _DTYPES[info["dtype"]]
        if end == begin:  # numpy cannot map zero bytes
            out[name] = np.zeros(shape, dtype=dtype)
        else:
            out[name] = np.memmap(path, dtype=dtype, mode="c", offset=8 + size + begin, shape=shape)
    return out


def load_index(index: str | Path) -> MomentIndex:
    """Open a complete index for searching.

    Raises:
        ValueError: ``index`` is not an index, is not complete yet (indexing was interrupted before its first
            merge), or its files disagree with its manifest (named).
    """
    index = Path(index)
    if not index.exists():
        raise FileNotFoundError(f"index {index} does not exist")
    settings = read_settings(index)
    path = index / MANIFEST
    if not path.is_file():
        raise ValueError(
            f"index {index} is not complete: {MANIFEST} is missing (indexing stopped before its first merge); "
            "run the same omniclip index command again to finish it"
        )
    manifest = read_json(path, "index manifest")
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION or not manifest.get("complete"):
        raise ValueError(f"{path} is not a complete omniclip index manifest version {VERSION}")
    if manifest.get("model") != settings.get("model"):
        raise ValueError(f"{path} names another model than {index / SETTINGS}; the index is damaged: rebuild it")
    file = index / str(manifest.get("embeddings"))
    tensors = read_safetensors_mapped(file)
    rows = int(manifest.get("rows", -1))
    emb = tensors.get("embeddings")
    if emb is None or emb.ndim != 2 or emb.shape[0] != rows or emb.dtype != np.float16:
        raise ValueError(f"{file} does not hold the {rows} fp16 rows {path} lists")
    for key in ("video", "start", "end"):
        if key not in tensors or tensors[key].shape != (rows,):
            raise ValueError(f"{file}: tensor {key!r} missing or not {rows} long")
    return MomentIndex(
        index, manifest, torch.from_numpy(emb), np.asarray(tensors["video"]), tensors["start"], tensors["end"]
    )


def index_model(found: MomentIndex, device: str = "cpu") -> VideoClassifier:
    """Load the model the index was built with, from where it was then (a moved file is not found)."""
    record = found.model
    frames = record.frames if record.kind == "clip" else None
    kind: SourceKind = "checkpoint" if record.kind == "checkpoint" else "clip"
    return load_model(record.source, device=device, num_frames=frames, kind=kind)


def check_model(found: MomentIndex, classifier: VideoClassifier) -> None:
    """ValueError unless ``classifier`` is the model the index was built with (same fingerprint)."""
    fingerprint = model_fingerprint(classifier)
    if fingerprint != found.model.fingerprint:
        raise ValueError(
            f"index {found.path} was built with {found.model.short()}; the query model "
            f"{classifier.source or '(in memory)'} ({fingerprint[:19]}) is another model, whose embeddings cannot be "
            "compared with it: search with the index's model or build an index with this one"
        )


def rank(found: MomentIndex, query: torch.Tensor, top_k: int = 10, merge_overlaps: bool = True) -> list[Hit]:
    """The ``top_k`` best windows; ``merge_overlaps`` leaves out a window overlapping a better one of its video."""
    if top_k < 1:
        raise ValueError(f"--top must be at least 1, got {top_k}")
    n = found.rows
    if n == 0:
        return []
    # (N,) cosine similarities as one fp16 product over the memory-mapped matrix: memory-bound, so reading half the
    # bytes beat converting chunks to float32 first (measured, docs/timeline.md)
    coarse = torch.mv(found.embeddings, query.to(torch.float16))
    want = min(n, 4 * top_k + 16)
    while True:
        idx = torch.topk(coarse, want).indices
        exact = found.embeddings[idx].float() @ query  # the candidates again, in float32
        order = idx[torch.argsort(exact, descending=True, stable=True)].tolist()
        exact_of = dict(zip(idx.tolist(), exact.tolist(), strict=True))
        hits: list[Hit] = []
        kept: dict[int, list[tuple[float, float]]] = {}
        for row in order:
            v, s, e = int(found.video[row]), float(found.start[row]), float(found.end[row])
            if merge_overlaps and any(s < ke and ks < e for ks, ke in kept.get(v, [])):
                continue
            kept.setdefault(v, []).append((s, e))
            hits.append(Hit(found.videos[v], s, e, float(exact_of[row])))
            if len(hits) == top_k:
                return hits
        if want == n:
            return hits
        want = min(n, 4 * want)


@dataclass
class SearchResult:
    """Hits of one query, with what was searched and how long ranking took (model loading excluded)."""

    query: str
    hits: list[Hit]
    rows: int
    videos: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "windows": self.rows,
            "videos": self.videos,
            "seconds": round(self.seconds, 4),
            "hits": [h.to_dict() for h in self.hits],
        }


def search(
    index: str | Path | MomentIndex,
    query: str,
    *,
    model: VideoClassifier | None = None,
    top_k: int = 10,
    templates: Sequence[str] | None = None,
    merge_overlaps: bool = True,
    device: str = "cpu",
) -> SearchResult:
    """Rank the windows of ``index`` against ``query``.

    Args:
        index: an index folder (``omniclip index``) or an already loaded ``MomentIndex``.
        query: a description of the moment, e.g. "someone opening a door".
        model: the index's model, if already loaded; by default it is loaded from where the index recorded it.
        top_k: hits returned.
        templates: text templates around the query (default ``"{}"``: the query as written).
        merge_overlaps: return only the best of overlapping windows of one video.
        device: where the model runs to embed the query.

    Raises:
        ValueError: not a complete index, another model than the index's, an empty query.
    """
    found = index if isinstance(index, MomentIndex) else load_index(index)
    if not query.strip():
        raise ValueError("the query is empty; describe the moment, e.g. 'someone opening a door'")
    classifier = model if model is not None else index_model(found, device)
    check_model(found, classifier)
    templates = tuple(templates) if templates else QUERY_TEMPLATES
    q = classifier.class_embeddings([query.strip()], templates)[0].float().cpu()  # (E,), L2-normalised
    began = time.perf_counter()
    hits = rank(found, q, top_k, merge_overlaps)
    return SearchResult(query, hits, found.rows, len(found.videos), time.perf_counter() - began)
