"""The demo's runs as engine configs: one ``RunConfig`` per (model, protocol) under a time budget.

Every run is an ordinary ``omniclip train`` / ``omniclip eval`` config (its resolved ``config.yaml`` is written into
the run folder and reruns with ``omniclip train --config``). The two models share everything but what trains:
Both models start from the same frozen CLIP and train the same text side (learnable context tokens, CoOp-style, and
the logit scale: the tiny CLIP never read a motion word) with the same data, frames, batch, steps, learning rate and
schedule; OmniCLIP adds its Parallel Temporal Adapters and Self-Prompt Generators. So the difference between the two
rows is exactly what the temporal modules add (docs/demo.md says how the recipe was chosen).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from omniclip.config import RunConfig, config_from_dict
from omniclip.demo.dataset import HARD, DatasetSpec

Protocol = Literal["zero_shot", "few_shot", "supervised"]
TEMPLATES = ("a video of a shape {}.",)  # the class names are motions ("moving left"); the tiny CLIP saw "a video of"


@dataclass(frozen=True)
class LongVideoSpec:
    """The closing timeline (``long_video.py``): how the long video is stitched and how the timeline reads it.

    The window is one clip's duration; ``stride`` and ``min_length`` are in windows. Why these: ``long_video.py``.
    """

    segments: int = 24  # true segments, one test clip each; a multiple of the class count gives each class a share
    stride: float = 0.25  # seconds between window starts, in windows
    smooth: int = 3  # windows in the moving average (the timeline's default)
    threshold: float = 0.5  # smallest smoothed probability that labels a window (the timeline's default)
    min_length: float = 0.5  # shortest segment kept, in windows

    def __post_init__(self) -> None:
        if self.segments < 2:
            raise ValueError(f"a long video needs at least 2 segments, got {self.segments}")
        if not 0 < self.stride <= 1:
            raise ValueError(f"stride must be in (0, 1] windows, got {self.stride}")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Budget:
    """How much the demo computes: dataset size, clip length, batch and optimizer steps per run."""

    name: str
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    num_frames: int = 4  # T, frames per clip
    batch_size: int = 8  # clips per optimizer step
    shots: int = 4  # K, training videos per class in the few-shot runs
    few_shot_steps: int = 200  # optimizer steps of a few-shot run (rounded to whole epochs)
    supervised_steps: int = 384  # optimizer steps of a supervised run (rounded to whole epochs)
    # The recipe measured over seeds in docs/model.md ("Runs that agree"): the adapters at 2e-3 (at 5e-3 a PTA can
    # blow up and die early), the text context at 5e-3, a 64-wide PTA with two heads (at the default 32 wide, one head,
    # the adapters learn the order too slowly), and CLIP's own logit scale: a run whose first predictions are worse
    # than uniform may escape to uniform ones by shrinking a trained logit scale, and then sits at chance.
    lr: float = 2e-3  # peak learning rate of every run
    text_lr_scale: float = 2.5  # the text context's learning rate as a multiple of lr
    text_context: int = 8  # learnable text context tokens (both models): the tiny CLIP never saw motion words
    pta_ratio: float = 0.5  # OmniCLIP's PTA bottleneck as a share of the tower's width (model.pta_ratio)
    pta_heads: int | None = 2  # heads of the PTA's attention over frames (model.pta_heads)
    # LayerNorms on the queries and keys of the attention over frames (model.qk_norm): without them the trained
    # attention logits spread 20-100x wider than at init and a seed may stall near chance (docs/model.md, "Runs that
    # agree").
    qk_norm: bool = True
    train_logit_scale: bool = False
    # Training crops of at least 7/8 of the frame (data.crop_scales): TSN's smallest crops (2/3 of the frame, at a
    # corner) cut a shape that moves or grows towards the edge in about half of such clips, so that "moving right"
    # can look like "disappearing" (docs/model.md, "Runs that agree"; docs/demo.md for the demo's own benchmark).
    crop_scales: tuple[float, ...] = (1.0, 0.875)
    long_video: LongVideoSpec = field(default_factory=LongVideoSpec)  # the closing timeline


BUDGETS: dict[str, Budget] = {
    # The reduced mode of the tests: the default supervised runs, short few-shot runs and a shorter long video;
    # about 3 min on one core.
    "test": Budget("test", few_shot_steps=16, supervised_steps=384, long_video=LongVideoSpec(segments=16)),
    # `make demo`: at most five minutes on two CPU cores, data generation included.
    "quick": Budget("quick"),
    # Longer runs on more data for better numbers.
    "full": Budget("full", DatasetSpec(train=64, val=8, test=32), shots=8, few_shot_steps=640, supervised_steps=1536),
    # The harder temporal benchmark (``demo/dataset.py``, ``HARD``): 14 classes, distractors, noise, 8 frames a clip.
    "hard": Budget(
        "hard",
        HARD,
        num_frames=8,
        # A PTA 128 wide with four heads, 18 epochs: five seeds within 1.7 points where the 64-wide one of 21 epochs
        # spread over 5.9, at the same cost a run; with qk_norm the five seeds' mean rose from 93.8 to 97.0 %
        # (docs/model.md, "Runs that agree")
        pta_ratio=1.0,
        pta_heads=4,
        supervised_steps=756,
        long_video=LongVideoSpec(segments=28),
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
    RunSpec("few_shot/frame_average", "frame_average", "few_shot", "CLIP frame average + text context"),
    RunSpec("few_shot/omniclip", "omniclip", "few_shot", "OmniCLIP (PTA + SPG) + text context"),
    RunSpec("supervised/frame_average", "frame_average", "supervised", "CLIP frame average + text context"),
    RunSpec("supervised/omniclip", "omniclip", "supervised", "OmniCLIP (PTA + SPG) + text context"),
)


def training_videos(budget: Budget, protocol: Protocol) -> int:
    """Videos a run trains on: K per class (few-shot), the whole training list (supervised), none (zero-shot)."""
    classes = len(budget.dataset.classes)
    return {"zero_shot": 0, "few_shot": budget.shots * classes, "supervised": budget.dataset.train * classes}[protocol]


def epochs_for(budget: Budget, protocol: Protocol, steps: int) -> int:
    """Whole epochs closest to ``steps`` optimizer steps (at least one), so the LR schedule runs to its end."""
    per_epoch = max(1, training_videos(budget, protocol) // budget.batch_size)
    return max(1, round(steps / per_epoch))


def run_overrides(
    budget: Budget, run: RunSpec, *, data_root: str, clip: str, seed: int, steps: int | None = None
) -> dict[str, Any]:
    """The run's config as differences from the engine's defaults (a nested dict, as a YAML file holds)."""
    model: dict[str, Any] = {
        "variant": run.variant,
        "templates": list(TEMPLATES),
        "pta_ratio": budget.pta_ratio,  # unused by frame averaging, set alike so the two configs differ by variant only
        "pta_heads": budget.pta_heads,
        "qk_norm": budget.qk_norm,
    }
    if run.protocol != "zero_shot":
        model["text_context"] = budget.text_context
        model["train_logit_scale"] = budget.train_logit_scale
    raw: dict[str, Any] = {
        "clip": {"source": clip},
        "model": model,
        "data": {
            "dataset": "omniclip-demo",
            "root": data_root,
            "test_lists": ["test.txt"],
            "num_frames": budget.num_frames,
            "image_size": budget.dataset.size,
            "workers": 0,  # 64-px clips decode in ~2 ms: worker processes would cost more than they save
            "flip": False,  # a mirrored "moving left" is "moving right"
            "crop_scales": list(budget.crop_scales),
        },
        "eval": {"batch_size": 32},
        "protocol": {"name": run.protocol, "shots": budget.shots, "seeds": [seed]},
    }
    # fp32 on every machine: bf16 is native on some CPUs and 10x slower on others, and the demo's numbers must compare
    raw["train"] = {"seed": seed, "amp": "off", "frozen_dtype": "fp32", "compile": False}
    if run.protocol != "zero_shot":
        default = budget.few_shot_steps if run.protocol == "few_shot" else budget.supervised_steps
        epochs = epochs_for(budget, run.protocol, steps if steps is not None else default)
        raw["train"] |= {
            "epochs": epochs,
            "batch_size": budget.batch_size,
            "lr": budget.lr,
            "text_lr_scale": budget.text_lr_scale,
            "warmup_epochs": round(0.1 * epochs, 3),  # a tenth of the run
            "log_every": 1,
            "keep_checkpoints": 1,
        }
    return raw


def run_config(budget: Budget, run: RunSpec, **kwargs: Any) -> RunConfig:
    """``run_overrides`` validated into a ``RunConfig``."""
    return config_from_dict(run_overrides(budget, run, **kwargs), source=f"demo run {run.name}")
