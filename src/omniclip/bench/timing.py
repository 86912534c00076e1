"""Timing of one repeated step: warm-up, synchronised wall clock and process CPU time, medians over repeats.

Follows the usual GPU benchmarking rules (warm up, synchronise before reading the clock, report medians) and
rotates among several pre-made input batches so no step sees a tensor the previous one left in cache. Peak memory
over the same steps comes from ``memory.MemoryProbe``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from omniclip.bench.memory import MemoryProbe


@dataclass
class Timing:
    """One measured phase (inference or training) of one model at one batch size."""

    batch: int  # clips per step
    step_s: float  # median seconds per step over the repeats
    clips_per_s: float  # batch / step_s
    step_s_repeats: list[float] = field(default_factory=list)  # mean seconds per step of each repeat
    cpu_step_s: float | None = None  # median process CPU seconds per step: robust to a shared CPU when single-threaded
    peak_memory_bytes: int | None = None  # see memory_kind; None when it cannot be measured
    memory_kind: str = "n/a"  # cuda_max_allocated | cpu_rss_peak_delta | n/a

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels so that the wall clock measures them."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    step: Callable[[Any], Any],
    batches: Sequence[Any],
    *,
    batch_size: int,
    device: torch.device,
    warmup: int = 2,
    repeats: int = 5,
) -> Timing:
    """Time ``step(batch)``: ``warmup`` untimed steps, then ``repeats`` timed passes over all ``batches`` in turn.

    Each repeat runs ``len(batches)`` steps between two synchronisations; the reported step time is the median over
    repeats of the mean step time within a repeat. Peak memory covers warm-up and the timed steps.
    """
    if not batches:
        raise ValueError("measure needs at least one pre-made input batch")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    probe = MemoryProbe(device)
    probe.start()
    for i in range(warmup):
        step(batches[i % len(batches)])
    synchronize(device)
    per_step: list[float] = []
    cpu: list[float] = []
    for _ in range(repeats):
        wall, proc = _timed_pass(step, batches, device)
        per_step.append(wall)
        cpu.append(proc)
    peak = probe.stop()
    median = statistics.median(per_step)
    return Timing(batch_size, median, batch_size / median, per_step, statistics.median(cpu), peak, probe.kind)


def _timed_pass(step: Callable[[Any], Any], batches: Sequence[Any], device: torch.device) -> tuple[float, float]:
    """Wall-clock and process CPU seconds per step of one pass over ``batches``."""
    t0, c0 = time.perf_counter(), time.process_time()
    for batch in batches:
        step(batch)
    synchronize(device)
    return (time.perf_counter() - t0) / len(batches), (time.process_time() - c0) / len(batches)


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int | None = None, repeats: int = 5) -> float:
    """Achieved TFLOP/s of a square ``n x n`` matmul: the machine's reference rate for utilisation figures."""
    n = n or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    timing = measure(lambda _: a @ b, [None], batch_size=1, device=device, warmup=2, repeats=repeats)
    return 2 * n**3 / timing.step_s / 1e12


def measure_interleaved(
    steps: dict[str, Callable[[Any], Any]],
    batches: Sequence[Any],
    *,
    batch_size: int,
    device: torch.device,
    warmup: int = 2,
    repeats: int = 5,
) -> dict[str, Timing]:
    """Like ``measure`` for several steps at once, taking turns within each repeat.

    On a machine shared with other work, load drifts over a run; taking turns spreads the drift over every step
    instead of charging it to whichever ran last. All models are resident at once, so no peak memory is reported.
    """
    if not batches or repeats < 1 or warmup < 0:
        raise ValueError("measure_interleaved needs input batches, repeats >= 1 and warmup >= 0")
    for step in steps.values():
        for i in range(warmup):
            step(batches[i % len(batches)])
    synchronize(device)
    per_step: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            wall, proc = _timed_pass(step, batches, device)
            per_step[name].append(wall)
            cpu[name].append(proc)
    out = {}
    for name, times in per_step.items():
        median = statistics.median(times)
        cpu_median = statistics.median(cpu[name])
        out[name] = Timing(batch_size, median, batch_size / median, times, cpu_median, None, "n/a (interleaved)")
    return out
