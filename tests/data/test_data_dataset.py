"""VideoDataset, collate and samplers: shapes, reproducibility, failure records, exact coverage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from omniclip.data.dataset import VideoDataset
from omniclip.data.loader import ShardSampler, TrainSampler, build_loader, collate_videos
from omniclip.data.records import VideoRecord, read_annotations
from omniclip.data.sampling import multiview_indices
from omniclip.data.synthetic import frame_index


@pytest.fixture
def records(synthetic) -> list[VideoRecord]:
    return read_annotations(synthetic.train, synthetic.root)


def test_data_train_items_shape_and_reproducibility(records) -> None:
    ds = VideoDataset(records, num_frames=4, mode="train", size=24, short_side=28, seed=1)
    item = ds[3]
    assert item["video"].shape == (1, 4, 3, 24, 24) and item["video"].dtype == torch.uint8
    assert item["error"] is None and item["index"] == 3 and item["label"] == records[3].label
    torch.testing.assert_close(ds[3]["video"], item["video"])  # no state between calls
    ds.set_epoch(5)
    torch.testing.assert_close(ds[(3, 0)]["video"], item["video"])  # (index, epoch) keys override the epoch
    epoch5 = ds[3]["video"]
    other = VideoDataset(records, num_frames=4, mode="train", size=24, short_side=28, seed=1)
    torch.testing.assert_close(other[(3, 5)]["video"], epoch5)
    changed = sum(not torch.equal(ds[(i, 0)]["video"], ds[(i, 1)]["video"]) for i in range(8))
    assert changed >= 6  # a new epoch draws new offsets and crops


def test_data_flip_is_a_switch(records) -> None:
    kw = dict(num_frames=4, mode="train", size=24, short_side=28, seed=0)
    flipped = VideoDataset(records, flip=True, **kw)
    plain = VideoDataset(records, flip=False, **kw)
    kinds = set()
    for i in range(len(records)):
        a, b = flipped[i]["video"], plain[i]["video"]
        kinds.add("same" if torch.equal(a, b) else "flipped")
        assert torch.equal(a, b) or torch.equal(a, b.flip(-1))
    assert kinds == {"same", "flipped"}


def test_data_train_view_is_the_crop_of_the_short_side_frame_resized(tmp_path: Path) -> None:
    """A training view copies only its box and stays in channels-last memory, but equals the plain formula to the
    bit: the whole clip as (T, 3, H, W), the box cropped, resized to S, flipped. The batch keeps the layout, and
    normalises to the same bits."""
    from PIL import Image

    from omniclip.data import transforms as tf
    from omniclip.data.dataset import item_generator
    from omniclip.data.sampling import clip_indices

    frames = np.random.default_rng(1).integers(0, 256, size=(12, 36, 50, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"img_{i + 1:05d}.png")
    recs = [VideoRecord(tmp_path, 0, i) for i in range(8)]
    ds = VideoDataset(recs, num_frames=4, mode="train", size=24, short_side=30, seed=3)
    flips = 0
    for i in range(len(recs)):
        got = ds[i]["video"]
        assert got.shape == (1, 4, 3, 24, 24) and got[0].is_contiguous(memory_format=torch.channels_last)
        g = item_generator(3, 0, i)
        idx = clip_indices(12, 4, g)
        video = torch.from_numpy(frames[idx]).permute(0, 3, 1, 2).contiguous()
        h, w = tf.short_side_size(36, 50, 30)
        top, left, ch, cw = tf.multi_scale_box(h, w, g)
        ry, rx = 36 / h, 50 / w
        box = round(top * ry), round(left * rx), max(1, round(ch * ry)), max(1, round(cw * rx))
        want = tf.resize(tf.crop(video, *box), 24)
        if torch.rand(1, generator=g).item() < 0.5:
            want, flips = want.flip(-1), flips + 1
        assert torch.equal(got[0], want)
    assert 0 < flips < len(recs)
    batch = collate_videos([ds[i] for i in range(3)])["video"]
    assert batch.shape == (3, 1, 4, 3, 24, 24) and batch.movedim(-3, -1).is_contiguous()
    assert torch.equal(tf.normalize(batch), tf.normalize(batch.contiguous()))
    assert torch.equal(batch.contiguous(), torch.stack([ds[i]["video"].contiguous() for i in range(3)]))


def test_data_multiview_test_items_are_the_sampled_frames(index_videos) -> None:
    records = [VideoRecord(index_videos["gop10"], 1, 0), VideoRecord(index_videos["vfr"], 2, 1)]
    ds = VideoDataset(records, num_frames=5, mode="test", size=64, short_side=64, clips=3, crops=1)
    for rec, item in zip(records, (ds[0], ds[1]), strict=True):
        video = item["video"]
        assert video.shape == (3, 5, 3, 64, 64)
        n = 60 if rec.index == 0 else 30
        got = np.array([[frame_index(f.permute(1, 2, 0).numpy()) for f in clip] for clip in video])
        np.testing.assert_array_equal(got, multiview_indices(n, 5, 3))


def test_data_three_crops_times_clips(index_videos) -> None:
    ds = VideoDataset([VideoRecord(index_videos["gop10"], 0, 0)], num_frames=4, mode="test", size=32, clips=2, crops=3)
    video = ds[0]["video"]
    assert video.shape == (6, 4, 3, 32, 32)
    batch = collate_videos([ds[0], ds[0]])
    assert batch["video"].shape == (2, 6, 4, 3, 32, 32)


def test_data_invalid_configurations_are_user_errors(records) -> None:
    with pytest.raises(ValueError, match="test mode only"):
        VideoDataset(records, num_frames=4, mode="train", clips=2)
    with pytest.raises(ValueError, match="crops must be"):
        VideoDataset(records, num_frames=4, mode="test", crops=5)
    with pytest.raises(ValueError, match="mode"):
        VideoDataset(records, num_frames=4, mode="eval")  # type: ignore[arg-type]


def _broken_records(tmp_path: Path, good: list[VideoRecord]) -> list[VideoRecord]:
    (tmp_path / "garbage.mp4").write_bytes(b"\x00not a video" * 50)
    (tmp_path / "empty.mp4").write_bytes(b"")
    data = good[0].path.read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 3])
    names = ["garbage.mp4", "missing.mp4", "empty.mp4", "truncated.mp4"]
    bad = [VideoRecord(tmp_path / n, 0, 0) for n in names]
    mixed = [good[0], bad[0], good[1], bad[1], bad[2], good[2], bad[3]]
    return [VideoRecord(r.path, r.label, i) for i, r in enumerate(mixed)]


def test_data_broken_videos_become_failure_records(tmp_path: Path, records) -> None:
    mixed = _broken_records(tmp_path, records)
    ds = VideoDataset(mixed, num_frames=4, mode="test", size=24)
    items = [ds[i] for i in range(len(ds))]
    failed = [it for it in items if it["error"] is not None]
    assert [it["index"] for it in failed] == [1, 3, 4, 6]
    assert all(it["video"] is None and it["error"].startswith(str(mixed[it["index"]].path)) for it in failed)
    assert "does not exist" in items[3]["error"] and "empty" in items[4]["error"]
    loader = build_loader(ds, batch_size=3, train=False)
    batches = list(loader)
    assert sum(len(b["index"]) for b in batches) == 3
    assert sorted(i for b in batches for i, _ in b["failed"]) == [1, 3, 4, 6]
    empty = collate_videos([items[1], items[3]])
    assert empty["video"].shape[0] == 0 and empty["video"].dim() == 6 and len(empty["failed"]) == 2


@pytest.mark.parametrize(("n", "world"), [(10, 3), (7, 4), (2, 4), (12, 4), (1, 1)])
def test_data_shard_sampler_covers_every_index_once(n: int, world: int) -> None:
    shards = [list(ShardSampler(n, r, world)) for r in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(n))
    assert [len(ShardSampler(n, r, world)) for r in range(world)] == [len(s) for s in shards]
    with pytest.raises(ValueError, match="rank"):
        ShardSampler(n, world, world)


def test_data_train_sampler_gives_each_step_one_block_of_the_epoch_permutation() -> None:
    """Rank r takes perm[r::world] of the epoch's permutation cut to ``length``: the first clip of every rank together
    is the permutation's first block, the clips one process would see first."""
    samplers = [TrainSampler(10, r, 3, seed=7, length=9) for r in range(3)]
    for s in samplers:
        s.set_epoch(1)
    shards = [[i for i, epoch in s if epoch == 1] for s in samplers]
    one = TrainSampler(10, seed=7, length=9)
    one.set_epoch(1)
    order = [i for i, _ in one]
    assert all(len(shard) == len(s) == 3 for shard, s in zip(shards, samplers, strict=True))
    assert [shard[k] for k in range(3) for shard in shards] == order and len(set(order)) == 9
    one.set_epoch(2)
    assert [i for i, _ in one] != order
    samplers[1].set_epoch(1, skip=2)
    assert [i for i, _ in samplers[1]] == shards[1][2:] and len(samplers[1]) == 1
    assert len(TrainSampler(10, 0, 4)) == 2  # the default length leaves out the 10 % 4 remainder
    with pytest.raises(ValueError, match="multiple of world_size=3"):
        TrainSampler(10, 0, 3, length=8)
    with pytest.raises(ValueError, match="rank"):
        TrainSampler(10, 3, 3)


def _gray_levels(tmp_path: Path, n: int) -> VideoRecord:
    """A frame folder whose frame i is uniformly grey at level 8 i: crops and resizes keep the level."""
    from PIL import Image

    for i in range(n):
        Image.fromarray(np.full((40, 48, 3), 8 * i, dtype=np.uint8)).save(tmp_path / f"img_{i + 1:05d}.png")
    return VideoRecord(tmp_path, 0, 0)


def test_data_dense_sampling_reads_frames_an_interval_apart(tmp_path: Path) -> None:
    rec = _gray_levels(tmp_path, 30)
    kw: dict = dict(num_frames=4, size=24, short_side=28, sampling="dense", frame_interval=3)
    train = VideoDataset([rec], mode="train", **kw)
    for epoch in range(6):
        frames = (train[(0, epoch)]["video"][0].float().mean(dim=(1, 2, 3)) / 8).round().long()
        assert torch.all(frames.diff() == 3) and 0 <= frames[0] <= 30 - 10
    test = VideoDataset([rec], mode="test", clips=2, **kw)
    levels = (test[0]["video"].float().mean(dim=(2, 3, 4)) / 8).round().long()
    np.testing.assert_array_equal(levels.numpy(), multiview_indices(30, 4, 2, "dense", 3))


def test_data_crop_scales_of_one_train_on_the_whole_frame(tmp_path: Path) -> None:
    """``crop_scales=(1.0,)``: each training clip is the whole (square) frame, as the test view with short_side=size."""
    from PIL import Image

    frames = np.random.default_rng(0).integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"img_{i + 1:05d}.png")
    rec = VideoRecord(tmp_path, 0, 0)
    kw: dict = dict(num_frames=8, size=32, short_side=32, flip=False)
    whole = VideoDataset([rec], mode="train", crop_scales=(1.0,), **kw)
    test = VideoDataset([rec], mode="test", **kw)[0]["video"]
    assert all(torch.equal(whole[(0, epoch)]["video"], test) for epoch in range(5))
    cropped = VideoDataset([rec], mode="train", **kw)  # TSN's scales: most clips are a part of the frame, enlarged
    assert sum(not torch.equal(cropped[(0, epoch)]["video"], test) for epoch in range(5)) >= 3
    with pytest.raises(ValueError, match="crop_scales"):
        VideoDataset([rec], mode="train", crop_scales=(1.2,), **kw)


def test_data_rand_augment_changes_training_clips_reproducibly(records) -> None:
    kw: dict = dict(num_frames=4, mode="train", size=24, short_side=28, seed=0)
    plain = VideoDataset(records, **kw)
    augmented = VideoDataset(records, rand_augment_ops=2, rand_augment_magnitude=9, **kw)
    changed = sum(not torch.equal(plain[i]["video"], augmented[i]["video"]) for i in range(len(records)))
    assert changed >= len(records) // 2
    torch.testing.assert_close(augmented[3]["video"], VideoDataset(records, rand_augment_ops=2, **kw)[3]["video"])


def test_data_loader_workers_see_the_epoch(records) -> None:
    ds = VideoDataset(records[:6], num_frames=3, mode="train", size=16, short_side=20)
    loader = build_loader(ds, batch_size=3, train=True, workers=2, seed=0)
    seen = {}
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            for j, i in enumerate(batch["index"].tolist()):
                seen[(i, epoch)] = batch["video"][j]
    assert len(seen) == 12
    for (i, epoch), video in seen.items():
        torch.testing.assert_close(video, ds[(i, epoch)]["video"])


def test_data_rawframe_lists_read_frame_folders(tmp_path: Path) -> None:
    from PIL import Image

    from omniclip.data.synthetic import index_frame

    folder = tmp_path / "frames" / "v1"
    folder.mkdir(parents=True)
    for i in range(20):
        Image.fromarray(index_frame(i, 32)).save(folder / f"img_{i + 1:05d}.png")
    (tmp_path / "raw.txt").write_text("frames/v1 20 3\n")
    records = read_annotations(tmp_path / "raw.txt", tmp_path)
    ds = VideoDataset(records, num_frames=4, mode="test", size=32, short_side=32, clips=2)
    video = ds[0]["video"]
    assert video.shape == (2, 4, 3, 32, 32) and ds[0]["label"] == 3
    got = [[frame_index(f.permute(1, 2, 0).numpy()) for f in clip] for clip in video]
    np.testing.assert_array_equal(got, multiview_indices(20, 4, 2))
