"""What the bench measures: the run's ``BenchConfig``, each subject's model, inference call and training loss, and
the steps that are timed (inference, or forward, backward and AdamW; eager or replayed from a CUDA graph).

OmniCLIP's variants come from ``omniclip.model.build_model`` (``frame_average`` is bare CLIP averaging its frame
embeddings; ``vificlip`` the same with every weight trained, ViFi-CLIP's recipe); ``xclip`` is transformers'
``XCLIPModel`` (Ni et al. 2022), sized like the CLIP preset. All are trained against C synthetic class texts (as
PROTOCOLS.md describes): their content does not change the compute, and the bench then needs no vocabulary.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from omniclip.clip.model import build_clip
from omniclip.clip.presets import CLIPConfig, get_preset
from omniclip.model import build_model
from omniclip.precision import DTYPES, DtypeName, autocast, cast_frozen_

SUBJECTS: tuple[str, ...] = ("frame_average", "vificlip", "omniclip", "pta", "spg", "serial", "xclip")
MODES: tuple[str, ...] = ("infer", "train")
Batch = dict[str, torch.Tensor]  # "video" (B, T, 3, H, W) float, "label" (B,) int64


@dataclass(frozen=True)
class BenchConfig:
    """What one ``omniclip bench`` run measures, with device-dependent defaults filled by ``resolved()``."""

    arch: str = "tiny"  # CLIP preset (``ViT-B-16``, ``tiny``, ...)
    frames: int = 8  # T
    size: int | None = None  # clip resolution; None = the preset's image size
    batch: int | None = None  # clips per step; None = 32 on CUDA, 4 on the CPU
    device: str = "auto"  # auto = cuda when available
    dtype: DtypeName | None = None  # bf16 autocast or fp32; None = bf16 on CUDA, fp32 on the CPU
    classes: int | None = None  # class texts trained against; None = 400 on CUDA, 16 on the CPU
    variants: tuple[str, ...] = SUBJECTS  # subjects to measure, in order
    modes: tuple[str, ...] = MODES  # infer, train
    repeats: int = 5  # timed passes over the input batches; the median is reported
    warmup: int = 3  # untimed steps first (compilation, autotuning, graph capture)
    batches: int = 3  # pre-made input batches rotated in every pass
    compile: bool = False  # torch.compile the image encoders in place
    compile_backend: str = "inductor"  # torch.compile backend (``eager`` checks tracing only)
    bf16_weights: bool = False  # store frozen weights in bf16 (trainable ones stay fp32)
    grad_checkpointing: bool = False  # recompute blocks in backward
    cuda_graphs: bool = False  # replay steps as CUDA graphs (CUDA only; skipped on the CPU)
    full_finetune: bool = False  # train every CLIP weight in our variants (X-CLIP always trains all)
    max_batch: bool = False  # search the largest training batch, without and with activation checkpointing
    max_batch_limit: int | None = None  # largest size tried; None = 4096 on CUDA, 4 x batch on the CPU
    max_batch_tolerance: float = 0.0  # stop bisecting within this fraction of the size found (0 = exact)
    threads: int | None = None  # torch CPU threads; None = torch's default
    interleave: bool = False  # time all subjects taking turns (shared CPUs); no peak memory then
    seed: int = 0  # seeds weights, inputs and class texts

    def resolved(self) -> BenchConfig:
        """Fill device-dependent defaults and validate; raises ValueError naming the bad option."""
        device = ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device
        try:
            cuda = torch.device(device).type == "cuda"
        except RuntimeError as err:
            raise ValueError(f"--device {self.device!r} is not a device; use auto, cpu, cuda or cuda:N") from err
        if cuda and not torch.cuda.is_available():
            raise ValueError(f"--device {self.device}: CUDA is not available here; use --device cpu")
        unknown = [v for v in self.variants if v not in SUBJECTS]
        if unknown or not self.variants:
            raise ValueError(f"--variants: unknown {unknown or 'empty list'}; choose from {', '.join(SUBJECTS)}")
        if any(m not in MODES for m in self.modes) or not self.modes:
            raise ValueError(f"--modes: got {list(self.modes)}; choose from {', '.join(MODES)}")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ValueError(f"--dtype: unknown {self.dtype!r}; choose from {', '.join(DTYPES)}")
        clip_cfg = get_preset(self.arch)  # raises for unknown names
        size, batch = _pick(self.size, clip_cfg.vision.image_size), _pick(self.batch, 32 if cuda else 4)
        cfg = dataclasses.replace(
            self,
            device=device,
            size=size,
            batch=batch,
            dtype=_pick(self.dtype, "bf16" if cuda else "fp32"),
            classes=_pick(self.classes, 400 if cuda else 16),
            cuda_graphs=self.cuda_graphs and cuda,
            max_batch_limit=_pick(self.max_batch_limit, 4096 if cuda else 4 * batch),
        )
        lowest = dict.fromkeys(("frames", "size", "batch", "classes", "repeats", "batches", "max_batch_limit"), 1)
        for name, low in {**lowest, "warmup": 0, "max_batch_tolerance": 0}.items():
            if getattr(cfg, name) < low:
                raise ValueError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(cfg, name)}")
        if size < clip_cfg.vision.patch_size:
            raise ValueError(f"--size {size} is smaller than one {clip_cfg.vision.patch_size}-pixel patch")
        return cfg

    def clip_config(self) -> CLIPConfig:
        """The preset with its image size set to the clip resolution (no positional-embedding resize per step)."""
        assert self.size is not None, "clip_config() needs a resolved() config"
        base = get_preset(self.arch)
        return dataclasses.replace(base, vision=dataclasses.replace(base.vision, image_size=self.size))


def _pick(value: Any, default: Any) -> Any:
    """``default`` only for a missing value: an explicit 0 stays 0 and fails validation."""
    return default if value is None else value


@dataclass
class Subject:
    """One model under test: ``infer`` runs without gradients, ``loss`` builds what a training step backpropagates."""

    name: str
    model: nn.Module
    infer: Callable[[Batch], torch.Tensor]
    loss: Callable[[Batch], torch.Tensor]
    trainable: list[nn.Parameter]
    set_checkpointing: Callable[[bool], None]
    compile_targets: list[nn.Module]  # modules ``--compile`` compiles in place (the encoders)
    info: dict[str, Any]


def class_tokens(
    num_classes: int, context_length: int, vocab_size: int, *, seed: int = 0, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic class texts: ``(C, L)`` token ids laid out as CLIP's tokenizer lays them out, and their mask.

    Each row is ``[start, w_1 .. w_k, end, 0 ...]`` with k in 6..14, start = ``vocab_size - 2`` and end =
    ``vocab_size - 1`` (the highest id, where CLIP pools).
    """
    g = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(num_classes, context_length, dtype=torch.long)
    lengths = torch.randint(6, 15, (num_classes,), generator=g).clamp(max=context_length - 2)
    for i, k in enumerate(lengths.tolist()):
        words = torch.randint(1, vocab_size - 2, (k,), generator=g)
        tokens[i, : k + 2] = torch.cat([torch.tensor([vocab_size - 2]), words, torch.tensor([vocab_size - 1])])
    mask = (tokens != 0).long()  # word ids start at 1, so only the padding is 0
    return tokens.to(device), mask.to(device)


def make_batch(batch: int, frames: int, size: int, num_classes: int, *, device: torch.device, seed: int = 0) -> Batch:
    """A random fp32 CLIP-normalised video batch ``(B, T, 3, S, S)`` and labels in ``[0, C)``, made on ``device``."""
    g = torch.Generator(device=device).manual_seed(seed)
    video = torch.randn(batch, frames, 3, size, size, generator=g, device=device)
    label = torch.randint(0, num_classes, (batch,), generator=g, device=device)
    return {"video": video, "label": label}


def build_subject(name: str, cfg: BenchConfig, device: torch.device, *, graph_safe: bool = False) -> Subject:
    """One of ``SUBJECTS`` with random weights (seeded by ``cfg.seed``) at the sizes of a resolved ``cfg``.

    ``cfg.dtype`` ``bf16`` runs under bf16 autocast (``graph_safe``: without its weight-cast cache, as CUDA-graph
    capture needs); ``cfg.bf16_weights`` stores frozen parameters in bf16 (``cast_frozen_``); ``cfg.full_finetune``
    trains every CLIP weight of OmniCLIP's variants (the text tower then runs in every training step). X-CLIP always
    trains every weight. The logits are computed against ``cfg.classes`` class texts.
    """
    if name not in SUBJECTS:
        raise ValueError(f"unknown bench subject {name!r}; expected one of {', '.join(SUBJECTS)}")
    assert cfg.size and cfg.dtype and cfg.classes, "build_subject needs a resolved BenchConfig"
    torch.manual_seed(cfg.seed)
    clip_cfg = cfg.clip_config()
    tokens, mask = class_tokens(cfg.classes, clip_cfg.text.context_length, clip_cfg.text.vocab_size, device=device)
    amp = functools.partial(autocast, device, cfg.dtype, cache=not graph_safe)
    if name == "xclip":
        return _xclip_subject(clip_cfg, cfg.frames, tokens, mask, amp)
    variant = "frame_average" if name == "vificlip" else name
    model = build_model(build_clip(clip_cfg).to(device), cfg.frames, variant=variant,
                        full_finetune=cfg.full_finetune or name == "vificlip")  # fmt: skip
    cast = cast_frozen_(model, torch.bfloat16) if cfg.bf16_weights else 0
    text_frozen = model.text_is_frozen()
    # Computed once, like OmniCLIP.encode_classes' cache: inference never runs the text tower, and neither does
    # training while the text side is frozen; a trained text tower runs in every training step.
    with torch.no_grad():
        cached = F.normalize(model.clip.encode_text(tokens), dim=-1)  # (C, E)

    def infer(batch: Batch) -> torch.Tensor:
        with torch.no_grad(), amp():
            return model(batch["video"], cached)

    def loss(batch: Batch) -> torch.Tensor:
        with amp():
            classes = cached if text_frozen else F.normalize(model.clip.encode_text(tokens), dim=-1)
            logits = model(batch["video"], classes)  # (B, C)
        return F.cross_entropy(logits.float(), batch["label"])

    def set_checkpointing(on: bool) -> None:
        model.clip.visual.transformer.grad_checkpointing = on
        model.clip.transformer.grad_checkpointing = on

    info = {  # run.py adds the parameter counts
        "kind": "vificlip" if name == "vificlip" else "omniclip",
        "variant": variant,
        "params_cast_to_bf16": cast,
        "class_embeddings": "computed once (text tower frozen)" if text_frozen else "text tower runs every step",
        "infer_output": "logits against cached class embeddings",
    }
    return Subject(name, model, infer, loss, model.trainable_parameters(), set_checkpointing, [model.clip.visual], info)


def xclip_config(clip_cfg: CLIPConfig, frames: int) -> Any:
    """An ``XCLIPConfig`` matching ``clip_cfg`` (patch size, width, depth, heads, text tower, embedding size).

    The MIT and the prompt generator use the embedding width (transformers requires ``mit_hidden_size ==
    projection_dim``).
    """
    from transformers import XCLIPConfig

    v, t, E, act = clip_cfg.vision, clip_cfg.text, clip_cfg.embed_dim, clip_cfg.activation
    vision = {
        "hidden_size": v.width, "intermediate_size": round(v.width * v.mlp_ratio), "num_hidden_layers": v.layers,
        "num_attention_heads": v.heads, "mit_hidden_size": E, "mit_intermediate_size": 4 * E,
        "mit_num_hidden_layers": 1, "mit_num_attention_heads": max(1, E // 64), "image_size": v.image_size,
        "patch_size": v.patch_size, "num_frames": frames, "hidden_act": act,
    }  # fmt: skip
    text = {
        "hidden_size": t.width, "intermediate_size": round(t.width * t.mlp_ratio), "num_hidden_layers": t.layers,
        "num_attention_heads": t.heads, "vocab_size": t.vocab_size, "max_position_embeddings": t.context_length,
        "hidden_act": act, "pad_token_id": 0, "bos_token_id": t.vocab_size - 2,
        "eos_token_id": t.vocab_size - 1,  # must lie inside the vocabulary, also for tiny vocabularies
    }  # fmt: skip
    return XCLIPConfig(text_config=text, vision_config=vision, projection_dim=E,
                       prompt_num_attention_heads=max(1, E // 64), prompt_hidden_act=act)  # fmt: skip


def _xclip_subject(
    clip_cfg: CLIPConfig, frames: int, tokens: torch.Tensor, mask: torch.Tensor, amp: Callable[[], Any]
) -> Subject:
    """X-CLIP (cross-frame message tokens in every image block, a multi-frame integration transformer (MIT) and a
    video-conditioned text prompt generator), every weight trained: its text tower runs in every training step.

    ``infer`` computes video features (image tower and MIT, as ``get_video_features``), the figure X-CLIP's own
    inference of a video embedding costs; ``loss`` runs the whole model.
    """
    from transformers import XCLIPModel

    config = xclip_config(clip_cfg, frames)
    config._attn_implementation = "sdpa"
    model = XCLIPModel(config).to(tokens.device)  # type: ignore[arg-type]  # transformers types .to's wrapper for models only

    def infer(batch: Batch) -> torch.Tensor:
        with torch.no_grad(), amp():
            out = model.get_video_features(pixel_values=batch["video"])
        return out if isinstance(out, torch.Tensor) else out.pooler_output  # older transformers return the tensor

    def loss(batch: Batch) -> torch.Tensor:
        with amp():
            out = model(input_ids=tokens, pixel_values=batch["video"], attention_mask=mask)
        return F.cross_entropy(out.logits_per_video.float(), batch["label"])

    def set_checkpointing(on: bool) -> None:
        # transformers 5 renamed gradient_checkpointing_* to activation_checkpointing_*; older ones have only the former
        prefix = "activation" if hasattr(model, "activation_checkpointing_enable") else "gradient"
        if on:
            kwargs = {f"{prefix}_checkpointing_kwargs": {"use_reentrant": False}}
            getattr(model, f"{prefix}_checkpointing_enable")(**kwargs)
        else:
            getattr(model, f"{prefix}_checkpointing_disable")()

    trainable = [p for p in model.parameters() if p.requires_grad]
    info = {
        "kind": "xclip",
        "variant": "xclip",
        "params_cast_to_bf16": 0,
        "class_embeddings": "text tower and prompt generator run every step (all weights train)",
        "infer_output": "video features (image tower + MIT), no text",
    }
    return Subject("xclip", model, infer, loss, trainable, set_checkpointing, [model.vision_model], info)


def make_step(
    subject: Subject, mode: str, device: torch.device, *, graph_example: Batch | None = None
) -> Callable[[Batch], Any]:
    """The callable that ``measure`` times: ``subject.infer``, or a training step (zero the gradients, forward,
    backward, one AdamW step on the trainable parameters, fused on CUDA); replayed from a CUDA graph when
    ``graph_example`` is given.

    CUDA graphs follow PyTorch's whole-network capture recipe (``torch.cuda.graphs`` docs): warm up on a side stream
    (lazy initialisation, autotuning, optimiser state), free the gradients so that backward allocates them from the
    graph's pool, capture forward, backward and a ``capturable`` optimiser step once, then copy each new batch into
    private copies of ``graph_example``'s tensors and replay. Only static shapes qualify, which the bench's fixed
    batch guarantees. The replay returns the captured outputs (overwritten by the next replay).
    """
    subject.model.train(mode == "train")
    step, capture, opt = subject.infer, subject.infer, None
    if mode == "train":
        if not subject.trainable:
            raise ValueError(f"{subject.name} has no trainable parameters; there is no training step to time")
        cuda = device.type == "cuda"
        opt = torch.optim.AdamW(subject.trainable, lr=1e-6, fused=cuda, capturable=cuda and graph_example is not None)

        def capture(batch: Batch) -> torch.Tensor:  # all but zeroing the gradients: the part a CUDA graph captures
            loss = subject.loss(batch)
            loss.backward()
            opt.step()
            return loss.detach()

        def step(batch: Batch) -> torch.Tensor:
            opt.zero_grad(set_to_none=True)
            return capture(batch)

    if graph_example is None:
        return step
    if not torch.cuda.is_available():
        raise ValueError("CUDA graphs need a CUDA device; drop --cuda-graphs on the CPU")
    static = {k: v.clone() for k, v in graph_example.items()}
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step(static)
    torch.cuda.current_stream().wait_stream(side)
    if opt is not None:
        opt.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = capture(static)

    def replay(batch: Batch) -> Any:
        for key, value in static.items():
            if batch[key] is not value:
                value.copy_(batch[key], non_blocking=True)
        graph.replay()
        return out

    return replay
