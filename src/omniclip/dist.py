"""Distributed helpers with single-process fallbacks: one code path for one process and for many.

Every layer may import it: it imports nothing of the project. Under ``torchrun`` the environment names the rank and
world size; NCCL is used on GPUs and gloo on the CPU (dinov2 ``dinov2/distributed/__init__.py``). Without it every
helper is the identity.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as tdist

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: its rank among ``world_size`` processes and the device it computes on."""

    rank: int = 0  # global rank
    world_size: int = 1  # number of processes
    local_rank: int = 0  # rank on this machine (picks the GPU)
    device: torch.device = torch.device("cpu")  # device this process computes on

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"`` -> this rank's GPU when CUDA is available, else the CPU; ``"cpu"``/``"cuda"`` as asked.

    Raises:
        ValueError: CUDA was asked for but is not available, or the name is unknown.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("train.device=cuda but no GPU is visible; use train.device=cpu or auto")
        return torch.device("cuda", local_rank) if name == "cuda" else torch.device(name)
    raise ValueError(f"train.device must be auto, cpu or cuda, got {name!r}")


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1); otherwise a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if world > 1 and not tdist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        backend = "nccl" if dev.type == "cuda" else "gloo"
        tdist.init_process_group(backend, timeout=timedelta(minutes=30))
        log.info("process group: rank %d of %d, backend %s, device %s", rank, world, backend, dev)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def is_distributed() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def get_rank() -> int:
    return tdist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return tdist.get_world_size() if is_distributed() else 1


def barrier() -> None:
    if is_distributed():
        tdist.barrier()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes (a copy; the identity for one process)."""
    out = values.detach().clone()
    if not is_distributed():
        return out
    if tdist.get_backend() == "nccl":  # NCCL reduces GPU tensors only
        out = out.to(torch.device("cuda", torch.cuda.current_device()))
    tdist.all_reduce(out, op=tdist.ReduceOp.SUM)
    return out.to(values.device)


def all_gather_object(obj: object) -> list[object]:
    """Every process's ``obj``, in rank order (``[obj]`` for one process)."""
    if not is_distributed():
        return [obj]
    parts: list[object] = [None] * tdist.get_world_size()
    tdist.all_gather_object(parts, obj)
    return parts


def on_main(dist: DistInfo, fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only; its result, or the user error it raised, reaches every rank (none waits forever).

    Raises:
        ValueError / FileNotFoundError: what ``fn`` raised on rank 0, raised again on every rank.
    """
    result: Any = None
    error: tuple[bool, str] | None = None
    if dist.is_main:
        try:
            result = fn()
        except (ValueError, FileNotFoundError) as err:
            error = (isinstance(err, FileNotFoundError), str(err))
    box = [(result, error)]
    if is_distributed():
        tdist.broadcast_object_list(box, src=0)
    result, error = box[0]
    if error is not None:
        raise (FileNotFoundError if error[0] else ValueError)(error[1])
    return result


def shutdown(*, wait_for_all: bool) -> None:
    """Leave the process group (safe to call when none was joined).

    ``wait_for_all`` first waits at a barrier, so that no rank leaves while another still works (rank 0 writing
    reports): with gloo a process that tears its group down before its peers is sometimes aborted at exit
    ("terminate called without an active exception"). Pass ``False`` on an error path, where a peer may never arrive.
    """
    if not is_distributed():
        return
    if wait_for_all:
        tdist.barrier()
    tdist.destroy_process_group()


@contextmanager
def process_group(device: str = "auto") -> Iterator[DistInfo]:
    """``init_distributed`` for the body; on the way out every rank waits for the others before leaving the group.

    Only a body that ends normally waits: after an exception a peer may never arrive, so the group is left at once.
    """
    dist = init_distributed(device)
    try:
        yield dist
    except BaseException:
        shutdown(wait_for_all=False)
        raise
    shutdown(wait_for_all=True)
