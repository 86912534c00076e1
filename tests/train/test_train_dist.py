"""Two processes (torchrun, gloo on the CPU) train like one process and evaluate every video exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from omniclip import cli
from omniclip.runlog import read_metrics


@pytest.mark.slow
def test_two_processes_match_one_and_score_each_video_once(smoke_args, tmp_path, capsys) -> None:
    # 7 test entries (one unreadable): not divisible by 2 processes
    common = [*smoke_args, "data.test_lists=[test3.txt]", "train.global_batch_size=4"]
    assert cli.main(["train", "--output", str(tmp_path / "one"), *common, "train.batch_size=4"]) == 0
    one = json.loads(capsys.readouterr().out)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "omniclip",
        "train",
        "--output",
        str(tmp_path / "two"),
        *common,
        "train.batch_size=2",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "results.json").read_text())

    losses_one = [r["loss"] for r in read_metrics(tmp_path / "one", "train")]
    losses_two = [r["loss"] for r in read_metrics(tmp_path / "two", "train")]
    assert len(losses_one) == len(losses_two) == 8
    assert losses_two == pytest.approx(losses_one, abs=1e-5)  # same clips in the same steps, grads averaged
    m1, m2 = one["splits"]["test3"], two["splits"]["test3"]
    assert (m2["num_videos"], m2["num_scored"], m2["num_failed"]) == (7, 6, 1)
    assert m2["top1"] == pytest.approx(m1["top1"]) and m2["top5"] == pytest.approx(m1["top5"])
    per_video = json.loads((tmp_path / "two" / "eval" / "test3" / "metrics.json").read_text())
    assert len(per_video["failed"]) == 1 and per_video["failed"][0][0] == 3  # the broken entry, reported once
