"""Ablate OmniCLIP's design switches on a task only frame order solves (results in docs/model.md, "Toy ablation").

A bright square moves right (class 0) or the same frames play reversed (class 1) on a random tiny CLIP; only the
branches train, against fixed class embeddings. Frame averaging is provably at 50% here. Test accuracy on 64 held-out
clips after each checkpoint of steps, for several seeds:

    .venv/bin/python benchmarks/model_toy_ablation.py --seeds 0 1 2 --steps 40 80
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from omniclip.clip import build_clip
from omniclip.model import build_model

T, SIZE, BLOB = 4, 32, 8

CONFIGS: dict[str, dict[str, object]] = {
    "omniclip": {"variant": "omniclip"},
    "pta": {"variant": "pta"},
    "pta, temporal init 0.02": {"variant": "pta", "temporal_init_std": 0.02},
    "serial": {"variant": "serial"},
    "spg (mixing both)": {"variant": "spg"},
    "spg, mixing difference": {"variant": "spg", "spg_mixing": "difference"},
    "spg, mixing attention": {"variant": "spg", "spg_mixing": "attention"},
    "spg, mixing none": {"variant": "spg", "spg_mixing": "none"},
    "spg, window 1": {"variant": "spg", "spg_window": 1},
    "spg, scales (1,)": {"variant": "spg", "spg_scales": (1,)},
}


def moving_blobs(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    video = torch.full((n, T, 3, SIZE, SIZE), -1.0)
    for i in range(n):
        y = int(torch.randint(0, SIZE - BLOB + 1, (1,), generator=gen))
        step = int(torch.randint(3, 7, (1,), generator=gen))
        x0 = int(torch.randint(0, SIZE - BLOB - step * (T - 1) + 1, (1,), generator=gen))
        for t in range(T):
            video[i, t, :, y : y + BLOB, x0 + step * t : x0 + step * t + BLOB] = 1.5
    labels = torch.cat([torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long)])
    return torch.cat([video, video.flip(1)]), labels


def run(options: dict[str, object], seed: int, checkpoints: list[int]) -> list[float]:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    train_video, train_labels = moving_blobs(32, gen)
    test_video, test_labels = moving_blobs(32, gen)
    model = build_model(build_clip("tiny"), T, **options)  # type: ignore[arg-type]
    classes = F.normalize(torch.randn(2, 32), dim=-1)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=3e-3, weight_decay=0.0)
    accuracies = []
    for step in range(1, max(checkpoints) + 1):
        idx = torch.randint(0, len(train_video), (16,), generator=gen)
        loss = F.cross_entropy(model(train_video[idx], classes), train_labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in checkpoints:
            with torch.no_grad():
                accuracies.append((model(test_video, classes).argmax(1) == test_labels).float().mean().item())
    return accuracies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, nargs="+", default=[40, 80], help="report accuracy after these steps")
    parser.add_argument("--only", nargs="*", default=None, help="config names to run (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"| config | {' | '.join(f'acc @ {s} steps' for s in args.steps)} | s/run |")
    print("|---|" + "---|" * (len(args.steps) + 1))
    for name, options in CONFIGS.items():
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        results = [run(options, seed, args.steps) for seed in args.seeds]
        per_step = [" ".join(f"{r[i]:.2f}" for r in results) for i in range(len(args.steps))]
        elapsed = (time.perf_counter() - start) / len(args.seeds)
        print(f"| {name} | {' | '.join(per_step)} | {elapsed:.1f} |", flush=True)


if __name__ == "__main__":
    main()
