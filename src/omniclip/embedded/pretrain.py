"""Contrastive pretraining of the embedded tiny CLIP on generated image-caption pairs, and its zero-shot evaluation.

Follows CLIP (Radford et al. 2021, Sec. 2.5 and Fig. 3): symmetric InfoNCE over in-batch pairs with a learnable,
clamped logit scale, AdamW with linear warmup and cosine decay. In-batch pairs whose image fits the other caption
("a red shape" for every red image) are masked out of the negatives rather than pushed apart. Everything is seeded
and runs with a fixed thread count and deterministic algorithms, so a run reproduces its weights bit for bit on the
same torch build. Zero-shot evaluation uses prompt ensembles over the caption templates (Sec. 3.1.4).
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import hashlib
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from omniclip.clip import CLIP, build_clip, load_clip, save_clip, tokenize
from omniclip.data.transforms import normalize
from omniclip.embedded import EMBEDDED_CLIP
from omniclip.embedded.captions import (
    ATTRIBUTES,
    HELD_OUT_PAIRS,
    TEMPLATES,
    CaptionBatch,
    CaptionGenerator,
    SceneObject,
    class_phrases,
    pair_phrases,
)
from omniclip.files import atomic_path, write_json
from omniclip.model.text import class_embeddings
from omniclip.train.optim import lr_at as schedule_lr
from omniclip.train.optim import param_groups, set_lr

log = logging.getLogger(__name__)

MAX_LOGIT_SCALE = math.log(100.0)
EVAL_SEED = 1_000_003  # zero-shot images come from this stream, never the training seed's
# Parameters kept out of weight decay besides biases and gains (STYLE.md: name the extra exclusions in one list).
NO_DECAY = ("token_embedding.weight", "positional_embedding", "visual.positional_embedding", "visual.class_embedding")


@dataclass(frozen=True)
class PretrainConfig:
    """The pretraining recipe of ``omniclip pretrain-tiny`` (deterministic for a seed and thread count)."""

    preset: str = EMBEDDED_CLIP  # architecture from omniclip.clip.presets
    steps: int = 1000  # optimiser steps
    batch_size: int = 128  # image-caption pairs per step (in-batch negatives)
    lr: float = 1e-3  # peak learning rate
    warmup: int = 60  # linear warmup steps
    min_lr: float = 1e-5  # floor of the cosine decay
    weight_decay: float = 0.1  # AdamW decoupled decay on matrices
    betas: tuple[float, float] = (0.9, 0.98)  # AdamW betas (CLIP's)
    eps: float = 1e-6  # AdamW epsilon (CLIP's)
    text_length: int = 32  # tokens per caption while training; the causal text tower pools at the end token,
    # so features equal those at the full 77 tokens
    two_objects: float = 0.2  # probability of a two-object scene
    sincos_init: bool = True  # start the image positional embedding from a 2D sin-cos table (position from step 0)
    spatial_steps: int = 0  # first steps with captions naming only shape and position (curriculum), then all words
    group: int = 4  # consecutive scenes differing in one attribute: hard in-batch negatives for every word
    seed: int = 0  # model initialisation and data stream
    threads: int = 1  # torch threads; fixed so reductions run in the same order every time

    def to_dict(self) -> dict:
        return asdict(self)


@contextlib.contextmanager
def deterministic(threads: int) -> Iterator[None]:
    """Fixed thread count and deterministic algorithms inside; the caller's settings are restored after."""
    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


@torch.no_grad()
def init_sincos_(pos: torch.Tensor) -> torch.Tensor:
    """Fill a ViT positional embedding ``(1 + g*g, D)`` with MAE's 2D sin-cos table; the class slot gets zeros.

    He et al. 2022 (MAE, ``util/pos_embed.py``): half the channels encode x, half y, each as sin and cos of the
    position at D/4 frequencies. The table stays learnable; it only spares the ViT the slow discovery of position.
    """
    n, D = pos.shape
    g = math.isqrt(n - 1)
    assert g * g == n - 1 and D % 4 == 0, f"need (1 + g*g, D) with D divisible by 4, got {tuple(pos.shape)}"
    ys, xs = torch.meshgrid(torch.arange(g, dtype=torch.float64), torch.arange(g, dtype=torch.float64), indexing="ij")
    omega = 1.0 / 10000 ** (torch.arange(D // 4, dtype=torch.float64) / (D // 4))  # (D/4,)
    parts = []
    for coord in (xs, ys):
        angles = coord.reshape(-1, 1) * omega.reshape(1, -1)  # (g*g, D/4)
        parts += [angles.sin(), angles.cos()]
    pos[0] = 0.0
    pos[1:] = torch.cat(parts, dim=1).to(pos.dtype)  # (g*g, D)
    return pos


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(B, H, W, 3)`` -> CLIP-normalised float ``(B, 3, H, W)``."""
    return normalize(torch.from_numpy(images).permute(0, 3, 1, 2))  # (B, 3, H, W)


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Linear warmup to ``cfg.lr``, then cosine decay to ``cfg.min_lr`` at the last step (the training schedule)."""
    return schedule_lr(step, total_steps=cfg.steps - 1, warmup_steps=cfg.warmup, lr=cfg.lr, min_lr=cfg.min_lr)


def build_optimizer(model: CLIP, cfg: PretrainConfig) -> torch.optim.AdamW:
    """AdamW with decay on matrices outside ``NO_DECAY`` (the training engine's parameter groups), CLIP's betas."""
    groups = param_groups(model.named_parameters(), cfg.weight_decay, set(NO_DECAY))
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, foreach=False)


def contrastive_loss(
    image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor, fits: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE over ``(B, E)`` embeddings; ``fits[i, j]`` off the diagonal are not negatives."""
    image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    logits = logit_scale.exp() * image @ text.t()  # (B, B) image i vs caption j
    off_diagonal = fits & ~torch.eye(len(fits), dtype=torch.bool)
    logits = logits.masked_fill(off_diagonal, float("-inf"))
    target = torch.arange(len(logits))
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def _train_step(model: CLIP, opt: torch.optim.Optimizer, batch: CaptionBatch, cfg: PretrainConfig, step: int) -> float:
    set_lr(opt, lr_at(step, cfg))
    tokens = tokenize(batch.captions, context_length=cfg.text_length)
    fits = torch.from_numpy(batch.match_matrix())
    loss = contrastive_loss(
        model.encode_image(to_pixels(batch.images)), model.encode_text(tokens), model.logit_scale, fits
    )
    if not torch.isfinite(loss):
        raise RuntimeError(f"non-finite loss {loss.item()} at step {step}; lower lr (now {cfg.lr})")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)
    return loss.item()


def _save_state(path: Path, cfg: PretrainConfig, model: CLIP, opt: torch.optim.Optimizer, **progress: Any) -> None:
    state = {"config": cfg.to_dict(), "model": model.state_dict(), "optimizer": opt.state_dict(), **progress}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_state(path: Path | None, cfg: PretrainConfig, model: CLIP, opt: torch.optim.Optimizer) -> dict:
    """Restore a saved state into ``model`` and ``opt``; returns ``next_step``, ``history``, ``seconds``."""
    if path is None or not path.is_file():
        return {"next_step": 0, "history": [], "seconds": 0.0}
    state = torch.load(path, weights_only=True)
    if state["config"] != cfg.to_dict():
        raise ValueError(f"{path} was saved by another recipe ({state['config']}); delete it or use that recipe")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    log.info("resuming from %s at step %d", path, state["next_step"])
    return {k: state[k] for k in ("next_step", "history", "seconds")}


def pretrain(
    cfg: PretrainConfig = PretrainConfig(),
    *,
    on_log: Callable[[dict], None] | None = None,
    log_every: int = 50,
    state_file: str | Path | None = None,
    save_every: int = 50,
) -> tuple[CLIP, list[dict]]:
    """Train a tiny CLIP from scratch; returns the model (fp32, eval mode) and the logged history.

    Args:
        cfg: the recipe.
        on_log: called with each history entry (``step``, ``loss``, ``lr``, ``logit_scale``, ``seconds``).
        log_every: steps between history entries (the last step is always logged).
        state_file: a resumable training state, written every ``save_every`` steps. If it exists (same recipe), training
            resumes there and ends with the same weights as an uninterrupted run: batch ``i`` depends only on
            ``(seed, i)`` and nothing else draws random numbers after the initialisation.
        save_every: steps between writes of ``state_file``.
    """
    if cfg.steps < 1 or cfg.batch_size < 2:
        raise ValueError(f"need steps >= 1 and batch_size >= 2, got steps={cfg.steps} batch_size={cfg.batch_size}")
    state_path = Path(state_file) if state_file is not None else None
    with deterministic(cfg.threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_clip(cfg.preset).train()
        if cfg.sincos_init:
            init_sincos_(model.visual.positional_embedding)
        size = model.cfg.vision.image_size
        spatial = CaptionGenerator(size, "train", cfg.two_objects, group=cfg.group, spatial=True)
        full = CaptionGenerator(size, "train", cfg.two_objects, group=cfg.group)
        opt = build_optimizer(model, cfg)
        resumed = _load_state(state_path, cfg, model, opt)
        history: list[dict] = resumed["history"]
        start = time.perf_counter() - resumed["seconds"]
        for step in range(resumed["next_step"], cfg.steps):
            batch = (spatial if step < cfg.spatial_steps else full).batch(cfg.seed, step, cfg.batch_size)
            loss = _train_step(model, opt, batch, cfg, step)
            seconds = time.perf_counter() - start
            if step % log_every == 0 or step == cfg.steps - 1:
                scale = round(model.logit_scale.exp().item(), 3)
                entry = {"step": step, "loss": round(loss, 5), "lr": lr_at(step, cfg), "logit_scale": scale}
                history.append({**entry, "seconds": round(seconds, 1)})
                (on_log or (lambda e: log.info("%s", e)))(history[-1])
            if state_path is not None and (step + 1) % save_every == 0 and step + 1 < cfg.steps:
                _save_state(state_path, cfg, model, opt, next_step=step + 1, history=history, seconds=seconds)
    return model.eval(), history


@torch.no_grad()
def _image_features(model: CLIP, split: str, seed: int, images: int) -> tuple[torch.Tensor, list[SceneObject]]:
    generator = CaptionGenerator(model.cfg.vision.image_size, split, two_objects=0.0, empty=0.0)  # type: ignore[arg-type]
    feats: list[torch.Tensor] = []
    objects: list[SceneObject] = []
    for index in range(math.ceil(images / 128)):
        batch = generator.batch(seed, index, min(128, images - 128 * index))
        pixels = to_pixels(batch.images).to(model.dtype)
        feats.append(F.normalize(model.encode_image(pixels).float(), dim=-1))
        objects.extend(objs[0] for objs in batch.objects)
    return torch.cat(feats), objects


@torch.no_grad()
def zero_shot_accuracy(model: CLIP, *, seed: int = EVAL_SEED, images: int = 1024) -> dict[str, dict[str, float]]:
    """Zero-shot accuracy on freshly drawn single-object images, per attribute and per (shape, colour) pair.

    ``seen`` draws the (shape, colour) pairs used in training, ``unseen`` only the held-out ones; ``pair`` classifies
    among all ``len(SHAPES) * len(COLORS)`` pairs. Use a ``seed`` different from the training seed.
    """
    model = model.eval()
    pairs = pair_phrases()
    pair_emb = class_embeddings(model, list(pairs.values()), TEMPLATES)
    attr_emb = {a: class_embeddings(model, list(class_phrases(a).values()), TEMPLATES) for a in ATTRIBUTES}
    out: dict[str, dict[str, float]] = {}
    for split in ("seen", "unseen"):
        feats, objects = _image_features(model, "train" if split == "seen" else "unseen", seed, images)
        scores: dict[str, float] = {}
        for attribute, emb in attr_emb.items():
            names = list(class_phrases(attribute))
            truth = torch.tensor([names.index(getattr(o, attribute)) for o in objects])
            scores[attribute] = round((feats @ emb.t()).argmax(1).eq(truth).float().mean().item(), 4)
        keys: list[tuple[str | None, str | None]] = list(pairs)
        truth = torch.tensor([keys.index((o.shape, o.color)) for o in objects])
        scores["pair"] = round((feats @ pair_emb.t()).argmax(1).eq(truth).float().mean().item(), 4)
        out[split] = scores
    return out


def chance_levels() -> dict[str, float]:
    """Accuracy of a uniform guess per task of ``zero_shot_accuracy``."""
    return {**{a: round(1 / len(class_phrases(a)), 4) for a in ATTRIBUTES}, "pair": round(1 / len(pair_phrases()), 4)}


def canonicalise_header(path: Path) -> None:
    """Rewrite a safetensors header with sorted keys, so that equal tensors and metadata give equal bytes.

    The safetensors writer emits its metadata map in hash-map order, which changes from call to call.
    """
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.dumps(json.loads(raw[8 : 8 + size]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the format pads the header to 8-byte alignment with spaces
    with atomic_path(path) as tmp:
        tmp.write_bytes(len(header).to_bytes(8, "little") + header + raw[8 + size :])


def compare_with_shipped(record: dict, shipped: dict | None) -> str:
    """One line saying whether a freshly written model reproduces the shipped one (``shipped`` is its record).

    Equal bytes need the same recipe; with the same recipe, different bytes mean another torch build or CPU kind.
    """
    if shipped is None:
        return f"no shipped {EMBEDDED_CLIP} record to compare with"
    if json.loads(json.dumps(record["pretrain"])) != shipped.get("pretrain"):
        return f"another recipe than the shipped {EMBEDDED_CLIP}: not comparable byte for byte"
    if record["sha256"] == shipped.get("sha256"):
        return f"identical to the shipped {EMBEDDED_CLIP} (sha256 {record['sha256'][:16]}): reproduced bit for bit"
    return (
        f"differs from the shipped {EMBEDDED_CLIP} (sha256 {str(shipped.get('sha256'))[:16]}, made with torch "
        f"{shipped.get('torch_version')} on {shipped.get('machine')}; this run: torch {record['torch_version']} on "
        f"{record['machine']}): float results depend on the torch build and CPU kind"
    )


def save_embedded(
    model: CLIP,
    path: str | Path,
    cfg: PretrainConfig,
    history: list[dict],
    *,
    wall_time_s: float,
    eval_seed: int = EVAL_SEED,
    eval_images: int = 1024,
) -> tuple[Path, dict]:
    """Write the weights in float16 (``save_clip``) and, beside them, ``<stem>.json``: the training record.

    The accuracies in the record are measured on the written file read back with ``load_clip`` (float32).
    Returns the record's path and the record.
    """
    path = Path(path)
    save_clip(copy.deepcopy(model).half(), path)  # fp16 halves the file; the 49408-row token table dominates it
    canonicalise_header(path)
    with deterministic(cfg.threads):
        accuracy = zero_shot_accuracy(load_clip(path), seed=eval_seed, images=eval_images)
    record = {
        "name": EMBEDDED_CLIP,
        "architecture": model.cfg.to_dict(),
        "pretrain": cfg.to_dict(),
        "seed": cfg.seed,
        "steps": cfg.steps,
        "held_out_pairs": [list(p) for p in HELD_OUT_PAIRS],
        "zero_shot": {
            "seed": eval_seed,
            "images_per_split": eval_images,
            "accuracy": accuracy,
            "chance": chance_levels(),
        },
        "final_loss": history[-1]["loss"] if history else None,
        "history": history,
        "wall_time_s": round(wall_time_s, 1),
        "weights_dtype": "float16",
        "file_bytes": path.stat().st_size,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "date": datetime.date.today().isoformat(),
    }
    return write_json(path.with_suffix(".json"), record), record
