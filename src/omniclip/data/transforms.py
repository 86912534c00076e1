"""Video transforms: pure functions on uint8 tensors (..., 3, H, W), one crop/flip per clip, RNG passed in.

The same spatial transform applies to every frame of a clip (any leading dims: (T, 3, H, W), (V, T, 3, H, W), ...).
Training follows X-CLIP / ViFi-CLIP: resize the short side (256 for 224 px), multi-scale crop (TSN
``GroupMultiScaleCrop`` scales 1, .875, .75, .66), resize to the model size, optional horizontal flip (a switch:
wrong for direction classes such as SSv2 "pushing left to right"). Testing: resize + centre crop, or three crops
along the long side. ``normalize`` turns uint8 into CLIP-normalised floats and runs on a GPU batch.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MULTI_SCALES = (1.0, 0.875, 0.75, 0.66)


def resize(video: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear, antialiased resize of (..., 3, H, W) to ``size`` (side or (height, width)); keeps the dtype.

    A uint8 CPU video in channels-last memory (a permuted (..., H, W, 3) array) comes back in channels-last memory.
    """
    h, w = (size, size) if isinstance(size, int) else size
    if video.shape[-2:] == (h, w):
        return video
    lead = video.shape[:-3]
    x = video.reshape(-1, *video.shape[-3:])  # (N, 3, H, W)
    if x.dtype == torch.uint8 and x.device.type == "cpu":
        # uint8 channels-last is PyTorch's fast CPU path (about 3x the float path).
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        x = F.interpolate(x.contiguous(memory_format=torch.channels_last), size=(h, w), mode="bilinear", antialias=True)
        x = x if channels_last else x.contiguous()
    else:
        y = F.interpolate(x.float(), size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        x = y.round_().clamp_(0, 255).to(x.dtype) if x.dtype == torch.uint8 else y.to(x.dtype)
    return x.reshape(*lead, *x.shape[-3:])


def short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) with the shorter side equal to ``short_side``, keeping the aspect ratio."""
    if height <= width:
        return short_side, max(1, round(width * short_side / height))
    return max(1, round(height * short_side / width)), short_side


def resize_short_side(video: torch.Tensor, short_side: int) -> torch.Tensor:
    """Resize so that the shorter side is ``short_side`` (aspect ratio kept)."""
    return resize(video, short_side_size(video.shape[-2], video.shape[-1], short_side))


def crop(video: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
    """The (height, width) window at (top, left)."""
    return video[..., top : top + height, left : left + width]


def center_crop(video: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Centre crop to ``size`` (the video must be at least that large)."""
    h, w = (size, size) if isinstance(size, int) else size
    H, W = video.shape[-2:]
    if h > H or w > W:
        raise ValueError(f"crop {h}x{w} larger than frames {H}x{W}; resize first")
    return crop(video, (H - h) // 2, (W - w) // 2, h, w)


def three_crop_boxes(height: int, width: int, size: int) -> list[tuple[int, int, int, int]]:
    """The boxes (top, left, size, size) of three square crops along the longer side: start, centre, end."""
    if size > min(height, width):
        raise ValueError(f"crop {size} larger than frames {height}x{width}; resize the short side to {size} first")
    if width >= height:
        return [((height - size) // 2, x, size, size) for x in (0, (width - size) // 2, width - size)]
    return [(y, (width - size) // 2, size, size) for y in (0, (height - size) // 2, height - size)]


def stack_channels_last(videos: list[torch.Tensor]) -> torch.Tensor:
    """Stack (..., 3, H, W) videos of any strides into one channels-last copy: memory (N, ..., H, W, 3).

    A crop of channels-last frames copies row by row this way; into channels-first memory it is a transposition.
    """
    return torch.stack([v.movedim(-3, -1) for v in videos]).movedim(-1, -3)


def _randint(high: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(0, max(high, 0) + 1, (1,), generator=generator).item())


def multi_scale_box(
    height: int,
    width: int,
    generator: torch.Generator | None = None,
    *,
    scales: tuple[float, ...] = MULTI_SCALES,
    max_distort: int = 1,
) -> tuple[int, int, int, int]:
    """TSN multi-scale crop box (top, left, h, w): sides are scales of the short side (width and height scales at
    most ``max_distort`` steps apart), placed at one of 5 fixed spots (corners, centre)."""
    base = min(height, width)
    sides = [int(base * s) for s in scales]
    pairs = [(h, w) for i, h in enumerate(sides) for j, w in enumerate(sides) if abs(i - j) <= max_distort]
    ch, cw = pairs[_randint(len(pairs) - 1, generator)]
    dy, dx = (height - ch) // 4, (width - cw) // 4
    spots = [(0, 0), (0, 4 * dx), (4 * dy, 0), (4 * dy, 4 * dx), (2 * dy, 2 * dx)]
    top, left = spots[_randint(len(spots) - 1, generator)]
    return top, left, ch, cw


def normalize(
    video: torch.Tensor,
    mean: tuple[float, ...] = CLIP_MEAN,
    std: tuple[float, ...] = CLIP_STD,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 (..., 3, H, W) of any strides to contiguous ``(x / 255 - mean) / std`` in ``dtype``, on its device.

    One float copy, then in place: a batch is tens of MB, and a new tensor per operation took 2.5-3x the time on the
    CPU (docs/benchmarks.md, "Normalising the batch"). On the CPU a batch in another layout (``VideoDataset``'s are
    channels-last) is first reordered as uint8: half the time of reordering while converting to float.
    """
    if video.shape[-3] != 3:
        raise ValueError(f"expected channels at dim -3 (..., 3, H, W), got shape {tuple(video.shape)}")
    if video.device.type == "cpu":
        video = video.contiguous()
    m = torch.tensor(mean, device=video.device, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, device=video.device, dtype=torch.float32).view(3, 1, 1)
    x = torch.empty(video.shape, dtype=torch.float32, device=video.device).copy_(video)  # channels-first
    return x.div_(255.0).sub_(m).div_(s).to(dtype)


# ----------------------------------------------------------------------------------------------- augmentation
def _blend(a: torch.Tensor, b: torch.Tensor, factor: float) -> torch.Tensor:
    return (b.float() + factor * (a.float() - b.float())).clamp(0, 255).round().to(torch.uint8)


def _gray(video: torch.Tensor) -> torch.Tensor:
    r, g, b = video.float().unbind(-3)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(-3)


def _autocontrast(video: torch.Tensor) -> torch.Tensor:
    x = video.float()
    dims = [d for d in range(x.dim()) if d != x.dim() - 3]  # per channel, over the whole clip
    lo, hi = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
    return ((x - lo) * 255.0 / (hi - lo).clamp(min=1)).round().clamp(0, 255).to(torch.uint8)


RAND_AUGMENT_OPS = ("identity", "brightness", "contrast", "saturation", "posterize", "solarize", "autocontrast")


def rand_augment(
    video: torch.Tensor, generator: torch.Generator | None = None, *, num_ops: int = 2, magnitude: int = 9
) -> torch.Tensor:
    """RandAugment-lite on uint8 (..., 3, H, W): ``num_ops`` colour operations (no geometry) applied in sequence, of
    strength ``magnitude`` (0..10), the same for every frame of the clip."""
    strength = magnitude / 10.0
    for _ in range(num_ops):
        op = RAND_AUGMENT_OPS[_randint(len(RAND_AUGMENT_OPS) - 1, generator)]
        sign = 1.0 if _randint(1, generator) else -1.0
        factor = 1.0 + sign * 0.9 * strength
        if op == "brightness":
            video = _blend(video, torch.zeros_like(video), factor)
        elif op == "contrast":
            video = _blend(video, _gray(video).mean().expand_as(video), factor)
        elif op == "saturation":
            video = _blend(video, _gray(video).expand_as(video), factor)
        elif op == "posterize":
            bits = 8 - int(round(4 * strength))
            video = video & (0xFF << (8 - bits)) & 0xFF
        elif op == "solarize":
            video = torch.where(video >= int(256 - 256 * strength), 255 - video, video)
        elif op == "autocontrast":
            video = _autocontrast(video)
    return video


def mixup(
    video: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    alpha: float = 0.8,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix each clip of a normalised float (B, ...) batch with the batch in reverse order (timm style), by a weight
    drawn from Beta(``alpha``, ``alpha``); returns the mixed video and soft (B, C) targets for the (B,) ``labels``.
    Label smoothing is the loss's (``label_smoothing``)."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())
    lam = float(np.random.default_rng(seed).beta(alpha, alpha)) if alpha > 0 else 1.0
    onehot = F.one_hot(labels, num_classes).float()
    mixed = video * lam + video.flip(0) * (1.0 - lam)
    return mixed, onehot * lam + onehot.flip(0) * (1.0 - lam)
