"""Classify videos with your own class names: the two-line Python API behind ``omniclip predict``.

    model = omniclip.load_model("ViT-B/16")             # CLIP weights (zero-shot), a trained run, or "omniclip-tiny"
    omniclip.predict(model, "video.mp4", classes=["archery", "juggling"], top_k=5)  # -> [(class, probability), ...]

Videos are decoded with the test-time pipeline of ``omniclip.data`` (uniform frame sampling, resize of the short
side, centre crop; several clips x crops when ``views`` asks) and scored exactly as evaluation scores them
(``omniclip.protocols.evaluate.score_views``: the views' softmax probabilities are averaged).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

import torch

from omniclip.precision import PRECISION_NAMES, Precision, named_precision, resolve_precision

if TYPE_CHECKING:
    from omniclip.clip import CLIP
    from omniclip.model import OmniCLIP

# ``omniclip/__init__.py`` imports this module, so heavy or layered imports stay inside the functions.
log = logging.getLogger(__name__)

DEFAULT_FRAMES = 8  # T for plain CLIP weights (X-CLIP / ViFi-CLIP's 8-frame setting)
SourceKind = Literal["auto", "checkpoint", "clip"]


class VideoReadError(ValueError):
    """A video that exists but cannot be decoded; ``omniclip predict`` reports it and goes on with the others."""


class Prediction(NamedTuple):
    """One class and its probability for one video; unpacks as ``(name, probability)``."""

    name: str
    probability: float


@dataclass
class VideoClassifier:
    """A video model with what it needs to classify: frame count, crop size, templates and known classes."""

    model: OmniCLIP  # encode_video, encode_classes, forward(video, class_embeddings)
    num_frames: int  # T frames sampled per clip
    image_size: int  # S, side of the square crop
    templates: tuple[str, ...] | None = None  # text templates; None uses the model config's
    class_names: list[str] | None = None  # classes a trained checkpoint knows, in label order
    source: str = ""  # where the weights came from
    sampling: str = "segment"  # frame sampling the model was trained with (data.sampling)
    frame_interval: int = 2  # frames between samples when sampling is "dense" (data.frame_interval)
    precision: Precision | None = None  # how the model runs (load_model's precision); None: bf16 autocast on a GPU
    _embeddings: dict[tuple, torch.Tensor] = field(default_factory=dict, init=False, repr=False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def logit_scale(self) -> float:
        """The model's clamped logit scale (the factor in front of the cosine similarities)."""
        return float(self.model.logit_scale().detach())

    def autocast(self) -> AbstractContextManager[object]:
        """The autocast context the model runs under: its ``precision``'s, or bf16 autocast on a bf16 GPU."""
        precision = self.precision or resolve_precision(self.device, "auto", "fp32", False)
        return precision.autocast(self.device)

    def class_embeddings(self, classes: Sequence[str], templates: Sequence[str] | None = None) -> torch.Tensor:
        """``(C, E)`` L2-normalised text embeddings of ``classes`` (cached per class list and templates)."""
        templates = tuple(templates) if templates is not None else self.templates
        key = (tuple(classes), templates)
        if key not in self._embeddings:
            check_text_lengths(self.model, classes, templates or self.model.config.templates)
            with torch.no_grad():
                self._embeddings[key] = self.model.encode_classes(list(classes), templates=templates).float()
        return self._embeddings[key]

    def probabilities(self, video: torch.Tensor, class_embeddings: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, V, T, 3, S, S)`` -> ``(B, C)`` class probabilities averaged over the V views."""
        from omniclip.protocols.evaluate import score_views

        device = self.device
        with torch.no_grad(), self.autocast():
            return score_views(self.model, video.to(device), class_embeddings.to(device)).float().cpu()


def load_model(
    source: str | Path,
    *,
    device: str | torch.device = "cpu",
    num_frames: int | None = None,
    variant: str | None = None,
    kind: SourceKind = "auto",
    allow_other_backbone: bool = False,
    precision: str | None = None,
) -> VideoClassifier:
    """Load a trained omniclip checkpoint or plain CLIP weights as a ``VideoClassifier``.

    Args:
        source: a run directory, checkpoint folder or its ``model.safetensors`` (trained); or CLIP weights: a file,
            a Hugging Face folder, or a name (``"ViT-B/16"`` from ``$OMNICLIP_CACHE``, ``"omniclip-tiny"``).
        device: where the model runs.
        num_frames: T; defaults to the checkpoint's, or 8 for CLIP weights. A checkpoint refuses another T.
        variant: model variant for CLIP weights (default ``"frame_average"``: zero-shot CLIP); a fresh
            ``"omniclip"`` computes the same scores, since its new branches start at zero.
        kind: ``"checkpoint"`` or ``"clip"`` to say what ``source`` is; ``"auto"`` detects it.
        allow_other_backbone: load a checkpoint onto a CLIP whose weights differ from the ones it was trained on
            (its fingerprint is checked; a mismatch is refused unless this is set, and then warned).
        precision: ``"fp32"``, ``"bf16"`` (frozen weights stored in bf16; with autocast on a GPU) or ``"auto"`` (the
            faster of the two on this hardware, ``omniclip.precision.named_precision``); None keeps the weights as
            loaded, with bf16 autocast on a bf16 GPU. bf16 scores agree with fp32 to about 1e-2 (docs/predict.md).

    Raises:
        FileNotFoundError: ``source`` is neither a file, a folder nor a known name.
        ValueError: options that do not fit the source.
    """
    if kind not in ("auto", "checkpoint", "clip"):
        raise ValueError(f"kind must be 'auto', 'checkpoint' or 'clip', got {kind!r}")
    if precision is not None and precision not in PRECISION_NAMES:  # before anything loads
        raise ValueError(f"precision must be one of {', '.join(PRECISION_NAMES)}, got {precision!r}")
    if kind == "checkpoint" or (kind == "auto" and is_trained_checkpoint(source)):
        classifier = _load_checkpoint(
            source, device=device, num_frames=num_frames, variant=variant, allow_other_backbone=allow_other_backbone
        )
    else:
        from omniclip.clip import load_clip

        T = num_frames or DEFAULT_FRAMES
        classifier = classifier_from_clip(load_clip(str(source), device=device), num_frames=T, variant=variant)
        classifier.source = str(source)
        log.info("zero-shot %s from %s: T=%d, S=%d", classifier.model.config.variant, source, T, classifier.image_size)
    if precision is not None:
        classifier.precision = named_precision(device, precision, width=classifier.model.clip.cfg.vision.width)
        classifier.precision.apply(classifier.model)
    return classifier


def classifier_from_clip(
    clip: CLIP, *, num_frames: int = DEFAULT_FRAMES, variant: str | None = None
) -> VideoClassifier:
    """Wrap an in-memory CLIP as a zero-shot video classifier (``frame_average`` unless ``variant`` says)."""
    from omniclip.model import build_model

    model = build_model(clip, num_frames, variant=variant or "frame_average").eval()
    return VideoClassifier(model=model, num_frames=num_frames, image_size=int(clip.cfg.vision.image_size))


def is_trained_checkpoint(source: str | Path) -> bool:
    """True when ``source`` is an omniclip training checkpoint (folder or file with omniclip metadata)."""
    from omniclip.train.checkpoint import META_KEY, find_checkpoint

    try:
        ckpt = find_checkpoint(source)
    except FileNotFoundError:
        return False
    if ckpt.is_dir():
        return True
    from safetensors import safe_open

    with safe_open(str(ckpt), "pt") as f:
        return META_KEY in (f.metadata() or {})


def _load_checkpoint(
    source: str | Path,
    *,
    device: str | torch.device,
    num_frames: int | None,
    variant: str | None,
    allow_other_backbone: bool,
) -> VideoClassifier:
    from omniclip.train.checkpoint import load_trained_model

    if variant is not None:
        raise ValueError(f"variant={variant!r} applies to CLIP weights only; {source} is a trained checkpoint")
    model, meta = load_trained_model(source, device=device, allow_other_backbone=allow_other_backbone)
    if num_frames is not None and num_frames != meta.num_frames:
        raise ValueError(f"{source} was trained with {meta.num_frames} frames; drop num_frames={num_frames} (--frames)")
    log.info(
        "trained %s from %s: %d classes, T=%d", model.config.variant, source, len(meta.class_names), meta.num_frames
    )
    data = meta.config.get("data", {})  # sampling as in training
    return VideoClassifier(
        model=model.eval(),
        num_frames=int(meta.num_frames),
        image_size=int(meta.image_size),
        templates=tuple(meta.templates) if meta.templates else None,
        class_names=list(meta.class_names) or None,
        source=str(source),
        sampling=str(data.get("sampling", "segment")),
        frame_interval=int(data.get("frame_interval", 2)),
    )


def parse_views(views: str) -> tuple[int, int]:
    """``"4x3"`` -> ``(clips, crops)`` = (4, 3).

    Raises:
        ValueError: not ``<clips>x<crops>`` with positive integers.
    """
    parts = str(views).lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"views must look like '1x1' or '4x3' (clips x crops), got {views!r}")
    return int(parts[0]), int(parts[1])


def predict(
    model: VideoClassifier,
    videos: str | Path | Sequence[str | Path],
    classes: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
    top_k: int = 5,
    views: str = "1x1",
) -> list[Prediction] | list[list[Prediction]]:
    """Rank ``classes`` for each video by probability (softmax over the classes, averaged over views).

    Args:
        model: from ``load_model``.
        videos: one path (returns ``list[Prediction]``) or a list of paths (returns one list per video).
        classes: class names; defaults to the checkpoint's classes.
        templates: text templates such as ``"a video of a person {}."``; defaults to the model's.
        top_k: how many classes to return per video (at most the number of classes).
        views: ``"<clips>x<crops>"``; ``"1x1"`` is one centre clip, ``"4x3"`` the supervised protocol's 12 views.

    Raises:
        FileNotFoundError: a video does not exist (named).
        VideoReadError: an unreadable video (named, with the decoder's error); the first one stops the list.
        ValueError: a folder instead of a video (``video_files`` lists a folder's videos), no classes, a class name
            too long for the text encoder, or a bad option.
    """
    single = isinstance(videos, str | Path)
    paths = [Path(videos)] if isinstance(videos, str | Path) else [Path(v) for v in videos]
    if not paths:
        raise ValueError("no videos given")
    for path in paths:
        if path.is_dir():
            raise ValueError(
                f"video {path} is a folder; pass the videos in it (omniclip.predict.video_files lists them)"
            )
        if not path.is_file():
            raise FileNotFoundError(f"video {path} does not exist")
    names = check_class_names(classes if classes is not None else model.class_names)
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    clips, crops = parse_views(views)
    embeddings = model.class_embeddings(names, templates)
    results = []
    for path in paths:
        probs = model.probabilities(load_video(model, path, clips=clips, crops=crops), embeddings)[0]  # (C,)
        best = torch.topk(probs, k=min(top_k, len(names)))
        results.append(
            [Prediction(names[c], float(p)) for p, c in zip(best.values, best.indices.tolist(), strict=True)]
        )
    return results[0] if single else results


def video_files(paths: Sequence[str | Path]) -> list[Path]:
    """The videos named by ``paths``: files as given, folders replaced by the videos under them (sorted, recursive).

    A folder contributes the files with a ``omniclip.data.folders.VIDEO_SUFFIXES`` suffix, hidden ones (``.name``)
    left out. A video named twice (or also found in a folder) appears once, where first named.

    Raises:
        FileNotFoundError: a path does not exist (named).
        ValueError: a folder holds no videos (named).
    """
    from omniclip.data.folders import VIDEO_SUFFIXES

    out: dict[Path, Path] = {}  # resolved -> as given, so a video named twice is predicted once
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file() and not p.name.startswith(".")
            )
            if not found:
                raise ValueError(f"folder {path} holds no videos ({', '.join(VIDEO_SUFFIXES)})")
        elif path.is_file():
            found = [path]
        else:
            raise FileNotFoundError(f"video {path} does not exist")
        for p in found:
            out.setdefault(p.resolve(), p)
    return list(out.values())


def check_text_lengths(model: OmniCLIP, classes: Sequence[str], templates: Sequence[str]) -> None:
    """Raise ValueError naming the first class name that, in some template, exceeds the text encoder's length.

    The limit is the text tower's context length less the learnable context tokens (``model.text_context``).
    """
    from omniclip.clip.tokenizer import default_tokenizer

    tokenizer = default_tokenizer()
    limit = int(model.clip.positional_embedding.shape[0]) - model.config.text_context
    for name in classes:
        for template in templates:
            count = len(tokenizer.encode(template.format(name))) + 2  # start and end tokens
            if count > limit:
                short = name if len(name) <= 40 else name[:37] + "..."
                raise ValueError(
                    f"class name {short!r} ({len(name)} characters) is too long: {count} tokens in template "
                    f"{template!r}, the text encoder reads at most {limit}; shorten it"
                )


def check_class_names(classes: Sequence[str] | None) -> list[str]:
    """Stripped class names; ValueError for None, a bare string, empty or repeated names."""
    if classes is None:
        raise ValueError(
            "no classes: pass classes=[...] (--classes 'a,b,c' or --classes-file F); CLIP weights know none"
        )
    if isinstance(classes, str):
        raise ValueError(f"classes must be a list of names, got the string {classes!r}; split it first")
    names = [str(c).strip() for c in classes]
    if not names or not all(names):
        raise ValueError(f"class names must be non-empty, got {list(classes)!r}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"class names appear twice: {dup}")
    return names


def load_video(model: VideoClassifier, path: str | Path, *, clips: int = 1, crops: int = 1) -> torch.Tensor:
    """Decode one video with the test pipeline -> uint8 ``(1, V, T, 3, S, S)`` with V = clips x crops.

    Raises:
        VideoReadError: the video cannot be decoded (names the file and the decoder's error).
    """
    from omniclip.data.dataset import VideoDataset
    from omniclip.data.records import VideoRecord

    dataset = VideoDataset(
        [VideoRecord(Path(path), label=0, index=0)],
        num_frames=model.num_frames,
        mode="test",
        size=model.image_size,
        clips=clips,
        crops=crops,
        sampling=model.sampling,  # type: ignore[arg-type]
        frame_interval=model.frame_interval,
    )
    item = dataset[0]
    if item["video"] is None:
        reason = str(item.get("error") or "unknown decoding error").removeprefix(f"{path}: ")
        raise VideoReadError(f"cannot read video {path}: {reason}")
    return item["video"].unsqueeze(0)  # (1, V, T, 3, S, S)
