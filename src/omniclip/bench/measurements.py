"""The bench's measurements: step time, peak and saved-activation memory, the matmul rate, and the largest batch.

Timing follows the usual GPU benchmarking rules (warm up, synchronise before reading the clock, report medians) and
rotates among several pre-made input batches so no step sees a tensor the previous one left in cache. FLOPs are
counted by ``omniclip.model.flops.count_flops``.
"""

from __future__ import annotations

import gc
import logging
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)
PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass
class Timing:
    """One measured phase (inference or training) of one model at one batch size."""

    batch: int  # clips per step
    step_s: float  # median seconds per step over the repeats
    clips_per_s: float  # batch / step_s
    step_s_repeats: list[float]  # mean seconds per step of each repeat
    cpu_step_s: float  # median process CPU seconds per step: robust to a shared CPU when single-threaded
    peak_memory_bytes: int | None  # see memory_kind; None when it cannot be measured
    memory_kind: str  # cuda_max_allocated | cpu_rss_peak_delta | n/a | n/a (interleaved)


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels so that the wall clock measures them."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_interleaved(
    steps: dict[str, Callable[[Any], Any]],
    batches: Sequence[Any],
    *,
    batch_size: int,
    device: torch.device,
    warmup: int = 2,
    repeats: int = 5,
) -> dict[str, Timing]:
    """Time each ``step(batch)``: ``warmup`` untimed steps, then ``repeats`` timed passes over all ``batches``.

    Each pass runs ``len(batches)`` steps between two synchronisations; the reported step time is the median over
    passes of the mean step time within a pass. The steps take turns within each repeat: on a machine shared with
    other work, load drifts over a run, and taking turns spreads the drift over every step instead of charging it to
    whichever ran last. All models are resident at once, so no peak memory is reported.
    """
    if not batches or repeats < 1 or warmup < 0:
        raise ValueError(f"timing needs input batches, repeats >= 1 and warmup >= 0, got {repeats=}, {warmup=}")
    for step in steps.values():
        for i in range(warmup):
            step(batches[i % len(batches)])
    synchronize(device)
    wall: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            t0, c0 = time.perf_counter(), time.process_time()
            for batch in batches:
                step(batch)
            synchronize(device)
            wall[name].append((time.perf_counter() - t0) / len(batches))
            cpu[name].append((time.process_time() - c0) / len(batches))
    out = {}
    for name, times in wall.items():
        median = statistics.median(times)
        out[name] = Timing(batch_size, median, batch_size / median, times, statistics.median(cpu[name]),
                           None, "n/a (interleaved)")  # fmt: skip
    return out


def measure(
    step: Callable[[Any], Any],
    batches: Sequence[Any],
    *,
    batch_size: int,
    device: torch.device,
    warmup: int = 2,
    repeats: int = 5,
) -> Timing:
    """``measure_interleaved`` of one step, with the peak memory of its warm-up and timed steps.

    CUDA: ``max_memory_allocated`` (absolute peak: weights, optimiser state and activations). CPU on Linux: peak RSS
    minus the RSS at the start (``cpu_rss_peak_delta``, a lower bound). Otherwise ``None`` with kind ``n/a``.
    """
    cuda = device.type == "cuda"
    rss0 = None
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    else:
        gc.collect()  # garbage freed during the steps would hide their memory from the peak (a 64 MiB test read 0)
        rss0 = _reset_peak_rss()
    timing = measure_interleaved({"": step}, batches, batch_size=batch_size, device=device, warmup=warmup,
                                 repeats=repeats)[""]  # fmt: skip
    if cuda:
        timing.peak_memory_bytes, timing.memory_kind = torch.cuda.max_memory_allocated(device), "cuda_max_allocated"
    elif rss0 is not None:
        timing.peak_memory_bytes, timing.memory_kind = max(0, _proc_kib("VmHWM") - rss0) * 1024, "cpu_rss_peak_delta"
    else:
        timing.peak_memory_bytes, timing.memory_kind = None, "n/a"
    return timing


def _reset_peak_rss() -> int | None:
    """Reset the process's peak RSS (``VmHWM``) to its current RSS and return that in KiB; None where Linux cannot."""
    try:
        PROC_CLEAR_REFS.write_text("5")  # Linux >= 4.0
        return _proc_kib("VmRSS")
    except (OSError, AssertionError):
        return None


def _proc_kib(key: str) -> int:
    match = re.search(rf"^{key}:\s+(\d+) kB", PROC_STATUS.read_text(), re.MULTILINE)
    assert match, f"{key} missing from {PROC_STATUS}"
    return int(match.group(1))


def matmul_tflops(device: torch.device, dtype: torch.dtype, budget_s: float = 0.2) -> tuple[float, int]:
    """Achieved TFLOP/s of a square ``n x n`` matmul, and ``n``: the machine's reference rate for utilisation figures.

    ``n`` is 8192 on a GPU and 1024 on a CPU, halved (down to 256) while one product takes over ``budget_s``: a CPU
    without bf16 units computes a 1024 bf16 product in seconds, and the reference alone would take half a minute.
    """
    n = 8192 if device.type == "cuda" else 1024
    while True:
        a, b = torch.randn(2, n, n, device=device, dtype=dtype)

        def product(_: object, a: torch.Tensor = a, b: torch.Tensor = b) -> torch.Tensor:
            return a @ b

        once = measure_interleaved({"": product}, [None], batch_size=1, device=device, warmup=1, repeats=1)[""]
        if once.step_s <= budget_s or n <= 256:
            break
        n //= 2
    # no memory reading wanted (``measure`` collects garbage each call); the probe above was the warm-up
    timing = measure_interleaved({"": product}, [None], batch_size=1, device=device, warmup=0, repeats=5)[""]
    return 2 * n**3 / timing.step_s / 1e12, n


def saved_activation_bytes(model: nn.Module, loss_fn: Callable[[], torch.Tensor]) -> int:
    """Bytes of the tensors ``loss_fn()`` saves for backward, parameters excluded (each storage counted once).

    This is the activation memory that training holds at the start of backward, whatever the device. Under
    activation checkpointing the recomputed blocks save nothing here; the block inputs they keep for recomputation
    (one ``(B*T, N, D)`` tensor per block) are not counted. Runs backward (freeing the graph); the caller clears the
    gradients.
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn()
    loss.backward()
    return sum(storages.values())


@dataclass
class MaxBatch:
    """Result of ``find_max_batch``."""

    max_batch: int  # largest size that ran; 0 if even 1 did not fit
    limit: int  # the search never tried more than this
    capped: bool  # True when ``limit`` fitted, so the true maximum may be larger
    tries: list[tuple[int, bool]]  # (size, fitted) in the order tried


def is_oom(err: BaseException) -> bool:
    """True for CUDA out-of-memory errors and for CPU allocations that the allocator refused."""
    if isinstance(err, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def release_memory() -> None:
    """Return cached blocks (after a failed try or a freed subject): the next one starts from the same free memory."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def find_max_batch(
    try_batch: Callable[[int], object], *, start: int = 1, limit: int = 4096, tolerance: float = 0.0
) -> MaxBatch:
    """Largest batch size in ``[1, limit]`` for which ``try_batch(size)`` runs without running out of memory.

    Sizes double from ``start`` until one fails or ``limit`` is reached (if ``start`` itself fails, the search
    continues below it), then the gap between the last fit and the first failure is bisected until it is at most
    ``max(1, tolerance * fit)`` (0: the exact size). Other errors than out-of-memory propagate. Assumes that if a
    size fits, every smaller size fits.

    Raises:
        ValueError: ``start < 1``, ``limit < start`` or a negative ``tolerance``.
    """
    if start < 1 or limit < start:
        raise ValueError(f"max-batch search needs 1 <= start <= limit, got start={start}, limit={limit}")
    if tolerance < 0:
        raise ValueError(f"max-batch tolerance must be >= 0, got {tolerance}")
    tries: list[tuple[int, bool]] = []

    def fits(size: int) -> bool:
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
        tries.append((size, not failed))
        return not failed

    good, bad = (start, None) if fits(start) else (0, start)
    while bad is None and good < limit:
        size = min(2 * good, limit)
        good, bad = (size, None) if fits(size) else (good, size)
    while bad is not None and bad - good > max(1, int(tolerance * good)):
        mid = (good + bad) // 2
        good, bad = (mid, bad) if fits(mid) else (good, mid)
    return MaxBatch(good, limit, bad is None, tries)
