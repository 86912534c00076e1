"""Exact multi-view evaluation: every video scored once, views averaged, results gathered across ranks by index.

Follows the X-CLIP / ViFi-CLIP test protocol (PROTOCOLS.md): each video is sampled as V = clips x crops views,
the views' softmax probabilities are averaged into one score vector per video, and top-1 / top-5 / mean class
accuracy are computed over the videos that could be decoded. Scores are keyed by the dataset index and gathered
with ``all_gather_object``, so no video is dropped or padded in (never ``drop_last``; VideoMAE's text-file merge is
the counterexample in STYLE.md). Videos that could not be read are listed with their errors and not scored.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from omniclip.data.loader import read_batches
from omniclip.data.transforms import normalize
from omniclip.dist import all_gather_object
from omniclip.precision import autocast

log = logging.getLogger(__name__)

# (label, probabilities (C,)) per scored video index.
Scores = dict[int, tuple[int, np.ndarray]]


@dataclass
class EvalResult:
    """Accuracy of one evaluation run; accuracies are percentages (0-100) over the scored videos."""

    top1: float  # % of scored videos whose highest-probability class is the label
    top5: float  # % whose label is among the 5 (or C, if fewer) most probable classes
    mean_class_accuracy: float  # mean over classes that have videos of each class's top-1 %
    per_class_accuracy: list[float]  # top-1 % per class; NaN for a class with no scored video
    confusion: np.ndarray  # (C, C) int64 counts, rows = true class, columns = predicted class
    num_videos: int  # videos expected (scored + failed)
    num_scored: int  # videos decoded and scored
    failed: list[tuple[int, str]] = field(default_factory=list)  # (index, error) of unreadable videos
    predictions: dict[int, int] = field(default_factory=dict)  # index -> predicted class id

    @property
    def num_classes(self) -> int:
        return int(self.confusion.shape[0])

    def to_dict(self, full: bool = False) -> dict[str, Any]:
        """JSON-ready summary (NaN becomes None); ``full`` adds the confusion matrix and per-video predictions."""
        out: dict[str, Any] = {
            "top1": _finite(self.top1),
            "top5": _finite(self.top5),
            "mean_class_accuracy": _finite(self.mean_class_accuracy),
            "num_videos": self.num_videos,
            "num_scored": self.num_scored,
            "num_failed": len(self.failed),
            "num_classes": self.num_classes,
            "per_class_accuracy": [_finite(a) for a in self.per_class_accuracy],
            "failed": [[i, err] for i, err in self.failed],
        }
        if full:
            out["confusion"] = self.confusion.tolist()
            out["predictions"] = {str(i): p for i, p in sorted(self.predictions.items())}
        return out


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    class_embeddings: torch.Tensor,
    *,
    device: torch.device | str,
    amp_dtype: torch.dtype | None = None,
    expected: Iterable[int] | None = None,
) -> EvalResult:
    """Score every video of ``loader`` once and compute accuracies (on every rank, identical results).

    Args:
        model: called as ``model(video (B*V, T, 3, S, S) float, class_embeddings) -> logits (B*V, C)``.
        loader: yields ``VideoBatch`` dicts: ``video`` uint8 ``(B, V, T, 3, S, S)``, ``label`` and ``index`` ``(B,)``,
            ``failed`` list of ``(index, error)``. Under ``torch.distributed`` each rank sees its own shard.
        class_embeddings: ``(C, E)`` L2-normalised class-text embeddings, one row per class.
        device: where the model runs; batches are moved and normalised there.
        amp_dtype: autocast dtype (``torch.bfloat16``) or None for the model's own precision.
        expected: every video index that must be scored or failed; defaults to ``range(len(loader.dataset))``.

    Raises:
        RuntimeError: a video index was missing, seen twice, or both scored and failed (a sampler or gather bug).
    """
    device = torch.device(device)
    scores, failed = score_loader(model, loader, class_embeddings.to(device), device=device, amp_dtype=amp_dtype)
    scores, failed = gather_scores(scores, failed)
    check_coverage(scores, failed, _expected_indices(loader, expected))
    result = compute_metrics(scores, failed, int(class_embeddings.shape[0]))
    log.info(
        "evaluated %d videos (%d scored, %d unreadable): top-1 %.2f%%, top-5 %.2f%%, mean class %.2f%%",
        result.num_videos,
        result.num_scored,
        len(result.failed),
        result.top1,
        result.top5,
        result.mean_class_accuracy,
    )
    return result


@torch.no_grad()
def score_loader(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    class_embeddings: torch.Tensor,
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
) -> tuple[Scores, list[tuple[int, str]]]:
    """This rank's ``{index: (label, probabilities)}`` and ``(index, error)`` failures, model in eval mode.

    The batches come through ``read_batches``, as in training: where a decoding thread pays, it decodes the next
    batches while the model scores this one (same batches, same order; a loader error is raised at its batch).
    """
    was_training = model.training
    model.eval()
    scores: Scores = {}
    failed: list[tuple[int, str]] = []
    amp = autocast(device, amp_dtype)
    batches = read_batches(loader, device)
    try:
        for batch in batches:
            failed.extend((int(i), str(err)) for i, err in batch.get("failed", []))
            video = batch.get("video")
            if video is None or video.shape[0] == 0:
                continue  # every video of this batch was unreadable
            with amp:
                probs = score_views(model, video.to(device, non_blocking=True), class_embeddings)
            rows = zip(batch["index"].tolist(), batch["label"].tolist(), probs.float().cpu().numpy(), strict=True)
            for i, label, p in rows:
                if int(i) in scores:
                    raise RuntimeError(f"video index {i} was scored twice on one rank; the sampler repeats indices")
                scores[int(i)] = (int(label), p)
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()  # stops the prefetch thread now when scoring fails, not when the traceback is collected
        model.train(was_training)
    return scores, failed


def score_views(model: nn.Module, video: torch.Tensor, class_embeddings: torch.Tensor) -> torch.Tensor:
    """``video`` uint8 ``(B, V, T, 3, S, S)`` -> ``(B, C)`` softmax probabilities averaged over the V views.

    All views go through one forward. Probabilities, not logits, are averaged: X-CLIP and ViFi-CLIP average
    the views' softmax scores, and a confident view cannot outvote the others by its logit magnitude alone.
    """
    if video.ndim != 6:
        raise ValueError(f"expected video of shape (B, V, T, 3, S, S), got {tuple(video.shape)}")
    B, V = video.shape[:2]
    x = normalize(video.flatten(0, 1))  # (B*V, T, 3, S, S)
    logits = model(x, class_embeddings)  # (B*V, C)
    probs = logits.float().softmax(dim=-1)
    return probs.reshape(B, V, -1).mean(dim=1)  # (B, C)


def gather_scores(scores: Scores, failed: list[tuple[int, str]]) -> tuple[Scores, list[tuple[int, str]]]:
    """Merge every rank's scores and failures (failures sorted).

    Raises:
        RuntimeError: two ranks scored the same video index.
    """
    parts: list[Any] = all_gather_object((scores, failed))
    merged: Scores = {}
    for rank, (part_scores, _) in enumerate(parts):
        twice = merged.keys() & part_scores.keys()
        if twice:
            raise RuntimeError(f"video indices {sorted(twice)[:10]} were scored on rank {rank} and an earlier rank")
        merged.update(part_scores)
    return merged, sorted(f for _, part_failed in parts for f in part_failed)


def check_coverage(scores: Scores, failed: list[tuple[int, str]], expected: set[int] | None) -> None:
    """Every expected index is scored or failed exactly once; anything else is a bug upstream.

    Raises:
        RuntimeError: naming up to 10 missing, duplicated or unexpected indices.
    """
    failed_ids = [i for i, _ in failed]
    problems = []
    dup_failed = sorted(i for i, n in Counter(failed_ids).items() if n > 1)
    if dup_failed:
        problems.append(f"failed more than once: {dup_failed[:10]}")
    both = sorted(scores.keys() & set(failed_ids))
    if both:
        problems.append(f"both scored and failed: {both[:10]}")
    if expected is not None:
        seen = scores.keys() | set(failed_ids)
        missing, extra = sorted(expected - seen), sorted(seen - expected)
        if missing:
            problems.append(f"{len(missing)} never evaluated: {missing[:10]}")
        if extra:
            problems.append(f"{len(extra)} not in the dataset: {extra[:10]}")
    if problems:
        raise RuntimeError("evaluation did not cover every video exactly once; video indices " + "; ".join(problems))


def compute_metrics(scores: Scores, failed: list[tuple[int, str]], num_classes: int) -> EvalResult:
    """Top-1, top-5, per-class and mean class accuracy and the confusion matrix from per-video probabilities."""
    indices = sorted(scores)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    if not indices:
        nan = float("nan")
        return EvalResult(nan, nan, nan, [nan] * num_classes, confusion, len(failed), 0, failed, {})
    labels = np.array([scores[i][0] for i in indices], dtype=np.int64)
    probs = np.stack([scores[i][1] for i in indices])  # (n, C)
    if probs.shape[1] != num_classes or labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"scores have {probs.shape[1]} classes and labels span [{labels.min()}, {labels.max()}]; "
            f"expected {num_classes} classes: check the class list against the annotation labels"
        )
    # Stable descending order: ties go to the lower class id, as argmax does.
    order = np.argsort(-probs, axis=1, kind="stable")
    pred = order[:, 0]
    top5 = (order[:, : min(5, num_classes)] == labels[:, None]).any(axis=1)
    np.add.at(confusion, (labels, pred), 1)
    counts = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(counts > 0, 100.0 * np.diag(confusion) / counts, np.nan)
    return EvalResult(
        top1=float(100.0 * (pred == labels).mean()),
        top5=float(100.0 * top5.mean()),
        mean_class_accuracy=float(np.nanmean(per_class)),
        per_class_accuracy=[float(a) for a in per_class],
        confusion=confusion,
        num_videos=len(indices) + len(failed),
        num_scored=len(indices),
        failed=failed,
        predictions={i: int(p) for i, p in zip(indices, pred, strict=True)},
    )


def _finite(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def _expected_indices(loader: Iterable[Any], expected: Iterable[int] | None) -> set[int] | None:
    if expected is not None:
        return {int(i) for i in expected}
    dataset = getattr(loader, "dataset", None)
    if dataset is None:
        return None
    records = getattr(dataset, "records", None)
    if records is not None:
        return {int(r.index) for r in records}
    return set(range(len(dataset)))
