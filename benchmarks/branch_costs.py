"""Time one CLIP block, one PTA and one SPG at a model's token shapes; SPG against its earlier formulation.

``spg_before`` is the SPG as first written (tokens transposed into a ``(B*T, d, h, w)`` map, three adaptive
pools, a concatenation, and ``out(o) * gate`` as a separate pass); ``spg`` is the current module (one product with
``region_pool_matrix`` on the token layout, the gate folded into ``out``'s weights). Both compute the same numbers
(checked here). Steps take turns in every repeat and are timed in process CPU time, which stays meaningful on a
CPU shared with other work when torch runs one thread. Results go to docs/benchmarks.md.

    .venv/bin/python benchmarks/branch_costs.py                      # tiny, small and ViT-B/16 shapes, 1 thread
    .venv/bin/python benchmarks/branch_costs.py --shapes ViT-B-16 --batch 2 --grad
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from omniclip.clip import FrameLayout, get_preset
from omniclip.clip.model import ResidualAttentionBlock
from omniclip.model import ParallelTemporalAdapter, SelfPromptGenerator
from omniclip.model.prompts import neighbour_prompts, pool_regions

BATCH = {"tiny": 8, "small": 4, "ViT-B-16": 1}  # clips of 8 frames


def spg_before(spg: SelfPromptGenerator, h: torch.Tensor, layout: FrameLayout) -> torch.Tensor:
    """The SPG forward as first written (the reference for ``spg``)."""
    BT, N, _ = h.shape
    T, (gh, gw) = layout.num_frames, layout.grid
    z = spg.down(h)  # (B*T, N, d)
    d, H = z.shape[-1], spg.heads
    patches = z[:, 1:].transpose(1, 2).reshape(BT, d, gh, gw)  # (B*T, d, h, w) copy
    r = pool_regions(patches, spg.scales).view(BT // T, T, -1, d)  # (B, T, R, d), strided
    p = r + spg.region_embedding
    p = p + spg.mix(p + spg.temporal_embedding[:T].view(1, T, 1, d))
    p = p + spg.motion(F.pad(r[:, 1:] - r[:, :-1], (0, 0, 0, 0, 1, 0)))
    p = neighbour_prompts(p, spg.window)
    K = p.shape[2]
    k, v = spg.kv(p).view(BT, K, 2, H, d // H).permute(2, 0, 3, 1, 4).unbind(0)
    q = spg.q(z).view(BT, N, H, d // H).transpose(1, 2)
    o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(BT, N, d)
    return spg.out(o) * spg.gate


def time_turns(fns: dict[str, object], repeats: int, inner: int, grad: bool, h: torch.Tensor) -> dict[str, float]:
    """Median process-CPU milliseconds per call (forward, or forward + backward with ``grad``)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats + 1):  # the first round warms up
        for name, fn in fns.items():
            c0 = time.process_time()
            for _ in range(inner):
                y = fn(h)  # type: ignore[operator]
                if grad:
                    y.sum().backward()
            times[name].append((time.process_time() - c0) / inner * 1e3)
    return {k: statistics.median(v[1:]) for k, v in times.items()}


def run(arch: str, batch: int, frames: int, repeats: int, grad: bool) -> None:
    v = get_preset(arch).vision
    g = v.image_size // v.patch_size
    N, D = 1 + g * g, v.width
    layout = FrameLayout(frames, (g, g))
    block = ResidualAttentionBlock(D, v.heads)
    pta = ParallelTemporalAdapter(D, max_frames=frames)
    spg = SelfPromptGenerator(D, max_frames=frames)
    torch.nn.init.normal_(spg.gate)
    torch.nn.init.normal_(pta.up.weight, std=0.02)
    h = torch.randn(batch * frames, N, D, requires_grad=grad)
    with torch.no_grad():
        err = (spg(h, layout) - spg_before(spg, h, layout)).abs().max().item()
    fns = {
        "block": lambda x: block(x, layout),
        "pta": lambda x: pta(x, layout),
        "spg_before": lambda x: spg_before(spg, x, layout),
        "spg": lambda x: spg(x, layout),
    }
    inner = max(1, 20 // batch)
    with torch.set_grad_enabled(grad):
        ms = time_turns(fns, repeats, inner, grad, h)
    cells = "  ".join(f"{k} {t:.3f} ms ({t / ms['block']:.0%} of a block)" for k, t in ms.items())
    print(
        f"{arch} B={batch} T={frames} N={N} D={D} {'fwd+bwd' if grad else 'fwd'}: {cells}; max |spg - before| {err:.1e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="+", default=list(BATCH), help="presets whose token shapes to use")
    parser.add_argument("--batch", type=int, default=None, help="clips (default: tiny 8, small 4, ViT-B-16 1)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--grad", action="store_true", help="time forward + backward")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for arch in args.shapes:
        run(arch, args.batch or BATCH.get(arch, 2), args.frames, args.repeats, args.grad)


if __name__ == "__main__":
    main()
