"""The SPG's fast formulation: region pooling as one matrix product, the gate folded into the output projection, and
gradients that match finite differences."""

from __future__ import annotations

import pytest
import torch

from omniclip.clip import FrameLayout
from omniclip.model import SelfPromptGenerator
from omniclip.model.prompts import pool_regions, region_pool_matrix


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


def test_folded_gate_adds_exactly_zero_at_initialisation_whatever_the_output_projection() -> None:
    """The zero gate scales the output projection's weight and bias, so a non-zero bias adds nothing either."""
    spg = SelfPromptGenerator(32, max_frames=4)
    torch.nn.init.normal_(spg.out.weight)
    torch.nn.init.normal_(spg.out.bias)
    out = spg(torch.randn(8, 1 + 16, 32), FrameLayout(4, (4, 4)))
    assert torch.count_nonzero(out) == 0


def test_spg_gradients_match_finite_differences() -> None:
    """Backward through the pooling matrix, the neighbour prompts and the folded gate, against float64 finite
    differences, for the input and every parameter (an uneven 2 x 3 grid, a window of one frame)."""
    spg = SelfPromptGenerator(8, dim=4, heads=2, scales=(1, 2), window=1, max_frames=3).double()
    torch.nn.init.normal_(spg.gate)
    names = [n for n, _ in spg.named_parameters()]
    layout = FrameLayout(3, (2, 3))

    def forward(h: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(spg, dict(zip(names, params, strict=True)), (h, layout))

    h = torch.randn(3, 1 + 6, 8, dtype=torch.float64, requires_grad=True)
    params = [p.detach().clone().requires_grad_() for p in spg.parameters()]
    assert torch.autograd.gradcheck(forward, (h, *params), eps=1e-6, atol=1e-6)
