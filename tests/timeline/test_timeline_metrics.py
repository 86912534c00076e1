"""Localization metrics against hand-computed cases: temporal IoU, AP as ActivityNet computes it, frame accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from omniclip.timeline import Segment, SegmentConfig, Timeline, WindowSpec
from omniclip.timeline.metrics import (
    average_precision,
    evaluate_timeline,
    frame_predictions,
    frame_times,
    interpolated_average_precision,
    mean_average_precision,
    segment_iou,
)


def seg(start: float, end: float, label: str = "a", score: float = 1.0) -> Segment:
    return Segment(start, end, label, score)


def test_segment_iou_of_overlapping_touching_and_disjoint_spans() -> None:
    got = segment_iou(1.0, 5.0, [0.0, 2.0, 5.0, 7.0, 1.0], [4.0, 6.0, 6.0, 9.0, 5.0])
    assert got == pytest.approx([3 / 5, 3 / 5, 0.0, 0.0, 1.0])


def test_interpolated_precision_is_made_monotone_from_the_right() -> None:
    # ActivityNet's interpolated_prec_rec: precision at recall 0.5 is lifted to the later 2/3
    assert interpolated_average_precision([1.0, 0.5, 2 / 3], [0.5, 0.5, 1.0]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert interpolated_average_precision([0.5, 2 / 3], [0.5, 1.0]) == pytest.approx(2 / 3)
    assert interpolated_average_precision([], []) == 0.0


def test_perfect_prediction_scores_one_at_every_threshold() -> None:
    truth = [seg(0, 2, "a"), seg(2, 4, "b"), seg(4, 6, "a"), seg(6, 9, "c")]
    predicted = [s._replace(score=p) for s, p in zip(truth, [0.9, 0.8, 0.7, 0.6], strict=True)]
    assert mean_average_precision(truth, predicted) == {0.3: 1.0, 0.5: 1.0, 0.7: 1.0}


def test_shifted_segments_count_up_to_their_iou() -> None:
    truth = [seg(0, 4)]
    assert mean_average_precision(truth, [seg(1, 5)]) == {0.3: 1.0, 0.5: 1.0, 0.7: 0.0}  # IoU 3/5
    assert mean_average_precision(truth, [seg(2, 6)]) == {0.3: 1.0, 0.5: 0.0, 0.7: 0.0}  # IoU 2/6
    assert average_precision(truth, [seg(2, 4)], 0.5) == 1.0  # IoU exactly 0.5 counts, as in ActivityNet


def test_a_false_positive_costs_precision_only_when_ranked_above_a_true_positive() -> None:
    truth = [seg(0, 2), seg(4, 6)]
    fp_in_the_middle = [seg(0, 2, score=0.9), seg(2, 4, score=0.8), seg(4, 6, score=0.7)]
    # TP, FP, TP: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> 1/2 * 1 + 1/2 * 2/3
    assert average_precision(truth, fp_in_the_middle, 0.5) == pytest.approx(5 / 6)
    fp_last = [seg(0, 2, score=0.9), seg(2, 4, score=0.1), seg(4, 6, score=0.7)]
    assert average_precision(truth, fp_last, 0.5) == 1.0


def test_a_second_prediction_of_one_true_segment_is_a_false_positive() -> None:
    truth = [seg(0, 4), seg(10, 14)]
    predicted = [seg(0, 4, score=0.9), seg(0.5, 4, score=0.8), seg(10, 14, score=0.7)]
    assert average_precision(truth, predicted, 0.5) == pytest.approx(5 / 6)  # TP, FP (duplicate), TP


def test_a_prediction_takes_the_unmatched_truth_it_overlaps_most() -> None:
    truth = [seg(0, 4), seg(4, 8)]
    # IoU 1/8 with the first, 4/5 with the second: it takes the second, and the first is left for the next
    assert average_precision(truth, [seg(3, 8, score=0.9), seg(0, 4, score=0.5)], 0.5) == 1.0
    # when the best truth is taken, the next one above the threshold is used (IoU 3/5 with [1, 5])
    overlapping = [seg(0, 4), seg(1, 5)]
    twice = [seg(0, 4, score=0.9), seg(0, 4, score=0.8)]
    assert average_precision(overlapping, twice, 0.5) == 1.0
    assert average_precision(overlapping, twice, 0.7) == pytest.approx(0.5)


def test_map_averages_the_classes_with_truth_and_ignores_the_others() -> None:
    truth = [seg(0, 2, "a"), seg(2, 4, "b")]
    predicted = [seg(0, 2, "a", 0.9), seg(2, 4, "c", 0.9)]  # b never predicted (AP 0); c has no truth (not scored)
    assert mean_average_precision(truth, predicted, [0.5]) == {0.5: 0.5}


def test_average_precision_refuses_what_it_cannot_score() -> None:
    with pytest.raises(ValueError, match="at least one true segment"):
        average_precision([], [seg(0, 1)], 0.5)
    with pytest.raises(ValueError, match="threshold must be in"):
        average_precision([seg(0, 1)], [seg(0, 1)], 0.0)
    assert average_precision([seg(0, 1)], [], 0.5) == 0.0


def test_frame_predictions_average_the_windows_holding_each_time() -> None:
    starts, ends = [0.0, 1.0, 2.0], [2.0, 3.0, 4.0]
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.45, 0.55]])
    times = [0.5, 1.5, 2.5, 4.0, 9.0]
    # 0.5: window 0 -> a; 1.5: windows 0 and 1, mean (0.55, 0.45) -> a; 2.5: windows 1 and 2, mean (0.325, 0.675) -> b;
    # 4.0: the last window includes its end -> b; 9.0: no window, the nearest centre (window 2) -> b
    assert frame_predictions(starts, ends, probs, times).tolist() == [0, 0, 1, 1, 1]
    assert frame_predictions(starts, ends, probs, times[::-1]).tolist() == [1, 1, 1, 0, 0]


def test_frame_times_are_the_centres_of_the_frames() -> None:
    assert frame_times(2.0, 2).tolist() == [0.25, 0.75, 1.25, 1.75]


def _timeline(probs: list[list[float]], segments: list[Segment]) -> Timeline:
    p = np.asarray(probs, dtype=np.float64)
    return Timeline(
        video=Path("v.mp4"),
        duration=4.0,
        classes=["a", "b"],
        spec=WindowSpec(window=1.0, stride=1.0, num_frames=4, size=32),
        segment_config=SegmentConfig(),
        starts=[0.0, 1.0, 2.0, 3.0],
        ends=[1.0, 2.0, 3.0, 4.0],
        probabilities=p,
        smoothed=p,
        segments=segments,
    )


def test_evaluate_timeline_on_a_hand_made_timeline() -> None:
    truth = [seg(0, 2, "a"), seg(2, 4, "b")]
    right = _timeline([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]], [seg(0, 2, "a", 0.85), seg(2, 4, "b", 0.8)])
    scores = evaluate_timeline(right, truth, fps=2)
    assert scores.frame_accuracy == 1.0 and scores.mean_ap == {0.3: 1.0, 0.5: 1.0, 0.7: 1.0}
    assert scores.truth_at.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    # the second window wrong: its two time points; the segment of a is cut to [0, 1] (IoU 1/2), b's grows (IoU 2/3)
    wrong = _timeline([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.1, 0.9]], [seg(0, 1, "a", 0.9), seg(1, 4, "b", 0.77)])
    scores = evaluate_timeline(wrong, truth, fps=2)
    assert scores.frame_accuracy == 0.75
    assert scores.mean_ap == {0.3: 1.0, 0.5: 1.0, 0.7: 0.0}
    assert scores.to_dict()["mAP"] == {"0.3": 1.0, "0.5": 1.0, "0.7": 0.0}
    assert scores.class_ap[0.7] == {"a": 0.0, "b": 0.0}


def test_truth_of_a_class_the_timeline_does_not_score_is_refused() -> None:
    tl = _timeline([[0.9, 0.1]] * 4, [])
    with pytest.raises(ValueError, match=r"classes the timeline does not score: \['c'\]"):
        evaluate_timeline(tl, [seg(0, 4, "c")], fps=2)
