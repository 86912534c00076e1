"""The bench's phases for one subject: build, count FLOPs, apply switches, time inference and training, search batch.

A subject is measured eagerly first for its model FLOPs (counted before activation checkpointing, so recomputation
is not counted as work) and the activations its training step saves (with checkpointing as configured), then
compiled and/or captured in CUDA graphs if asked, then timed. Sequentially, each subject is freed before the next
is built, so its peak memory is its own; interleaved, all are resident and take turns
(``timing.measure_interleaved``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from omniclip.bench.config import BenchConfig
from omniclip.bench.flops import count_flops
from omniclip.bench.memory import saved_activation_bytes
from omniclip.bench.search import find_max_batch, release_memory
from omniclip.bench.steps import TrainStep, graph_replay, graphed_train_step
from omniclip.bench.subjects import Batch, Subject, build_omniclip_subject, make_batch
from omniclip.bench.timing import Timing, measure, measure_interleaved, synchronize
from omniclip.bench.xclip import build_xclip_subject
from omniclip.model import VARIANTS, ModelConfig
from omniclip.model.flops import describe_model

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """A built subject with its report entry so far and its model FLOPs per clip by mode."""

    subject: Subject
    out: dict[str, Any]
    flops: dict[str, float] = field(default_factory=dict)
    saved_bytes: int | None = None  # activations a training step saves for backward (eager, as checkpointed)


def build_subject(name: str, cfg: BenchConfig, device: torch.device, *, graph_safe: bool = False) -> Subject:
    """Build one subject at ``cfg``'s sizes (``cfg`` must be resolved)."""
    assert cfg.size and cfg.classes and cfg.dtype, "build_subject needs a resolved BenchConfig"
    torch.manual_seed(cfg.seed)
    if name == "xclip":
        return build_xclip_subject(
            cfg.clip_config(), cfg.frames, cfg.size, device=device, dtype=cfg.dtype, num_classes=cfg.classes,
            graph_safe=graph_safe,
        )  # fmt: skip
    vificlip = name == "vificlip"  # frame averaging with every weight trained
    if name not in VARIANTS and not vificlip:
        raise ValueError(f"unknown bench subject {name!r}; expected one of {', '.join(VARIANTS)}, vificlip or xclip")
    subject = build_omniclip_subject(
        "frame_average" if vificlip else name, cfg.clip_config(), cfg.frames, device=device, dtype=cfg.dtype,
        num_classes=cfg.classes, bf16_weights=cfg.bf16_weights, full_finetune=cfg.full_finetune or vificlip,
        graph_safe=graph_safe,
    )  # fmt: skip
    if vificlip:
        subject.name = subject.info["kind"] = "vificlip"
    return subject


def make_batches(cfg: BenchConfig, device: torch.device) -> list[Batch]:
    """``cfg.batches`` different input batches, made once and rotated through every timed pass."""
    assert cfg.batch and cfg.size and cfg.classes
    return [
        make_batch(cfg.batch, cfg.frames, cfg.size, cfg.classes, device=device, seed=cfg.seed + i)
        for i in range(cfg.batches)
    ]


def _flops_per_clip(subject: Subject, example: Batch, modes: tuple[str, ...]) -> dict[str, float]:
    B = example["video"].shape[0]
    out: dict[str, float] = {}
    if "infer" in modes:
        out["infer"] = count_flops(lambda: subject.infer(example)) / B
    if "train" in modes and subject.trainable:
        out["train"] = count_flops(lambda: subject.loss(example).backward()) / B
        for p in subject.trainable:
            p.grad = None
    return out


def prepare_subject(name: str, cfg: BenchConfig, device: torch.device, example: Batch) -> Prepared:
    """Build ``name``; count its FLOPs and (as checkpointed) saved activations on ``example`` eagerly; compile."""
    subject = build_subject(name, cfg, device, graph_safe=cfg.cuda_graphs)
    out: dict[str, Any] = dict(subject.info)
    out["weights_bytes"] = sum(p.numel() * p.element_size() for p in subject.model.parameters())
    if name in VARIANTS or name == "vificlip":  # the encoder's split from ``omniclip model-info`` (meta, one clip)
        variant = "frame_average" if name == "vificlip" else name
        info = describe_model(cfg.clip_config(), cfg.frames, cfg.size, ModelConfig(variant=variant))  # type: ignore[arg-type]
        out["encoder_gflops"] = {k: getattr(info, f"gflops_{k}") for k in ("backbone", "pta", "spg")}
    prepared = Prepared(subject, out, _flops_per_clip(subject, example, cfg.modes))
    subject.set_checkpointing(cfg.grad_checkpointing)
    if "train" in cfg.modes and subject.trainable:
        subject.model.train()
        prepared.saved_bytes = saved_activation_bytes(subject.model, lambda: subject.loss(example))
        for p in subject.trainable:
            p.grad = None
    if cfg.compile:
        for module in subject.compile_targets:
            module.compile(backend=cfg.compile_backend, dynamic=False)
    return prepared


def timed_step(mode: str, subject: Subject, cfg: BenchConfig, device: torch.device, example: Batch) -> Any:
    """The callable that ``measure`` times: inference or a training step, eager or replayed from a CUDA graph."""
    subject.model.train(mode == "train")
    if mode == "infer":
        return graph_replay(subject.infer, example) if cfg.cuda_graphs else subject.infer
    train = TrainStep(subject, device, capturable=cfg.cuda_graphs)
    return graphed_train_step(train, example) if cfg.cuda_graphs else train


def record(prepared: Prepared, mode: str, timing: Timing, peak_tflops: float | None) -> None:
    """Store ``timing`` with its GFLOPs per clip, achieved TFLOP/s and share of the device's matmul rate."""
    result = timing.to_dict()
    flops = prepared.flops[mode]
    result["gflops_per_clip"] = flops / 1e9
    result["tflops_per_s"] = flops * timing.clips_per_s / 1e12
    result["matmul_fraction"] = result["tflops_per_s"] / peak_tflops if peak_tflops else None
    if mode == "train":
        result["saved_activation_bytes"] = prepared.saved_bytes
    prepared.out[mode] = result


def finish(prepared: Prepared) -> dict[str, Any]:
    """The entry's last field: frozen parameters that hold a gradient buffer (0 unless something is wrong)."""
    prepared.out["frozen_params_with_grad"] = sum(
        1 for p in prepared.subject.model.parameters() if not p.requires_grad and p.grad is not None
    )
    return prepared.out


def bench_subject(
    name: str, cfg: BenchConfig, device: torch.device, batches: list[Batch], peak_tflops: float | None
) -> dict[str, Any]:
    """Measure one subject alone: FLOPs, then inference and training timings with their peak memory."""
    assert cfg.batch
    prepared = prepare_subject(name, cfg, device, batches[0])
    for mode in cfg.modes:
        if mode == "train" and not prepared.subject.trainable:
            prepared.out[mode] = {"skipped": "no trainable parameters"}
            continue
        step = timed_step(mode, prepared.subject, cfg, device, batches[0])
        timing = measure(step, batches, batch_size=cfg.batch, device=device, warmup=cfg.warmup, repeats=cfg.repeats)
        record(prepared, mode, timing, peak_tflops)
        del step
    out = finish(prepared)
    del prepared
    release_memory()
    return out


def bench_interleaved(
    names: list[str], cfg: BenchConfig, device: torch.device, batches: list[Batch], peak_tflops: float | None
) -> dict[str, dict[str, Any]]:
    """Measure several subjects together, taking turns in every repeat (no peak memory)."""
    assert cfg.batch
    prepared = {n: prepare_subject(n, cfg, device, batches[0]) for n in names}
    for mode in cfg.modes:
        steps = {
            n: timed_step(mode, p.subject, cfg, device, batches[0])
            for n, p in prepared.items()
            if mode == "infer" or p.subject.trainable
        }
        timings = measure_interleaved(
            steps, batches, batch_size=cfg.batch, device=device, warmup=cfg.warmup, repeats=cfg.repeats
        )
        for n, p in prepared.items():
            if n in timings:
                record(p, mode, timings[n], peak_tflops)
            else:
                p.out[mode] = {"skipped": "no trainable parameters"}
        del steps
    return {n: finish(p) for n, p in prepared.items()}


def max_batch_search(name: str, cfg: BenchConfig, device: torch.device) -> dict[str, Any]:
    """Largest training batch of one eager subject, without and with activation checkpointing."""
    subject = build_subject(name, cfg, device)
    train = TrainStep(subject, device)
    subject.model.train()
    assert cfg.batch and cfg.max_batch_limit and cfg.size and cfg.classes

    def try_batch(size: int) -> None:
        batch = make_batch(size, cfg.frames, cfg.size, cfg.classes, device=device, seed=cfg.seed)  # type: ignore[arg-type]
        train(batch)  # the optimiser state exists after the first try; activations at backward are the peak
        synchronize(device)

    out: dict[str, Any] = {}
    for checkpointed in (False, True):
        subject.set_checkpointing(checkpointed)
        start = min(cfg.batch, cfg.max_batch_limit)
        tol = cfg.max_batch_tolerance
        found = find_max_batch(try_batch, start=start, limit=cfg.max_batch_limit, tolerance=tol)
        if found.max_batch == 0 and start > 1:  # even the bench batch did not fit: search below it
            found = find_max_batch(try_batch, start=1, limit=start - 1, tolerance=tol)
        out["checkpointed" if checkpointed else "plain"] = found.to_dict()
        train.opt.zero_grad(set_to_none=True)
        release_memory()
    return out  # the subject is freed with this frame; run_bench releases cached memory afterwards
