"""SelfPromptGenerator: region pooling, temporal mixing, neighbour prompts, zero gate, a looped reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from omniclip.clip import FrameLayout
from omniclip.model.prompts import SelfPromptGenerator, neighbour_prompts, pool_regions, region_pool_matrix
from omniclip.model.temporal import frame_embedding


def test_pool_regions_are_grid_means_in_row_major_order() -> None:
    x = torch.randn(3, 5, 4, 4)  # (B*T, d, h, w)
    r = pool_regions(x, (1, 2, 4))
    assert r.shape == (3, 21, 5)
    torch.testing.assert_close(r[:, 0], x.mean(dim=(2, 3)))
    torch.testing.assert_close(r[:, 1], x[:, :, :2, :2].mean(dim=(2, 3)))  # top-left
    torch.testing.assert_close(r[:, 2], x[:, :, :2, 2:].mean(dim=(2, 3)))  # top-right
    torch.testing.assert_close(r[:, 5 + 4 * 3 + 2], x[:, :, 3, 2])  # scale 4, row 3, column 2


def test_neighbour_prompts_repeat_edges() -> None:
    p = torch.arange(4.0).view(1, 4, 1, 1).expand(1, 4, 2, 1)  # frame index as value, R = 2
    n = neighbour_prompts(p, 1)
    assert n.shape == (1, 4, 6, 1)
    assert n[0, :, :, 0].tolist() == [[0, 0, 0, 0, 1, 1], [0, 0, 1, 1, 2, 2], [1, 1, 2, 2, 3, 3], [2, 2, 3, 3, 3, 3]]
    assert neighbour_prompts(p, 0) is p


def looped_spg(spg: SelfPromptGenerator, h: torch.Tensor, T: int, grid: tuple[int, int]) -> torch.Tensor:
    """Frame by frame, region by region, with explicit softmax: what the SPG is meant to compute."""
    BT, N, D = h.shape
    z = F.linear(h, spg.down.weight, spg.down.bias)
    d = z.shape[-1]
    patches = z[:, 1:].transpose(1, 2).reshape(BT, d, *grid)
    regions = torch.stack(
        [torch.cat([F.adaptive_avg_pool2d(f, s).flatten(1) for s in spg.scales], 1).t() for f in patches]
    )
    r = regions.view(BT // T, T, -1, d)
    e = frame_embedding(spg.temporal_embedding, T)
    p = r + spg.region_embedding
    mixed = spg.mix(p + e.view(1, T, 1, d))  # checked against a loop in test_model_temporal
    motion = torch.stack([r[:, t] - r[:, t - 1] if t else torch.zeros_like(r[:, 0]) for t in range(T)], 1)
    p = p + mixed + F.linear(motion, spg.motion.weight, spg.motion.bias)
    out = torch.empty(BT, N, D)
    H = spg.heads
    for b in range(BT // T):
        for t in range(T):
            frames = [min(max(t + o, 0), T - 1) for o in range(-spg.window, spg.window + 1)]
            keys = torch.cat([p[b, f] for f in frames])  # (K, d)
            q = spg.q(z[b * T + t]).view(N, H, -1).transpose(0, 1)
            k, v = spg.kv(keys).view(len(keys), 2, H, -1).permute(1, 2, 0, 3)
            att = torch.softmax(q @ k.transpose(-1, -2) / (d // H) ** 0.5, dim=-1)
            out[b * T + t] = spg.out((att @ v).transpose(0, 1).reshape(N, d)) * spg.gate
    return out


@pytest.mark.parametrize("window", [0, 1])
def test_spg_matches_looped_reference(window: int) -> None:
    T, grid = 3, (3, 2)
    spg = SelfPromptGenerator(32, dim=8, heads=2, scales=(1, 2), window=window, max_frames=4)
    torch.nn.init.normal_(spg.gate)
    h = torch.randn(2 * T, 1 + 6, 32)
    torch.testing.assert_close(spg(h, FrameLayout(T, grid)), looped_spg(spg, h, T, grid), atol=1e-5, rtol=1e-5)


def test_fresh_spg_adds_exactly_zero_and_gate_alone_gets_gradient() -> None:
    spg = SelfPromptGenerator(64, max_frames=4)
    h = torch.randn(8, 17, 64)
    out = spg(h, FrameLayout(4, (4, 4)))
    assert spg.num_regions == 21 and out.shape == h.shape
    assert torch.equal(out, torch.zeros_like(out))
    out.square().add(out).sum().backward()
    assert spg.gate.grad.abs().sum() > 0
    assert all(p.grad.abs().sum() == 0 for n, p in spg.named_parameters() if n != "gate")


@pytest.mark.parametrize(("mixing", "equivariant"), [("none", True), ("difference", False), ("attention", False)])
def test_temporal_mixing_makes_prompts_order_aware(mixing: str, equivariant: bool) -> None:
    """Without mixing, permuting frames permutes the output; with mixing, a frame's output depends on the others."""
    T = 4
    spg = SelfPromptGenerator(32, dim=8, mixing=mixing, max_frames=T)
    torch.nn.init.normal_(spg.gate)
    h = torch.randn(T, 5, 32)
    perm = torch.tensor([2, 0, 3, 1])
    out, out_perm = spg(h, FrameLayout(T, (2, 2))), spg(h[perm], FrameLayout(T, (2, 2)))
    assert torch.allclose(out[perm], out_perm, atol=1e-6) == equivariant
    assert hasattr(spg, "mix") == (mixing in ("attention", "both"))
    assert hasattr(spg, "motion") == (mixing in ("difference", "both"))


def test_spg_errors() -> None:
    spg = SelfPromptGenerator(32, dim=8)
    with pytest.raises(ValueError, match=r"17 tokens per frame but the layout grid \(3, 3\) implies 10"):
        spg(torch.randn(2, 17, 32), FrameLayout(1, (3, 3)))
    with pytest.raises(ValueError, match="unknown SPG mixing 'conv'"):
        SelfPromptGenerator(32, mixing="conv")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive grid sizes"):
        SelfPromptGenerator(32, scales=(0, 2))
    with pytest.raises(ValueError, match="window must be >= 0"):
        SelfPromptGenerator(32, window=-1)


def test_pool_matrix_is_a_buffer_outside_the_state_dict() -> None:
    """The built model keeps its pooling matrix as a non-persistent buffer: checkpoints keep their keys."""
    from omniclip.clip import build_clip
    from omniclip.model import build_model

    clip = build_clip("tiny")
    keys = {f"clip.{k}" for k in clip.state_dict()}
    model = build_model(clip, 4, variant="spg")
    spgs = [b.spg for b in model.clip.visual.transformer.resblocks if b.spg is not None]
    assert spgs and all(s.grid == (4, 4) and s.pool is not None and s.pool.shape == (21, 16) for s in spgs)
    added = set(model.state_dict()) - keys
    assert added and all(".spg." in k for k in added) and not any(k.endswith("pool") for k in added)
    torch.testing.assert_close(spgs[0].pool, region_pool_matrix((4, 4), (1, 2, 4)), rtol=0, atol=0)
    assert model.double().clip.visual.transformer.resblocks[-1].spg.pool.dtype == torch.float64  # follows .to()


def test_other_grids_pool_their_own_regions() -> None:
    """Frames of another size than the SPG was built for pool on their own grid (same numbers as an SPG without one)."""
    built = SelfPromptGenerator(32, dim=8, heads=2, max_frames=2, grid=(4, 4))
    torch.nn.init.normal_(built.gate)
    plain = SelfPromptGenerator(32, dim=8, heads=2, max_frames=2)
    plain.load_state_dict(built.state_dict())
    for grid in ((4, 4), (3, 5)):
        h = torch.randn(2 * 2, 1 + grid[0] * grid[1], 32)
        layout = FrameLayout(2, grid)
        torch.testing.assert_close(built(h, layout), plain(h, layout), rtol=0, atol=0)
        torch.testing.assert_close(built(h, layout), looped_spg(built, h, 2, grid), atol=1e-5, rtol=1e-5)


def test_model_modules_hold_no_mutable_state() -> None:
    """Caches live on the modules that use them, never in a module global that tracing could fill with fake tensors."""
    import importlib
    import pkgutil

    import omniclip.model

    found = []
    for info in pkgutil.iter_modules(omniclip.model.__path__):
        module = importlib.import_module(f"omniclip.model.{info.name}")
        found += [
            f"{info.name}.{k}"
            for k, v in vars(module).items()
            if not k.startswith("__") and isinstance(v, (dict, list, set, torch.Tensor))
        ]
    assert found == []


def test_export_tracing_leaves_the_model_real() -> None:
    """Tracing with torch.export makes fake tensors; none may stay in the model for later eager calls."""
    from omniclip.clip import build_clip
    from omniclip.model import build_model

    model = build_model(build_clip("tiny"), 4, variant="spg").eval()
    for p in model.trainable_parameters():
        torch.nn.init.normal_(p, std=0.05)
    video = torch.randn(1, 4, 3, 32, 32)

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, v: torch.Tensor) -> torch.Tensor:
            return self.model.encode_video(v)

    exported = torch.export.export(Encoder(), (video,))
    with torch.no_grad():
        eager = model.encode_video(video)
        torch.testing.assert_close(exported.module()(video), eager, rtol=1e-5, atol=1e-5)
    assert all(type(t) is torch.Tensor for t in model.buffers())
