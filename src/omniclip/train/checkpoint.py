"""Checkpoints: trainable weights and flattened optimizer state as safetensors, plus a small JSON state.

Layout of one checkpoint, written into a temporary directory and moved into place with ``os.replace``::

    <run>/checkpoints/step_00000120/model.safetensors      trainable parameters (+ metadata: what to rebuild)
                                    optimizer.safetensors  AdamW moments, keyed "<param name>.<slot>"
                                    state.json             step, epoch, RNG states, resolved config
    <run>/checkpoints/last                                 name of the newest complete checkpoint, updated last

A frozen CLIP is not copied: ``load_trained_model`` rebuilds it from ``clip.source`` (or a CLIP passed in)
and loads the trained parameters on top, asserting that exactly the trainable keys arrive. The name alone does not
identify a backbone (an OpenAI and a LAION ViT-B/16 share it), so the metadata also holds the backbone's fingerprint
(architecture and a SHA-256 of its weights) and loading refuses another backbone unless told otherwise.

Nothing read from a run folder is trusted blindly: ``last`` must name a complete ``step_NNNNNNNN`` folder beside it
(else the newest complete one is used, with a warning), and unreadable files raise one line naming the file.
"""

from __future__ import annotations

import ast
import base64
import json
import logging
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from omniclip.clip.model import CLIP, build_clip
from omniclip.clip.presets import CLIPConfig
from omniclip.clip.weights import describe, fingerprint, load_clip
from omniclip.config import RunConfig, config_from_dict
from omniclip.files import save_safetensors, write_text
from omniclip.model import OmniCLIP, build_model

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
LAST = "last"
META_KEY = "omniclip"  # safetensors metadata key holding the JSON meta
STEP_NAME = re.compile(r"step_\d{8}")  # the only names a checkpoint folder (and ``last``) may have


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
    clip_fingerprint: str = ""  # backbone_fingerprint() of the CLIP the run started from ("" in old checkpoints)

    def to_json(self) -> str:
        return json.dumps({**self.__dict__, "templates": list(self.templates)})

    @classmethod
    def from_json(cls, text: str) -> TrainedMeta:
        d = json.loads(text)
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**{**known, "templates": tuple(d.get("templates", ()))})


def backbone_fingerprint(clip: CLIP) -> str:
    """``sha256:<hex>`` over a CLIP's architecture and weights, before OmniCLIP branches are attached to it."""
    return fingerprint(clip.cfg.to_dict(), clip.state_dict())


def check_backbone(
    meta: TrainedMeta, clip: CLIP, where: str | Path, *, source: str = "", allow_other_backbone: bool = False
) -> str:
    """Refuse to put a checkpoint's trained parameters on a CLIP other than the one it was trained from.

    Returns:
        The CLIP's fingerprint.

    Raises:
        ValueError: the fingerprints differ (both are named) and ``allow_other_backbone`` is False.
    """
    fingerprint = backbone_fingerprint(clip)
    if not meta.clip_fingerprint:
        log.warning(
            "%s has no backbone fingerprint (an older checkpoint); cannot check that %s is its CLIP",
            where,
            source or meta.clip_source,
        )
    elif meta.clip_fingerprint != fingerprint:
        trained = describe(CLIPConfig.from_dict(meta.clip_arch)) if meta.clip_arch else "?"
        message = (
            f"{where} was trained on another CLIP backbone: checkpoint {trained} {meta.clip_fingerprint}, "
            f"{source or meta.clip_source} is {describe(clip.cfg)} {fingerprint}"
        )
        if not allow_other_backbone:
            raise ValueError(f"{message}; pass allow_other_backbone (--allow-other-backbone) to load it anyway")
        log.warning("%s (loading anyway: allow_other_backbone)", message)
    return fingerprint


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
        for idx, name in zip(group["params"], group["names"], strict=True):
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
    np_state = np.random.get_state()
    assert isinstance(np_state, tuple)  # the global legacy generator is always MT19937
    kind, keys, pos, has_gauss, cached = np_state
    numpy = [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]
    state: dict[str, Any] = {
        "python": base64.b64encode(repr(random.getstate()).encode()).decode("ascii"),
        "numpy": base64.b64encode(json.dumps(numpy).encode()).decode("ascii"),
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode("ascii"),
    }
    if torch.cuda.is_available():
        state["cuda"] = [base64.b64encode(s.numpy().tobytes()).decode("ascii") for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` saved (missing entries are left alone)."""
    if "python" in state:
        version, internal, gauss = ast.literal_eval(base64.b64decode(state["python"]).decode())
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        kind, keys, pos, has_gauss, cached = json.loads(base64.b64decode(state["numpy"]))
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "torch" in state:
        torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(state["torch"])), dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        states = [torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8) for s in state["cuda"]]
        torch.cuda.set_rng_state_all(states[: torch.cuda.device_count()])


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

    A step is saved once: when its folder already holds a complete checkpoint, that one is kept and ``last`` points
    at it (replacing it would delete the folder ``last`` names before the new one is in place).

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
    final = checkpoint_dir(run_dir, meta.step)
    root, name = final.parent, final.name
    root.mkdir(parents=True, exist_ok=True)
    if is_complete(final):
        log.info("checkpoint %s was already saved; kept", final)
    else:
        tmp = root / f".tmp-{name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_safetensors(tmp / MODEL_FILE, trainable_state(model), {META_KEY: meta.to_json()})
        groups: list[dict[str, Any]] = []
        if optimizer is not None:
            tensors, groups = optimizer_tensors(optimizer)
            save_safetensors(tmp / OPTIM_FILE, tensors)
        saved = {**state, "optimizer_groups": groups, "meta": json.loads(meta.to_json())}
        write_text(tmp / STATE_FILE, json.dumps(saved))
        if final.is_symlink() or final.is_file():
            final.unlink()
        elif final.exists():  # an incomplete folder, never named by ``last``
            shutil.rmtree(final)
        os.replace(tmp, final)
    write_text(root / LAST, name + "\n")
    done = _step_dirs(root)
    for old in done[: max(0, len(done) - max(1, keep))]:
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _step_dirs(root: Path) -> list[Path]:
    """Folders named ``step_NNNNNNNN`` directly in ``root`` (not links), oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if STEP_NAME.fullmatch(p.name) and p.is_dir() and not p.is_symlink())


def is_complete(folder: Path) -> bool:
    """A ``step_NNNNNNNN`` folder (not a link) holding ``model.safetensors`` and ``state.json``."""
    return (
        STEP_NAME.fullmatch(folder.name) is not None
        and folder.is_dir()
        and not folder.is_symlink()
        and (folder / MODEL_FILE).is_file()
        and (folder / STATE_FILE).is_file()
    )


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """The complete checkpoints of a run, oldest first."""
    return [p for p in _step_dirs(Path(run_dir) / "checkpoints") if is_complete(p)]


def remove_partial(run_dir: str | Path) -> list[Path]:
    """Delete what killed writers left in ``run_dir/checkpoints``: ``.tmp-step_*`` folders and ``last`` temporaries.

    Call it only while holding the run folder's lock: then no other writer is alive.
    """
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    removed = []
    for p in sorted(root.iterdir()):
        if p.name.startswith(".tmp-step_") and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.name.startswith(f".{LAST}.") and p.name.endswith(".tmp"):
            p.unlink()
        else:
            continue
        removed.append(p)
    if removed:
        log.info("removed %d partial checkpoint files left by a killed run in %s", len(removed), root)
    return removed


def remove_after(run_dir: str | Path, step: int) -> list[Path]:
    """Delete checkpoints past optimizer step ``step`` (a run resumed from ``step`` writes them anew)."""
    later = [p for p in _step_dirs(Path(run_dir) / "checkpoints") if int(p.name[5:]) > step]
    for p in later:
        shutil.rmtree(p)
    if later:
        log.warning("removed %d checkpoints past the resumed step %d: %s", len(later), step, [p.name for p in later])
    return later


def find_checkpoint(path: str | Path) -> Path:
    """Resolve a run directory, its ``checkpoints`` folder, a checkpoint folder or a ``model.safetensors`` file.

    In a run, ``checkpoints/last`` is followed only when it names a complete ``step_NNNNNNNN`` folder beside it;
    otherwise the newest complete checkpoint there is used, with a warning.

    Returns:
        The checkpoint directory, or the ``.safetensors`` file when only a file was given.

    Raises:
        FileNotFoundError: nothing loadable at ``path``.
        ValueError: ``path`` is a ``.safetensors`` file that cannot be read (truncated, or not safetensors).
    """
    path = Path(path)
    if path.is_file() and path.suffix == ".safetensors":
        _read_metadata(path)  # a truncated or pickled file fails here, named
        return path
    for root in (path / "checkpoints", path):
        if (found := _from_pointer(root)) is not None:
            return found
    if (path / MODEL_FILE).is_file():
        return path
    raise FileNotFoundError(f"no checkpoint at {path}: expected a run directory, a checkpoint folder or a .safetensors")


def _from_pointer(root: Path) -> Path | None:
    """The checkpoint ``root/last`` names when it is valid, else the newest complete one in ``root`` (warned)."""
    pointer = root / LAST
    problem = None
    if pointer.is_file() and not pointer.is_symlink():
        with pointer.open("rb") as f:
            raw = f.read(64)
        name = raw.decode("ascii", errors="replace").strip()  # anything but ASCII fails the name check below
        if not STEP_NAME.fullmatch(name):
            problem = f"{pointer} does not hold a checkpoint name (step_NNNNNNNN): {raw[:24]!r}"
        elif not is_complete(root / name):
            problem = f"{pointer} names {name}, which is not a complete checkpoint in {root}"
        else:
            return root / name
    elif pointer.exists() or pointer.is_symlink():
        problem = f"{pointer} is not a regular file"
    done = [p for p in _step_dirs(root) if is_complete(p)]
    if not done:
        if problem:
            log.warning("%s, and no complete checkpoint is there", problem)
        return None
    log.warning("%s; using the newest complete checkpoint, %s", problem or f"{pointer} is missing", done[-1].name)
    return done[-1]


def _read_metadata(file: Path) -> dict[str, str]:
    try:
        with safe_open(str(file), "pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise _unreadable(file, err) from None


def _unreadable(file: Path, err: Exception) -> ValueError:
    return ValueError(f"{file} is not a readable safetensors file ({err}); it is truncated or of another format")


def _read_tensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(file))
    except (SafetensorError, OSError) as err:
        raise _unreadable(file, err) from None


def read_meta(path: str | Path) -> TrainedMeta:
    """The ``TrainedMeta`` stored with a checkpoint.

    Raises:
        ValueError: the file cannot be read or holds no (valid) omniclip metadata; the message names it.
    """
    ckpt = find_checkpoint(path)
    file = ckpt if ckpt.is_file() else ckpt / MODEL_FILE
    meta = _read_metadata(file).get(META_KEY)
    if meta is None:
        raise ValueError(
            f"{file} is not an omniclip checkpoint (no '{META_KEY}' metadata); use load_clip for CLIP files"
        )
    try:
        return TrainedMeta.from_json(meta)
    except (json.JSONDecodeError, TypeError, AttributeError) as err:
        raise ValueError(f"{file}: the '{META_KEY}' metadata is damaged ({err})") from None


def load_training_state(
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, Any]:
    """Load weights (and optimizer state) into a built model to continue training; returns ``state.json``."""
    ckpt = find_checkpoint(path)
    if ckpt.is_file():
        raise ValueError(f"{ckpt} is a weights file; resuming needs a checkpoint folder with {STATE_FILE}")
    file = ckpt / STATE_FILE
    try:
        state = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{file} is not valid JSON ({err}); the checkpoint is damaged") from None
    if not isinstance(state, dict):
        raise ValueError(f"{file} does not hold a JSON object; the checkpoint is damaged")
    load_trainable(model, _read_tensors(ckpt / MODEL_FILE), ckpt / MODEL_FILE)
    if optimizer is not None and (ckpt / OPTIM_FILE).is_file():
        load_optimizer_tensors(optimizer, _read_tensors(ckpt / OPTIM_FILE), state["optimizer_groups"])
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
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    clip: CLIP | None = None,
    allow_other_backbone: bool = False,
) -> tuple[OmniCLIP, TrainedMeta]:
    """Rebuild a trained OmniCLIP from a checkpoint for inference.

    Args:
        path: a run directory, a checkpoint folder, or its ``model.safetensors``.
        device: where to put the model.
        clip: the CLIP the run started from; loaded from the checkpoint's ``clip_source`` when omitted
            (a fully fine-tuned checkpoint only needs the architecture).
        allow_other_backbone: load onto a CLIP whose fingerprint differs from the checkpoint's (warned).

    Returns:
        ``(model, meta)`` with the model in eval mode.

    Raises:
        ValueError: the backbone's fingerprint differs from the checkpoint's, or a file is damaged (named).
    """
    ckpt = find_checkpoint(path)
    meta = read_meta(ckpt)
    cfg = config_from_dict(meta.config)
    if clip is None and cfg.model.full_finetune and meta.clip_arch:
        clip = build_clip(CLIPConfig.from_dict(meta.clip_arch))  # every CLIP weight is in the checkpoint
    else:
        source = meta.clip_source if clip is None else "the CLIP passed in"
        if clip is None:
            clip = load_clip(meta.clip_source, activation=cfg.clip.activation or None)
        if not cfg.model.full_finetune:
            check_backbone(meta, clip, ckpt, source=source, allow_other_backbone=allow_other_backbone)
    model = build_run_model(cfg, clip)
    file = ckpt if ckpt.is_file() else ckpt / MODEL_FILE
    load_trainable(model, _read_tensors(file), ckpt)
    return model.to(device).eval(), meta


def build_run_model(cfg: RunConfig, clip: CLIP) -> OmniCLIP:
    """``omniclip.model.build_model`` with a run config's model section and frame count."""
    return build_model(clip, cfg.data.num_frames, config=cfg.model)


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    """Where ``save_checkpoint`` puts the checkpoint of optimizer step ``step``."""
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}"
