"""How sharp a trained model's attention over frames is: the logits and entropy of every PTA and SPG mixing.

For each ``TemporalAttention`` a forward hook recomputes the attention logits, q·k/sqrt(hd) after ``qk_norm`` where
the model has it, on test clips of the run's dataset, and prints their standard deviation, the largest one and the
mean entropy of the attention as a share of the uniform one (log T). ``--fresh`` measures the same model as built,
before training (docs/model.md, "Attention logits that grow"):

    .venv/bin/python benchmarks/attention_logits.py runs/seed-study/default/omniclip/seed_0 [--fresh]
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

import torch

from omniclip.clip import load_clip
from omniclip.config import config_from_dict
from omniclip.data.transforms import normalize
from omniclip.model import OmniCLIP
from omniclip.model.temporal import TemporalAttention
from omniclip.predict import load_model, load_video
from omniclip.train.checkpoint import build_run_model, find_checkpoint, read_meta

BLOCK_PREFIX = "clip.visual.transformer.resblocks."


def attention_stats(model: OmniCLIP, video: torch.Tensor) -> list[tuple[str, float, float, float]]:
    """``(name, logits' std, largest |logit|, entropy / log T)`` of every attention over frames, in module order."""
    stats: list[tuple[str, float, float, float]] = []

    def hook(name: str) -> Callable[[TemporalAttention, tuple[torch.Tensor], torch.Tensor], None]:
        def record(module: TemporalAttention, args: tuple[torch.Tensor], _out: torch.Tensor) -> None:
            q, k, _ = module.heads_qkv(args[0])  # (B*N, H, T, hd) each
            T, hd = q.shape[-2:]
            logits = q @ k.transpose(-1, -2) / math.sqrt(hd)  # (B*N, H, T, T), as SDPA scales them
            p = logits.softmax(dim=-1)
            entropy = -(p * p.clamp_min(1e-12).log()).sum(dim=-1).mean()
            stats.append((name, logits.std().item(), logits.abs().max().item(), entropy.item() / math.log(T)))

        return record

    handles = [
        m.register_forward_hook(hook(n.removeprefix(BLOCK_PREFIX)))
        for n, m in model.named_modules()
        if isinstance(m, TemporalAttention)
    ]
    try:
        with torch.no_grad():
            model.encode_video(video)
    finally:
        for h in handles:
            h.remove()
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a run folder or checkpoint of omniclip train")
    parser.add_argument("--clips", type=int, default=28, help="test clips, spread evenly over the test list")
    parser.add_argument("--fresh", action="store_true", help="the model as built from the run's config, untrained")
    args = parser.parse_args()
    if args.clips < 1:
        parser.error(f"--clips must be at least 1, got {args.clips}")
    classifier = load_model(args.run)
    meta = read_meta(find_checkpoint(args.run))
    cfg = config_from_dict(meta.config)
    root = Path(cfg.data.root)
    lines = [line.split()[0] for line in (root / cfg.data.test_lists[0]).read_text().splitlines() if line.strip()]
    files = lines[:: max(1, len(lines) // args.clips)][: args.clips]
    video = normalize(torch.cat([load_video(classifier, root / f)[:, 0] for f in files]))  # (B, T, 3, S, S)
    model = classifier.model
    if args.fresh:
        model = build_run_model(cfg, load_clip(meta.clip_source)).eval()
    print("| attention over frames | logits' std | largest logit | entropy / log T |")
    print("|---|---:|---:|---:|")
    for name, std, largest, entropy in attention_stats(model, video):
        print(f"| {name} | {std:.2f} | {largest:.1f} | {entropy:.2f} |")


if __name__ == "__main__":
    main()
