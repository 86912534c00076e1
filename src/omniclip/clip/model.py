"""CLIP image and text towers with OpenAI's parameter names, attention through SDPA.

Follows OpenAI CLIP (Radford et al. 2021, ``clip/model.py``) and open_clip's ``transformer.py``; tokens are kept
batch-first ``(B, N, D)``. Residual blocks accept injected branches (``pta``, ``spg``) so that OmniCLIP adds
modules without moving a pretrained key: a branch is called as ``pta(h, layout)`` or ``spg(h, layout, queries=...)``
on the block's normalised input ``h`` and returns a residual of the same shape (or of the first ``queries`` tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from omniclip.clip.presets import Activation, CLIPConfig, TextConfig, VisionConfig, get_preset

if TYPE_CHECKING:
    from omniclip.clip.weights import LoadReport


@dataclass(frozen=True)
class FrameLayout:
    """How the rows of a ``(B*T, N, D)`` token tensor are arranged: T frames per clip on an h x w patch grid."""

    num_frames: int = 1  # T
    grid: tuple[int, int] = (0, 0)  # (h, w); (0, 0) for text


class QuickGELU(nn.Module):
    """OpenAI's sigmoid approximation of GELU; the released OpenAI weights need it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def make_activation(name: Activation) -> nn.Module:
    if name == "quick_gelu":
        return QuickGELU()
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"unknown activation {name!r}; expected 'quick_gelu' or 'gelu'")


class Attention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameter names and a fused QKV projection."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, causal: bool = False, queries: int | None = None) -> torch.Tensor:
        """``(B, N, D)`` -> ``(B, N, D)``, or with ``queries`` the first ``queries`` tokens only ``(B, queries, D)``."""
        B, N, D = x.shape
        H, hd = self.heads, D // self.heads
        if queries is None:
            qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, N, 3D)
            q, k, v = qkv.view(B, N, 3, H, hd).permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, N, hd)
        else:
            if causal:
                raise ValueError("causal attention computes every token; it takes no queries")
            w, b = self.in_proj_weight, self.in_proj_bias
            q = F.linear(x[:, :queries], w[:D], b[:D]).view(B, queries, H, hd).transpose(1, 2)  # (B, H, Q, hd)
            k, v = F.linear(x, w[D:], b[D:]).view(B, N, 2, H, hd).permute(2, 0, 3, 1, 4).unbind(0)  # 2 x (B, H, N, hd)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # (B, H, Q, hd)
        return self.out_proj(out.transpose(1, 2).reshape(B, q.shape[2], D))


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int, activation: Activation) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.gelu = make_activation(activation)
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block; branches assigned to ``pta``/``spg`` leave pretrained keys where they are.

    With ``pta_mode="parallel"`` (OmniCLIP): ``x = x + attn(h) + pta(h) + spg(h)`` with ``h = ln_1(x)``.
    With ``pta_mode="serial"`` (AIM-like ablation): ``x = x + pta(ln_1(x))`` first, then ``x = x + attn(h) + spg(h)``.
    Then ``x = x + mlp(ln_2(x))``. Without branches (as built) the block is exactly CLIP's;
    ``omniclip.model.build_model`` assigns them.
    """

    pta: nn.Module | None
    spg: nn.Module | None
    pta_mode: Literal["parallel", "serial"]

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, activation: Activation = "quick_gelu") -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = MLP(width, round(width * mlp_ratio), activation)
        self.pta = None
        self.spg = None
        self.pta_mode = "parallel"
        self.drop_path = 0.0  # in training, the chance that a clip skips this block's branches (``_drop``)

    def forward(
        self, x: torch.Tensor, layout: FrameLayout | None = None, causal: bool = False, queries: int | None = None
    ) -> torch.Tensor:
        """``(B, N, D)`` -> ``(B, N, D)``, or with ``queries`` the first ``queries`` tokens only, ``(B, queries, D)``:
        every token still serves as a key, but the others' outputs are not computed (the image tower's last block,
        whose class token alone is read)."""
        layout = layout or FrameLayout()
        if self.pta is not None and self.pta_mode == "serial":
            x = x + self.pta(self.ln_1(x), layout)
        h = self.ln_1(x)
        out = self.attn(h, causal=causal, queries=queries)
        if queries is not None:
            x, hq = x[:, :queries], h[:, :queries]
        else:
            hq = h
        if self.pta is not None and self.pta_mode == "parallel":
            out = out + self.pta(hq, layout)  # token by token over frames: the queries' rows are all it needs
        if self.spg is not None:
            out = out + self.spg(h, layout, queries=queries)
        x = x + self._drop(out, layout)
        return x + self._drop(self.mlp(self.ln_2(x)), layout)

    def _drop(self, branch: torch.Tensor, layout: FrameLayout) -> torch.Tensor:
        """Stochastic depth in training: with chance ``drop_path`` a clip skips ``branch`` in all of its frames, and
        the clips that keep it scale it by 1 / (1 - drop_path), so that its expectation is unchanged."""
        if not (self.training and self.drop_path):
            return branch
        keep = 1.0 - self.drop_path
        clips = branch.new_empty(branch.shape[0] // layout.num_frames).bernoulli_(keep).div_(keep)
        return branch * clips.repeat_interleave(layout.num_frames).view(-1, *[1] * (branch.dim() - 1))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float, activation: Activation) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(
            ResidualAttentionBlock(width, heads, mlp_ratio, activation) for _ in range(layers)
        )
        self.grad_checkpointing = False  # recompute each block in backward to save activation memory

    def forward(
        self, x: torch.Tensor, layout: FrameLayout | None = None, causal: bool = False, queries: int | None = None
    ) -> torch.Tensor:
        """Every block on every token, except that with ``queries`` the last block computes only the first
        ``queries`` tokens (see ``ResidualAttentionBlock.forward``)."""
        last = len(self.resblocks) - 1
        for i, block in enumerate(self.resblocks):
            q = queries if i == last else None
            if self.grad_checkpointing and torch.is_grad_enabled() and (x.requires_grad or _has_trainable(block)):
                x = checkpoint(block, x, layout, causal, q, use_reentrant=False)
            else:
                x = block(x, layout, causal, q)
        return x


def _has_trainable(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def interpolate_pos_embed(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Resize a ViT positional embedding ``(1 + g*g, D)`` to ``(1 + h*w, D)`` with bicubic interpolation."""
    n_old = pos.shape[0] - 1
    g = math.isqrt(n_old)
    assert g * g == n_old, f"positional embedding of {pos.shape[0]} tokens is not 1 + a square grid"
    if (g, g) == tuple(grid):
        return pos
    cls_pos, patch_pos = pos[:1], pos[1:]
    patch_pos = patch_pos.reshape(1, g, g, -1).permute(0, 3, 1, 2).float()  # (1, D, g, g)
    patch_pos = F.interpolate(patch_pos, size=grid, mode="bicubic", align_corners=False)  # (1, D, h, w)
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1).to(pos.dtype)  # (h*w, D)
    return torch.cat([cls_pos, patch_pos], dim=0)


class VisionTransformer(nn.Module):
    """CLIP's image tower: patchify, class token, positional embedding, blocks, ``ln_post`` and ``proj``."""

    def __init__(self, cfg: VisionConfig, embed_dim: int, activation: Activation) -> None:
        super().__init__()
        self.cfg = cfg
        D = cfg.width
        scale = D**-0.5
        self.conv1 = nn.Conv2d(3, D, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(D))
        self.positional_embedding = nn.Parameter(scale * torch.randn(cfg.grid**2 + 1, D))
        self.ln_pre = nn.LayerNorm(D)
        self.transformer = Transformer(D, cfg.layers, cfg.heads, cfg.mlp_ratio, activation)
        self.ln_post = nn.LayerNorm(D)
        self.proj = nn.Parameter(scale * torch.randn(D, embed_dim))

    def tokens(self, pixels: torch.Tensor, num_frames: int = 1, queries: int | None = None) -> torch.Tensor:
        """Run the tower up to the last block; returns ``(B*T, N, D)`` tokens before ``ln_post``, or the first
        ``queries`` of them (the last block computes no others)."""
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"expected pixels of shape (B, 3, H, W), got {tuple(pixels.shape)}")
        p = self.cfg.patch_size
        if pixels.shape[-2] < p or pixels.shape[-1] < p:
            raise ValueError(f"image {tuple(pixels.shape[-2:])} is smaller than one {p}x{p} patch")
        x = self.conv1(pixels.to(self.conv1.weight.dtype))  # (B*T, D, h, w)
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)  # (B*T, h*w, D)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # (B*T, 1, D)
        x = torch.cat([cls, x], dim=1)  # (B*T, N, D)
        x = x + interpolate_pos_embed(self.positional_embedding, grid).to(x.dtype)
        x = self.ln_pre(x)
        return self.transformer(x, FrameLayout(num_frames, grid), queries=queries)

    def forward(self, pixels: torch.Tensor, num_frames: int = 1) -> torch.Tensor:
        x = self.tokens(pixels, num_frames, queries=1)  # the class token is all that is read
        return self.ln_post(x[:, 0]) @ self.proj  # (B*T, E)


class CLIP(nn.Module):
    """OpenAI CLIP with its state-dict layout: ``visual.*`` plus the text tower at the top level."""

    load_report: LoadReport  # set by ``load_clip``

    def __init__(self, cfg: CLIPConfig) -> None:
        super().__init__()
        self.cfg = cfg
        t: TextConfig = cfg.text
        self.visual = VisionTransformer(cfg.vision, cfg.embed_dim, cfg.activation)
        self.transformer = Transformer(t.width, t.layers, t.heads, t.mlp_ratio, cfg.activation)
        self.token_embedding = nn.Embedding(t.vocab_size, t.width)
        self.positional_embedding = nn.Parameter(torch.empty(t.context_length, t.width))
        self.ln_final = nn.LayerNorm(t.width)
        self.text_projection = nn.Parameter(torch.empty(t.width, cfg.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self._init_text()

    def _init_text(self) -> None:
        """OpenAI's initialisation of the text tower (``CLIP.initialize_parameters``)."""
        t = self.cfg.text
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        proj_std = (t.width**-0.5) * ((2 * t.layers) ** -0.5)
        for block in cast(list[ResidualAttentionBlock], self.transformer.resblocks):
            nn.init.normal_(block.attn.in_proj_weight, std=t.width**-0.5)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * t.width) ** -0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=t.width**-0.5)

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` CLIP-normalised pixels -> ``(B, E)`` projected, not normalised embeddings."""
        return self.visual(pixels)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` token ids (end token = highest id, as OpenAI's tokenizer makes them) -> ``(B, E)``."""
        if tokens.ndim != 2:
            raise ValueError(f"expected tokens of shape (B, context_length), got {tuple(tokens.shape)}")
        L = tokens.shape[1]
        if L > self.positional_embedding.shape[0]:
            raise ValueError(f"{L} tokens exceed the context length {self.positional_embedding.shape[0]}")
        x = self.token_embedding(tokens) + self.positional_embedding[:L]  # (B, L, W)
        return self.text_features(x, tokens.argmax(dim=-1))

    def text_features(self, x: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        """Text tower from embedded tokens ``(B, L, W)``; pools the token at index ``eot`` per row.

        The positions after the last end token are dropped first: under the causal mask no position up to an end
        token attends to them, so the features are the same, at a fraction of the cost (a prompt fills about 10
        of the 77 positions).
        """
        x = x[:, : int(eot.max()) + 1]
        x = self.transformer(x, causal=True)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0], device=x.device), eot] @ self.text_projection  # (B, E)

    def forward(self, pixels: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(logits_per_image, logits_per_text)`` as OpenAI's ``CLIP.forward``."""
        img = F.normalize(self.encode_image(pixels), dim=-1)
        txt = F.normalize(self.encode_text(tokens), dim=-1)
        logits = self.logit_scale.exp() * img @ txt.t()
        return logits, logits.t()


def build_clip(cfg: CLIPConfig | str) -> CLIP:
    """A randomly initialised CLIP from a config or a preset name (``"ViT-B-16"``, ``"tiny"``)."""
    return CLIP(get_preset(cfg) if isinstance(cfg, str) else cfg)
