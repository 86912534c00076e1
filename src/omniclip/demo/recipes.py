"""The demo's runs as engine configs: one ``RunConfig`` per (model, protocol) under a time budget.

Every run is an ordinary ``omniclip train`` / ``omniclip eval`` config (its resolved ``config.yaml`` is written into
the run folder and reruns with ``omniclip train --config``). The two models share everything but what trains:
OmniCLIP trains its adapters (PTA, SPG) and the logit scale on a frozen CLIP; the frame-average baseline trains every
CLIP weight (ViFi-CLIP's full fine-tune, the strongest frame-average model) with the same data, frames, batch,
steps and schedule, at the learning rate that suits a full fine-tune (docs/demo.md says how both were chosen).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from omniclip.config import RunConfig, config_from_dict
from omniclip.demo.benchmark import BenchmarkSpec

Protocol = Literal["zero_shot", "few_shot", "supervised"]
TEMPLATES = ("a video of a shape {}.",)  # the class names are motions ("moving left"); the tiny CLIP saw "a video of"


@dataclass(frozen=True)
class Budget:
    """How much the demo computes: benchmark size, clip length, batch and optimizer steps per run."""

    name: str
    benchmark: BenchmarkSpec = field(default_factory=BenchmarkSpec)
    num_frames: int = 8  # T, frames per clip
    batch_size: int = 16  # clips per optimizer step
    shots: int = 4  # K, training videos per class in the few-shot runs
    few_shot_steps: int = 40  # optimizer steps of a few-shot run (rounded to whole epochs)
    supervised_steps: int = 64  # optimizer steps of a supervised run (rounded to whole epochs)
    lr: dict[str, float] = field(default_factory=lambda: {"omniclip": 2e-3, "frame_average": 2e-4})


BUDGETS: dict[str, Budget] = {
    # The reduced mode of the tests: a minute or two on one core.
    "test": Budget(
        "test",
        BenchmarkSpec(train=8, val=2, test=8),
        num_frames=8,
        batch_size=16,
        shots=2,
        few_shot_steps=16,
        supervised_steps=16,
    ),
    # `make demo`: at most five minutes on two CPU cores, data generation included.
    "quick": Budget("quick"),
    # Longer runs for better numbers.
    "full": Budget(
        "full",
        BenchmarkSpec(train=64, val=8, test=32),
        num_frames=8,
        batch_size=16,
        shots=8,
        few_shot_steps=120,
        supervised_steps=256,
    ),
}


@dataclass(frozen=True)
class RunSpec:
    """One row of the results table."""

    name: str  # run folder, e.g. "few_shot/omniclip"
    variant: Literal["omniclip", "frame_average"]
    protocol: Protocol
    label: str  # what the table calls the model


RUNS: tuple[RunSpec, ...] = (
    RunSpec("zero_shot", "frame_average", "zero_shot", "CLIP frame average = OmniCLIP at init"),
    RunSpec("few_shot/frame_average", "frame_average", "few_shot", "CLIP frame average, full fine-tune"),
    RunSpec("few_shot/omniclip", "omniclip", "few_shot", "OmniCLIP (PTA + SPG), frozen CLIP"),
    RunSpec("supervised/frame_average", "frame_average", "supervised", "CLIP frame average, full fine-tune"),
    RunSpec("supervised/omniclip", "omniclip", "supervised", "OmniCLIP (PTA + SPG), frozen CLIP"),
)


def training_videos(budget: Budget, protocol: Protocol) -> int:
    """Videos a run trains on: K per class (few-shot), the whole training list (supervised), none (zero-shot)."""
    classes = len(budget.benchmark.classes)
    return {"zero_shot": 0, "few_shot": budget.shots * classes, "supervised": budget.benchmark.train * classes}[
        protocol
    ]


def epochs_for(budget: Budget, protocol: Protocol, steps: int) -> int:
    """Whole epochs closest to ``steps`` optimizer steps (at least one), so the LR schedule runs to its end."""
    per_epoch = max(1, training_videos(budget, protocol) // budget.batch_size)
    return max(1, round(steps / per_epoch))


def run_overrides(
    budget: Budget, run: RunSpec, *, data_root: str, clip: str, seed: int, steps: int | None = None
) -> dict[str, Any]:
    """The run's config as differences from the engine's defaults (a nested dict, as a YAML file holds)."""
    model: dict[str, Any] = {"variant": run.variant, "templates": list(TEMPLATES)}
    if run.variant == "frame_average" and run.protocol != "zero_shot":
        model["full_finetune"] = True
    raw: dict[str, Any] = {
        "clip": {"source": clip},
        "model": model,
        "data": {
            "dataset": "omniclip-demo",
            "root": data_root,
            "test_lists": ["test.txt"],
            "num_frames": budget.num_frames,
            "image_size": budget.benchmark.size,
            "workers": 0,  # 64-px clips decode in ~2 ms: worker processes would cost more than they save
            "flip": False,  # a mirrored "moving left" is "moving right"
        },
        "eval": {"batch_size": 32},
        "protocol": {"name": run.protocol, "shots": budget.shots, "seeds": [seed]},
    }
    raw["train"] = {"seed": seed}
    if run.protocol != "zero_shot":
        default = budget.few_shot_steps if run.protocol == "few_shot" else budget.supervised_steps
        epochs = epochs_for(budget, run.protocol, steps if steps is not None else default)
        raw["train"] |= {
            "epochs": epochs,
            "batch_size": budget.batch_size,
            "lr": budget.lr[run.variant],
            "warmup_epochs": round(0.1 * epochs, 3),  # a tenth of the run
            "log_every": 1,
            "keep_checkpoints": 1,
        }
    return raw


def run_config(budget: Budget, run: RunSpec, **kwargs: Any) -> RunConfig:
    """``run_overrides`` validated into a ``RunConfig``."""
    return config_from_dict(run_overrides(budget, run, **kwargs), source=f"demo run {run.name}")


def planned_steps(cfg: RunConfig, budget: Budget, protocol: Protocol) -> int:
    """Optimizer steps a training run will take."""
    if protocol == "zero_shot":
        return 0
    return cfg.train.epochs * max(1, math.floor(training_videos(budget, protocol) / budget.batch_size))
