"""Load CLIP weights from any common checkpoint into omniclip's CLIP, and save them back with their architecture.

Follows open_clip's ``factory.py`` (``load_state_dict``, ``load_checkpoint``): a short list of guarded fixes ending in
one strict load. Format detection happens here, in one place (``read_clip_state``); the per-format converters live in
``omniclip.clip.formats``. See ``docs/checkpoints.md``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import torch

from omniclip.assets import ASSETS
from omniclip.clip import formats
from omniclip.clip.formats import Tensors
from omniclip.clip.model import CLIP
from omniclip.clip.presets import PRESETS, Activation, CLIPConfig, canonical_name
from omniclip.files import save_safetensors

log = logging.getLogger(__name__)

CACHE_ENV = "OMNICLIP_CACHE"
DEFAULT_CACHE = "~/.cache/omniclip"
CONFIG_METADATA = "omniclip.clip_config"  # safetensors metadata key holding CLIPConfig.to_dict() as JSON
# OpenAI's release URLs (openai/CLIP, clip/clip.py ``_MODELS``); the hex folder is the file's SHA-256.
OPENAI_URLS = {
    "ViT-B-32": "https://openaipublic.azureedge.net/clip/models/"
    "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
    "ViT-B-16": "https://openaipublic.azureedge.net/clip/models/"
    "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
    "ViT-L-14": "https://openaipublic.azureedge.net/clip/models/"
    "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
    "ViT-L-14-336": "https://openaipublic.azureedge.net/clip/models/"
    "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/ViT-L-14-336px.pt",
}
SUFFIXES = (".pt", ".safetensors", ".bin", ".pth")
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
OPENCLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")


@dataclass(frozen=True)
class LoadReport:
    """What ``load_clip`` read: where from, which format, which architecture, how many parameters."""

    source: str  # what the caller passed
    path: str  # the file or folder read
    format: str  # openai-torchscript | openai | openclip | hf | omniclip
    architecture: str  # preset name when the shapes equal one, else "custom", plus the sizes
    num_params: int
    activation: Activation
    activation_from: str  # why this activation: argument, config file, or the format's default

    def line(self) -> str:
        return (
            f"loaded CLIP {self.source!r} from {self.path} [{self.format}]: {self.architecture}, "
            f"{self.num_params / 1e6:.2f}M params, {self.activation} ({self.activation_from})"
        )


def cache_dir() -> Path:
    """The folder named checkpoints are looked up in: ``$OMNICLIP_CACHE`` or ``~/.cache/omniclip``."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def resolve_source(source: str | Path) -> Path:
    """Turn a path, a packaged asset name (``omniclip-tiny``) or an architecture name (``ViT-B/16``) into a path."""
    path = Path(source).expanduser()
    if path.exists():
        return path
    text = str(source)
    if _NAME.match(text) and (ASSETS / f"{text}.safetensors").is_file():
        return ASSETS / f"{text}.safetensors"
    name = canonical_name(text)
    if not _NAME.match(name) or path.suffix in SUFFIXES:
        raise FileNotFoundError(f"{source}: no such checkpoint file or folder")
    root = cache_dir()
    tried = [root / f"{name}{suffix}" for suffix in SUFFIXES] + [root / name]
    if name in OPENAI_URLS:
        tried.append(root / OPENAI_URLS[name].rsplit("/", 1)[1])  # OpenAI's own file name, e.g. ViT-L-14-336px.pt
    for candidate in tried:
        if candidate.exists():
            return candidate
    url = OPENAI_URLS.get(name)
    where = f"download {url} into {root}/" if url else f"put its weights in {root}/ as {name}.pt"
    raise FileNotFoundError(
        f"CLIP weights {text!r} not found; tried {', '.join(str(p) for p in tried)}. To use them, {where} "
        f"(or a Hugging Face folder at {root / name}/), or set {CACHE_ENV} to the folder holding them"
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def _read_file(path: Path) -> formats.RawCheckpoint:
    """Tensors of one file or of a sharded Hugging Face index; errors name the file."""
    try:
        if not path.name.endswith(".index.json"):
            return formats.read_tensors(path)
        shards = sorted(set(_read_json(path).get("weight_map", {}).values()))
        if not shards:
            raise ValueError("index has no weight_map")
        merged: Tensors = {}
        for shard in shards:
            merged.update(_read_file(path.parent / shard).tensors)
        return formats.RawCheckpoint(merged, {}, "sharded", False)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


def _weights_in(folder: Path) -> tuple[Path, dict[str, Any] | None]:
    """The weights file of a Hugging Face or OpenCLIP folder, and the folder's HF ``config.json`` if any."""
    for name in HF_WEIGHTS:
        if (folder / name).is_file():
            config = folder / "config.json"
            if not config.is_file():
                raise FileNotFoundError(f"{config} not found; a Hugging Face CLIPModel folder needs it beside {name}")
            hf = _read_json(config)
            if hf.get("model_type", "clip") != "clip":
                raise ValueError(f"{config}: model_type {hf.get('model_type')!r} is not supported; expected 'clip'")
            return folder / name, hf
    for name in OPENCLIP_WEIGHTS:
        if (folder / name).is_file():
            return folder / name, None
    raise FileNotFoundError(
        f"{folder}: no CLIP weights found; expected config.json with one of {', '.join(HF_WEIGHTS)} "
        f"(Hugging Face) or one of {', '.join(OPENCLIP_WEIGHTS)} (OpenCLIP)"
    )


class _Layout(NamedTuple):
    state_dict: Tensors  # OpenAI names
    format: str
    heads: tuple[int | None, int | None]  # (vision, text) from a config file; None: width // 64
    activation: Activation
    reason: str  # why this activation


def _openai_layout(raw: formats.RawCheckpoint, path: Path, act: Activation | None) -> _Layout:
    """Tell OpenAI from OpenCLIP weights (both use OpenAI's names) and find the activation."""
    has_extras = any(k in raw.tensors for k in formats.OPENAI_EXTRA_KEYS)
    sidecar = path.parent / "open_clip_config.json"
    sd = {k: v for k, v in raw.tensors.items() if k not in formats.OPENAI_EXTRA_KEYS}
    if raw.container == "torchscript" or (has_extras and not sidecar.is_file()):
        fmt = "openai-torchscript" if raw.container == "torchscript" else "openai"
        return _Layout(sd, fmt, (None, None), "quick_gelu", "OpenAI weights")
    if not (raw.wrapped or path.name.startswith("open_clip") or sidecar.is_file()):
        return _Layout(sd, "openai", (None, None), "quick_gelu", "OpenAI layout; pass activation='gelu' for LAION")
    sd = formats.openclip_to_openai(sd)
    if sidecar.is_file():
        v_heads, t_heads, found = formats.openclip_heads_and_activation(_read_json(sidecar), str(sidecar))
        return _Layout(sd, "openclip", (v_heads, t_heads), found, f"{sidecar.name} quick_gelu={found == 'quick_gelu'}")
    if act is None:
        log.info("%s: no open_clip_config.json beside it; using GELU as LAION OpenCLIP models do", path)
    return _Layout(sd, "openclip", (None, None), "gelu", "OpenCLIP default without open_clip_config.json")


def _hf_layout(sd: Tensors, path: Path, hf_config: dict[str, Any] | None) -> _Layout:
    """Convert Hugging Face names; heads and activation from the folder's (or the file's sibling) ``config.json``."""
    sidecar = path.parent / "config.json"
    if hf_config is None and sidecar.is_file():
        hf_config = _read_json(sidecar)
    if hf_config is None:
        return _Layout(formats.hf_to_openai(sd), "hf", (None, None), "quick_gelu", "no config.json: HF default")
    v_heads, t_heads, act = formats.hf_heads_and_activation(hf_config, str(sidecar))
    return _Layout(formats.hf_to_openai(sd), "hf", (v_heads, t_heads), act, f"config.json hidden_act={act}")


@dataclass(frozen=True)
class ClipState:
    """A checkpoint read into OpenAI names, with the architecture and how they were found."""

    state_dict: Tensors
    config: CLIPConfig
    format: str
    activation_from: str
    file: Path


def read_clip_state(source: str | Path, activation: Activation | None = None) -> ClipState:
    """Resolve ``source``, read it, detect its format, convert to OpenAI names and check it against its architecture.

    Args:
        source: as for :func:`load_clip`.
        activation: overrides the activation the format implies.
    """
    path = resolve_source(source)
    file, hf_config = _weights_in(path) if path.is_dir() else (path, None)
    raw = _read_file(file)
    sd = raw.tensors
    try:
        if CONFIG_METADATA in raw.metadata:
            cfg = CLIPConfig.from_dict(json.loads(raw.metadata[CONFIG_METADATA]))
            fmt, reason = "omniclip", "saved architecture"
        else:
            hf = formats.detect_layout(sd) == "hf"
            layout = _hf_layout(sd, file, hf_config) if hf else _openai_layout(raw, file, activation)
            sd, fmt, reason = layout.state_dict, layout.format, layout.reason
            cfg = formats.config_from_state_dict(sd, layout.activation, *layout.heads)
        if activation is not None:
            cfg = replace(cfg, activation=formats.activation_of(activation, "activation argument"))
            reason = "activation argument"
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(f"{file}: {err}") from err
    _check_state(sd, cfg, file)
    return ClipState(sd, cfg, fmt, reason, file)


def _expected_shapes(cfg: CLIPConfig) -> dict[str, torch.Size]:
    with torch.device("meta"):
        return {k: v.shape for k, v in CLIP(cfg).state_dict().items()}


def _check_state(sd: Tensors, cfg: CLIPConfig, file: Path) -> None:
    """Raise one ValueError naming the file and the first missing, unexpected or misshapen key."""
    expected = _expected_shapes(cfg)
    more = lambda keys: f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
    if missing := [k for k in expected if k not in sd]:
        raise ValueError(f"{file}: missing key {missing[0]}{more(missing)}")
    if unexpected := [k for k in sd if k not in expected]:
        raise ValueError(f"{file}: unexpected key {unexpected[0]}{more(unexpected)}; not a CLIP ViT checkpoint?")
    for key, shape in expected.items():
        if sd[key].shape != shape:
            raise ValueError(
                f"{file}: key {key} has shape {tuple(sd[key].shape)}, expected {tuple(shape)} for the architecture "
                f"read from the checkpoint (inconsistent or corrupt weights)"
            )


def describe(cfg: CLIPConfig) -> str:
    """Preset name (when the shapes equal one) and the tower sizes, for log lines."""
    name = next((n for n, p in PRESETS.items() if replace(p, activation=cfg.activation) == cfg), "custom")
    v, t = cfg.vision, cfg.text
    return (
        f"{name} (vision {v.width}x{v.layers}L/{v.heads}h patch {v.patch_size} @ {v.image_size}px, "
        f"text {t.width}x{t.layers}L/{t.heads}h ctx {t.context_length} vocab {t.vocab_size}, embed {cfg.embed_dim})"
    )


def load_clip(
    source: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    activation: Activation | None = None,
) -> CLIP:
    """Load a CLIP from a checkpoint file, a Hugging Face/OpenCLIP folder, a packaged asset or a cached name.

    Args:
        source: path, ``"omniclip-tiny"`` (packaged), or a name such as ``"ViT-B/16"`` looked up in
            ``$OMNICLIP_CACHE`` (default ``~/.cache/omniclip``).
        device: where the model goes.
        dtype: floating dtype of the parameters; ``None`` gives float32 (OpenAI's fp16 weights are upcast).
        activation: ``"quick_gelu"`` or ``"gelu"``, overriding what the format implies.

    Returns:
        The model in eval mode; ``model.load_report`` holds the :class:`LoadReport`.
    """
    state = read_clip_state(source, activation)
    with torch.device("meta"):
        model = CLIP(state.config)
    model.load_state_dict(state.state_dict, strict=True, assign=True)
    # Move first, then cast: fp16 release weights travel at half the bytes and convert on the accelerator.
    model = model.to(device=device).to(dtype=dtype or torch.float32).eval()
    report = LoadReport(
        source=str(source),
        path=str(state.file),
        format=state.format,
        architecture=describe(state.config),
        num_params=sum(p.numel() for p in model.parameters()),
        activation=state.config.activation,
        activation_from=state.activation_from,
    )
    model.load_report = report
    log.info(report.line())
    return model


def save_clip(model: CLIP, path: str | Path) -> Path:
    """Write ``model``'s CLIP weights (OpenAI names) to safetensors with ``CLIPConfig.to_dict()`` in the metadata.

    Injected branches (PTA, SPG) are left out: the file holds exactly a plain CLIP's keys. Written atomically.
    """
    sd = model.state_dict()
    keys = _expected_shapes(model.cfg)
    if missing := [k for k in keys if k not in sd]:
        raise ValueError(f"model lacks CLIP key {missing[0]}; save_clip expects an omniclip.clip.CLIP")
    tensors = {k: sd[k].detach().to("cpu").contiguous() for k in keys}
    metadata = {"format": "pt", CONFIG_METADATA: json.dumps(model.cfg.to_dict())}
    return save_safetensors(path, tensors, metadata)


def fingerprint(head: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> str:
    """``sha256:<hex>`` over a JSON ``head`` (architecture, settings) and every tensor of ``state`` in key order.

    Each tensor counts with its name, shape and bytes, floating ones as float32, so a copy cast to another dtype and
    back, or moved to a GPU, keeps its fingerprint. About 1 s for ViT-B/16 on a CPU core.
    """
    h = hashlib.sha256(json.dumps(head, sort_keys=True, default=str).encode())
    for key in sorted(state):
        value = state[key].detach()
        value = (value.float() if value.is_floating_point() else value).cpu().contiguous()
        h.update(f"{key} {tuple(value.shape)} {value.dtype}\n".encode())
        h.update(value.reshape(-1).view(torch.uint8).numpy().data)
    return f"sha256:{h.hexdigest()}"
