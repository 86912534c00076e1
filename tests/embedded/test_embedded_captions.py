"""The caption generator: deterministic per seed, words that agree with the pixels, held-out pairs kept out."""

from __future__ import annotations

import numpy as np
import pytest

from omniclip.clip import tokenize
from omniclip.data import synthetic
from omniclip.embedded.captions import (
    ATTRIBUTES,
    COLORS,
    HELD_OUT_PAIRS,
    POSITION_PHRASES,
    POSITIONS,
    SHAPES,
    SIZES,
    TEMPLATES,
    CaptionGenerator,
    SceneObject,
    allowed_pairs,
    class_phrases,
    match_matrix,
    noun_phrase,
)
from omniclip.embedded.pretrain import PretrainConfig


def _foreground(image: np.ndarray) -> np.ndarray:
    """Pixels that differ from the plain grey background (its level is the most frequent one)."""
    background = np.bincount(image[..., 0].ravel()).argmax()
    return np.any(image != background, axis=-1)


def test_embedded_vocabulary_is_what_the_renderer_draws() -> None:
    assert set(SHAPES) <= set(synthetic.SHAPE_KINDS)
    assert set(COLORS) <= set(synthetic.COLORS)
    for shape, color in HELD_OUT_PAIRS:
        assert shape in SHAPES and color in COLORS
    # every word still appears in training even though its held-out pairs do not
    train = allowed_pairs("train")
    assert {s for s, _ in train} == set(SHAPES) and {c for _, c in train} == set(COLORS)
    assert len(train) + len(HELD_OUT_PAIRS) == len(SHAPES) * len(COLORS)
    with pytest.raises(ValueError, match="unknown split"):
        allowed_pairs("test")  # type: ignore[arg-type]


def test_embedded_batches_are_deterministic_per_seed() -> None:
    gen = CaptionGenerator(two_objects=0.3)
    a, b = gen.batch(seed=3, index=5, batch_size=16), gen.batch(seed=3, index=5, batch_size=16)
    assert a.captions == b.captions and a.objects == b.objects
    np.testing.assert_array_equal(a.images, b.images)
    other = gen.batch(seed=4, index=5, batch_size=16)
    assert other.captions != a.captions
    assert not np.array_equal(other.images, a.images)
    assert gen.batch(seed=3, index=6, batch_size=16).captions != a.captions
    assert a.images.shape == (16, 64, 64, 3) and a.images.dtype == np.uint8


def test_embedded_groups_differ_in_one_attribute() -> None:
    batch = CaptionGenerator(group=4).batch(seed=2, index=0, batch_size=128)
    varied = set()
    for start in range(0, 128, 4):
        group = batch.objects[start : start + 4]
        if len(group[0]) != 1:
            continue
        first = group[0][0]
        changed = {a for (obj,) in group[1:] for a in ATTRIBUTES if getattr(obj, a) != getattr(first, a)}
        assert len(changed) == 1, group  # variants always differ from the group's first scene
        varied |= changed
        for (said,) in batch.described[start : start + 4]:
            assert getattr(said, next(iter(changed))) is not None  # every caption of the group names it
    assert varied == set(ATTRIBUTES)
    for objs in batch.objects:
        assert all((o.shape, o.color) in allowed_pairs("train") for o in objs)


def test_embedded_held_out_pairs_never_enter_the_training_stream() -> None:
    gen = CaptionGenerator(two_objects=0.5)
    seen: set[tuple[str, str]] = set()
    for index in range(12):
        batch = gen.batch(seed=0, index=index, batch_size=64)
        for objs, caption in zip(batch.objects, batch.captions, strict=True):
            seen.update((o.shape, o.color) for o in objs)
            for shape, color in HELD_OUT_PAIRS:
                assert f"{color} {shape}" not in caption
    assert not seen & set(HELD_OUT_PAIRS)
    assert len(seen) > 40  # the stream does cover the other pairs
    unseen = CaptionGenerator(split="unseen").batch(seed=0, index=0, batch_size=64)
    assert {(o.shape, o.color) for objs in unseen.objects for o in objs} <= set(HELD_OUT_PAIRS)


def test_embedded_captions_agree_with_the_pixels() -> None:
    batch = CaptionGenerator(two_objects=0.0).batch(seed=1, index=0, batch_size=96)
    areas: dict[str, list[float]] = {s: [] for s in SIZES}
    for image, objs in zip(batch.images, batch.objects, strict=True):
        mask = _foreground(image)
        if not objs:
            assert not mask.any()
            continue
        (obj,) = objs
        colours = {tuple(int(v) for v in px) for px in image[mask]}
        assert colours == {synthetic.COLORS[obj.color]}
        ys, xs = np.nonzero(mask)
        col, row = POSITIONS[obj.position]
        for centre, cell in ((xs.mean() / 64, col), (ys.mean() / 64, row)):
            assert (cell / 3 - 0.05) <= centre <= ((cell + 1) / 3 + 0.05), (obj, centre)
        areas[obj.size].append(mask.mean())
    assert np.mean(areas["small"]) < np.mean(areas["medium"]) < np.mean(areas["large"])


def test_embedded_match_matrix_masks_only_true_fits() -> None:
    red_circle = SceneObject("circle", "red", "small", "left")
    blue_square = SceneObject("square", "blue", "large", "right")
    objects = [(red_circle,), (blue_square,), ()]
    described = [
        (SceneObject(None, "red", None, None),),  # "a red shape"
        (SceneObject("square", None, None, "right"),),  # "a square on the right"
        (),  # "an empty dark background"
    ]
    fits = match_matrix(objects, described)
    np.testing.assert_array_equal(fits, np.eye(3, dtype=bool))
    two = [(red_circle, blue_square)]
    assert match_matrix(two, described[:2]).all()  # a caption naming one of two objects still fits
    assert not match_matrix(two, [(SceneObject("circle", "blue", None, None),)]).any()
    batch = CaptionGenerator(two_objects=0.3).batch(seed=0, index=0, batch_size=32)
    assert batch.match_matrix().diagonal().all()


def test_embedded_phrases_and_prompts() -> None:
    assert noun_phrase(SceneObject("circle", "red", "small", "left")) == "a small red circle on the left"
    assert noun_phrase(SceneObject(None, "orange", None, None), noun="object") == "an orange object"
    assert class_phrases("color")["red"] == "a red shape"
    assert class_phrases("position")["top left"] == "a shape in the top left"
    assert set(class_phrases("size")) == set(SIZES)
    assert set(POSITION_PHRASES) == set(POSITIONS)
    with pytest.raises(ValueError, match="unknown attribute"):
        class_phrases("texture")


def _count(text: str) -> int:
    return int((tokenize(text) != 0).sum())


def test_embedded_longest_caption_fits_the_training_context() -> None:
    # BPE works word by word, so the longest caption takes the longest word in every slot.
    shape, color, size = (max(words, key=_count) for words in (SHAPES, COLORS, tuple(SIZES)))
    where = max((p for ps in POSITION_PHRASES.values() for p in ps), key=_count)
    template = max(TEMPLATES, key=lambda t: _count(t.format("")))
    obj = f"{noun_phrase(SceneObject(shape, color, size, None))} {where}"
    longest = template.format(f"{obj} and {obj}")
    assert _count(longest) <= PretrainConfig().text_length
    assert _count(longest) > PretrainConfig().text_length - 10  # the bound is tight enough to matter


def test_embedded_spatial_stage_names_only_shape_and_position() -> None:
    batch = CaptionGenerator(group=4, spatial=True, two_objects=0.3).batch(seed=0, index=0, batch_size=64)
    said = [d for desc in batch.described for d in desc]
    assert all(d.color is None and d.size is None for d in said)
    assert any(d.shape for d in said) and any(d.position for d in said)
    for caption in batch.captions:
        assert not set(caption.rstrip(".").split()) & (set(COLORS) | set(SIZES)), caption
