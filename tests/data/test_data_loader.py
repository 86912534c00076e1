"""``prefetch``: a loader without worker processes decoded in a thread ahead of its consumer, same items, same order."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from omniclip.data.loader import collate_videos, prefetch


def _threads() -> int:
    return sum(t.name == "omniclip-prefetch" for t in threading.enumerate())


def test_prefetch_gives_the_same_items_in_order() -> None:
    assert list(prefetch(range(50), depth=3)) == list(range(50))
    assert list(prefetch([])) == []


def test_prefetch_runs_ahead_of_its_consumer() -> None:
    """While the consumer still holds item 0, the thread goes on producing items 1 and 2 (no timing involved)."""
    ahead = threading.Event()

    def source():
        for i in range(5):
            if i == 2:
                ahead.set()
            yield i

    items = iter(prefetch(source(), depth=2))
    assert next(items) == 0
    assert ahead.wait(timeout=60), "the producer did not run ahead of its consumer"
    assert list(items) == [1, 2, 3, 4]


def test_an_error_of_the_producer_reaches_the_consumer_at_its_item() -> None:
    def broken():
        yield 1
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for item in prefetch(broken()):
            got.append(item)
    assert got == [1]


def test_leaving_early_stops_the_thread() -> None:
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    for item in prefetch(endless(), depth=2):
        if item == 3:
            break
    deadline = time.monotonic() + 5
    while _threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _threads() == 0 and len(produced) <= 4 + 2 + 1  # at most depth items ahead, plus the one being made
    with pytest.raises(ValueError, match="prefetch depth must be at least 1, got 0"):
        next(prefetch([1], depth=0))


def test_decode_ahead_only_where_a_core_is_left_for_the_thread(monkeypatch) -> None:
    from omniclip.data import loader

    monkeypatch.setattr(loader, "usable_cores", lambda: 4)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert not loader.decode_ahead("cpu")  # torch holds every core: decode in line
    assert loader.decode_ahead(torch.device("cuda"))  # the model computes elsewhere
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    assert loader.decode_ahead("cpu")


def test_workers_of_the_gpu_decoder_are_spawned_not_forked() -> None:
    from omniclip.data.loader import build_loader

    class Frames(torch.utils.data.Dataset):
        def __init__(self, decoder: str) -> None:
            self.decoder = decoder

        def __len__(self) -> int:
            return 4

    spawned = build_loader(Frames("pyav-cuda"), batch_size=2, train=False, workers=1)
    assert spawned.multiprocessing_context.get_start_method() == "spawn"  # CUDA does not survive a fork
    assert build_loader(Frames("pyav"), batch_size=2, train=False, workers=1).multiprocessing_context is None


def _collated_in_shared_memory(items: list) -> bool:
    return collate_videos(items)["video"].is_shared()


def test_a_worker_stacks_its_batch_straight_into_shared_memory(synthetic) -> None:
    """A worker's batch crosses to the main process in shared memory; stacking there saves a copy of every batch."""
    from torch.utils.data import DataLoader

    from omniclip.data.dataset import VideoDataset
    from omniclip.data.records import read_annotations

    ds = VideoDataset(read_annotations(synthetic.train, synthetic.root)[:4], num_frames=3, mode="train", size=16)
    assert not _collated_in_shared_memory([ds[0], ds[1]])  # in this process: ordinary memory
    in_worker = DataLoader(ds, batch_size=2, num_workers=1, collate_fn=_collated_in_shared_memory)
    assert list(in_worker) == [True, True]
