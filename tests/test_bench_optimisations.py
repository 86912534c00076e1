"""The speed-ups kept after measuring (docs/benchmarks.md) compute exactly what the slower formulations computed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from omniclip.clip import FrameLayout
from omniclip.model import SelfPromptGenerator
from omniclip.model.prompts import neighbour_prompts, pool_regions, region_pool_matrix


@pytest.mark.parametrize(
    ("grid", "scales"), [((4, 4), (1, 2, 4)), ((14, 14), (1, 2, 4)), ((7, 5), (1, 2, 3, 4)), ((3, 3), (2, 4))]
)
def test_region_pool_matrix_equals_adaptive_pooling(grid: tuple[int, int], scales: tuple[int, ...]) -> None:
    """Uneven grids (14 / 4, 7 / 2, 3 / 4) have overlapping or repeated cells; the matrix must match them too."""
    gh, gw = grid
    patches = torch.randn(6, 5, gh, gw, dtype=torch.float64)  # (B*T, d, h, w)
    want = pool_regions(patches, scales)  # (B*T, R, d)
    tokens = patches.flatten(2).transpose(1, 2)  # (B*T, h*w, d), row-major patches as in the token layout
    P = region_pool_matrix(grid, scales, dtype=torch.float64)
    assert P.shape == (sum(s * s for s in scales), gh * gw)
    torch.testing.assert_close(P @ tokens, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(P.sum(dim=1), torch.ones(P.shape[0], dtype=torch.float64))
    assert region_pool_matrix(grid, scales, dtype=torch.float64) is P  # cached per grid, scales, device, dtype


def spg_reference(spg: SelfPromptGenerator, h: torch.Tensor, layout: FrameLayout) -> torch.Tensor:
    """The SPG as first written: tokens transposed into a map, adaptive pools, ``out(o) * gate`` as its own pass."""
    BT, N, _ = h.shape
    T, (gh, gw) = layout.num_frames, layout.grid
    z = spg.down(h)
    d, H = z.shape[-1], spg.heads
    r = pool_regions(z[:, 1:].transpose(1, 2).reshape(BT, d, gh, gw), spg.scales).view(BT // T, T, -1, d)
    p = r + spg.region_embedding
    p = p + spg.mix(p + spg.temporal_embedding[:T].view(1, T, 1, d))
    p = neighbour_prompts(p + spg.motion(F.pad(r[:, 1:] - r[:, :-1], (0, 0, 0, 0, 1, 0))), spg.window)
    K = p.shape[2]
    k, v = spg.kv(p).view(BT, K, 2, H, d // H).permute(2, 0, 3, 1, 4).unbind(0)
    q = spg.q(z).view(BT, N, H, d // H).transpose(1, 2)
    o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(BT, N, d)
    return spg.out(o) * spg.gate


@pytest.mark.parametrize("window", [0, 1])
def test_spg_forward_and_gradients_match_the_reference(window: int) -> None:
    spg = SelfPromptGenerator(32, heads=2, window=window, max_frames=4).double()
    torch.nn.init.normal_(spg.gate)
    layout = FrameLayout(4, (3, 5))
    h = torch.randn(2 * 4, 1 + 15, 32, dtype=torch.float64, requires_grad=True)
    out, ref = spg(h, layout), spg_reference(spg, h, layout)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, [h, *spg.parameters()], g)
    ref_grads = torch.autograd.grad(ref, [h, *spg.parameters()], g)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_folded_gate_still_adds_exactly_zero_at_initialisation() -> None:
    spg = SelfPromptGenerator(32, max_frames=4)
    torch.nn.init.normal_(spg.out.weight)
    torch.nn.init.normal_(spg.out.bias)
    out = spg(torch.randn(8, 1 + 16, 32), FrameLayout(4, (4, 4)))
    assert torch.count_nonzero(out) == 0
