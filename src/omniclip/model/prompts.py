"""Self-Prompt Generator: multi-scale region prompts from a clip's own tokens, mixed over time, attended to by frames.

Follows OmniCLIP (arXiv 2408.06158) as specified in METHOD.md section 3. Per SPG block, with ``h = ln_1(x)``:

1. ``z = down(h)`` (D -> d); the patch tokens of each frame are average-pooled on grids ``scales`` (1, 2, 4: 21
   regions) and get a learnable ``region_embedding`` (which region at which scale).
2. Temporal mixing per region (``mixing``): ``attention`` (a light MHSA over T with its own ``temporal_embedding``),
   ``difference`` (a projection of the backward frame difference ``r_t - r_{t-1}``: what moves and how a region's
   content grows or shrinks), ``both`` (default) or ``none``.
3. Each frame's N tokens cross-attend (``q`` from the tokens, ``kv`` from the prompts, width d) to the prompts of its
   own frame, or of ``window`` neighbouring frames each side; ``out`` projects d -> D and a per-channel ``gate``,
   zero at initialisation, scales the residual. The gate is the only zero: at step 0 it alone gets a gradient, after
   one optimiser step everything behind it does.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from omniclip.clip.model import FrameLayout
from omniclip.model.temporal import TEMPORAL_INIT_STD, TemporalAttention, default_heads, frame_embedding

Mixing = Literal["attention", "difference", "both", "none"]
MIXING_MODES: tuple[str, ...] = ("attention", "difference", "both", "none")


def pool_regions(patches: torch.Tensor, scales: tuple[int, ...]) -> torch.Tensor:
    """Average-pool ``(B*T, d, h, w)`` patch maps on each ``s x s`` grid; returns ``(B*T, R, d)``, R = sum(s*s).

    The definition of the regions; ``SelfPromptGenerator`` computes the same numbers as one product with
    ``region_pool_matrix`` on the token layout, without transposing the tokens into a map.
    """
    pooled = [F.adaptive_avg_pool2d(patches, s).flatten(2) for s in scales]  # each (B*T, d, s*s)
    return torch.cat(pooled, dim=2).transpose(1, 2)  # (B*T, R, d)


def _cells(n: int, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``adaptive_avg_pool``'s s cells over n positions: ``(s, n)`` membership and ``(s,)`` sizes.

    Cell i covers ``[floor(i*n/s), ceil((i+1)*n/s))``; cells overlap unless s divides n.
    """
    i = torch.arange(s)
    start, end = (i * n) // s, -(-(i + 1) * n // s)
    pos = torch.arange(n)
    return (pos >= start[:, None]) & (pos < end[:, None]), end - start


def region_pool_matrix(
    grid: tuple[int, int], scales: tuple[int, ...], device: torch.device | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """``(R, h*w)`` averaging weights: row r of ``P @ patches`` equals region r of ``pool_regions`` (row-major patches).

    Row ``(s, i, j)`` is ``1 / |cell|`` on the patches of cell (i, j) of the s x s grid and 0 elsewhere.
    """
    gh, gw = grid
    rows = []
    for s in scales:
        (in_row, n_row), (in_col, n_col) = _cells(gh, s), _cells(gw, s)
        inside = in_row[:, None, :, None] & in_col[None, :, None, :]  # (s, s, h, w)
        size = (n_row[:, None] * n_col[None, :]).double()  # (s, s) patches per cell
        rows.append((inside.double() / size[:, :, None, None]).reshape(s * s, gh * gw))  # exact, rounded once below
    return torch.cat(rows).to(device=device, dtype=dtype or torch.get_default_dtype())  # (R, h*w)


def neighbour_prompts(p: torch.Tensor, window: int) -> torch.Tensor:
    """Give each frame the prompts of frames ``t - window .. t + window`` (edges repeat): ``(B, T, (2w+1)*R, d)``."""
    if window == 0:
        return p
    B, T, R, d = p.shape
    offsets = torch.arange(-window, window + 1, device=p.device)
    idx = (torch.arange(T, device=p.device)[:, None] + offsets).clamp(0, T - 1)  # (T, 2w+1)
    return p[:, idx].reshape(B, T, (2 * window + 1) * R, d)  # (B, T, (2w+1)*R, d)


class SelfPromptGenerator(nn.Module):
    """OmniCLIP's SPG, called by a CLIP block as ``spg(h, layout)`` on ``h = ln_1(x)`` ``(B*T, N, D)``.

    Args:
        width: D, the block's token width.
        dim: d, the prompt width (default D // 4).
        heads: heads of the temporal mixing and the cross-attention (default d // 64, at least 1).
        scales: pooling grids; ``(1, 2, 4)`` gives 21 region prompts per frame.
        mixing: how prompts are mixed over time (see the module docstring).
        window: neighbouring frames each side whose prompts a frame attends to (0: its own only).
        max_frames: frames the temporal embedding is built for; other counts interpolate unless ``interpolate`` is off.
        grid: the (h, w) patch grid the region-pooling matrix is built for, kept as the non-persistent buffer ``pool``
            (state dicts do not change); frames of another grid get a matrix built for them on each call.
    """

    pool: torch.Tensor | None  # (R, h*w) region-pooling weights for ``grid``

    def __init__(
        self,
        width: int,
        dim: int | None = None,
        heads: int | None = None,
        scales: tuple[int, ...] = (1, 2, 4),
        mixing: Mixing = "both",
        window: int = 0,
        max_frames: int = 8,
        interpolate: bool = True,
        grid: tuple[int, int] | None = None,
        temporal_init_std: float = TEMPORAL_INIT_STD,
        qk_norm: bool = False,
    ) -> None:
        super().__init__()
        if mixing not in MIXING_MODES:
            raise ValueError(f"unknown SPG mixing {mixing!r}; expected one of {', '.join(MIXING_MODES)}")
        if not scales or any(s < 1 for s in scales):
            raise ValueError(f"SPG scales must be positive grid sizes, got {scales}")
        if window < 0:
            raise ValueError(f"SPG window must be >= 0, got {window}")
        d = dim or width // 4
        self.heads = heads or default_heads(d)
        if d % self.heads:
            raise ValueError(f"SPG width {d} is not divisible by {self.heads} heads")
        self.scales, self.mixing, self.window, self.interpolate = tuple(scales), mixing, window, interpolate
        self.down = nn.Linear(width, d)
        self.region_embedding = nn.Parameter(torch.randn(sum(s * s for s in scales), d) * 0.02)  # (R, d)
        if mixing in ("attention", "both"):
            self.temporal_embedding = nn.Parameter(torch.randn(max_frames, d) * temporal_init_std)  # (F, d)
            self.mix = TemporalAttention(d, self.heads, qk_norm)
        if mixing in ("difference", "both"):
            self.motion = nn.Linear(d, d)
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, width)
        self.gate = nn.Parameter(torch.zeros(width))  # per-channel, zero: a fresh model computes exactly CLIP
        self.grid = tuple(grid) if grid is not None else None
        self.register_buffer("pool", region_pool_matrix(grid, self.scales) if grid else None, persistent=False)

    @property
    def num_regions(self) -> int:
        return self.region_embedding.shape[0]

    def prompts(self, z: torch.Tensor, layout: FrameLayout) -> torch.Tensor:
        """Region prompts ``(B, T, R, d)`` from the down-projected tokens ``z`` ``(B*T, N, d)``."""
        BT, N, d = z.shape
        T, (gh, gw) = layout.num_frames, layout.grid
        if N != 1 + gh * gw:
            raise ValueError(f"SPG got {N} tokens per frame but the layout grid {layout.grid} implies {1 + gh * gw}")
        if T < 1 or BT % T:
            raise ValueError(f"{BT} frames in the batch are not a whole number of {T}-frame clips")
        # r = pool_regions(z[:, 1:].transpose(1, 2).reshape(BT, d, gh, gw), scales) as one product on the token
        # layout: no (B*T, d, h, w) copy, and r comes out contiguous (docs/benchmarks.md measures it).
        if self.pool is not None and self.grid == (gh, gw):
            pool = self.pool.to(z.dtype)  # (R, h*w)
        else:  # frames of another size than the model was built for
            pool = region_pool_matrix((gh, gw), self.scales, z.device, z.dtype)  # (R, h*w)
        r = torch.matmul(pool, z[:, 1:])  # (B*T, R, d)
        r = r.view(BT // T, T, -1, d)  # (B, T, R, d)
        p = r + self.region_embedding
        if self.mixing in ("attention", "both"):
            e = frame_embedding(self.temporal_embedding, T, self.interpolate)  # (T, d)
            p = p + self.mix(p + e.view(1, T, 1, d))
        if self.mixing in ("difference", "both"):
            diff = F.pad(r[:, 1:] - r[:, :-1], (0, 0, 0, 0, 1, 0))  # (B, T, R, d), zero motion at t = 0
            p = p + self.motion(diff)
        return p

    def forward(self, h: torch.Tensor, layout: FrameLayout, queries: int | None = None) -> torch.Tensor:
        """``(B*T, N, D)`` -> the residual ``(B*T, N, D)``, or of the first ``queries`` tokens only (the prompts still
        pool every token)."""
        BT = h.shape[0]
        z = self.down(h.to(self.down.weight.dtype))  # (B*T, N, d)
        d, H = z.shape[-1], self.heads
        p = neighbour_prompts(self.prompts(z, layout), self.window)  # (B, T, K, d)
        K = p.shape[2]
        k, v = self.kv(p).view(BT, K, 2, H, d // H).permute(2, 0, 3, 1, 4).unbind(0)  # 2 x (B*T, H, K, hd)
        zq = z if queries is None else z[:, :queries]
        N = zq.shape[1]
        q = self.q(zq).view(BT, N, H, d // H).transpose(1, 2)  # (B*T, H, N, hd)
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(BT, N, d)  # (B*T, N, d)
        # out(o) * gate, with the gate folded into out's weights: no extra pass over the (B*T, N, D) residual.
        return F.linear(o, self.out.weight * self.gate[:, None], self.out.bias * self.gate).to(h.dtype)  # (B*T, N, D)
