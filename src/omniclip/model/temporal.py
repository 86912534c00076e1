"""Parallel Temporal Adapter: bottleneck self-attention across frames at each token position.

Follows OmniCLIP (arXiv 2408.06158) as specified in METHOD.md section 2: ``PTA(z) = up(MHSA_T(down(z) + e_t))`` with
the tokens of one spatial position attending to each other over the T frames, ``up`` zero-initialised so that a fresh
adapter adds exactly zero. The same ``TemporalAttention`` mixes the self-prompts of ``prompts.py`` over time.

Shapes use METHOD.md's letters: B clips, T frames, N tokens per frame, D the block's width, d the bottleneck width,
H heads of hd = d / H channels. The block hands the adapter ``(B*T, N, D)`` rows (frame-major); the attention over
frames runs on ``(B*N, T, d)`` sequences, one per token position, as nanoGPT's ``CausalSelfAttention`` runs on
``(B, T, C)``. The tokens are laid out again only after ``down``, in the bottleneck width d (docs/model.md's
"Layout" paragraph times it against the earlier copy-free version).
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
    """Multi-head self-attention over the T axis of a ``(B, T, N, d)`` tensor, separately at each of the N positions.

    The positions are the PTA's tokens or the SPG's regions. ``qkv`` holds q, k and v stacked (d rows each). With
    ``qk_norm`` each head's queries and keys pass a LayerNorm (``q_norm``, ``k_norm``, shared by the heads, as timm's
    ``Attention(qk_norm=True)`` and ViT-22B), which bounds the attention logits as training aligns q with k.
    """

    def __init__(self, dim: int, heads: int, qk_norm: bool = False) -> None:
        super().__init__()
        if heads < 1 or dim % heads:
            raise ValueError(f"temporal attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)  # fused q, k, v
        self.proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.qkv.weight)
        nn.init.zeros_(self.qkv.bias)
        self.q_norm = nn.LayerNorm(dim // heads) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(dim // heads) if qk_norm else nn.Identity()

    def heads_qkv(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-head queries and keys (after ``qk_norm``) and values ``3 x (B*N, H, T, hd)`` of ``(B, T, N, d)``."""
        B, T, N, d = z.shape
        H = self.heads
        x = z.transpose(1, 2).reshape(B * N, T, d)  # (B*N, T, d): the T frames of one position are a sequence
        qkv = self.qkv(x).split(d, dim=2)  # 3 x (B*N, T, d)
        q, k, v = (t.view(B * N, T, H, d // H).transpose(1, 2) for t in qkv)  # 3 x (B*N, H, T, hd)
        return self.q_norm(q), self.k_norm(k), v

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        B, T, N, d = z.shape
        y = F.scaled_dot_product_attention(*self.heads_qkv(z))  # (B*N, H, T, hd)
        y = y.transpose(1, 2).reshape(B * N, T, d)  # (B*N, T, d): the heads side by side again
        y = self.proj(y)  # (B*N, T, d)
        return y.view(B, N, T, d).transpose(1, 2)  # (B, T, N, d), a view


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
        temporal_init_std: float = TEMPORAL_INIT_STD,
        qk_norm: bool = False,
    ) -> None:
        super().__init__()
        d = bottleneck or width // 4
        self.down = nn.Linear(width, d)
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        self.temporal_embedding = nn.Parameter(torch.randn(max_frames, d) * temporal_init_std)  # (F, d), e_t
        self.interpolate = interpolate
        self.attn = TemporalAttention(d, heads or default_heads(d), qk_norm)
        self.up = nn.Linear(d, width)
        nn.init.zeros_(self.up.weight)  # zero residual at start; down/attn get gradients once `up` moves (LoRA's B)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor, layout: FrameLayout) -> torch.Tensor:
        BT, N, _ = h.shape
        T = layout.num_frames
        if T < 1 or BT % T:
            raise ValueError(f"{BT} frames in the batch are not a whole number of {T}-frame clips")
        B = BT // T
        z = self.down(h.to(self.down.weight.dtype))  # (B*T, N, d)
        d = z.shape[-1]
        e = frame_embedding(self.temporal_embedding, T, self.interpolate)  # (T, d), e_t
        z = z.view(B, T, N, d) + e.view(1, T, 1, d)  # (B, T, N, d)
        z = self.attn(z)  # (B, T, N, d), each of the N positions attended over its T frames
        z = z.reshape(B * T, N, d)  # (B*T, N, d)
        return self.up(z).to(h.dtype)  # (B*T, N, D)
