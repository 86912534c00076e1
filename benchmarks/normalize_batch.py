"""Milliseconds to normalise a uint8 batch of clips: ``transforms.normalize`` against the plain formula it computes.

The plain formula, ``((x.float() / 255 - mean) / std)``, allocates a new float tensor per operation; ``normalize``
makes one float copy and works in place. Both give the same bits (asserted). The two take turns, one torch thread.

    taskset -c 0 .venv/bin/python benchmarks/normalize_batch.py
"""

from __future__ import annotations

import statistics
import time

import torch

from omniclip.data.transforms import CLIP_MEAN, CLIP_STD, normalize

SHAPES = [(4, 8, 3, 112, 112), (8, 8, 3, 64, 64), (8, 8, 3, 224, 224)]  # (B, T, 3, S, S)


def plain(video: torch.Tensor) -> torch.Tensor:
    m, s = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
    return (video.float() / 255.0 - m) / s


def main(turns: int = 30) -> None:
    torch.set_num_threads(1)
    print("| batch (B, T, 3, S, S) | plain formula, ms | normalize, ms | ratio |\n|---|---:|---:|---:|")
    for shape in SHAPES:
        video = torch.randint(0, 256, shape, dtype=torch.uint8)
        assert torch.equal(plain(video), normalize(video))
        times: dict[str, list[float]] = {"plain": [], "normalize": []}
        for k in range(turns):
            for name, fn in [("plain", plain), ("normalize", normalize)][:: 1 if k % 2 else -1]:
                start = time.perf_counter()
                fn(video)
                times[name].append(time.perf_counter() - start)
        a, b = (1e3 * statistics.median(times[n]) for n in ("plain", "normalize"))
        print(f"| {shape} | {a:.2f} | {b:.2f} | {b / a:.2f} |")


if __name__ == "__main__":
    main()
