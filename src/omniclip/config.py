"""Run configuration: frozen dataclasses with defaults, YAML files of differences, ``key=value`` overrides.

A YAML file holds only what differs from the defaults below (dinov2 ``configs/train/*.yaml``); command-line
overrides such as ``train.lr=1e-4`` come last. Unknown keys and wrong types fail at start with one line that
lists the valid keys. String values expand ``${VAR}`` and ``${VAR:-default}`` from the environment, so dataset
locations come from one place (``data.root: ${OMNICLIP_DATA:-data}/hmdb51``) and no file is edited per machine.
The resolved config is written to the run directory and into every checkpoint.

Every numeric key carries its valid range in its annotation (``PosInt`` is an int >= 1, ``Beta`` a float in
[0, 1)) and every choice-valued key its choices (a ``Literal``, or a ``Pattern``); each section checks its fields
in ``__post_init__`` with ``check_fields``, so a value outside fails at load, with one line naming the key, the
value and what is valid, before any output folder exists. A new field gets its range the same way.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml

from omniclip.data.records import ListFormat
from omniclip.data.sampling import Sampling
from omniclip.data.transforms import MULTI_SCALES
from omniclip.files import write_text
from omniclip.model.config import ModelConfig

ProtocolName = Literal["supervised", "few_shot", "zero_shot", "base_to_novel"]
Decoder = Literal["pyav", "pyav-cuda", "opencv", "decord"]  # omniclip.data.decode.DECODERS


@dataclass(frozen=True)
class Range:
    """Valid values of a numeric key: ``lo <= x <= hi`` (``<`` where open; ``None`` = unbounded); always finite."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, x: float) -> bool:
        if not math.isfinite(x):
            return False
        above = self.lo is None or (x > self.lo if self.lo_open else x >= self.lo)
        below = self.hi is None or (x < self.hi if self.hi_open else x <= self.hi)
        return above and below

    def __str__(self) -> str:
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {self.lo}" if self.lo is not None else "finite"
        if self.lo is None:
            return f"{'<' if self.hi_open else '<='} {self.hi}"
        return f"in {'(' if self.lo_open else '['}{self.lo}, {self.hi}{')' if self.hi_open else ']'}"


@dataclass(frozen=True)
class Pattern:
    """Valid values of a string key: a full match of ``regex``; ``choices`` says them in words for the message."""

    regex: str
    choices: str

    def __contains__(self, x: str) -> bool:
        return re.fullmatch(self.regex, x) is not None


# The ranges used most often; others are written in place as Annotated[type, Range(...)].
PosInt = Annotated[int, Range(1)]
NonNegInt = Annotated[int, Range(0)]  # 0 usually means "off" or "the default", as the field's comment says
PosFloat = Annotated[float, Range(0, lo_open=True)]
Share = Annotated[float, Range(0, 1, lo_open=True)]
NonNegFloat = Annotated[float, Range(0)]
Seed = Annotated[int, Range(0, 2**32 - 1)]  # numpy's legacy seeding takes 32 bits
Beta = Annotated[float, Range(0, 1, hi_open=True)]
Device = Annotated[str, Pattern(r"auto|cpu|cuda(:[0-9]+)?", "auto, cpu, cuda or cuda:N")]
FrozenDtype = Annotated[str, Pattern(r"auto|fp32|bf16", "auto, fp32 or bf16")]  # omniclip.precision.resolve_precision


@dataclass(frozen=True)
class BackboneConfig:
    source: str = "ViT-B/16"  # CLIP weights: a file, a Hugging Face dir, or a name resolved in $OMNICLIP_CACHE
    activation: Literal["", "quick_gelu", "gelu"] = ""  # force the MLP activation ("" = what the weights imply)

    def __post_init__(self) -> None:
        check_fields(self, "clip")


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "custom"  # dataset name; names the run directory runs/<protocol>/<dataset>/...
    root: str = "${OMNICLIP_DATA:-data}"  # video paths in list files are relative to this directory
    train_list: str = "train.txt"  # training annotations `rel/path.mp4 label` (relative to root, or absolute)
    test_lists: tuple[str, ...] = ("test.txt",)  # evaluation annotations; several lists are splits (mean ± std)
    class_names: str = "classes.csv"  # `id,name` CSV or one name per line (relative to root, or absolute)
    list_format: ListFormat = "auto"  # annotation format given to read_annotations ("auto" detects it)
    num_frames: PosInt = 8  # T, frames sampled per clip
    image_size: PosInt = 224  # S, crop side in pixels
    short_side: NonNegInt = 0  # resize the short side to this before cropping (0 = the dataset's default)
    decoder: Decoder = "pyav"  # video decoder backend
    workers: NonNegInt = 4  # DataLoader worker processes per rank (0 = decode in the main process)
    flip: bool = True  # random horizontal flips during training
    crop_scales: tuple[Share, ...] = MULTI_SCALES  # training crop sides as shares of the short side (TSN's)
    sampling: Sampling = "segment"  # a clip's frames: one per equal segment (TSN, X-CLIP) or "dense" (Kinetics style)
    frame_interval: PosInt = 2  # dense sampling: T frames this many apart (training and evaluation)
    rand_augment_ops: NonNegInt = 0  # RandAugment colour operations per training clip (0 = off; "m9-n2" = 2)
    rand_augment_magnitude: Annotated[int, Range(0, 10)] = 9  # their strength ("m9" = 9)
    mixup_alpha: NonNegFloat = 0.0  # mix training clips and targets with Beta(a, a) weights (0 = off; X-CLIP 0.8)
    label_smoothing: Annotated[float, Range(0, 1, hi_open=True)] = 0.0  # smooth the training targets (X-CLIP 0.1)

    def __post_init__(self) -> None:
        check_fields(self, "data")
        if not self.test_lists:
            raise ValueError("data.test_lists must name at least one list, got []")
        if not self.crop_scales:
            raise ValueError("data.crop_scales must hold at least one scale, got [] (the whole frame: [1.0])")
        if 0 < self.short_side < self.image_size:
            raise ValueError(
                f"data.short_side must be 0 (the default) or >= data.image_size={self.image_size}, "
                f"got {self.short_side}"
            )

    def path(self, name: str) -> Path:
        """A list or class-name file: ``name`` itself when absolute, else relative to ``root``."""
        p = Path(name)
        return p if p.is_absolute() else Path(self.root) / p


@dataclass(frozen=True)
class TrainConfig:
    epochs: PosInt = 30  # passes over the training list; the LR schedule spans all of them
    max_steps: NonNegInt = 0  # stop after this many optimizer steps (0 = run all epochs); the schedule is unchanged
    batch_size: PosInt = 8  # clips per process per forward pass
    global_batch_size: NonNegInt = 0  # clips per optimizer step over all processes (0 = batch_size x processes)
    lr: PosFloat = 2e-4  # peak learning rate after warmup
    text_lr_scale: PosFloat = 1.0  # learning rate of the text context (model.text_context), as a multiple of train.lr
    logit_lr_scale: PosFloat = 1.0  # learning rate of the logit scale, as a multiple of train.lr
    backbone_lr_scale: PosFloat = 1.0  # of trained CLIP weights (model.full_finetune, model.train_image_layernorms)
    min_lr: NonNegFloat = 0.0  # learning rate at the end of the cosine decay (at most train.lr)
    warmup_epochs: NonNegFloat = 1.0  # linear warmup length in epochs
    weight_decay: NonNegFloat = 0.05  # AdamW decay on parameters with ndim >= 2, minus model.no_weight_decay()
    betas: tuple[Beta, Beta] = (0.9, 0.98)  # AdamW (beta1, beta2)
    eps: PosFloat = 1e-8  # AdamW epsilon
    grad_clip: NonNegFloat = 1.0  # clip the global gradient norm to this (0 = no clipping)
    amp: Literal["auto", "bf16", "off"] = "auto"  # bf16 autocast: "auto" = on GPUs with bf16, off on the CPU
    frozen_dtype: FrozenDtype = "auto"  # frozen CLIP weights: "auto" = bf16 on AMX CPUs (towers >= 128 wide), else fp32
    compile: bool | str = "auto"  # torch.compile the image encoder: true, false or "auto" (on GPUs, off on the CPU)
    device: Device = "auto"  # "auto" (GPU when available), "cpu", "cuda" or "cuda:N"
    seed: Seed = 0  # seeds model init, data order and augmentation
    log_every: PosInt = 10  # optimizer steps between metrics lines
    checkpoint_every: NonNegInt = 0  # also checkpoint every N optimizer steps (0 = only at the end of each epoch)
    keep_checkpoints: PosInt = 2  # checkpoints kept on disk (the newest ones)
    tensorboard: bool = False  # also write TensorBoard scalars when tensorboard is installed

    def __post_init__(self) -> None:
        check_fields(self, "train")
        if not (isinstance(self.compile, bool) or self.compile == "auto"):
            raise ValueError(f"train.compile must be true, false or auto, got {self.compile!r}")
        if self.min_lr > self.lr:
            raise ValueError(f"train.min_lr must be <= train.lr={self.lr}, got {self.min_lr}")
        if self.global_batch_size % self.batch_size:
            raise ValueError(
                f"train.global_batch_size must be 0 or a multiple of train.batch_size={self.batch_size}, "
                f"got {self.global_batch_size}"
            )


@dataclass(frozen=True)
class EvalConfig:
    clips: PosInt = 1  # temporal views per video
    crops: Literal[1, 3] = 1  # spatial views per clip (1 = centre crop, 3 = left/centre/right)
    batch_size: PosInt = 8  # videos per process per forward pass
    workers: Annotated[int, Range(-1)] = -1  # DataLoader workers for evaluation (-1 = data.workers)

    def __post_init__(self) -> None:
        check_fields(self, "eval")


@dataclass(frozen=True)
class ProtocolConfig:
    name: ProtocolName = "supervised"  # how runs are trained and evaluated (docs/protocols.md)
    shots: PosInt = 16  # K training videos per class (few_shot, base_to_novel)
    seeds: tuple[Seed, ...] = (0,)  # one training run per seed (base_to_novel uses 3), splits drawn with it
    shot_lists: tuple[str, ...] = ()  # few_shot / base_to_novel: given K-shot training lists, one per seed (no draw)
    class_subset: NonNegInt = 0  # zero_shot: evaluate on random subsets of this many classes (0 = all classes)
    num_subsets: PosInt = 3  # zero_shot: how many class subsets to draw when class_subset > 0
    subset_class_files: tuple[str, ...] = ()  # zero_shot: class files naming each subset (instead of random draws)
    base_classes: NonNegInt = 0  # base_to_novel: number of base classes (0 = the first half, rounded up)
    base_class_file: str = ""  # base_to_novel: class file naming the base classes (instead of the first ids)

    def __post_init__(self) -> None:
        check_fields(self, "protocol")
        if not self.seeds:
            raise ValueError("protocol.seeds must hold at least one seed, got []")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"protocol.seeds has duplicates: {list(self.seeds)}")


@dataclass(frozen=True)
class RunConfig:
    clip: BackboneConfig = field(default_factory=BackboneConfig)  # which CLIP to start from
    model: ModelConfig = field(default_factory=ModelConfig)  # OmniCLIP modules and what trains
    data: DataConfig = field(default_factory=DataConfig)  # where videos and lists live, how clips are sampled
    train: TrainConfig = field(default_factory=TrainConfig)  # optimisation
    eval: EvalConfig = field(default_factory=EvalConfig)  # evaluation views
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)  # supervised, few-shot, zero-shot, base-to-novel


def check_fields(section: Any, name: str) -> None:
    """Check every field of the dataclass ``section`` against its annotation's ``Range``, ``Pattern`` or ``Literal``.

    Raises:
        ValueError: one line naming the key (``name.field``), the value and what is valid.
    """
    for key, hint in _hints_with_ranges(type(section)).items():
        _check_value(getattr(section, key), hint, f"{name}.{key}")


_HINTS: dict[type, dict[str, Any]] = {}  # per section class: its annotations, ranges included


def _hints_with_ranges(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls, include_extras=True)
    return _HINTS[cls]


def _check_value(value: Any, hint: Any, key: str) -> None:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        for rule in args[1:]:
            if isinstance(rule, Range):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value not in rule:
                    raise ValueError(f"{key} must be {rule}, got {value!r}")
            elif isinstance(rule, Pattern) and (not isinstance(value, str) or value not in rule):
                raise ValueError(f"{key} must be {rule.choices}, got {value!r}")
        _check_value(value, args[0], key)
    elif origin is Literal:
        if value not in args or isinstance(value, bool):
            raise ValueError(f"{key} must be one of {_choices(args)}, got {value!r}")
    elif origin is tuple and isinstance(value, tuple):
        hints = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(hints) != len(value):
            raise ValueError(f"{key} must hold {len(hints)} values, got {list(value)}")
        for i, (v, h) in enumerate(zip(value, hints, strict=True)):
            _check_value(v, h, f"{key}[{i}]")


def _choices(args: tuple[Any, ...]) -> str:
    return "|".join(str(a) if a != "" else '""' for a in args)


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(text: str, key: str = "") -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}`` with environment values.

    Raises:
        ValueError: a variable without a default is not set.
    """

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if value := os.environ.get(name):
            return value
        if default is None:
            raise ValueError(
                f"config key {key}: environment variable {name} is not set (or write ${{{name}:-default}})"
            )
        return default

    return _ENV.sub(sub, text)


def _type_name(tp: Any) -> str:
    if dataclasses.is_dataclass(tp):
        return "a section (a mapping of keys)"
    if typing.get_origin(tp) is Literal:
        return "one of " + _choices(typing.get_args(tp))
    return str(tp).replace("typing.", "") if not isinstance(tp, type) else tp.__name__


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert the lossless cases (int -> float, list -> tuple)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    bad = ValueError(f"config key {key} expects {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        value = {} if value is None else value  # an empty YAML section
        if not isinstance(value, dict):
            raise bad
        return _build(tp, value, key)
    if origin is Literal:
        if isinstance(value, bool) and not any(isinstance(a, bool) for a in args):
            value = {False: "off", True: "on"}[value]  # YAML 1.1 reads off/no/false as False, on/yes/true as True
        if value not in args:
            raise bad
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ValueError:
                continue
        raise bad
    if origin is tuple:
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(items))
        if len(items) != len(args):
            raise bad
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(items, args, strict=True)))
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool):
            raise bad
        try:  # YAML reads "1e-4" (no dot) as a string
            return float(value)
        except (TypeError, ValueError):
            raise bad from None
    if tp is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise bad
        return expand_env(str(value), key)
    raise TypeError(f"config key {key}: unsupported annotation {tp!r}")


def _build(cls: type, raw: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a dict holding only differences from its defaults."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    if unknown := [k for k in raw if k not in names]:
        where = prefix or "the top level"
        raise ValueError(f"unknown config key {_join(prefix, unknown[0])}; valid keys in {where}: {', '.join(names)}")
    kwargs = {k: _coerce(v, hints[k], _join(prefix, k)) for k, v in raw.items()}
    defaults = cls()
    for name in names:  # defaults may hold ${VAR} too
        if name not in kwargs and hints[name] is str:
            kwargs[name] = expand_env(getattr(defaults, name), _join(prefix, name))
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:  # a section's own __post_init__ validation
        msg = str(err)
        raise ValueError(msg if f"{prefix}." in msg else f"config section {prefix or 'top level'}: {msg}") from None


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``"train.lr=1e-4"`` into ``(["train", "lr"], 1e-4)``; the value is read as YAML.

    Raises:
        ValueError: not ``key=value``, or the value is not valid YAML (quote strings that start with ``@``, ``[`` ...).
    """
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {item!r} is not of the form section.key=value (e.g. train.lr=1e-4)")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(
            f"override {item!r}: the value is not valid YAML ({problem}); write lists as [a, b] and quote strings "
            f"for YAML: '{key.strip()}=\"{text}\"'"
        ) from None
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of the nested dict ``raw`` with ``key=value`` overrides applied in order."""
    out = copy.deepcopy(raw)
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"override {item!r}: {part} is a value, not a section")
            node = child
        node[path[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a config YAML file (a mapping, possibly empty).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a YAML mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise ValueError(f"config file {path}{line} is not valid YAML: {getattr(err, 'problem', err)}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"config file {path} must hold a mapping of sections, got {type(raw).__name__}")
    return raw


def config_from_dict(raw: dict[str, Any], overrides: list[str] | None = None, source: str = "") -> RunConfig:
    """Validate a nested dict (differences from the defaults) plus overrides into a ``RunConfig``."""
    merged = apply_overrides(raw, list(overrides or []))
    try:
        return _build(RunConfig, merged)
    except ValueError as err:
        raise ValueError(f"{err} ({source})" if source else str(err)) from None


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults, then the YAML file at ``path`` (if any), then ``key=value`` overrides.

    Raises:
        FileNotFoundError: the config file does not exist.
        ValueError: unknown key, wrong type, or an unset environment variable; the message names the key.
    """
    raw = read_yaml(path) if path is not None else {}
    return config_from_dict(raw, overrides, source=str(path) if path is not None else "")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The resolved config as plain YAML/JSON types (tuples become lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(cfg))


def flatten(raw: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict as ``{dotted key: value}`` (``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}``), in order."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{prefix}{key}"
        out.update(flatten(value, name + ".") if isinstance(value, dict) else {name: value})
    return out


def save_config(cfg: RunConfig, path: str | Path) -> Path:
    """Write the resolved config as YAML, atomically."""
    return write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def valid_keys(cls: type = RunConfig, prefix: str = "") -> list[str]:
    """Every dotted key a config accepts (``train.lr``, ``model.pta_layers``, ...)."""
    hints = typing.get_type_hints(cls)
    keys: list[str] = []
    for f in dataclasses.fields(cls):
        key = _join(prefix, f.name)
        keys.extend(valid_keys(hints[f.name], key) if dataclasses.is_dataclass(hints[f.name]) else [key])
    return keys


def replace_sections(cfg: RunConfig, **sections: dict[str, Any]) -> RunConfig:
    """A copy of ``cfg`` with fields of its sections replaced: ``replace_sections(cfg, data={"train_list": p})``."""
    return dataclasses.replace(cfg, **{k: dataclasses.replace(getattr(cfg, k), **v) for k, v in sections.items()})
