"""ParallelTemporalAdapter: zero at init, equal to an explicit-softmax reference, stable keys, frame-count handling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from omniclip.clip import FrameLayout
from omniclip.model.temporal import ParallelTemporalAdapter, TemporalAttention, frame_embedding


def naive_pta(pta: ParallelTemporalAdapter, h: torch.Tensor, T: int) -> torch.Tensor:
    """The textbook form: tokens to (B*N, T, d), explicit softmax attention per head, back to (B*T, N, D)."""
    BT, N, D = h.shape
    B = BT // T
    z = F.linear(h, pta.down.weight, pta.down.bias).view(B, T, N, -1)
    d = z.shape[-1]
    z = z + frame_embedding(pta.temporal_embedding, T).view(1, T, 1, d)
    z = z.permute(0, 2, 1, 3).reshape(B * N, T, d)  # (B*N, T, d)
    H = pta.attn.heads
    qkv = F.linear(z, pta.attn.qkv.weight, pta.attn.qkv.bias).view(B * N, T, 3, H, d // H)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # (B*N, H, T, hd)
    if isinstance(pta.attn.q_norm, torch.nn.LayerNorm):  # each head's queries and keys normalised over hd
        q = F.layer_norm(q, (d // H,), pta.attn.q_norm.weight, pta.attn.q_norm.bias)
        k = F.layer_norm(k, (d // H,), pta.attn.k_norm.weight, pta.attn.k_norm.bias)
    att = torch.softmax(q @ k.transpose(-1, -2) / (d // H) ** 0.5, dim=-1)  # (B*N, H, T, T)
    out = (att @ v).transpose(1, 2).reshape(B * N, T, d)
    out = F.linear(F.linear(out, pta.attn.proj.weight, pta.attn.proj.bias), pta.up.weight, pta.up.bias)
    return out.view(B, N, T, D).permute(0, 2, 1, 3).reshape(BT, N, D)  # (B*T, N, D)


def test_fresh_adapter_adds_exactly_zero() -> None:
    pta = ParallelTemporalAdapter(64, max_frames=4)
    h = torch.randn(2 * 4, 17, 64)
    out = pta(h, FrameLayout(4, (4, 4)))
    assert out.shape == h.shape
    assert torch.equal(out, torch.zeros_like(out))
    assert pta.down.out_features == 16 and pta.attn.heads == 1  # d = D / 4, heads = max(1, d // 64)


@pytest.mark.parametrize("qk_norm", [False, True])
@pytest.mark.parametrize("heads", [1, 2, 4])
def test_adapter_matches_naive_reference(heads: int, qk_norm: bool) -> None:
    """The adapter computes the same function and gradients as the explicit-softmax reference."""
    T = 3
    pta = ParallelTemporalAdapter(32, bottleneck=16, heads=heads, max_frames=T, qk_norm=qk_norm)
    torch.nn.init.normal_(pta.up.weight, std=0.1)
    if qk_norm:  # weights and biases away from LayerNorm's ones and zeros, so that a mix-up shows
        for p in (*pta.attn.q_norm.parameters(), *pta.attn.k_norm.parameters()):
            torch.nn.init.normal_(p, mean=1.0, std=0.5)
    h = torch.randn(2 * T, 5, 32, requires_grad=True)
    out = pta(h, FrameLayout(T, (2, 2)))
    ref = naive_pta(pta, h, T)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    w = torch.randn_like(out)
    grads = torch.autograd.grad((out * w).sum(), [h, *pta.parameters()])
    ref_grads = torch.autograd.grad((ref * w).sum(), [h, *pta.parameters()])
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5)


def test_state_dict_keys_and_shapes_are_stable() -> None:
    """Checkpoints written by earlier versions load: the adapter's keys and shapes are fixed (D = 64, d = 16, F = 4)."""
    pta = ParallelTemporalAdapter(64, max_frames=4)
    assert {k: tuple(v.shape) for k, v in pta.state_dict().items()} == {
        "down.weight": (16, 64),
        "down.bias": (16,),
        "temporal_embedding": (4, 16),
        "attn.qkv.weight": (48, 16),
        "attn.qkv.bias": (48,),
        "attn.proj.weight": (16, 16),
        "attn.proj.bias": (16,),
        "up.weight": (64, 16),
        "up.bias": (64,),
    }


def test_qk_norm_adds_one_layernorm_for_queries_and_one_for_keys() -> None:
    pta = ParallelTemporalAdapter(64, heads=2, max_frames=4, qk_norm=True)
    extra = {k: tuple(v.shape) for k, v in pta.state_dict().items() if "_norm." in k}
    assert extra == {f"attn.{n}_norm.{p}": (8,) for n in "qk" for p in ("weight", "bias")}  # hd = 16 / 2


@pytest.mark.parametrize("qk_norm", [False, True])
def test_qk_norm_bounds_the_attention_logits_as_queries_and_keys_grow(qk_norm: bool) -> None:
    """Training that scales q and k up sharpens attention without qk_norm; with it, the function stays the same."""
    T = 4
    attn = TemporalAttention(16, 2, qk_norm=qk_norm)
    z = torch.randn(2, T, 5, 16)
    before = attn(z)
    with torch.no_grad():
        attn.qkv.weight[:32] *= 30  # the q and k rows
    after = attn(z)
    if qk_norm:
        torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
    else:
        assert (after - before).abs().max() > 0.1


def test_attention_is_over_frames_only() -> None:
    """Changing one token position in one frame changes only that position's outputs (in every frame)."""
    attn = TemporalAttention(8, 2)
    z = torch.randn(1, 4, 6, 8)
    z2 = z.clone()
    z2[0, 1, 3] += 1.0
    diff = (attn(z2) - attn(z)).abs().sum(dim=-1)[0]  # (T, M)
    assert (diff[:, 3] > 0).all()
    assert torch.equal(diff[:, [0, 1, 2, 4, 5]], torch.zeros(4, 5))


def test_frame_embedding_interpolates_and_refuses_when_disabled() -> None:
    pos = torch.arange(8.0).view(4, 2)  # rows 0..3
    assert frame_embedding(pos, 4) is pos
    up = frame_embedding(pos, 7)  # align_corners: ends kept, midpoints between rows
    torch.testing.assert_close(up[0], pos[0])
    torch.testing.assert_close(up[-1], pos[-1])
    torch.testing.assert_close(up[1], (pos[0] + pos[1]) / 2)
    torch.testing.assert_close(frame_embedding(pos, 1), pos[:1])
    with pytest.raises(ValueError, match=r"clip has 6 frames but the temporal embedding was built for 4.*num_frames=6"):
        frame_embedding(pos, 6, interpolate=False)


def test_other_frame_counts_and_bad_batches() -> None:
    pta = ParallelTemporalAdapter(32, max_frames=8)
    torch.nn.init.normal_(pta.up.weight)
    for T in (1, 3, 16):
        assert pta(torch.randn(2 * T, 5, 32), FrameLayout(T, (2, 2))).shape == (2 * T, 5, 32)
    with pytest.raises(ValueError, match="not a whole number of 3-frame clips"):
        pta(torch.randn(7, 5, 32), FrameLayout(3, (2, 2)))
    strict = ParallelTemporalAdapter(32, max_frames=8, interpolate=False)
    with pytest.raises(ValueError, match="pta_interpolate"):
        strict(torch.randn(4, 5, 32), FrameLayout(4, (2, 2)))


def test_fp32_adapter_beside_bf16_tokens() -> None:
    pta = ParallelTemporalAdapter(32, max_frames=2)
    torch.nn.init.normal_(pta.up.weight)
    h = torch.randn(4, 5, 32)
    out = pta(h.bfloat16(), FrameLayout(2, (2, 2)))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), pta(h, FrameLayout(2, (2, 2))), atol=0.1, rtol=0.05)


def test_bad_heads_raise() -> None:
    with pytest.raises(ValueError, match="not divisible by 3 heads"):
        ParallelTemporalAdapter(64, bottleneck=16, heads=3)
