"""The recipe of ``omniclip train --data``: a run config from a folder of class folders, its size and the hardware.

``omniclip train --data my_videos/`` needs no config file. ``FolderRun`` scans the folder
(``omniclip.data.folders``), draws the split, and builds the run config from the recipe below, then a ``--config``
file if given, then the lists written into ``<run>/data/``, then ``--clip`` / ``--shots``, then ``key=value``
overrides (each layer wins over the ones before). The recipe (docs/own-data.md):

=====================  ==============================================  =============================================
key                    small backbone (vision width <= 256,            ViT-B/16 and larger
                       e.g. ``omniclip-tiny``)
=====================  ==============================================  =============================================
protocol               supervised; few_shot with ``--shots K``          the same
data.num_frames        4                                                8
data.image_size        the backbone's own input size (64)               the backbone's own input size (224)
data.flip              off when a class name says left, right or (counter)clockwise (a mirrored video shows the
                       other class); else on
data.workers           CPU: 0 with 2 cores or fewer, else min(4, cores / 2); CUDA: min(8, cores)
model.text_context     8 (a tiny CLIP has read few words)               0 (the model default)
train.batch_size       8                                                CUDA: 16 with >= 40 GiB, else 8; CPU: 2
                       ... at most a quarter of the training videos (at least 4 steps an epoch), at least 1
train.epochs           ceil(400 / steps per epoch), within [10, 50]: about 400 optimizer steps on small data,
                       10 passes on large data (50 = ViFi-CLIP's few-shot epochs)
train.lr               5e-3 (the demo's)                                2e-4 (the model default)
train.warmup_epochs    a tenth of the epochs
eval.batch_size        twice train.batch_size
=====================  ==============================================  =============================================

The training videos counted are K x classes for few-shot runs. The held-out list evaluated at the end is
``test.txt`` when the split has one, else ``val.txt``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from omniclip.clip.presets import PRESETS, CLIPConfig, canonical_name
from omniclip.clip.weights import CONFIG_METADATA, resolve_source
from omniclip.config import RunConfig, config_from_dict, flatten, parse_override, read_yaml, save_config
from omniclip.data.folders import FolderDataset, draw_splits, scan_class_folders, write_split_files
from omniclip.data.loader import usable_cores
from omniclip.data.records import VideoRecord, first_few

log = logging.getLogger(__name__)

SMALL_WIDTH = 256  # vision widths up to this are "small" backbones (omniclip-tiny: 128; ViT-B/16: 768)
TARGET_STEPS = 400  # optimizer steps the epoch rule aims at on small data
EPOCH_RANGE = (10, 50)  # epochs stay within these
MIRRORED_WORDS = frozenset({"left", "right", "clockwise", "counterclockwise", "anticlockwise"})
DATA_DIR = "data"  # the run's lists: <run>/data/{train,val,test}.txt, classes.csv, folders.csv, recipe.yaml
RECIPE_FILE = "recipe.yaml"


@dataclass(frozen=True)
class Hardware:
    """What the run will train on."""

    device: str  # "cuda" or "cpu"
    cpus: int  # CPU cores this process may use
    gpu_memory_gib: float = 0.0  # memory of the first GPU (0 on the CPU)


def detect_hardware(device: str = "auto") -> Hardware:
    """The hardware ``train.device`` selects ("auto": CUDA when available)."""
    cpus = usable_cores()
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if not cuda:
        return Hardware("cpu", cpus)
    index = int(device.partition(":")[2] or 0)
    memory = torch.cuda.get_device_properties(index).total_memory / 2**30 if torch.cuda.is_available() else 0.0
    return Hardware("cuda", cpus, memory)


@dataclass(frozen=True)
class Backbone:
    """What the recipe needs to know of a CLIP: its input size and how wide its image tower is."""

    image_size: int  # the resolution its positional embedding was trained at
    width: int  # D of the image tower
    known: bool = True  # False: not readable without loading the weights; ViT-B/16's numbers assumed

    @property
    def small(self) -> bool:
        return self.width <= SMALL_WIDTH


def backbone_of(source: str) -> Backbone:
    """Read a CLIP's input size and width from its name or its file header, without loading the weights."""
    name = canonical_name(source)
    if name in PRESETS and not Path(source).exists():
        return Backbone(PRESETS[name].vision.image_size, PRESETS[name].vision.width)
    try:
        path = resolve_source(source)
    except FileNotFoundError:
        path = None
    if path is not None and path.is_file() and path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if CONFIG_METADATA in meta:
            vision = CLIPConfig.from_dict(json.loads(meta[CONFIG_METADATA])).vision
            return Backbone(vision.image_size, vision.width)
    base = PRESETS["ViT-B-16"].vision
    return Backbone(base.image_size, base.width, known=False)


def recipe(
    *,
    train_videos: int,
    class_names: Sequence[str],
    backbone: Backbone,
    hardware: Hardware,
    given: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The recipe's config differences (a nested dict, as a YAML file holds) for this data and hardware.

    ``given`` holds the ``train.batch_size`` / ``train.epochs`` the user set, if any: what derives from them (epochs,
    warmup, eval batch, log interval) follows them.
    """
    given = given or {}
    small = backbone.small
    if small:
        cap = 8
    elif hardware.device == "cuda":
        cap = 16 if hardware.gpu_memory_gib >= 40 else 8
    else:
        cap = 2
    batch = int(given.get("train.batch_size") or max(1, min(cap, train_videos // 4)))
    steps_per_epoch = max(1, train_videos // batch)
    epochs = int(
        given.get("train.epochs") or min(EPOCH_RANGE[1], max(EPOCH_RANGE[0], math.ceil(TARGET_STEPS / steps_per_epoch)))
    )
    if hardware.device == "cuda":
        workers = min(8, hardware.cpus)
    else:
        workers = 0 if hardware.cpus <= 2 else min(4, hardware.cpus // 2)
    raw: dict[str, Any] = {
        "data": {
            "num_frames": 4 if small else 8,
            "image_size": backbone.image_size,
            # no horizontal flip when a flip turns one class into another (names saying left, right, clockwise)
            "flip": not any(MIRRORED_WORDS & set(re.findall(r"[a-z]+", n.lower())) for n in class_names),
            "workers": workers,
        },
        "train": {
            "epochs": epochs,
            "batch_size": batch,
            "lr": 5e-3 if small else 2e-4,
            "warmup_epochs": round(epochs / 10, 3),
            "log_every": min(10, steps_per_epoch),
        },
        "eval": {"batch_size": 2 * batch},
    }
    if small:
        raw["model"] = {"text_context": 8}
    return raw


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``top``'s keys written over it, section by section."""
    out = dict(base)
    for key, value in top.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@dataclass
class FolderRun:
    """A training run on a folder of class folders: the scan, the drawn split and the layers of the config.

    Build it with ``folder_run``. ``config(data_dir)`` gives the run config with its lists in ``data_dir``; ``write``
    puts them there (call it once the run folder is locked). A resumed run (``resume=True``) reads the config it
    wrote (``<run>/data/recipe.yaml``) and its lists instead of drawing them again.
    """

    root: Path  # the user's folder (absolute)
    flags: dict[str, Any]  # --clip / --shots as config differences
    overrides: list[str]  # key=value, applied last
    base: dict[str, Any] | None = None  # recipe, then the --config file, then the flags (None: not scanned)
    dataset: FolderDataset | None = None  # the scan (None: not scanned)
    splits: dict[str, list[VideoRecord]] = field(default_factory=dict)  # the drawn (or on-disk) split
    resume: bool = False  # continue a run: its written config and lists are used
    data_dir: Path | None = None  # a resumed run's data folder, when known before the run folder is locked

    def config(self, data_dir: Path | None = None) -> RunConfig:
        """The run config; with ``data_dir``, its data keys point at the lists there.

        Raises:
            FileNotFoundError: a resumed run whose folder holds no ``data/recipe.yaml`` (not started with --data).
        """
        data_dir = data_dir.absolute() if data_dir is not None else None  # list paths must not depend on the cwd
        saved_dir = data_dir or self.data_dir
        if self.resume and saved_dir is not None:
            saved = saved_dir / RECIPE_FILE
            if not saved.is_file():
                run = saved_dir.parent
                raise FileNotFoundError(
                    f"--resume --data: {saved} not found, so {run} was not started with --data; resume it with "
                    f"--config {run / 'config.yaml'} --resume --output {run}"
                )
            raw = merge(merge(read_yaml(saved), {"data": {"root": str(self.root)}}), self.flags)
            return config_from_dict(raw, self.overrides, source=str(saved))
        assert self.base is not None, "a run that is not resumed is scanned first"
        raw = self.base
        if data_dir is not None:
            lists = {
                "root": str(self.root),
                "train_list": str(data_dir / "train.txt"),
                "test_lists": [str(data_dir / ("test.txt" if "test" in self.splits else "val.txt"))],
                "class_names": str(data_dir / "classes.csv"),
            }
            raw = merge(raw, {"data": lists})
        return config_from_dict(raw, self.overrides, source=f"omniclip train --data {self.root}")

    def write(self, data_dir: Path) -> dict[str, Path]:
        """Write the lists, ``classes.csv``, ``folders.csv`` and the resolved config (``recipe.yaml``) into
        ``data_dir``; a resumed run only checks that they are there.

        Raises:
            FileNotFoundError: a resumed run whose data folder lacks them.
        """
        if self.resume:
            if missing := [n for n in (RECIPE_FILE, "train.txt", "classes.csv") if not (data_dir / n).is_file()]:
                raise FileNotFoundError(
                    f"--resume --data: {data_dir} lacks {', '.join(missing)}; start a new run (--overwrite)"
                )
            return {}
        assert self.dataset is not None, "a run that is not resumed is scanned first"
        written = write_split_files(self.dataset, self.splits, data_dir)
        written["recipe"] = save_config(self.config(data_dir), data_dir / RECIPE_FILE)
        return written


def folder_run(
    root: str | Path,
    *,
    clip: str | None = None,
    shots: int | None = None,
    val: float = 0.2,
    test: float = 0.0,
    seed: int = 0,
    config_file: str | Path | None = None,
    overrides: Sequence[str] = (),
    resume: bool = False,
    data_dir: Path | None = None,
) -> FolderRun:
    """Scan ``root``, draw the split (``val``/``test`` fractions, ``seed``) and lay the config's layers.

    A resumed run whose ``data_dir`` is known and holds the written config is not scanned again.

    Raises:
        FileNotFoundError: ``root``, ``config_file`` or the CLIP weights do not exist.
        ValueError: what ``scan_class_folders`` / ``draw_splits`` refuse; a split with nothing held out; fewer
            training videos in a class than the shots; a bad override.
    """
    root = Path(root).absolute()
    flags: dict[str, Any] = {}
    if clip is not None:
        flags["clip"] = {"source": clip}
    if shots is not None:
        flags["protocol"] = {"name": "few_shot", "shots": shots}
    if resume and data_dir is not None:
        run = FolderRun(root, flags, list(overrides), resume=True, data_dir=data_dir)
        run.config()  # a run not started with --data, or a bad override, fails here
        return run
    file_raw = read_yaml(config_file) if config_file is not None else {}
    user = config_from_dict(merge(file_raw, flags), list(overrides), source="--config, --clip, --shots and overrides")
    ds = scan_class_folders(root)
    for line in ds.notes():
        log.warning("%s: %s", root, line)
    splits = draw_splits(ds, val=val, test=test, seed=seed)
    if not splits.get("val") and not splits.get("test"):
        raise ValueError(f"{root}: nothing is held out to evaluate on; give --val or --test a fraction above 0")
    names = [c.name for c in ds.classes]
    p = user.protocol
    if p.name in ("few_shot", "base_to_novel"):
        _check_shots(ds, splits["train"], p.shots)
        train_videos = p.shots * len(names)
    else:
        train_videos = len(splits["train"])
    resolve_source(user.clip.source)  # missing weights fail here, before a run folder or a list is written
    hardware = detect_hardware(user.train.device)
    backbone = backbone_of(user.clip.source)
    if not backbone.known:
        log.info("%s: input size and width not readable from the file; the recipe assumes ViT-B/16's", user.clip.source)
    set_keys = {".".join(parse_override(item)[0]) for item in overrides} | set(flatten(file_raw))
    given = {f"train.{k}": getattr(user.train, k) for k in ("batch_size", "epochs") if f"train.{k}" in set_keys}
    raw = merge(
        recipe(train_videos=train_videos, class_names=names, backbone=backbone, hardware=hardware, given=given),
        {"data": {"dataset": root.name or "custom"}},
    )
    log.info(
        "%s: %d classes, %s videos; recipe on %s: %s",
        root,
        len(names),
        " / ".join(f"{len(v)} {k}" for k, v in splits.items()),
        hardware.device,
        " ".join(f"{k}={v}" for k, v in flatten(raw).items()),
    )
    base = merge(merge(raw, file_raw), flags)
    return FolderRun(root, flags, list(overrides), base, ds, splits, resume)


def _check_shots(ds: FolderDataset, train: list[VideoRecord], shots: int) -> None:
    counts = Counter(r.label for r in train)
    if short := [f"{c.folder!r} ({counts[c.label]})" for c in ds.classes if counts[c.label] < shots]:
        raise ValueError(
            f"--shots {shots}: classes with fewer training videos than that: {first_few(short)}; "
            "lower --shots or add videos"
        )
