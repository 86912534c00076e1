"""Batching: collate video items (counting failures), samplers for training and sharded evaluation, and loaders.

- ``collate_videos`` stacks readable items and reports unreadable ones in ``failed``; a batch may have B = 0.
- ``ShardSampler`` gives rank r the indices r, r + world, ...: every index exactly once across ranks, no padding,
  so distributed evaluation scores every video once (never ``drop_last`` at evaluation).
- ``TrainSampler`` shuffles with a (seed, epoch) permutation, pads to a multiple of the world size (like
  ``DistributedSampler``) and yields ``(index, epoch)`` so the epoch reaches persistent workers; ``set_epoch(epoch,
  skip=n)`` resumes an epoch after ``n`` samples of this rank.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence, Sized
from typing import Any, TypedDict, cast

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from omniclip.data.dataset import VideoItem

log = logging.getLogger(__name__)


class VideoBatch(TypedDict):
    """A collated batch; ``failed`` lists (video index, error) of items dropped from the tensors."""

    video: torch.Tensor  # uint8 (B, V, T, 3, S, S)
    label: torch.Tensor  # long (B,)
    index: torch.Tensor  # long (B,)
    failed: list[tuple[int, str]]


def collate_videos(items: Sequence[VideoItem]) -> VideoBatch:
    """Stack readable items; unreadable ones go to ``failed`` (video has shape (0, 0, 0, 3, 0, 0) when none is)."""
    ok = [it for it in items if it["video"] is not None]
    failed = [(int(it["index"]), str(it["error"])) for it in items if it["video"] is None]
    videos = [it["video"] for it in items if it["video"] is not None]
    if videos:
        video = torch.stack(videos)
    else:
        video = torch.zeros((0, 0, 0, 3, 0, 0), dtype=torch.uint8)
    return {
        "video": video,
        "label": torch.tensor([int(it["label"]) for it in ok], dtype=torch.long),
        "index": torch.tensor([int(it["index"]) for it in ok], dtype=torch.long),
        "failed": failed,
    }


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")


class ShardSampler(Sampler[int]):
    """Evaluation sampler: rank ``r`` gets positions r, r + world, ... of an (optionally shuffled) order.

    Args:
        n: Dataset length.
        rank: This process's rank.
        world_size: Number of processes.
        shuffle: Permute with ``seed`` first (the union over ranks is still every index once).
        seed: Permutation seed.
    """

    def __init__(self, n: int, rank: int = 0, world_size: int = 1, shuffle: bool = False, seed: int = 0) -> None:
        _check_rank(rank, world_size)
        self.n, self.rank, self.world_size, self.shuffle, self.seed = n, rank, world_size, shuffle, seed

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed)).tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self._order()[self.rank :: self.world_size])

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))


class TrainSampler(Sampler):
    """Training sampler: seeded permutation per epoch, padded to a multiple of ``world_size``, strided by rank.

    Args:
        n: Dataset length.
        rank: This process's rank.
        world_size: Number of processes.
        seed: Base seed (epoch ``e`` uses a permutation seeded by ``seed + e``).
        shuffle: Permute (False: dataset order).
        with_epoch: Yield ``(index, epoch)`` pairs (understood by ``VideoDataset``) instead of plain indices.
    """

    def __init__(
        self,
        n: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        *,
        shuffle: bool = True,
        with_epoch: bool = True,
    ) -> None:
        _check_rank(rank, world_size)
        if n < 1:
            raise ValueError("cannot sample from an empty dataset")
        self.n, self.rank, self.world_size, self.seed = n, rank, world_size, seed
        self.shuffle, self.with_epoch = shuffle, with_epoch
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Use epoch ``epoch``; ``skip`` drops this rank's first ``skip`` samples (mid-epoch resume)."""
        self.epoch, self.skip = int(epoch), int(skip)

    def indices(self) -> list[int]:
        """This rank's indices for the current epoch (before ``skip``)."""
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        else:
            order = list(range(self.n))
        total = -(-self.n // self.world_size) * self.world_size
        order = (order * -(-total // self.n))[:total]  # pad by repeating from the start
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator:
        idx = self.indices()[self.skip :]
        return iter([(i, self.epoch) for i in idx] if self.with_epoch else idx)

    def __len__(self) -> int:
        return max(-(-self.n // self.world_size) - self.skip, 0)


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
    drop_last: bool = False,
    prefetch_factor: int = 2,
) -> DataLoader:
    """A ``DataLoader`` with ``collate_videos`` and the right sampler.

    Args:
        dataset: Usually a ``VideoDataset``.
        batch_size: Videos per batch per process.
        train: ``TrainSampler`` (shuffled, epoch-aware; call ``loader.sampler.set_epoch(e)``) or ``ShardSampler``.
        workers: Worker processes (0: decode in the main process); >0 keeps workers alive across epochs.
        rank: This process's rank.
        world_size: Number of processes.
        seed: Shuffling seed for training.
        drop_last: Drop the last incomplete training batch (never done at evaluation).
        prefetch_factor: Batches prefetched per worker.
    """
    size = len(cast(Sized, dataset))  # map-style: torch's Dataset type leaves out __len__
    if train:
        sampler: Sampler = TrainSampler(size, rank, world_size, seed)
    else:
        sampler = ShardSampler(size, rank, world_size)
    extra: dict[str, Any] = {}
    if workers > 0:
        extra = {"persistent_workers": True, "prefetch_factor": prefetch_factor, "worker_init_fn": _worker_init}
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_videos,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last and train,
        **extra,
    )
