"""How well a timeline finds known segments: frame-level accuracy, and mAP at temporal IoU thresholds.

**Frame-level accuracy** (the per-frame accuracy of temporal action segmentation): the video is sampled at the
centre of every frame, ``t_i = (i + 0.5) / fps``. At each time point the predicted class is the most probable class
of the mean (unsmoothed) probabilities of every window whose span ``[start, end)`` holds ``t_i`` (the last window
includes its end; a point no window holds takes the window whose centre is nearest). There is no threshold and no
"none": every time point gets a class, and the score is the share of time points whose class is the truth's. Time
points outside every true segment are left out.

**mAP at temporal IoU** (the detection metric of THUMOS'14 and ActivityNet, as ActivityNet's
``compute_average_precision_detection`` computes it), per class:

1. the predicted segments of the class are sorted by score, highest first (ties keep their order);
2. each is matched to the unmatched true segment of the class with which it has the highest temporal IoU
   (intersection over union of the two time spans), provided that IoU is at least the threshold: a true positive.
   Otherwise (no true segment reaches the threshold, or those that do are already matched) it is a false positive,
   so a second prediction of one true segment counts against precision;
3. precision and recall after each prediction, recall over the number of true segments of the class;
4. AP is the area under the precision-recall curve with precision made monotone from the right (the interpolated
   all-points average precision, ActivityNet's ``interpolated_prec_rec``).

mAP at a threshold is the mean AP over the classes that have at least one true segment; a class with truth and no
prediction has AP 0, predictions of classes without truth are not scored. The functions take the segments of one
video.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from omniclip.timeline.segments import Segment

if TYPE_CHECKING:
    from omniclip.timeline.scores import Timeline

THRESHOLDS: tuple[float, ...] = (0.3, 0.5, 0.7)  # temporal IoU thresholds reported by default


def segment_iou(start: float, end: float, starts: Sequence[float], ends: Sequence[float]) -> np.ndarray:
    """Temporal IoU of ``[start, end]`` with each ``[starts[k], ends[k]]`` (0 where they do not overlap)."""
    s, e = np.asarray(starts, dtype=np.float64), np.asarray(ends, dtype=np.float64)
    inter = np.clip(np.minimum(end, e) - np.maximum(start, s), 0.0, None)
    union = (end - start) + (e - s) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def interpolated_average_precision(precision: ArrayLike, recall: ArrayLike) -> float:
    """Area under the precision-recall curve after making precision non-increasing from the right.

    ``precision[k]`` and ``recall[k]`` are measured after the k+1 best-scored predictions (ActivityNet's
    ``interpolated_prec_rec``).
    """
    mprec = np.concatenate([[0.0], np.asarray(precision, dtype=np.float64), [0.0]])
    mrec = np.concatenate([[0.0], np.asarray(recall, dtype=np.float64), [1.0]])
    mprec = np.maximum.accumulate(mprec[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[steps] - mrec[steps - 1]) * mprec[steps]))


def average_precision(truth: Sequence[Segment], predicted: Sequence[Segment], threshold: float) -> float:
    """AP of one class's ``predicted`` segments against its ``truth`` at temporal IoU ``threshold``.

    Raises:
        ValueError: no true segment (AP is undefined), or a threshold outside (0, 1].
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"temporal IoU threshold must be in (0, 1], got {threshold}")
    if not truth:
        raise ValueError("average precision needs at least one true segment")
    if not predicted:
        return 0.0
    t_starts, t_ends = [s.start for s in truth], [s.end for s in truth]
    matched = np.zeros(len(truth), dtype=bool)
    order = sorted(range(len(predicted)), key=lambda k: -predicted[k].score)  # stable: ties keep their order
    tp = np.zeros(len(order))
    for rank, k in enumerate(order):
        iou = segment_iou(predicted[k].start, predicted[k].end, t_starts, t_ends)
        for j in np.argsort(-iou, kind="stable"):
            if iou[j] < threshold:
                break
            if not matched[j]:
                matched[j], tp[rank] = True, 1.0
                break
    hits = np.cumsum(tp)
    return interpolated_average_precision(hits / np.arange(1, len(order) + 1), hits / len(truth))


def class_average_precision(
    truth: Sequence[Segment], predicted: Sequence[Segment], threshold: float
) -> dict[str, float]:
    """AP per class that has a true segment, in order of first appearance in ``truth``."""
    return {
        c: average_precision([s for s in truth if s.label == c], [s for s in predicted if s.label == c], threshold)
        for c in dict.fromkeys(s.label for s in truth)
    }


def mean_average_precision(
    truth: Sequence[Segment], predicted: Sequence[Segment], thresholds: Iterable[float] = THRESHOLDS
) -> dict[float, float]:
    """mAP over the classes with truth, per temporal IoU threshold.

    Raises:
        ValueError: no true segment.
    """
    if not truth:
        raise ValueError("mean average precision needs at least one true segment")
    return {t: float(np.mean(list(class_average_precision(truth, predicted, t).values()))) for t in thresholds}


def frame_times(duration: float, fps: float) -> np.ndarray:
    """The centre of every frame of a ``duration``-second video at ``fps``: ``(i + 0.5) / fps``."""
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    count = max(1, int(round(duration * fps)))
    return (np.arange(count) + 0.5) / fps


def frame_predictions(
    starts: Sequence[float], ends: Sequence[float], probabilities: np.ndarray, times: ArrayLike
) -> np.ndarray:
    """Class index at each time: argmax of the mean probabilities of the windows holding it (module docstring)."""
    s, e = np.asarray(starts, dtype=np.float64), np.asarray(ends, dtype=np.float64)
    probs = np.asarray(probabilities, dtype=np.float64)
    if len(s) == 0:
        raise ValueError("no windows to read frame predictions from")
    t = np.asarray(times, dtype=np.float64)
    order = np.argsort(t, kind="stable")
    sorted_t = t[order]
    # each window adds its probabilities to the sorted time points it holds: a range, summed by a difference array
    lo = np.searchsorted(sorted_t, s, side="left")
    hi = np.searchsorted(sorted_t, e, side="left")
    hi[-1] = np.searchsorted(sorted_t, e[-1], side="right")  # the last window includes its end
    counted = np.hstack([probs, np.ones((len(s), 1))])  # the last column counts the windows holding a point
    diff = np.zeros((len(t) + 1, counted.shape[1]))
    np.add.at(diff, lo, counted)
    np.add.at(diff, hi, -counted)
    sums = np.cumsum(diff, axis=0)[:-1]
    total, held = sums[:, :-1], np.rint(sums[:, -1])
    alone = np.flatnonzero(held <= 0)
    if len(alone):
        nearest = np.abs(sorted_t[alone, None] - (s + e)[None, :] / 2).argmin(axis=1)
        total[alone], held[alone] = probs[nearest], 1.0
    labels = np.empty(len(t), dtype=np.int64)
    labels[order] = (total / held[:, None]).argmax(axis=1)
    return labels


def truth_labels(truth: Sequence[Segment], classes: Sequence[str], times: ArrayLike) -> np.ndarray:
    """Class index of the true segment ``[start, end)`` holding each time, -1 where none does.

    Raises:
        ValueError: a true segment's class is not in ``classes``.
    """
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({s.label for s in truth} - index.keys())
    if unknown:
        raise ValueError(f"true segments of classes the timeline does not score: {unknown}")
    t = np.asarray(times, dtype=np.float64)
    labels = np.full(len(t), -1, dtype=np.int64)
    for s in truth:
        labels[(t >= s.start) & (t < s.end)] = index[s.label]
    return labels


def frame_accuracy(truth_at: np.ndarray, predicted_at: np.ndarray) -> float:
    """Share of time points with a truth (``truth_at >= 0``) whose predicted class is the truth's."""
    scored = truth_at >= 0
    if not scored.any():
        raise ValueError("no time point lies in a true segment")
    return float(np.mean(predicted_at[scored] == truth_at[scored]))


@dataclass
class Localization:
    """How well one timeline matches the truth of its video (fractions in 0..1)."""

    frame_accuracy: float
    mean_ap: dict[float, float]  # temporal IoU threshold -> mAP
    class_ap: dict[float, dict[str, float]]  # threshold -> class -> AP
    times: np.ndarray = field(repr=False)  # the time points scored, seconds
    truth_at: np.ndarray = field(repr=False)  # true class index at each time point (-1: none)
    predicted_at: np.ndarray = field(repr=False)  # predicted class index at each time point

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers (keys of the thresholds as strings, e.g. ``"0.5"``)."""
        return {
            "frame_accuracy": self.frame_accuracy,
            "mAP": {f"{t:g}": v for t, v in self.mean_ap.items()},
            "AP": {f"{t:g}": dict(v) for t, v in self.class_ap.items()},
            "time_points": len(self.times),
        }


def evaluate_timeline(
    tl: Timeline, truth: Sequence[Segment], fps: float, thresholds: Iterable[float] = THRESHOLDS
) -> Localization:
    """Frame-level accuracy of ``tl``'s window probabilities on the frame grid of its video (``fps``), and the mAP
    of its segments, against the true segments ``truth`` (their ``score`` is not used)."""
    thresholds = tuple(thresholds)
    times = frame_times(tl.duration, fps)
    truth_at = truth_labels(truth, tl.classes, times)
    predicted_at = frame_predictions(tl.starts, tl.ends, tl.probabilities, times)
    return Localization(
        frame_accuracy=frame_accuracy(truth_at, predicted_at),
        mean_ap=mean_average_precision(truth, tl.segments, thresholds),
        class_ap={t: class_average_precision(truth, tl.segments, t) for t in thresholds},
        times=times,
        truth_at=truth_at,
        predicted_at=predicted_at,
    )
