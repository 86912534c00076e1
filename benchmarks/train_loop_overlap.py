"""Seconds per training step of a real ``omniclip train`` run with and without two loop choices (docs/benchmarks.md).

The run is the demo's ``hard`` budget's supervised OmniCLIP (omniclip-tiny, 14 classes, 8 frames, batch 8, no
worker processes). The two choices:

- ``decode thread``: the next batches decoded in a thread beside the step (``prefetch``) or in line; by default
  ``read_batches`` decides with ``decode_ahead``;
- ``text cut``: the text tower drops the positions after the last end token, or runs all 77 (the former code).

Settings take turns in each repeat; the table gives the median seconds per step (from ``metrics.jsonl``, steps 10
onwards) of each repeat and their median.

    .venv/bin/python benchmarks/train_loop_overlap.py --steps 80 --repeats 3 --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SETTINGS = {  # name: (decode thread, text cut)
    "thread, 77 text positions (before)": (True, False),
    "thread, text cut": (True, True),
    "in line, 77 text positions": (False, False),
    "in line, text cut (after)": (False, True),
}

CHILD = r"""
import json, statistics, sys
import torch
from omniclip.clip import model as clip_model
from omniclip.config import config_from_dict
from omniclip.demo.dataset import ensure_dataset
from omniclip.demo.recipes import BUDGETS, RUNS, run_overrides
from omniclip.runlog import read_metrics
import omniclip.data.loader as data_loader
import omniclip.train.loop as loop

thread, cut, steps, threads, data, out = json.loads(sys.argv[1])
torch.set_num_threads(threads)
data_loader.decode_ahead = lambda device: thread
if not cut:
    def full_length(self, x, eot):  # the former text tower: all 77 positions
        x = self.ln_final(self.transformer(x, causal=True))
        return x[torch.arange(x.shape[0], device=x.device), eot] @ self.text_projection
    clip_model.CLIP.text_features = full_length
budget = BUDGETS["hard"]
run = next(r for r in RUNS if r.name == "supervised/omniclip")
root = ensure_dataset(data, budget.dataset).root
raw = run_overrides(budget, run, data_root=str(root), clip="omniclip-tiny", seed=0)
raw["train"]["max_steps"] = steps
loop.train(config_from_dict(raw), out)
rows = read_metrics(out, "train")[10:]
print(json.dumps(statistics.median(budget.batch_size / r["clips_per_s"] for r in rows)))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the run")
    parser.add_argument("--data", type=Path, default=Path("runs/seed-study/data"), help="the hard benchmark's folder")
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for name, (thread, cut) in SETTINGS.items():
                spec = [thread, cut, args.steps, args.threads, str(args.data), f"{tmp}/{repeat}-{thread}-{cut}"]
                proc = subprocess.run(
                    [sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True, check=True
                )
                times[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
                print(f"repeat {repeat}: {name}: {times[name][-1]:.3f} s/step", flush=True)
    print("| setting | s/step per repeat | median |\n|---|---|---:|")
    for name, values in times.items():
        print(f"| {name} | {' / '.join(f'{v:.3f}' for v in values)} | {statistics.median(values):.3f} |")


if __name__ == "__main__":
    main()
