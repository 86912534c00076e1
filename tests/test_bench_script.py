"""benchmarks/gpu_bench.sh runs its stages in order and leaves one JSON report per stage (smoke run on the CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_script_stages_on_a_tiny_cpu_model(tmp_path: Path) -> None:
    env = dict(
        os.environ,
        OUT=str(tmp_path),
        PYTHON=sys.executable,
        STAGES="xclip_b16 graphs",
        STAGE_LIMIT_SCALE="20",  # a loaded CI machine must not hit the GPU-sized stage limits
        BENCH_BASE="--arch tiny --frames 2 --size 16 --device cpu --threads 1 --repeats 1 --warmup 0 --batches 1",
    )
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_bench.sh")], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["env.txt", "graphs.json", "log.txt", "xclip_b16.json"]  # unselected stages did not run
    log = (tmp_path / "log.txt").read_text()
    assert "== xclip_b16: exit 0" in log and "== graphs: exit 0" in log and "== eager" not in log
    xclip = json.loads((tmp_path / "xclip_b16.json").read_text())
    assert xclip["config"]["batch"] == 16 and xclip["config"]["classes"] == 400  # the stage's own arguments apply
    assert list(xclip["results"]) == ["xclip"] and xclip["results"]["xclip"]["train"]["step_s"] > 0
    graphs = json.loads((tmp_path / "graphs.json").read_text())
    assert list(graphs["results"]) == ["frame_average", "omniclip"]
    assert graphs["config"]["bf16_weights"] is True and any("cuda_graphs skipped" in n for n in graphs["notes"])
