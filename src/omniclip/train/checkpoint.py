"""Checkpoints: trainable weights and flattened optimizer state as safetensors, plus a small JSON state.

Layout of one checkpoint, written into a temporary directory and moved into place with ``os.replace``::

    <run>/checkpoints/step_00000120/model.safetensors      trainable parameters (+ metadata: what to rebuild)
                                    optimizer.safetensors  AdamW moments, keyed "<param name>.<slot>"
                                    state.json             step, epoch, RNG states, resolved config
    <run>/checkpoints/last                                 name of the newest complete checkpoint, updated last

A frozen CLIP is not copied: ``load_trained_model`` rebuilds it from ``clip.source`` (or a CLIP passed in)
and loads the trained parameters on top, asserting that exactly the trainable keys arrive.
"""

from __future__ import annotations

import ast
import base64
import json
import logging
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from omniclip.clip.model import CLIP, build_clip
from omniclip.clip.presets import CLIPConfig
from omniclip.clip.weights import load_clip
from omniclip.config import RunConfig, config_from_dict
from omniclip.files import save_safetensors, write_text
from omniclip.model import OmniCLIP, build_model

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
LAST = "last"
META_KEY = "omniclip"  # safetensors metadata key holding the JSON meta


@dataclass(frozen=True)
class TrainedMeta:
    """What a trained checkpoint needs besides its weights to classify videos."""

    class_names: list[str]  # classes the model was trained on, in label order
    num_frames: int  # T the model was trained with
    image_size: int  # crop side S
    templates: tuple[str, ...]  # text templates for class embeddings
    config: dict[str, Any]  # the resolved RunConfig as a dict
    clip_source: str  # where the CLIP weights came from (clip.source)
    clip_arch: dict[str, Any] = field(default_factory=dict)  # CLIPConfig.to_dict() of the backbone
    step: int = 0  # optimizer steps done
    epoch: int = 0  # epochs completed

    def to_json(self) -> str:
        return json.dumps({**self.__dict__, "templates": list(self.templates)})

    @classmethod
    def from_json(cls, text: str) -> TrainedMeta:
        d = json.loads(text)
        return cls(**{**d, "templates": tuple(d.get("templates", ()))})


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters by name, detached, contiguous, on the CPU."""
    named = getattr(model, "named_trainable_parameters", None)
    items = named() if named is not None else ((n, p) for n, p in model.named_parameters() if p.requires_grad)
    return {n: p.detach().to("cpu").contiguous() for n, p in items}


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Flatten AdamW state into ``{"<param name>.<slot>": tensor}`` and JSON-able group hyper-parameters."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    groups = []
    for group in sd["param_groups"]:
        names = group["names"]
        for idx, name in zip(group["params"], names, strict=True):
            for slot, value in sd["state"].get(idx, {}).items():
                tensors[f"{name}.{slot}"] = torch.as_tensor(value).detach().to("cpu").contiguous()
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items() if k != "params"})
    return tensors, groups


def load_optimizer_tensors(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]]
) -> None:
    """Inverse of ``optimizer_tensors``: restore state by parameter name.

    Raises:
        ValueError: the saved parameter names differ from the optimizer's.
    """
    sd = optimizer.state_dict()
    if [g["names"] for g in groups] != [g["names"] for g in sd["param_groups"]]:
        raise ValueError("checkpoint optimizer state was saved for different trainable parameters; start a new run")
    state: dict[int, dict[str, torch.Tensor]] = {}
    for group in sd["param_groups"]:
        for idx, name in zip(group["params"], group["names"], strict=True):
            slots = {k[len(name) + 1 :]: v for k, v in tensors.items() if k.startswith(name + ".")}
            slots = {k: v for k, v in slots.items() if "." not in k}  # "a.b.exp_avg" must not match param "a"
            if slots:
                state[idx] = slots
    new_groups = [{**saved, "params": g["params"]} for saved, g in zip(groups, sd["param_groups"], strict=True)]
    for g in new_groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": new_groups})


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as JSON-able values."""
    state: dict[str, Any] = {
        "python": _b64(repr(random.getstate()).encode()),
        "numpy": _b64(json.dumps(_np_state()).encode()),
        "torch": _b64(torch.get_rng_state().numpy().tobytes()),
    }
    if torch.cuda.is_available():
        state["cuda"] = [_b64(s.numpy().tobytes()) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` saved (missing entries are left alone)."""
    if "python" in state:
        version, internal, gauss = _literal(base64.b64decode(state["python"]).decode())
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        kind, keys, pos, has_gauss, cached = json.loads(base64.b64decode(state["numpy"]))
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "torch" in state:
        torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(state["torch"])), dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        states = [torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8) for s in state["cuda"]]
        torch.cuda.set_rng_state_all(states[: torch.cuda.device_count()])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _np_state() -> list[Any]:
    state = np.random.get_state()
    assert isinstance(state, tuple)  # the global legacy generator is always MT19937
    kind, keys, pos, has_gauss, cached = state
    return [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _literal(text: str) -> Any:
    return ast.literal_eval(text)


def save_checkpoint(
    run_dir: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    meta: TrainedMeta,
    state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write a checkpoint atomically under ``run_dir/checkpoints`` and point ``last`` at it.

    Args:
        run_dir: the run directory.
        model: the unwrapped model; its trainable parameters are saved.
        optimizer: saved flattened when given.
        meta: how to rebuild the model (also stored in ``model.safetensors`` metadata).
        state: JSON-able training state (step, epoch, position in the epoch, RNG states...).
        keep: checkpoints kept, newest first (the one ``last`` names is never removed).

    Returns:
        The checkpoint directory.
    """
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{meta.step:08d}"
    tmp = root / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_safetensors(tmp / MODEL_FILE, trainable_state(model), {META_KEY: meta.to_json()})
    groups: list[dict[str, Any]] = []
    if optimizer is not None:
        tensors, groups = optimizer_tensors(optimizer)
        save_safetensors(tmp / OPTIM_FILE, tensors)
    (tmp / STATE_FILE).write_text(json.dumps({**state, "optimizer_groups": groups, "meta": json.loads(meta.to_json())}))
    final = checkpoint_dir(run_dir, meta.step)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_text(root / LAST, name + "\n")
    _prune(root, keep, name)
    return final


def _prune(root: Path, keep: int, current: str) -> None:
    done = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in done[: max(0, len(done) - max(1, keep))]:
        if old.name != current:
            shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(path: str | Path) -> Path:
    """Resolve a run directory, its ``checkpoints`` folder, a checkpoint folder or a ``model.safetensors`` file.

    Returns:
        The checkpoint directory, or the ``.safetensors`` file when only a file was given.

    Raises:
        FileNotFoundError: nothing loadable at ``path``.
    """
    path = Path(path)
    if path.is_file() and path.suffix == ".safetensors":
        return path
    for root in (path / "checkpoints", path):
        pointer = root / LAST
        if pointer.is_file():
            target = root / pointer.read_text().strip()
            if (target / MODEL_FILE).is_file():
                return target
    if (path / MODEL_FILE).is_file():
        return path
    raise FileNotFoundError(f"no checkpoint at {path}: expected a run directory, a checkpoint folder or a .safetensors")


def read_meta(path: str | Path) -> TrainedMeta:
    """The ``TrainedMeta`` stored with a checkpoint."""
    ckpt = find_checkpoint(path)
    file = ckpt if ckpt.is_file() else ckpt / MODEL_FILE
    with safe_open(str(file), "pt") as f:
        meta = (f.metadata() or {}).get(META_KEY)
    if meta is None:
        raise ValueError(
            f"{file} is not an omniclip checkpoint (no '{META_KEY}' metadata); use load_clip for CLIP files"
        )
    return TrainedMeta.from_json(meta)


def load_training_state(
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, Any]:
    """Load weights (and optimizer state) into a built model to continue training; returns ``state.json``."""
    ckpt = find_checkpoint(path)
    if ckpt.is_file():
        raise ValueError(f"{ckpt} is a weights file; resuming needs a checkpoint folder with {STATE_FILE}")
    load_trainable(model, load_file(str(ckpt / MODEL_FILE)), ckpt / MODEL_FILE)
    state = json.loads((ckpt / STATE_FILE).read_text())
    if optimizer is not None and (ckpt / OPTIM_FILE).is_file():
        load_optimizer_tensors(optimizer, load_file(str(ckpt / OPTIM_FILE)), state["optimizer_groups"])
    return state


def load_trainable(model: nn.Module, tensors: dict[str, torch.Tensor], source: str | Path = "checkpoint") -> None:
    """Copy saved trainable parameters into ``model``; every trainable parameter must arrive, nothing else.

    Raises:
        ValueError: keys or shapes differ (the checkpoint was made with another model config).
    """
    expected = trainable_state(model)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{source} does not match the model: missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}; "
            "was it saved with another model config?"
        )
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in tensors.items():
            if params[name].shape != value.shape:
                raise ValueError(
                    f"{source}: {name} has shape {tuple(value.shape)}, model has {tuple(params[name].shape)}"
                )
            params[name].copy_(value.to(params[name].dtype))
    clear = getattr(model, "clear_class_cache", None)
    if callable(clear):
        clear()  # text weights may have changed


def load_trained_model(
    path: str | Path, *, device: str | torch.device = "cpu", clip: CLIP | None = None
) -> tuple[OmniCLIP, TrainedMeta]:
    """Rebuild a trained OmniCLIP from a checkpoint for inference.

    Args:
        path: a run directory, a checkpoint folder, or its ``model.safetensors``.
        device: where to put the model.
        clip: the CLIP the run started from; loaded from the checkpoint's ``clip_source`` when omitted
            (a fully fine-tuned checkpoint only needs the architecture).

    Returns:
        ``(model, meta)`` with the model in eval mode.
    """
    meta = read_meta(path)
    ckpt = find_checkpoint(path)
    cfg = config_from_dict(meta.config)
    if clip is None:
        if cfg.model.full_finetune and meta.clip_arch:
            clip = build_clip(CLIPConfig.from_dict(meta.clip_arch))
        else:
            clip = load_clip(meta.clip_source, activation=cfg.clip.activation or None)
    model = build_run_model(cfg, clip)
    load_trainable(model, load_file(str(ckpt if ckpt.is_file() else ckpt / MODEL_FILE)), ckpt)
    return model.to(device).eval(), meta


def build_run_model(cfg: RunConfig, clip: CLIP) -> OmniCLIP:
    """``omniclip.model.build_model`` with a run config's model section and frame count."""
    return build_model(clip, cfg.data.num_frames, config=cfg.model)


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    """Where ``save_checkpoint`` puts the checkpoint of optimizer step ``step``."""
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}"
