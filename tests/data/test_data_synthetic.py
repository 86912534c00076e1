"""Synthetic shapes and motion videos: deterministic rendering, classes that really differ by motion."""

from __future__ import annotations

import numpy as np
import pytest

from omniclip.data.decode import read_frames
from omniclip.data.records import read_annotations, read_class_names
from omniclip.data.synthetic import (
    COLORS,
    DEFAULT_CLASSES,
    HARD_SCENE,
    SHAPE_KINDS,
    TWIN_PAIRS,
    Scene,
    Shape,
    render_frame,
    render_video,
    shape_mask,
)


@pytest.mark.parametrize("kind", SHAPE_KINDS)
def test_data_shapes_render_where_and_how_big_asked(kind: str) -> None:
    image = render_frame([Shape(kind, "red", (0.25, 0.75), 0.4, angle=30)], (80, 120), background="blue")
    assert image.shape == (80, 120, 3) and image.dtype == np.uint8
    mask = (image == COLORS["red"]).all(-1)
    assert ((image == COLORS["blue"]).all(-1) | mask).all()
    ys, xs = np.nonzero(mask)
    assert abs(xs.mean() + 0.5 - 30) < 3 and abs(ys.mean() + 0.5 - 60) < 3
    radius = 0.4 * 80 / 2
    assert 0.2 * np.pi * radius**2 < mask.sum() <= np.pi * radius**2 + 4 * radius
    np.testing.assert_array_equal(image, render_frame([Shape(kind, "red", (0.25, 0.75), 0.4, 30)], (80, 120), "blue"))


def test_data_shape_errors_and_rotation() -> None:
    square = shape_mask(Shape("square", "red", (0.5, 0.5), 0.8), 64, 64)
    assert not np.array_equal(square, shape_mask(Shape("square", "red", (0.5, 0.5), 0.8, angle=45), 64, 64))
    with pytest.raises(ValueError, match="unknown shape"):
        render_frame([Shape("hexagon", "red", (0.5, 0.5), 0.5)], 32)
    with pytest.raises(ValueError, match="unknown colour"):
        render_frame([Shape("circle", "mauve", (0.5, 0.5), 0.5)], 32)


def _trajectory(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame centroid x, y and area of the pixels that differ from the background (top-left pixel)."""
    diff = np.abs(frames.astype(int) - frames[:, :1, :1].astype(int)).sum(-1) > 60
    area = diff.sum((1, 2)).astype(float)
    ys, xs = np.mgrid[0 : frames.shape[1], 0 : frames.shape[2]]
    with np.errstate(invalid="ignore"):
        cx = (diff * xs).sum((1, 2)) / area
        cy = (diff * ys).sum((1, 2)) / area
    return cx, cy, area


def _check_motion(name: str, frames: np.ndarray) -> None:
    cx, cy, area = _trajectory(frames)
    visible = area > 0
    first, last = np.argmax(visible), len(area) - 1 - np.argmax(visible[::-1])
    checks = {
        "moving left": cx[-1] < cx[0] - 5,
        "moving right": cx[-1] > cx[0] + 5,
        "moving up": cy[-1] < cy[0] - 5,
        "moving down": cy[-1] > cy[0] + 5,
        "growing": area[-1] > 2 * area[0],
        "shrinking": area[0] > 2 * area[-1],
        "appearing": not visible[0] and visible[-1] and visible[first:].all(),
        "disappearing": visible[0] and not visible[-1] and visible[: last + 1].all(),
    }
    assert checks[name], f"{name}: x {cx.round(1)}, y {cy.round(1)}, area {area}"
    if name.startswith("moving"):
        assert np.ptp(area) < 0.3 * area.mean()  # moves, does not change size


@pytest.mark.parametrize("name", DEFAULT_CLASSES)
def test_data_rendered_classes_differ_by_motion(name: str) -> None:
    for seed in range(5):
        frames, meta = render_video(name, num_frames=12, size=64, rng=np.random.default_rng(seed))
        assert frames.shape == (12, 64, 64, 3)
        _check_motion(name, frames)


def test_data_synthetic_dataset_files(synthetic) -> None:
    names = read_class_names(synthetic.classes_file)
    assert names == list(DEFAULT_CLASSES) == synthetic.class_names
    for split in ("train", "val", "test"):
        records = read_annotations(synthetic.lists[split], synthetic.root)
        assert len(records) == 16
        assert np.bincount([r.label for r in records]).tolist() == [2] * 8
    train = read_annotations(synthetic.train, synthetic.root)
    test = read_annotations(synthetic.test, synthetic.root)
    assert not np.array_equal(read_frames(train[0].path, [0]), read_frames(test[0].path, [0]))
    for rec in train[::2]:
        frames = read_frames(rec.path, range(synthetic.num_frames))  # after real h264 encoding
        assert frames.shape == (8, 32, 32, 3)
        _check_motion(names[rec.label], frames)


def test_data_synthetic_dataset_is_deterministic(tmp_path) -> None:
    from omniclip.data.synthetic import write_synthetic_dataset

    kw = dict(classes=["growing", "blinking"], videos_per_class=1, splits={"train": 2}, num_frames=4, size=16)
    a = write_synthetic_dataset(tmp_path / "a", **kw)
    b = write_synthetic_dataset(tmp_path / "b", **kw)
    assert a.lists.keys() == {"train"} and a.counts == {"train": 2}
    for rel in a.train.read_text().split()[::2]:
        np.testing.assert_array_equal(read_frames(a.root / rel, range(4)), read_frames(b.root / rel, range(4)))
    with pytest.raises(ValueError, match="unknown synthetic classes"):
        write_synthetic_dataset(tmp_path / "c", classes=["dancing"], videos_per_class=1)


@pytest.mark.parametrize("pair", TWIN_PAIRS)
def test_data_twins_are_each_others_time_reversal(pair: tuple[str, str]) -> None:
    """In the plain scene, the same draws render a class and, backwards, its twin: a frame average cannot tell them."""
    a, _ = render_video(pair[0], num_frames=12, size=48, rng=np.random.default_rng(7))
    b, _ = render_video(pair[1], num_frames=12, size=48, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a[::-1], b)
    assert not np.array_equal(a, b)


def test_data_rotation_brightness_colour_and_two_shape_classes_change_as_named() -> None:
    rng = np.random.default_rng
    _, cw = render_video("rotating clockwise", num_frames=8, rng=rng(1))
    _, ccw = render_video("rotating counterclockwise", num_frames=8, rng=rng(1))
    assert (np.diff(cw["angle"]) < 0).all() and (np.diff(ccw["angle"]) > 0).all() and cw["kind"] != "circle"
    _, up = render_video("brightening", num_frames=8, rng=rng(2))
    assert (np.diff(up["level"]) > 0).all() and up["level"][-1] == pytest.approx(1.0)
    frames, meta = render_video("turning blue", num_frames=8, rng=rng(4))
    shape = np.abs(frames.astype(int) - frames[:, :1, :1].astype(int)).sum(-1) > 60  # (T, H, W): the shape's pixels
    red, blue = (np.array([f[m].mean(0) for f, m in zip(frames, shape, strict=True)])[:, c] for c in (0, 2))
    assert meta["color"] == "red to blue" and (np.diff(red) < 0).all() and (np.diff(blue) > 0).all()
    frames, _ = render_video("approaching", num_frames=8, size=64, rng=rng(3))
    gaps = []
    for f in frames:  # two blobs of the shape's colour: their spread shrinks
        ys, xs = np.nonzero(np.abs(f.astype(int) - f[0, 0].astype(int)).sum(-1) > 60)
        gaps.append(np.hypot(xs.std(), ys.std()))
    assert gaps[-1] < gaps[0] - 3


def test_data_hard_scene_adds_distractor_noise_and_timing_without_changing_the_plain_scene() -> None:
    plain, meta = render_video("moving right", num_frames=24, rng=np.random.default_rng(5))
    again, _ = render_video("moving right", num_frames=24, rng=np.random.default_rng(5), scene=Scene())
    np.testing.assert_array_equal(plain, again)
    hard, hmeta = render_video("moving right", num_frames=24, rng=np.random.default_rng(5), scene=HARD_SCENE)
    assert hard.shape == plain.shape and hard.dtype == np.uint8 and not np.array_equal(hard, plain)
    assert len(np.unique(hard[0].reshape(-1, 3), axis=0)) > 50  # noise and stripes, not a flat background
    x = hmeta["x"]
    assert (np.diff(x) >= 0).all() and (np.diff(x) == 0).any()  # the move fills only part of the clip
    with pytest.raises(ValueError, match="amplitudes must be >= 0"):
        Scene(noise=-1)


def test_data_hard_benchmark_twins_fill_each_group() -> None:
    from omniclip.demo.dataset import HARD, HARD_GROUPS, twins_of

    assert {c for pair in TWIN_PAIRS for c in pair} == set(HARD.classes) and len(HARD.classes) == 14
    assert set(twins_of(HARD_GROUPS)) == set(TWIN_PAIRS)
    assert HARD.scene == HARD_SCENE and HARD.num_frames % 8 == 0  # 8 centre frames are their own reversal
    from omniclip.data.sampling import segment_indices

    idx = segment_indices(HARD.num_frames, 8)
    np.testing.assert_array_equal(idx[::-1], HARD.num_frames - 1 - idx)
