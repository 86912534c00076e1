"""Frame sampling: which frame indices a clip uses, as pure functions of the frame count and a passed-in RNG.

- ``segment_indices`` (TSN, used by X-CLIP / ViFi-CLIP training): split the video into T equal segments and take one
  frame per segment at a random offset (``generator``) or at the segment centre (``generator=None``, testing).
- ``dense_indices``: T frames ``interval`` apart from a random (train) or uniformly spaced (test) start.
- ``clip_indices``: one clip by either sampling, random (training) or at a given position.
- ``multiview_indices``: ``clips`` test clips, each T indices, as a (clips, T) array. For segment sampling clip ``c``
  takes offset ``(c + 0.5) / clips`` of each segment, so 1 clip is the centre frame of each segment.

Videos shorter than T repeat frames (indices stay sorted).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

Sampling = Literal["segment", "dense"]


def segment_indices(
    num_frames: int, clip_len: int, generator: torch.Generator | None = None, *, offset: float = 0.5
) -> np.ndarray:
    """One frame per equal segment of ``num_frames`` (>= 1) for a clip of ``clip_len`` (T) frames: at a random offset
    with a generator (training), else at fraction ``offset`` (0..1) of each segment (testing).

    Returns:
        int64 (T,) sorted indices in 0..num_frames-1.
    """
    if num_frames < 1 or clip_len < 1:
        raise ValueError(f"need num_frames >= 1 and clip_len >= 1, got {num_frames}, {clip_len}")
    seg = num_frames / clip_len
    if generator is None:
        frac = np.full(clip_len, offset)
    else:
        frac = torch.rand(clip_len, generator=generator, dtype=torch.float64).numpy()
    idx = np.floor((np.arange(clip_len) + frac) * seg).astype(np.int64)
    return np.clip(idx, 0, num_frames - 1)


def dense_indices(
    num_frames: int,
    clip_len: int,
    interval: int = 2,
    generator: torch.Generator | None = None,
    *,
    start: float = 0.5,
) -> np.ndarray:
    """T frames ``interval`` apart; the start is random with a generator, else at fraction ``start`` of the room left.

    Returns:
        int64 (T,) sorted indices; a video shorter than the span wraps to the last frame.
    """
    if num_frames < 1 or clip_len < 1 or interval < 1:
        raise ValueError(f"need positive num_frames, clip_len, interval; got {num_frames}, {clip_len}, {interval}")
    span = (clip_len - 1) * interval + 1
    room = max(num_frames - span, 0)
    if generator is None:
        first = int(round(room * start))
    else:
        first = int(torch.randint(0, room + 1, (1,), generator=generator).item())
    idx = first + np.arange(clip_len, dtype=np.int64) * interval
    return np.minimum(idx, num_frames - 1)


def clip_indices(
    num_frames: int,
    clip_len: int,
    generator: torch.Generator | None = None,
    sampling: Sampling = "segment",
    interval: int = 2,
    *,
    at: float = 0.5,
) -> np.ndarray:
    """One clip's (T,) indices by ``segment`` or ``dense`` sampling: random with ``generator`` (training), else at
    fraction ``at`` (of each segment, or of the room a dense clip leaves)."""
    if sampling == "segment":
        return segment_indices(num_frames, clip_len, generator, offset=at)
    if sampling == "dense":
        return dense_indices(num_frames, clip_len, interval, generator, start=at)
    raise ValueError(f"unknown sampling {sampling!r}; choose segment or dense")


def multiview_indices(
    num_frames: int, clip_len: int, clips: int, sampling: Sampling = "segment", interval: int = 2
) -> np.ndarray:
    """``clips`` deterministic test clips of ``clip_len`` (T) frames spread over the video, as int64 (clips, T):
    clip ``c`` at offset ``(c + 0.5) / clips`` within each segment (``segment``), or dense clips ``interval`` frames
    apart starting at positions spread uniformly over the video (``dense``)."""
    if clips < 1:
        raise ValueError(f"clips must be >= 1, got {clips}")
    return np.stack(
        [clip_indices(num_frames, clip_len, None, sampling, interval, at=(c + 0.5) / clips) for c in range(clips)]
    )
