"""``run_bench``: every subject measured in one process under one ``BenchConfig``, as one JSON-ready report.

Each subject is measured eagerly first for its model FLOPs (counted before activation checkpointing, so
recomputation is not counted as work) and the activations its training step saves (with checkpointing as
configured), then compiled and/or captured in CUDA graphs if asked, then timed. Sequentially, each subject is freed
before the next is built, so its peak memory is its own; interleaved, all are resident and take turns. The report
holds the resolved configuration, the machine (with its measured square-matmul rate, the reference for utilisation
figures), one entry per subject, and ratios computed from those entries (``report.compute_ratios``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib.util
import logging
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from omniclip.bench.measurements import (
    find_max_batch,
    matmul_tflops,
    measure,
    measure_interleaved,
    release_memory,
    saved_activation_bytes,
    synchronize,
)
from omniclip.bench.report import compute_ratios
from omniclip.bench.subjects import Batch, BenchConfig, Subject, build_subject, make_batch, make_step
from omniclip.model import ModelConfig
from omniclip.model.flops import count_flops, describe_model
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
    with contextlib.suppress(ImportError):
        import transformers

        info["transformers"] = transformers.__version__
    info["matmul_dtype"] = "bf16" if cfg.dtype == "bf16" or cfg.bf16_weights else "fp32"
    info["matmul_tflops"], info["matmul_size"] = matmul_tflops(device, DTYPES[info["matmul_dtype"]])
    return info


@dataclass
class _Prepared:
    """A built subject with its report entry so far, its model FLOPs per clip by mode and its saved activations."""

    subject: Subject
    out: dict[str, Any]
    flops: dict[str, float]
    saved_bytes: int | None = None


def _prepare(name: str, cfg: BenchConfig, device: torch.device, example: Batch) -> _Prepared:
    """Build ``name``; count its FLOPs and (as checkpointed) saved activations on ``example`` eagerly; compile."""
    subject = build_subject(name, cfg, device, graph_safe=cfg.cuda_graphs)
    info, params = subject.info, list(subject.model.parameters())
    out: dict[str, Any] = {
        "kind": info["kind"], "variant": info["variant"], "params_total": sum(p.numel() for p in params),
        "params_trainable": sum(p.numel() for p in subject.trainable),
        **info, "weights_bytes": sum(p.numel() * p.element_size() for p in params),
    }  # fmt: skip
    if name != "xclip":  # the encoder's split from ``omniclip model-info`` (meta, one clip)
        split = describe_model(cfg.clip_config(), cfg.frames, cfg.size, ModelConfig(variant=info["variant"]))
        out["encoder_gflops"] = {k: getattr(split, f"gflops_{k}") for k in ("backbone", "pta", "spg")}
    B, train = len(example["label"]), "train" in cfg.modes and bool(subject.trainable)
    prepared = _Prepared(subject, out, {})
    if "infer" in cfg.modes:
        prepared.flops["infer"] = count_flops(lambda: subject.infer(example)) / B
    if train:
        prepared.flops["train"] = count_flops(lambda: subject.loss(example).backward()) / B
    subject.set_checkpointing(cfg.grad_checkpointing)
    if train:
        subject.model.train()
        prepared.saved_bytes = saved_activation_bytes(subject.model, lambda: subject.loss(example))
        for p in subject.trainable:
            p.grad = None
    if cfg.compile:
        for module in subject.compile_targets:
            module.compile(backend=cfg.compile_backend, dynamic=False)
    return prepared


def _bench(
    names: list[str], cfg: BenchConfig, device: torch.device, batches: list[Batch], peak_tflops: float
) -> dict[str, dict[str, Any]]:
    """Measure ``names``: alone with its peak memory, or (``cfg.interleave``) several taking turns in every repeat."""
    assert cfg.batch
    prepared = {n: _prepare(n, cfg, device, batches[0]) for n in names}
    for mode in cfg.modes:
        steps = {n: make_step(p.subject, mode, device, graph_example=batches[0] if cfg.cuda_graphs else None)
                 for n, p in prepared.items() if mode == "infer" or p.subject.trainable}  # fmt: skip
        how: dict[str, Any] = {"batch_size": cfg.batch, "device": device, "warmup": cfg.warmup, "repeats": cfg.repeats}
        if cfg.interleave:
            timings = measure_interleaved(steps, batches, **how)
        else:
            timings = {n: measure(step, batches, **how) for n, step in steps.items()}
        for n, p in prepared.items():
            if n not in timings:
                p.out[mode] = {"skipped": "no trainable parameters"}
                continue
            result = dataclasses.asdict(timings[n])
            result["gflops_per_clip"] = p.flops[mode] / 1e9
            result["tflops_per_s"] = p.flops[mode] * timings[n].clips_per_s / 1e12
            result["matmul_fraction"] = result["tflops_per_s"] / peak_tflops if peak_tflops else None
            if mode == "train":
                result["saved_activation_bytes"] = p.saved_bytes
            p.out[mode] = result
        del steps
    for p in prepared.values():  # frozen parameters that hold a gradient buffer (0 unless something is wrong)
        p.out["frozen_params_with_grad"] = sum(
            1 for q in p.subject.model.parameters() if not q.requires_grad and q.grad is not None
        )
    return {n: p.out for n, p in prepared.items()}


def _max_batch(name: str, cfg: BenchConfig, device: torch.device) -> dict[str, Any]:
    """Largest training batch of one eager subject, without and with activation checkpointing."""
    assert cfg.batch and cfg.max_batch_limit and cfg.size and cfg.classes
    subject = build_subject(name, cfg, device)
    step = make_step(subject, "train", device)

    def try_batch(size: int) -> None:
        step(make_batch(size, cfg.frames, cfg.size, cfg.classes, device=device, seed=cfg.seed))  # type: ignore[arg-type]
        synchronize(device)  # the optimiser state exists after the first try; activations at backward are the peak

    out: dict[str, Any] = {}
    for checkpointed in (False, True):
        subject.set_checkpointing(checkpointed)
        start = min(cfg.batch, cfg.max_batch_limit)
        found = find_max_batch(try_batch, start=start, limit=cfg.max_batch_limit, tolerance=cfg.max_batch_tolerance)
        out["checkpointed" if checkpointed else "plain"] = dataclasses.asdict(found)
        subject.model.zero_grad(set_to_none=True)
        release_memory()
    return out  # the subject is freed with this frame; run_bench releases cached memory afterwards


def run_bench(config: BenchConfig, progress: Callable[[dict[str, Any]], object] | None = None) -> dict[str, Any]:
    """Measure every subject of ``config.variants`` and return the report (described in ``docs/benchmarks.md``).

    A subject that cannot run (X-CLIP without transformers, a compile error, running out of memory) gets a
    ``skipped`` or ``error`` entry and the others are still measured. ``progress(report)`` receives the report
    so far after each subject, so a run stopped early still leaves what it measured.
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    cfg = config.resolved()
    assert cfg.batch and cfg.size and cfg.classes
    device = torch.device(cfg.device)
    notes: list[str] = []
    if config.cuda_graphs and not cfg.cuda_graphs:
        notes.append("cuda_graphs skipped: CUDA graphs need a CUDA device")
        log.warning(notes[-1])
    machine = machine_info(cfg, device)
    results: dict[str, Any] = {}

    def report() -> dict[str, Any]:
        ordered = {name: results[name] for name in cfg.variants if name in results}
        config_dict = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
        return {"schema": 1, "config": config_dict, "machine": machine, "notes": notes,
                "results": ordered, "ratios": compute_ratios(ordered)}  # fmt: skip

    def done(entries: dict[str, Any]) -> None:
        results.update(entries)
        if progress is not None:
            progress(report())

    names = list(cfg.variants)
    if "xclip" in names and importlib.util.find_spec("transformers") is None:
        names.remove("xclip")
        done({"xclip": {"kind": "xclip", "skipped": "transformers is not installed (pip install transformers)"}})
    log.info("bench %s: %s %dx%dpx batch %d %s", ",".join(names), cfg.arch, cfg.frames, cfg.size, cfg.batch, cfg.dtype)
    batches = [make_batch(cfg.batch, cfg.frames, cfg.size, cfg.classes, device=device, seed=cfg.seed + i)
               for i in range(cfg.batches)]  # fmt: skip
    for group in [names] if cfg.interleave else [[n] for n in names]:
        try:
            entries = _bench(group, cfg, device, batches, machine["matmul_tflops"])
        except Exception as err:  # one failing subject must not lose the others' numbers
            log.exception("bench %s failed", ",".join(group))
            entries = {n: {"error": f"{type(err).__name__}: {err}"} for n in group}
        release_memory()
        done(entries)
    for name in names if cfg.max_batch else []:
        try:
            found = _max_batch(name, cfg, device)
        except Exception as err:
            log.exception("max-batch search of %s failed", name)
            found = {"error": f"{type(err).__name__}: {err}"}
        release_memory()
        done({name: {**results[name], "max_batch": found}})
    return report()
