"""Time the PTA's attention over frames three ways (results in docs/model.md, "PTA layout").

- ``naive``: copy the D-wide tokens to ``(B*N, T, D)``, run the adapter there, copy back (the usual temporal adapter).
- ``copy_d``: down-project first, then copy the d-wide tokens to ``(B*N, T, d)`` and back.
- ``module``: the adapter itself (``omniclip.model.temporal``), ``copy_d``'s layout in its plain form: down-projection,
  attention over T on ``(B*N, T, d)`` sequences, up-projection.

    .venv/bin/python benchmarks/model_pta_layout.py                 # ViT-B/16 shapes, 2 clips x 8 frames, CPU
    .venv/bin/python benchmarks/model_pta_layout.py --device cuda --batch 32 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from omniclip.clip import FrameLayout
from omniclip.model.temporal import ParallelTemporalAdapter, frame_embedding


def naive(pta: ParallelTemporalAdapter, h: torch.Tensor, T: int) -> torch.Tensor:
    BT, N, D = h.shape
    B, H = BT // T, pta.attn.heads
    x = h.view(B, T, N, D).permute(0, 2, 1, 3).reshape(B * N, T, D)  # (B*N, T, D) copy
    z = pta.down(x) + frame_embedding(pta.temporal_embedding, T)  # (B*N, T, d)
    d = z.shape[-1]
    q, k, v = pta.attn.qkv(z).view(B * N, T, 3, H, d // H).permute(2, 0, 3, 1, 4)  # 3 x (B*N, H, T, hd)
    o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B * N, T, d)
    o = pta.up(pta.attn.proj(o))  # (B*N, T, D)
    return o.view(B, N, T, D).permute(0, 2, 1, 3).reshape(BT, N, D)  # (B*T, N, D) copy


def copy_d(pta: ParallelTemporalAdapter, h: torch.Tensor, T: int) -> torch.Tensor:
    BT, N, _ = h.shape
    B, H = BT // T, pta.attn.heads
    z = pta.down(h).view(B, T, N, -1) + frame_embedding(pta.temporal_embedding, T)[:, None]  # (B, T, N, d)
    d = z.shape[-1]
    z = z.transpose(1, 2).reshape(B * N, T, d)  # (B*N, T, d) copy
    q, k, v = pta.attn.qkv(z).view(B * N, T, 3, H, d // H).permute(2, 0, 3, 1, 4)
    o = F.scaled_dot_product_attention(q, k, v)  # (B*N, H, T, hd)
    o = o.view(B, N, H, T, d // H).permute(0, 3, 1, 2, 4).reshape(BT, N, d)  # (B*T, N, d) copy
    return pta.up(pta.attn.proj(o))


def module(pta: ParallelTemporalAdapter, h: torch.Tensor, T: int) -> torch.Tensor:
    return pta(h, FrameLayout(T, (14, 14)))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=2, help="clips")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    T, N, D = args.frames, 197, 768
    pta = ParallelTemporalAdapter(D, max_frames=T).to(device, dtype)
    torch.nn.init.normal_(pta.up.weight, std=0.02)
    h = torch.randn(args.batch * T, N, D, device=device, dtype=dtype)
    fns = {"naive": naive, "copy_d": copy_d, "module": module}
    ref = naive(pta, h, T)
    for name, fn in fns.items():
        err = (fn(pta, h, T) - ref).abs().max().item()
        assert err < 1e-2, f"{name} differs from naive by {err}"
    times: dict[tuple[str, bool], list[float]] = {(n, b): [] for n in fns for b in (False, True)}
    for _ in range(args.repeats):  # interleaved, so load from other processes hits every layout alike
        for name, fn in fns.items():
            for backward in (False, True):
                sync(device)
                start = time.perf_counter()
                out = fn(pta, h, T)
                if backward:
                    out.float().square().mean().backward()
                sync(device)
                times[name, backward].append((time.perf_counter() - start) * 1e3)
    print(f"PTA layouts, {args.batch} clips x {T} frames, N={N}, D={D}, {args.dtype} on {device} (ms, min / median)")
    for name in fns:
        fwd, both = times[name, False], times[name, True]
        print(
            f"  {name:8s} forward {min(fwd):7.2f} / {statistics.median(fwd):7.2f}"
            f"   forward+backward {min(both):7.2f} / {statistics.median(both):7.2f}"
        )


if __name__ == "__main__":
    main()
