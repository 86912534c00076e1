"""Window embeddings in batches: each window's T frames as a clip, or each grid frame once when frames are independent.

An OmniCLIP with temporal adapters (PTA) or prompts (SPG) sees a window's frames together, so each window goes
through the model as one clip of T frames. A model without them (zero-shot CLIP, ``frame_average``) embeds each
frame on its own and averages (``OmniCLIP.encode_video``): then every grid frame is encoded once and shared by the
windows that hold it, which with the default half-window stride halves the work. Decoding runs in a thread beside
the model, through a bounded queue (``omniclip.data.loader.prefetch``).
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice, takewhile
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from omniclip.data import transforms as tf
from omniclip.data.loader import decode_ahead
from omniclip.data.loader import prefetch as prefetched
from omniclip.predict import VideoClassifier
from omniclip.timeline.windows import Span, VideoWindows, WindowCutter


def frames_independent(classifier: VideoClassifier) -> bool:
    """True when a frame's embedding does not depend on the other frames of its clip (no PTA, no SPG)."""
    blocks = classifier.model.clip.visual.transformer.resblocks
    return all(getattr(b, "pta", None) is None and getattr(b, "spg", None) is None for b in blocks)


def encode_windows(classifier: VideoClassifier, frames: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, T, 3, S, S)`` -> ``(B, E)`` float32 L2-normalised video embeddings."""
    return F.normalize(encode_frames(classifier, frames), dim=-1)


def encode_frames(classifier: VideoClassifier, frames: torch.Tensor) -> torch.Tensor:
    """uint8 clips ``(B, T, 3, S, S)``, or frames ``(N, 3, S, S)`` as clips of one, -> ``(B, E)`` float32 video
    embeddings, unnormalised (of a frame: what ``encode_video`` averages), under the classifier's autocast."""
    x = tf.normalize(frames.to(classifier.device, non_blocking=True))
    with torch.no_grad(), classifier.autocast():
        return classifier.model.encode_video(x if x.ndim == 5 else x[:, None]).float().cpu()  # (B, E)


class WindowBatch(NamedTuple):
    """Embeddings of consecutive windows of one video: ``starts``/``ends`` in seconds, ``embeddings`` ``(B, E)``."""

    starts: list[float]
    ends: list[float]
    embeddings: torch.Tensor


def embed_video(
    classifier: VideoClassifier,
    windows: VideoWindows,
    batch_size: int = 16,
    *,
    prefetch: bool | None = None,
    share_frames: bool | None = None,
) -> Iterator[WindowBatch]:
    """Embed every window of ``windows``, ``batch_size`` windows' worth of frames per forward pass.

    With ``share_frames`` (default: when ``frames_independent``) each grid frame is encoded once and a window's
    embedding is the mean of its frames' embeddings, as ``encode_video`` computes it; otherwise each window goes
    through the model as a clip. With ``prefetch`` (default: where ``decode_ahead`` says it pays) a thread decodes
    the next frames while the model encodes (a bounded queue, so memory stays flat). Errors of the decoding thread
    are raised here.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    T = windows.spec.num_frames
    grid = windows.grid()
    if prefetch or (prefetch is None and decode_ahead(classifier.device)):
        grid = prefetched(grid, 2 * batch_size * T)
    if share_frames or (share_frames is None and frames_independent(classifier)):
        yield from _embed_shared(classifier, windows, grid, batch_size * T)
        return
    cut = windows.cut(grid)
    while batch := list(islice(cut, batch_size)):
        frames = torch.stack([w.frames for w in batch])  # (B, T, 3, S, S)
        yield WindowBatch([w.start for w in batch], [w.end for w in batch], encode_windows(classifier, frames))


def _embed_shared(
    classifier: VideoClassifier, windows: VideoWindows, grid: Iterator[tuple[int, np.ndarray]], frames_per_pass: int
) -> Iterator[WindowBatch]:
    cutter = WindowCutter(windows.spec)
    embedded: dict[int, torch.Tensor] = {}  # grid point -> (E,) frame embedding
    waiting: list[Span] = []  # complete windows whose frames are not all embedded yet
    frames: list[np.ndarray] = []  # grid points filled - len(frames) .. filled - 1, not embedded yet
    filled = 0

    def flush() -> list[WindowBatch]:
        """Embed the pending frames, then average the waiting windows whose frames are all embedded (one batch or
        none); embeddings no later window needs go."""
        if frames:
            emb = encode_frames(classifier, torch.from_numpy(np.stack(frames)))  # (N, E)
            embedded.update(zip(range(filled - len(frames), filled), emb, strict=True))
            frames.clear()
        done = list(takewhile(lambda s: max(s.points) < filled, waiting))
        del waiting[: len(done)]
        if not done:
            return []
        mean = torch.stack([torch.stack([embedded[i] for i in s.points]).mean(dim=0) for s in done])  # (B, E)
        keep_from = min([cutter.oldest_needed(filled), *(min(s.points) for s in waiting)])
        for k in [k for k in embedded if k < keep_from]:
            del embedded[k]
        return [WindowBatch([s.start for s in done], [s.end for s in done], F.normalize(mean, dim=-1))]

    for j, frame in grid:
        frames.append(frame)
        filled = j + 1
        waiting += cutter.arrived(filled)
        if len(frames) == frames_per_pass:
            yield from flush()
    assert windows.duration is not None
    waiting += cutter.finish(filled, windows.duration)
    yield from flush()
