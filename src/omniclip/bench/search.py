"""Largest batch that fits: double until a try runs out of memory, then bisect between the last fit and the first miss.

A try is any function of the batch size that raises an out-of-memory error when it does not fit; other errors
propagate. Memory is released after each failed try (the exception and its frames are dropped first).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

log = logging.getLogger(__name__)


@dataclass
class MaxBatch:
    """Result of ``find_max_batch``."""

    max_batch: int  # largest size that ran; 0 if even ``start`` did not fit
    limit: int  # the search never tried more than this
    capped: bool  # True when ``limit`` fitted, so the true maximum may be larger
    tries: list[tuple[int, bool]] = field(default_factory=list)  # (size, fitted) in the order tried

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_oom(err: BaseException) -> bool:
    """True for CUDA out-of-memory errors and for CPU allocations that the allocator refused."""
    if isinstance(err, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def release_memory() -> None:
    """Return cached blocks after a failed try, so the next try starts from the same free memory."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _fits(try_batch: Callable[[int], object], size: int) -> bool:
    failed = False
    try:
        try_batch(size)
    except (RuntimeError, MemoryError) as err:
        if not is_oom(err):
            raise
        failed = True  # leave the except block before releasing: the traceback holds the failed step's tensors
    if failed:
        release_memory()
    log.info("batch %d: %s", size, "out of memory" if failed else "fits")
    return not failed


def find_max_batch(
    try_batch: Callable[[int], object], *, start: int = 1, limit: int = 4096, tolerance: float = 0.0
) -> MaxBatch:
    """Largest batch size in ``[start, limit]`` for which ``try_batch(size)`` runs without running out of memory.

    Sizes double from ``start`` until one fails or ``limit`` is reached, then the gap between the last fit and the
    first failure is bisected until it is at most ``max(1, tolerance * fit)`` (0: the exact size). Assumes that if
    a size fits, every smaller size fits.

    Raises:
        ValueError: ``start < 1``, ``limit < start`` or a negative ``tolerance``.
    """
    if start < 1 or limit < start:
        raise ValueError(f"max-batch search needs 1 <= start <= limit, got start={start}, limit={limit}")
    if tolerance < 0:
        raise ValueError(f"max-batch tolerance must be >= 0, got {tolerance}")
    tries: list[tuple[int, bool]] = []

    def attempt(size: int) -> bool:
        ok = _fits(try_batch, size)
        tries.append((size, ok))
        return ok

    if not attempt(start):
        return MaxBatch(0, limit, False, tries)
    good, size = start, start
    bad: int | None = None
    while bad is None and good < limit:
        size = min(2 * good, limit)
        if attempt(size):
            good = size
        else:
            bad = size
    if bad is None:
        return MaxBatch(good, limit, True, tries)
    while bad - good > max(1, int(tolerance * good)):
        mid = (good + bad) // 2
        if attempt(mid):
            good = mid
        else:
            bad = mid
    return MaxBatch(good, limit, False, tries)
