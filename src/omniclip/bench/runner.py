"""``run_bench``: every subject measured in one process under one configuration, as one JSON-ready report.

Subjects are OmniCLIP's variants (``frame_average`` is bare CLIP averaging frame embeddings) and X-CLIP. The
report holds the resolved configuration, the machine (with its measured square-matmul rate, the reference for
utilisation figures), one entry per subject, and ratios computed from those entries (``report.compute_ratios``).
"""

from __future__ import annotations

import datetime
import logging
import os
import platform
from collections.abc import Callable
from typing import Any

import torch

from omniclip.bench.config import BenchConfig
from omniclip.bench.phases import bench_interleaved, bench_subject, make_batches, max_batch_search
from omniclip.bench.report import compute_ratios
from omniclip.bench.search import release_memory
from omniclip.bench.timing import matmul_tflops
from omniclip.bench.xclip import xclip_available
from omniclip.precision import DTYPES

log = logging.getLogger(__name__)


def machine_info(cfg: BenchConfig, device: torch.device) -> dict[str, Any]:
    """What ran the bench: device, library versions, threads, load, and the device's achieved matmul rate."""
    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_1min"] = os.getloadavg()[0]  # other work on a shared CPU skews CPU timings
    if xclip_available():
        import transformers

        info["transformers"] = transformers.__version__
    info["matmul_dtype"] = "bf16" if cfg.dtype == "bf16" or cfg.bf16_weights else "fp32"
    info["matmul_tflops"] = matmul_tflops(device, DTYPES[info["matmul_dtype"]])
    return info


def _run_one(name: str, cfg: BenchConfig, device: torch.device, batches: list, peak: float) -> dict[str, Any]:
    try:
        return bench_subject(name, cfg, device, batches, peak)
    except Exception as err:  # one failing subject must not lose the others' numbers
        log.exception("bench %s failed", name)
        release_memory()
        return {"error": f"{type(err).__name__}: {err}"}


Progress = Callable[[dict[str, Any]], object]  # its return value is ignored


def _timings(
    cfg: BenchConfig, device: torch.device, names: list[str], peak: float, done: Callable[[dict[str, Any]], None]
) -> None:
    """Measure ``names`` and hand each finished entry (or all, when interleaved) to ``done``."""
    batches = make_batches(cfg, device)
    if not cfg.interleave:
        for name in names:
            done({name: _run_one(name, cfg, device, batches, peak)})
        return
    try:
        done(bench_interleaved(names, cfg, device, batches, peak))
    except Exception as err:
        log.exception("interleaved bench failed")
        done({name: {"error": f"{type(err).__name__}: {err}"} for name in names})


def run_bench(config: BenchConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Measure every subject of ``config.variants`` and return the report (described in ``docs/benchmarks.md``).

    A subject that cannot run (X-CLIP without transformers, a compile error, running out of memory) gets a
    ``skipped`` or ``error`` entry and the others are still measured. ``progress(report)`` receives the report
    so far after each subject, so a run stopped early still leaves what it measured.
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    cfg = config.resolved()
    device = torch.device(cfg.device)
    notes: list[str] = []
    if config.cuda_graphs and not cfg.cuda_graphs:
        notes.append("cuda_graphs skipped: CUDA graphs need a CUDA device")
        log.warning(notes[-1])
    machine = machine_info(cfg, device)
    results: dict[str, Any] = {}

    def report() -> dict[str, Any]:
        ordered = {name: results[name] for name in cfg.variants if name in results}
        return {"schema": 1, "config": cfg.to_dict(), "machine": machine, "notes": notes,
                "results": ordered, "ratios": compute_ratios(ordered)}  # fmt: skip

    def done(entries: dict[str, Any]) -> None:
        results.update(entries)
        if progress is not None:
            progress(report())

    names = [n for n in cfg.variants if n != "xclip" or xclip_available()]
    if "xclip" in cfg.variants and "xclip" not in names:
        done({"xclip": {"kind": "xclip", "skipped": "transformers is not installed (pip install transformers)"}})
    log.info("bench %s: %s %dx%dpx batch %d %s", ",".join(names), cfg.arch, cfg.frames, cfg.size, cfg.batch, cfg.dtype)
    _timings(cfg, device, names, machine["matmul_tflops"], done)
    release_memory()
    for name in names if cfg.max_batch else []:
        try:
            found = max_batch_search(name, cfg, device)
        except Exception as err:
            log.exception("max-batch search of %s failed", name)
            found = {"error": f"{type(err).__name__}: {err}"}
        release_memory()
        done({name: {**results[name], "max_batch": found}})
    return report()
