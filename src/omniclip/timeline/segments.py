"""From per-window class probabilities to labelled segments: smoothing, thresholding, merging, short-run removal.

1. Smoothing: each class's probability is averaged over ``smooth`` consecutive windows centred on each window
   (fewer at the video's ends), so one odd window does not split a segment.
2. Labelling: a window takes its most probable class when that smoothed probability is at least ``threshold``;
   otherwise it is labelled "none" (no class is clear enough).
3. Time: windows overlap, so each window owns the stretch from the midpoint between its centre and the previous
   window's centre to the midpoint with the next one (the first from 0, the last to the video's end). Owned stretches
   tile the video without overlap.
4. Runs of consecutive windows with the same label become segments. Runs shorter than ``min_length`` seconds (a
   class's or "none") are removed, and two segments of one class separated only by removed runs are joined.
   A segment's score is the mean smoothed probability of its class over the windows it spans.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

NONE = -1  # label of a window whose best class is below the threshold


@dataclass(frozen=True)
class SegmentConfig:
    """How windows become segments (see the module docstring)."""

    smooth: int = 3  # windows in the centred moving average (1: no smoothing)
    threshold: float = 0.5  # smallest smoothed probability that labels a window
    min_length: float | None = None  # seconds; shorter runs are removed (None: the window length)

    def __post_init__(self) -> None:
        if self.smooth < 1:
            raise ValueError(f"--smooth must be at least 1 window, got {self.smooth}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"--threshold is a probability between 0 and 1, got {self.threshold}")
        if self.min_length is not None and not (math.isfinite(self.min_length) and self.min_length >= 0):
            raise ValueError(f"--min-length must be 0 or more seconds, got {self.min_length}")

    def to_dict(self, window: float) -> dict[str, Any]:
        return {
            "smooth": self.smooth,
            "threshold": self.threshold,
            "min_length": self.min_length if self.min_length is not None else window,
        }


class Segment(NamedTuple):
    """A stretch of the video labelled with one class; times in seconds, ``score`` its mean smoothed probability."""

    start: float
    end: float
    label: str
    score: float


def smooth_probabilities(probs: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average over ``width`` windows of ``(N, C)`` probabilities; the ends average what exists."""
    n = probs.shape[0]
    if width <= 1 or n <= 1:
        return probs.astype(np.float64)
    before, after = (width - 1) // 2, width // 2
    csum = np.concatenate([np.zeros((1, probs.shape[1])), np.cumsum(probs, axis=0, dtype=np.float64)])
    lo = np.clip(np.arange(n) - before, 0, n)
    hi = np.clip(np.arange(n) + after + 1, 0, n)
    return (csum[hi] - csum[lo]) / (hi - lo)[:, None]


def owned_bounds(starts: Sequence[float], ends: Sequence[float], duration: float) -> np.ndarray:
    """``(N + 1,)`` boundaries: window i owns ``[b[i], b[i + 1])`` (midpoints between window centres)."""
    centres = (np.asarray(starts, dtype=np.float64) + np.asarray(ends, dtype=np.float64)) / 2
    return np.concatenate([[0.0], (centres[:-1] + centres[1:]) / 2, [max(duration, float(centres[-1]))]])


def label_runs(labels: np.ndarray) -> list[tuple[int, int, int]]:
    """``(label, first, last + 1)`` for each run of equal labels, in order (none for no labels)."""
    if len(labels) == 0:
        return []
    cuts = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    bounds = [0, *cuts.tolist(), len(labels)]
    return [(int(labels[a]), a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def find_segments(
    starts: Sequence[float],
    ends: Sequence[float],
    probs: np.ndarray,
    classes: Sequence[str],
    duration: float,
    config: SegmentConfig,
    window: float,
) -> tuple[list[Segment], np.ndarray]:
    """Segments of one video, and the smoothed ``(N, C)`` probabilities they were read from."""
    if len(starts) == 0:
        return [], np.zeros((0, len(classes)))
    smoothed = smooth_probabilities(np.asarray(probs, dtype=np.float64), config.smooth)
    bounds = owned_bounds(starts, ends, duration)
    # a video shorter than min_length still gets its segment
    min_length = min(config.to_dict(window)["min_length"], duration)
    best = smoothed.argmax(axis=1)
    labels = np.where(smoothed[np.arange(len(best)), best] >= config.threshold, best, NONE)  # (N,)
    kept = [r for r in label_runs(labels) if bounds[r[2]] - bounds[r[1]] >= min_length]
    joined: list[list[int]] = []  # [label, first, last + 1]: neighbours of one class across removed runs joined
    for label, first, stop in kept:
        if joined and joined[-1][0] == label:
            joined[-1][2] = stop
        else:
            joined.append([label, first, stop])
    segments = [
        Segment(float(bounds[first]), float(bounds[stop]), classes[label], float(smoothed[first:stop, label].mean()))
        for label, first, stop in joined
        if label != NONE
    ]
    return segments, smoothed
