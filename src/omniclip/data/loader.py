"""Batching: collate video items (counting failures), samplers for training and sharded evaluation, and loaders.

- ``collate_videos`` stacks readable items and reports unreadable ones in ``failed``; a batch may have B = 0.
- ``ShardSampler`` gives rank r the indices r, r + world, ...: every index exactly once across ranks, no padding,
  so distributed evaluation scores every video once (never ``drop_last`` at evaluation).
- ``TrainSampler`` cuts one (seed, epoch) permutation to whole global batches and splits it across ranks, so a step
  on any number of processes trains on the same clips; it yields ``(index, epoch)`` so the epoch reaches persistent
  workers, and ``set_epoch(epoch, skip=n)`` resumes an epoch after ``n`` clips of this rank.
- ``prefetch`` runs a loader without worker processes in a background thread, a few batches ahead: decoding (PyAV and
  torch release the GIL) overlaps the model's step instead of waiting for it. ``decode_ahead`` says whether that
  pays: only where a core is left for the thread (docs/benchmarks.md, "The prefetch thread on a full CPU").
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence, Sized
from typing import Any, TypedDict, TypeVar, cast

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from omniclip.data.dataset import VideoItem
from omniclip.data.decode import worker_start

log = logging.getLogger(__name__)


class VideoBatch(TypedDict):
    """A collated batch; ``failed`` lists (video index, error) of items dropped from the tensors."""

    video: torch.Tensor  # uint8 (B, V, T, 3, S, S), in channels-last memory (B, V, T, S, S, 3) from VideoDataset
    label: torch.Tensor  # long (B,)
    index: torch.Tensor  # long (B,)
    failed: list[tuple[int, str]]


def stack_videos(videos: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack (..., 3, S, S) videos, keeping channels-last memory when every video has it.

    ``VideoDataset``'s clips come in channels-last memory; ``torch.stack`` would gather them into
    channels-first memory, a copy that ``transforms.normalize`` makes anyway on the device batch. In a worker
    process the batch is stacked straight into shared memory (``default_collate``), not copied there afterwards.
    """
    memory = [v.movedim(-3, -1) for v in videos]  # (..., S, S, 3)
    if all(m.is_contiguous() for m in memory):
        return default_collate(memory).movedim(-1, -3)
    return default_collate(list(videos))


def collate_videos(items: Sequence[VideoItem]) -> VideoBatch:
    """Stack readable items; unreadable ones go to ``failed`` (video has shape (0, 0, 0, 3, 0, 0) when none is)."""
    ok = [it for it in items if it["video"] is not None]
    videos = [it["video"] for it in items if it["video"] is not None]
    return {
        "video": stack_videos(videos) if videos else torch.zeros((0, 0, 0, 3, 0, 0), dtype=torch.uint8),
        "label": torch.tensor([int(it["label"]) for it in ok], dtype=torch.long),
        "index": torch.tensor([int(it["index"]) for it in ok], dtype=torch.long),
        "failed": [(int(it["index"]), str(it["error"])) for it in items if it["video"] is None],
    }


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")


class ShardSampler(Sampler[int]):
    """Evaluation sampler: rank ``r`` gets the indices r, r + world, ... of ``range(n)`` (n: the dataset length)."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1) -> None:
        _check_rank(rank, world_size)
        self.indices = range(rank, n, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class TrainSampler(Sampler[tuple[int, int]]):
    """Training sampler: one seeded permutation per epoch, cut to ``length`` indices, split as ``perm[rank::world]``.

    With ``length`` a whole number of global batches, rank r's i-th batch of b clips holds
    ``perm[(i*b + j) * world + r]``: the batches of all ranks that make one optimizer step cover one contiguous block
    of the permutation, the same clips as on one process. Yields ``(index, epoch)`` pairs, so the epoch reaches
    persistent workers (``VideoDataset`` reads both).

    Args:
        n: Dataset length.
        seed: Epoch ``e`` uses the permutation seeded by ``seed * 100_003 + e``.
        length: Indices used per epoch over all ranks, a multiple of ``world_size`` (default: all of them, less the
            remainder of ``n / world_size``).
    """

    def __init__(self, n: int, rank: int = 0, world_size: int = 1, seed: int = 0, length: int | None = None) -> None:
        _check_rank(rank, world_size)
        length = n - n % world_size if length is None else length
        if not 0 < length <= n or length % world_size:
            raise ValueError(f"need 0 < length <= n and a multiple of world_size={world_size}; got {length} of {n}")
        self.n, self.rank, self.world_size, self.seed, self.length = n, rank, world_size, seed, length
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Use epoch ``epoch``; drop this rank's first ``skip`` clips (resuming mid-epoch)."""
        self.epoch, self.skip = epoch, skip

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        mine = torch.randperm(self.n, generator=g)[: self.length][self.rank :: self.world_size].tolist()
        return iter([(i, self.epoch) for i in mine[self.skip :]])

    def __len__(self) -> int:
        return self.length // self.world_size - self.skip


def _worker_init(_: int) -> None:
    # Each worker decodes one video at a time; more threads per worker only fight over the cores.
    torch.set_num_threads(1)


def build_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    train: bool,
    workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    length: int | None = None,
    pin_memory: bool | None = None,
) -> DataLoader:
    """A ``DataLoader`` with ``collate_videos`` and the right sampler.

    Args:
        dataset: Usually a ``VideoDataset``.
        batch_size: Videos per batch per process.
        train: ``TrainSampler`` (shuffled, epoch-aware; call ``loader.sampler.set_epoch(e)``) or ``ShardSampler``.
        workers: Worker processes (0: decode in the main process); >0 keeps workers alive across epochs.
        seed: Shuffling seed for training.
        length: Training indices per epoch over all ranks (see ``TrainSampler``).
        pin_memory: Pin batches for copies to a GPU (default: when CUDA is available).
    """
    size = len(cast(Sized, dataset))  # map-style: torch's Dataset type leaves out __len__
    sampler = TrainSampler(size, rank, world_size, seed, length) if train else ShardSampler(size, rank, world_size)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_videos,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        persistent_workers=workers > 0,
        multiprocessing_context=worker_start(getattr(dataset, "decoder", "pyav")) if workers > 0 else None,
        worker_init_fn=_worker_init if workers > 0 else None,
    )


T = TypeVar("T")
_END = object()


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def decode_ahead(device: torch.device | str) -> bool:
    """Whether decoding in a thread beside the model (``prefetch``) pays on ``device``.

    It does when the model computes on a GPU, or when torch's threads leave a CPU core free. When they hold every
    core, the thread takes one from them mid-step and each step waits for the slowest of torch's threads: on two
    cores with two threads a training step took 0.41 s with the thread against 0.36 s decoding in line.
    """
    return torch.device(device).type != "cpu" or torch.get_num_threads() < usable_cores()


def read_batches(loader: Iterable[T], device: torch.device | str) -> Iterator[T]:
    """The loader's batches: through ``prefetch`` when it has no worker processes and ``decode_ahead`` says a
    decoding thread pays on ``device``, else as the loader gives them (the same batches in the same order)."""
    if getattr(loader, "num_workers", None) == 0 and decode_ahead(device):
        return prefetch(loader)
    return iter(loader)


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Iterate ``items`` in a background thread, at most ``depth`` items ahead; the same items in the same order.

    For a ``DataLoader`` with ``workers=0``: its batches are decoded while the caller computes (worker processes do
    that for ``workers > 0``). An error of the thread is raised here, at the item where it happened. Leaving the loop
    early (``break``, an exception, closing the generator) stops the thread after the item it is producing.
    """
    if depth < 1:
        raise ValueError(f"prefetch depth must be at least 1, got {depth}")
    ready: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    with contextlib.suppress(queue.Full):
                        ready.put((item, None), timeout=0.1)
                        break
                if stop.is_set():
                    return
            ready.put((_END, None))
        except BaseException as err:  # handed to the consumer
            ready.put((_END, err))

    thread = threading.Thread(target=produce, name="omniclip-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, err = ready.get()
            if err is not None:
                raise err
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue, then let it finish its item
            with contextlib.suppress(queue.Empty):
                ready.get(timeout=0.1)
