"""Read CLIP checkpoint files and convert each foreign layout to OpenAI's parameter names (pure dict -> dict).

Follows timm's ``_convert_openai_clip`` and torchtune's ``clip/_convert_weights.py`` (a key table with ``{}`` layer
slots that raises on an unknown key). Formats: OpenAI's TorchScript ``.pt`` archives (read by
``omniclip.clip.torchscript``, which runs nothing from them) and plain state dicts, OpenCLIP
checkpoints (``state_dict`` wrapper, ``module.`` prefix, ``text.`` custom-text tower), Hugging Face ``CLIPModel``
files, and omniclip's own safetensors (architecture in the metadata).
"""

from __future__ import annotations

import math
import re
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import safe_open

from omniclip.clip.presets import Activation, CLIPConfig, TextConfig, VisionConfig
from omniclip.clip.torchscript import ArchiveError, read_torchscript

Tensors = dict[str, torch.Tensor]

# Scalars OpenAI's archives carry beside the weights; the architecture is read from the shapes instead.
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
ACTIVATIONS: dict[str, Activation] = {"quick_gelu": "quick_gelu", "gelu": "gelu"}

# Hugging Face CLIPModel -> OpenAI names. "{}" is a layer index; q/k/v and the projections are special cases below.
_HF_BLOCK = {
    "layer_norm1.weight": "ln_1.weight",
    "layer_norm1.bias": "ln_1.bias",
    "layer_norm2.weight": "ln_2.weight",
    "layer_norm2.bias": "ln_2.bias",
    "self_attn.out_proj.weight": "attn.out_proj.weight",
    "self_attn.out_proj.bias": "attn.out_proj.bias",
    "mlp.fc1.weight": "mlp.c_fc.weight",
    "mlp.fc1.bias": "mlp.c_fc.bias",
    "mlp.fc2.weight": "mlp.c_proj.weight",
    "mlp.fc2.bias": "mlp.c_proj.bias",
}
_HF_TOWERS = {"vision_model": "visual.transformer", "text_model": "transformer"}
HF_KEYS: dict[str, str] = {
    "logit_scale": "logit_scale",
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
    "vision_model.embeddings.class_embedding": "visual.class_embedding",
    "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
    "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
    "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",  # sic: HF's spelling
    "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
    "vision_model.post_layernorm.weight": "visual.ln_post.weight",
    "vision_model.post_layernorm.bias": "visual.ln_post.bias",
    **{
        f"{hf}.encoder.layers.{{}}.{src}": f"{ours}.resblocks.{{}}.{dst}"
        for hf, ours in _HF_TOWERS.items()
        for src, dst in _HF_BLOCK.items()
    },
}
HF_TRANSPOSED = {"visual_projection.weight": "visual.proj", "text_projection.weight": "text_projection"}
HF_DROPPED = ("text_model.embeddings.position_ids", "vision_model.embeddings.position_ids")
_HF_QKV = re.compile(r"^(vision_model|text_model)\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$")
_LAYER = re.compile(r"\.(\d+)\.")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def mapped_key(key: str, table: dict[str, str]) -> str:
    """Look ``key`` up in ``table`` with its layer numbers replaced by ``{}``; raise on an unknown key."""
    numbers = _LAYER.findall(key)
    template = _LAYER.sub(".{}.", key)
    if template not in table:
        raise ValueError(f"unknown Hugging Face CLIP key {key!r}")
    return table[template].format(*numbers)


def hf_to_openai(sd: Tensors) -> Tensors:
    """Hugging Face ``CLIPModel`` state dict -> OpenAI names: q/k/v fused into ``in_proj``, projections transposed."""
    out: Tensors = {}
    qkv: dict[tuple[str, str, str], dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        if key in HF_DROPPED:
            continue
        if key in HF_TRANSPOSED:
            out[HF_TRANSPOSED[key]] = value.t().contiguous()  # (E, W) -> (W, E)
        elif m := _HF_QKV.match(key):
            tower, layer, which, kind = m.groups()
            qkv.setdefault((tower, layer, kind), {})[which] = value
        else:
            out[mapped_key(key, HF_KEYS)] = value
    for (tower, layer, kind), parts in qkv.items():
        if missing := sorted({"q", "k", "v"} - set(parts)):
            raise ValueError(f"missing key {tower}.encoder.layers.{layer}.self_attn.{missing[0]}_proj.{kind}")
        fused = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)  # (3W, W) or (3W,)
        out[f"{_HF_TOWERS[tower]}.resblocks.{layer}.attn.in_proj_{kind}"] = fused
    return out


def openclip_to_openai(sd: Tensors) -> Tensors:
    """OpenCLIP names -> OpenAI names: the ``text.`` prefix of custom-text models moves to the top level."""
    return {k.removeprefix("text."): v for k, v in sd.items()}


def unwrap(obj: Any) -> tuple[Tensors, bool]:
    """The tensor dict inside a loaded checkpoint, ``state_dict`` wrapper and ``module.``/``_orig_mod.`` removed.

    Returns the tensors and whether a wrapper or prefix was removed (a sign of an OpenCLIP training checkpoint).
    """
    wrapped = isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict)
    if wrapped:
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"expected a dict of tensors, found {type(obj).__name__}")
    for prefix in ("module.", "_orig_mod."):
        if all(str(k).startswith(prefix) for k in obj):
            obj = {k[len(prefix) :]: v for k, v in obj.items()}
            wrapped = True
    if bad := [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]:
        raise ValueError(f"entry {bad[0]!r} is a {type(obj[bad[0]]).__name__}, not a tensor")
    return dict(obj), wrapped


def is_torchscript(path: Path) -> bool:
    """True for a TorchScript zip (it holds ``code/`` and ``constants.pkl``), as OpenAI's released ``.pt`` files are."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    return any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names)


def _is_safetensors(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size


def _reason(err: Exception) -> str:
    """One readable line from a reader's exception (torch's messages span paragraphs and carry colour codes)."""
    text = _ANSI.sub("", str(err)).strip()
    if m := re.search(r"WeightsUnpickler error:\s*([^\n]+)", text):  # what follows torch's weights_only advice
        return f"{type(err).__name__}: {m.group(1).strip()}"
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


class RawCheckpoint(NamedTuple):
    """One file's tensors before any renaming."""

    tensors: Tensors
    metadata: dict[str, str]  # safetensors metadata ({} for other containers)
    container: str  # safetensors | torchscript | torch
    wrapped: bool  # a ``state_dict`` wrapper or a ``module.`` prefix was removed (OpenCLIP training checkpoints)


def read_tensors(path: Path) -> RawCheckpoint:
    """Read one checkpoint file without running anything from it.

    safetensors via ``safe_open``; TorchScript archives (OpenAI's ``.pt``; ``torch.load(weights_only=True)`` refuses
    them) via :func:`omniclip.clip.torchscript.read_torchscript`, a restricted unpickler that rebuilds only tensors
    (``torch.jit.load`` would run the archive's ``__setstate__`` methods); anything else via
    ``torch.load(weights_only=True)``.
    """
    metadata: dict[str, str] = {}
    try:
        if _is_safetensors(path):
            container = "safetensors"
            with safe_open(str(path), framework="pt") as f:
                loaded: Any = {k: f.get_tensor(k) for k in f.keys()}
                metadata = dict(f.metadata() or {})
        elif is_torchscript(path):
            container = "torchscript"
            loaded = read_torchscript(path)
        else:
            container = "torch"
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except ArchiveError:  # refused or corrupt TorchScript: its message is already the one line to show
        raise
    except Exception as err:  # every reader has its own error types; any of them means a bad file
        if "Unsupported global" in str(err):  # weights_only refused a pickled class: more than tensors and dicts
            raise ValueError(
                "torch.load(weights_only=True) refused it: it pickles objects other than tensors and plain "
                "containers; if you trust the file, re-save only its state dict (a dict of tensors) with torch.save"
            ) from err
        raise ValueError(
            f"cannot read it as safetensors, torch.save or TorchScript (truncated?): {_reason(err)}"
        ) from err
    tensors, wrapped = unwrap(loaded)
    return RawCheckpoint(tensors, metadata, container, wrapped)


def detect_layout(sd: Tensors) -> str:
    """``"hf"`` for Hugging Face CLIPModel names, ``"openai"`` for OpenAI/OpenCLIP names; raise otherwise."""
    keys = set(sd)
    if any(k.startswith(("vision_model.", "text_model.")) for k in keys):
        return "hf"
    if "visual.conv1.weight" in keys:
        return "openai"
    if any(k.startswith("visual.trunk.") for k in keys):
        raise ValueError("OpenCLIP model with a timm image tower (visual.trunk.*) is not supported; use a ViT CLIP")
    if any(k.startswith("visual.layer1.") for k in keys):
        raise ValueError("ResNet CLIP (visual.layer1.*) is not supported; use a ViT CLIP such as ViT-B/16")
    first = ", ".join(sorted(keys)[:4])
    raise ValueError(
        f"unknown checkpoint format: no CLIP keys found (first keys: {first}); expected OpenAI/OpenCLIP names "
        "(visual.conv1.weight, ...), Hugging Face CLIPModel names (vision_model.*, text_model.*) or an omniclip file"
    )


def _count_layers(sd: Tensors, prefix: str) -> int:
    pattern = re.compile(rf"^{re.escape(prefix)}\.resblocks\.(\d+)\.")
    return len({m.group(1) for k in sd if (m := pattern.match(k))})


def _require(sd: Tensors, key: str) -> torch.Tensor:
    if key not in sd:
        raise ValueError(f"missing key {key}")
    return sd[key]


def config_from_state_dict(
    sd: Tensors,
    activation: Activation,
    vision_heads: int | None = None,
    text_heads: int | None = None,
) -> CLIPConfig:
    """Architecture of an OpenAI-named state dict from its shapes; heads default to width // 64 (OpenAI's rule)."""
    conv = _require(sd, "visual.conv1.weight")  # (D, 3, p, p)
    width, patch = conv.shape[0], conv.shape[-1]
    tokens = _require(sd, "visual.positional_embedding").shape[0]
    grid = math.isqrt(tokens - 1)
    if grid * grid != tokens - 1:
        raise ValueError(f"visual.positional_embedding has {tokens} rows, not 1 + a square grid")
    v_layers = _count_layers(sd, "visual.transformer")
    t_width = _require(sd, "ln_final.weight").shape[0]
    t_layers = _count_layers(sd, "transformer")
    if not v_layers or not t_layers:
        raise ValueError("missing key visual.transformer.resblocks.0.* or transformer.resblocks.0.*")
    v_hidden = _require(sd, "visual.transformer.resblocks.0.mlp.c_fc.weight").shape[0]
    t_hidden = _require(sd, "transformer.resblocks.0.mlp.c_fc.weight").shape[0]
    vision = VisionConfig(
        image_size=grid * patch,
        patch_size=patch,
        width=width,
        layers=v_layers,
        heads=vision_heads or max(1, width // 64),
        mlp_ratio=v_hidden / width,
    )
    text = TextConfig(
        context_length=_require(sd, "positional_embedding").shape[0],
        vocab_size=_require(sd, "token_embedding.weight").shape[0],
        width=t_width,
        layers=t_layers,
        heads=text_heads or max(1, t_width // 64),
        mlp_ratio=t_hidden / t_width,
    )
    embed_dim = _require(sd, "text_projection").shape[1]
    return CLIPConfig(embed_dim=embed_dim, vision=vision, text=text, activation=activation)


def activation_of(name: str, where: str) -> Activation:
    """Map a config's activation name to ours; raise on one our blocks do not implement."""
    if name not in ACTIVATIONS:
        raise ValueError(f"{where}: activation {name!r} is not supported; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def hf_heads_and_activation(config: dict[str, Any], where: str) -> tuple[int | None, int | None, Activation]:
    """Heads and activation from a Hugging Face ``CLIPModel`` ``config.json`` (shapes give everything else)."""
    vision = config.get("vision_config") or {}
    text = config.get("text_config") or {}
    acts = {activation_of(c.get("hidden_act", "quick_gelu"), where) for c in (vision, text)}
    if len(acts) != 1:
        raise ValueError(f"{where}: the image and text towers use different activations {sorted(acts)}")
    for tower in (vision, text):
        eps = tower.get("layer_norm_eps", 1e-5)
        if abs(eps - 1e-5) > 1e-12:
            raise ValueError(f"{where}: layer_norm_eps {eps} is not supported (CLIP uses 1e-5)")
    return vision.get("num_attention_heads"), text.get("num_attention_heads"), acts.pop()


def openclip_heads_and_activation(config: dict[str, Any], where: str) -> tuple[int | None, int | None, Activation]:
    """Heads and activation from an OpenCLIP ``open_clip_config.json`` (``model_cfg``) or a bare model config."""
    cfg = config.get("model_cfg", config)
    vision, text = cfg.get("vision_cfg") or {}, cfg.get("text_cfg") or {}
    for key in ("attentional_pool", "no_ln_pre", "final_ln_after_pool", "ls_init_value", "qk_norm"):
        if vision.get(key) or text.get(key):
            raise ValueError(f"{where}: OpenCLIP option {key!r} is not supported by omniclip's CLIP towers")
    if vision.get("pool_type", "tok") != "tok" or vision.get("global_average_pool"):
        raise ValueError(f"{where}: only class-token pooling is supported (vision_cfg pool_type 'tok')")
    v_heads = int(vision["width"]) // int(vision.get("head_width", 64)) if "width" in vision else None
    t_heads = int(text["heads"]) if "heads" in text else None
    return v_heads, t_heads, "quick_gelu" if cfg.get("quick_gelu") else "gelu"
