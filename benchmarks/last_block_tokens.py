"""Milliseconds per clip batch with the image tower's last block on the class token alone, against every token.

``VisionTransformer.forward`` asks the last block for the class token only (``tokens(..., queries=1)``), the one
token ``ln_post`` reads; ``tokens(...)`` without ``queries`` computes the last block on every token, as before. The
two take turns on the same model and input, random weights with non-zero adapters, one torch thread; the embeddings
agree (asserted). Modes: inference (no gradients) and a training step (forward and backward into the adapters).

    taskset -c 0 .venv/bin/python benchmarks/last_block_tokens.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from omniclip.clip import build_clip
from omniclip.model import OmniCLIP, build_model

# (name, CLIP preset, image size, clips, frames, turns): the `hard` budget's batch and one ViT-B/16 clip.
CASES = [("omniclip-tiny, hard budget", "omniclip-tiny", 64, 8, 8, 20), ("ViT-B/16", "ViT-B-16", 224, 1, 8, 4)]


def embed(model: OmniCLIP, video: torch.Tensor, queries: int | None) -> torch.Tensor:
    visual = model.clip.visual
    B, T = video.shape[:2]
    cls = visual.tokens(video.flatten(0, 1), num_frames=T, queries=queries)[:, 0]
    return (visual.ln_post(cls) @ visual.proj).view(B, T, -1).mean(1)


def step(model: OmniCLIP, video: torch.Tensor, queries: int | None, train: bool) -> Callable[[], object]:
    def run() -> object:
        if not train:
            with torch.no_grad():
                return embed(model, video, queries)
        model.zero_grad(set_to_none=True)
        embed(model, video, queries).square().sum().backward()
        return None

    return run


def main() -> None:
    torch.set_num_threads(1)
    print("| model | mode | every token, ms | class token, ms | ratio |\n|---|---|---:|---:|---:|")
    for name, preset, size, clips, frames, turns in CASES:
        model = build_model(build_clip(preset), frames)
        for p_name, p in model.named_parameters():
            if ".pta.up." in p_name or p_name.endswith(".spg.gate"):
                torch.nn.init.normal_(p, std=0.02)
        video = torch.randn(clips, frames, 3, size, size)
        with torch.no_grad():
            torch.testing.assert_close(embed(model, video, 1), embed(model, video, None), atol=1e-4, rtol=1e-4)
        for train in (False, True):
            times: dict[str, list[float]] = {"every": [], "class": []}
            runs = {"every": step(model, video, None, train), "class": step(model, video, 1, train)}
            for run in runs.values():
                run()  # warm-up
            for k in range(turns):
                for key in ("every", "class")[:: 1 if k % 2 else -1]:
                    start = time.perf_counter()
                    runs[key]()
                    times[key].append(time.perf_counter() - start)
            a, b = (1e3 * statistics.median(times[key]) for key in ("every", "class"))
            print(f"| {name} | {'training step' if train else 'inference'} | {a:.1f} | {b:.1f} | {b / a:.2f} |")


if __name__ == "__main__":
    main()
