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
    assert video.shape == (6, 4, 3, 32, 32) and ds.views == 6
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
    shuffled = [list(ShardSampler(n, r, world, shuffle=True, seed=3)) for r in range(world)]
    assert sorted(i for s in shuffled for i in s) == list(range(n))
    with pytest.raises(ValueError, match="rank"):
        ShardSampler(n, world, world)


def test_data_train_sampler_epochs_padding_and_resume() -> None:
    samplers = [TrainSampler(10, r, 3, seed=7, with_epoch=False) for r in range(3)]
    first = [list(s) for s in samplers]
    assert all(len(f) == 4 for f in first) and set().union(*map(set, first)) == set(range(10))
    for s in samplers:
        s.set_epoch(1)
    assert [list(s) for s in samplers] != first
    s = TrainSampler(10, 1, 3, seed=7)
    s.set_epoch(1)
    full = list(s)
    assert all(epoch == 1 for _, epoch in full)
    s.set_epoch(1, skip=2)
    assert list(s) == full[2:] and len(s) == 2


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
    ds = VideoDataset(records, num_frames=4, mode="test", size=32, short_side=32, clips=2, decoder_threads=0)
    video = ds[0]["video"]
    assert video.shape == (2, 4, 3, 32, 32) and ds[0]["label"] == 3
    got = [[frame_index(f.permute(1, 2, 0).numpy()) for f in clip] for clip in video]
    np.testing.assert_array_equal(got, multiview_indices(20, 4, 2))
