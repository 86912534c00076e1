"""Parallel Temporal Adapter: bottleneck self-attention across frames at each token position.

Follows OmniCLIP (arXiv 2408.06158) as specified in METHOD.md section 2: ``PTA(z) = up(MHSA_T(down(z) + e_t))`` with
the tokens of one spatial position attending to each other over the T frames, ``up`` zero-initialised so that a fresh
adapter adds exactly zero. The same ``TemporalAttention`` mixes the self-prompts of ``prompts.py`` over time.

Layout: the block hands us ``h`` as ``(B*T, N, D)`` rows (frame-major). Instead of copying tokens into a
``(B*N, T, d)`` tensor and back, the fused QKV projection writes ``(3, B, T, N, d)`` and attention reads strided
``(B, N*H, T, hd)`` views of it; SDPA returns its output already laid out as ``(B, T, N*H, hd)``, so the adapter makes
no copy of its own (``benchmarks/pta_layout.py`` measures this against the copying layouts).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from omniclip.clip.model import FrameLayout

# The temporal embedding starts at the scale of the down-projected tokens (std ~0.6), not ViT's 0.02: attention over
# frames is permutation-equivariant, so a near-zero embedding leaves a fresh adapter blind to frame order and
# training sits at a saddle (docs/model.md, "temporal embedding scale": the reversed-motion toy task).
TEMPORAL_INIT_STD = 0.5


def default_heads(dim: int) -> int:
    """Heads of 64 channels, at least one (ViT-B/16: d = 192 -> 3 heads)."""
    return max(1, dim // 64)


def frame_embedding(pos: torch.Tensor, num_frames: int, interpolate: bool = True) -> torch.Tensor:
    """A ``(F, d)`` temporal embedding for T frames: itself when T == F, else linearly interpolated (end points kept).

    Raises:
        ValueError: T differs from F and ``interpolate`` is off.
    """
    F_ = pos.shape[0]
    if num_frames == F_:
        return pos
    if not interpolate:
        raise ValueError(
            f"the clip has {num_frames} frames but the temporal embedding was built for {F_}; "
            f"build the model with num_frames={num_frames} or allow interpolation (pta_interpolate=True)"
        )
    z = pos.t().unsqueeze(0)  # (1, d, F)
    z = F.interpolate(z.float(), size=num_frames, mode="linear", align_corners=True)  # (1, d, T)
    return z.squeeze(0).t().to(pos.dtype)  # (T, d)


class TemporalAttention(nn.Module):
    """Multi-head self-attention over the T axis of a ``(B, T, M, d)`` tensor, independently for each of M positions."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if heads < 1 or dim % heads:
            raise ValueError(f"temporal attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)  # fused q, k, v
        self.proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.qkv.weight)
        nn.init.zeros_(self.qkv.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        B, T, M, d = z.shape
        H = self.heads
        w = self.qkv.weight.view(3, d, d).transpose(1, 2)  # (3, d_in, d_out)
        b = self.qkv.bias.view(3, 1, d)
        # One batched GEMM writes q, k and v as separate contiguous planes, so each is a strided view below.
        qkv = torch.baddbmm(b, z.reshape(1, B * T * M, d).expand(3, -1, -1), w)  # (3, B*T*M, d)
        q, k, v = qkv.view(3, B, T, M * H, d // H).transpose(2, 3).unbind(0)  # 3 x (B, M*H, T, hd), no copy
        out = F.scaled_dot_product_attention(q, k, v)  # (B, M*H, T, hd)
        out = out.transpose(1, 2).reshape(B, T, M, d)  # (B, T, M, d); a view when SDPA returns (B, T, M*H, hd)
        return self.proj(out)


class ParallelTemporalAdapter(nn.Module):
    """OmniCLIP's PTA: ``down`` D->d, add ``temporal_embedding``, MHSA over T per token position, ``up`` d->D (zero).

    Called by a CLIP block as ``pta(h, layout)`` on ``h = ln_1(x)`` of shape ``(B*T, N, D)``; returns the residual.
    Parameters are kept in their own dtype: the input is cast in and the output cast back, so the adapter can stay in
    fp32 beside a bf16 backbone.
    """

    def __init__(
        self,
        width: int,
        bottleneck: int | None = None,
        heads: int | None = None,
        max_frames: int = 8,
        interpolate: bool = True,
    ) -> None:
        super().__init__()
        d = bottleneck or width // 4
        self.down = nn.Linear(width, d)
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        self.temporal_embedding = nn.Parameter(torch.randn(max_frames, d) * TEMPORAL_INIT_STD)  # (F, d), e_t
        self.interpolate = interpolate
        self.attn = TemporalAttention(d, heads or default_heads(d))
        self.up = nn.Linear(d, width)
        nn.init.zeros_(self.up.weight)  # zero residual at start; down/attn get gradients once `up` moves (LoRA's B)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor, layout: FrameLayout) -> torch.Tensor:
        BT, N, _ = h.shape
        T = layout.num_frames
        if T < 1 or BT % T:
            raise ValueError(f"{BT} frames in the batch are not a whole number of {T}-frame clips")
        z = self.down(h.to(self.down.weight.dtype))  # (B*T, N, d)
        d = z.shape[-1]
        e = frame_embedding(self.temporal_embedding, T, self.interpolate)  # (T, d)
        z = z.view(BT // T, T, N, d) + e.view(1, T, 1, d)  # (B, T, N, d)
        z = self.attn(z)  # (B, T, N, d)
        return self.up(z.view(BT, N, d)).to(h.dtype)  # (B*T, N, D)
