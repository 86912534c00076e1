"""Frame sampling and transforms: pure, seeded, right shapes and values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omniclip.data import sampling
from omniclip.data import transforms as tf


def test_data_segment_sampling_one_frame_per_segment() -> None:
    g = torch.Generator().manual_seed(0)
    for n in (3, 8, 16, 100, 301):
        for _ in range(20):
            idx = sampling.segment_indices(n, 8, g)
            assert len(idx) == 8 and np.all(np.diff(idx) >= 0) and idx.min() >= 0 and idx.max() < n
            if n >= 8:
                seg = n / 8
                assert np.all((idx >= np.floor(np.arange(8) * seg)) & (idx < np.ceil((np.arange(8) + 1) * seg)))
    np.testing.assert_array_equal(sampling.segment_indices(80, 8), np.arange(8) * 10 + 5)  # centres


def test_data_sampling_is_reproducible_from_the_generator() -> None:
    a = sampling.clip_indices(200, 8, torch.Generator().manual_seed(3))
    b = sampling.clip_indices(200, 8, torch.Generator().manual_seed(3))
    c = sampling.clip_indices(200, 8, torch.Generator().manual_seed(4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_data_dense_and_multiview_sampling() -> None:
    g = torch.Generator().manual_seed(0)
    idx = sampling.dense_indices(100, 8, 4, g)
    assert np.all(np.diff(idx) == 4) and idx[-1] < 100
    short = sampling.dense_indices(10, 8, 4)
    assert short.max() == 9 and len(short) == 8
    views = sampling.multiview_indices(120, 8, 4)
    assert views.shape == (4, 8)
    assert len({tuple(v) for v in views}) == 4  # distinct temporal views
    np.testing.assert_array_equal(sampling.multiview_indices(120, 8, 1)[0], sampling.segment_indices(120, 8))
    dense = sampling.multiview_indices(300, 8, 3, "dense", 2)
    assert dense[0, 0] < dense[1, 0] < dense[2, 0] and np.all(np.diff(dense, axis=1) == 2)
    with pytest.raises(ValueError, match="unknown sampling"):
        sampling.multiview_indices(10, 4, 1, "random")  # type: ignore[arg-type]


def test_data_resize_and_crops_shapes() -> None:
    video = torch.randint(0, 256, (4, 3, 120, 160), dtype=torch.uint8)
    short = tf.resize_short_side(video, 64)
    assert short.shape == (4, 3, 64, 85) and short.dtype == torch.uint8
    assert tf.center_crop(short, 64).shape == (4, 3, 64, 64)
    assert tf.three_crop_boxes(64, 85, 64) == [(0, 0, 64, 64), (0, 10, 64, 64), (0, 21, 64, 64)]
    assert tf.three_crop_boxes(85, 64, 64) == [(0, 0, 64, 64), (10, 0, 64, 64), (21, 0, 64, 64)]
    three = tf.stack_channels_last([tf.crop(short, *box) for box in tf.three_crop_boxes(64, 85, 64)])
    assert three.shape == (3, 4, 3, 64, 64) and three.movedim(-3, -1).is_contiguous()
    torch.testing.assert_close(three[0], short[..., :, :64])
    torch.testing.assert_close(three[2], short[..., :, -64:])
    with pytest.raises(ValueError, match="resize the short side"):
        tf.three_crop_boxes(60, 85, 64)
    g = torch.Generator().manual_seed(0)
    assert tf.resize(tf.crop(video, *tf.multi_scale_box(120, 160, g)), 56).shape == (4, 3, 56, 56)
    with pytest.raises(ValueError, match="resize"):
        tf.center_crop(video, 200)


def test_data_uint8_resize_matches_float_resize() -> None:
    video = torch.randint(0, 256, (2, 3, 90, 70), dtype=torch.uint8)
    fast = tf.resize(video, (45, 36))
    slow = tf.resize(video.float(), (45, 36)).round().clamp(0, 255)
    assert (fast.float() - slow).abs().max() <= 1  # rounding differences only


def test_data_multi_scale_boxes_stay_inside() -> None:
    g = torch.Generator().manual_seed(1)
    for _ in range(200):
        top, left, h, w = tf.multi_scale_box(256, 341, g)
        assert 0 <= top and top + h <= 256 and 0 <= left and left + w <= 341
        assert min(h, w) >= int(256 * 0.66)


def test_data_normalize_uses_clip_constants_on_any_leading_dims() -> None:
    video = torch.full((2, 5, 3, 4, 4), 255, dtype=torch.uint8)
    out = tf.normalize(video)
    expected = (1 - torch.tensor(tf.CLIP_MEAN)) / torch.tensor(tf.CLIP_STD)
    torch.testing.assert_close(out[1, 3, :, 2, 2], expected)
    assert out.dtype == torch.float32 and tf.normalize(video, dtype=torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="channels"):
        tf.normalize(torch.zeros(2, 4, 4, 3, dtype=torch.uint8))


def test_data_normalize_is_the_plain_formula_to_the_bit_and_contiguous_for_any_strides() -> None:
    frames = torch.randint(0, 256, (2, 4, 24, 32, 3), dtype=torch.uint8).permute(0, 1, 4, 2, 3)  # as decoded
    m, s = torch.tensor(tf.CLIP_MEAN).view(3, 1, 1), torch.tensor(tf.CLIP_STD).view(3, 1, 1)
    out = tf.normalize(frames)  # one float copy, then in place
    assert out.is_contiguous() and torch.equal(out, (frames.contiguous().float() / 255.0 - m) / s)


def test_data_rand_augment_and_mixup() -> None:
    video = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    out = tf.rand_augment(video, torch.Generator().manual_seed(0), num_ops=3)
    assert out.shape == video.shape and out.dtype == torch.uint8
    same = tf.rand_augment(video, torch.Generator().manual_seed(0), num_ops=3)
    torch.testing.assert_close(out, same)
    x = torch.randn(4, 2, 3)
    mixed, target = tf.mixup(x, torch.tensor([0, 1, 2, 1]), 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(target.sum(1), torch.ones(4))
    lam = float(target[0, 0])  # row 0 mixes class 0 (weight lam) with row 3 (class 1)
    torch.testing.assert_close(mixed[0], lam * x[0] + (1 - lam) * x[3])
