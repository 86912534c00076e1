"""A run folder belongs to one run, and a checkpoint is trusted only as far as it is checked.

Each test plays a user who reuses, shares, edits or damages a run folder, through the commands where it can.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from omniclip import cli
from omniclip.config import valid_keys
from omniclip.runlog import LOCK_FILE, read_metrics
from omniclip.train import checkpoint as ckpt
from omniclip.train.checkpoint import find_checkpoint, load_trained_model, read_meta
from omniclip.train.loop import RESUME_SAFE_KEYS


def _train(out: Path, smoke_args: list[str], *extra: str) -> int:
    return cli.main(["train", "--output", str(out), *smoke_args, *extra])


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if " error: " in line]
    assert len(lines) == 1, lines
    return lines[0]


@contextmanager
def _held_lock(run: Path, pid: int = 4242, host: str = "elsewhere") -> Iterator[None]:
    """Hold the run folder's lock as another process would (a separate open file: flock conflicts with it)."""
    run.mkdir(parents=True, exist_ok=True)
    fd = os.open(run / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, json.dumps({"pid": pid, "host": host, "since": "2024-05-01T09:30:00+00:00"}).encode())
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# --- a fresh run into an existing run folder ---------------------------------------------------------------------


def test_a_fresh_run_into_a_used_run_folder_is_refused_and_overwrite_starts_over(smoke_args, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    assert _train(run, smoke_args, "train.max_steps=3", "train.checkpoint_every=1", "train.keep_checkpoints=10") == 0
    before = {p.name: p.read_bytes() for p in (run / "metrics.jsonl", run / "config.yaml")}
    capsys.readouterr()

    assert _train(run, smoke_args, "train.max_steps=1", "train.seed=3") == 2
    line = _error_line(capsys)
    assert str(run) in line and "--resume" in line and "--overwrite" in line
    assert {p.name: p.read_bytes() for p in (run / "metrics.jsonl", run / "config.yaml")} == before

    assert cli.main(["train", "--output", str(run), "--resume", "--overwrite", *smoke_args]) == 2
    assert "--resume" in _error_line(capsys)

    overwrite = ["train", "--output", str(run), "--overwrite", *smoke_args, "train.max_steps=1", "train.seed=3"]
    assert cli.main(overwrite) == 0
    assert [p.name for p in (run / "checkpoints").glob("step_*")] == ["step_00000001"]
    assert [r["step"] for r in read_metrics(run, "train")] == [1]
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["seed"] == 3


def test_train_into_a_folder_holding_checkpoints_without_resume_is_refused(tiny_clip_file, synthetic, tmp_path):
    from omniclip.config import load_config
    from omniclip.train.loop import train

    cfg = load_config(
        Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml",
        [f"clip.source={tiny_clip_file}", f"data.root={synthetic.root}", "train.max_steps=1"],
    )
    train(cfg, tmp_path / "run")
    with pytest.raises(ValueError, match="already holds checkpoints of a run .*step_00000001.*--resume"):
        train(cfg, tmp_path / "run")


# --- two writers in one run folder ---------------------------------------------------------------------------------


def test_a_second_writer_is_refused_with_the_holder_named(smoke_args, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    with _held_lock(run):
        assert _train(run, smoke_args, "train.max_steps=1") == 2
        line = _error_line(capsys)
        assert "in use by pid 4242 on host elsewhere since 2024-05-01T09:30:00+00:00" in line and str(run) in line
        assert cli.main(["train", "--output", str(run), "--resume", *smoke_args]) == 2
        assert "pid 4242" in _error_line(capsys)
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]  # nothing written by the refused runs


def test_a_lock_file_left_by_a_killed_run_does_not_block(smoke_args, tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text(json.dumps({"pid": 999999, "host": "gone", "since": "2020-01-01T00:00:00"}))
    assert _train(run, smoke_args, "train.max_steps=1") == 0  # a folder holding only a stale lock file is empty
    assert (run / LOCK_FILE).read_text() == ""  # released on exit
    assert (run / "checkpoints" / "step_00000001").is_dir()


def test_a_second_process_is_refused_while_the_first_runs(smoke_args, tmp_path) -> None:
    run = tmp_path / "run"
    with _held_lock(run, pid=os.getpid(), host="this-host"):
        proc = subprocess.run(
            [sys.executable, "-m", "omniclip", "train", "--output", str(run), *smoke_args, "train.max_steps=1"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"in use by pid {os.getpid()} on host this-host" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_the_refusal_reaches_every_rank_under_torchrun(smoke_args, tmp_path) -> None:
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "omniclip"]
    with _held_lock(run):
        proc = subprocess.run(
            [*cmd, "train", "--output", str(run), *smoke_args, "train.batch_size=2", "train.max_steps=1"],
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            capture_output=True,
            text=True,
            timeout=240,  # a rank left waiting for rank 0 would hang here
        )
    assert proc.returncode != 0
    assert proc.stderr.count("in use by pid 4242 on host elsewhere") == 2, proc.stderr[-3000:]


# --- resume with a changed config ----------------------------------------------------------------------------------


def test_resume_refuses_changes_to_data_order_schedule_and_model(smoke_args, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    assert _train(run, smoke_args, "train.max_steps=2") == 0
    config = (run / "config.yaml").read_bytes()
    capsys.readouterr()
    bad = ["train.seed=5", "train.batch_size=2", "train.lr=0.1"]
    assert cli.main(["train", "--output", str(run), "--resume", *smoke_args, *bad]) == 2
    line = _error_line(capsys)
    assert "train.seed: 0 -> 5" in line and "train.batch_size: 4 -> 2" in line and "train.lr: 0.001 -> 0.1" in line
    assert "step_00000002" in line
    assert (run / "config.yaml").read_bytes() == config
    assert [r["step"] for r in read_metrics(run, "train")] == [1, 2]


def test_resume_records_the_changes_it_allows(smoke_args, tmp_path) -> None:
    run = tmp_path / "run"
    assert _train(run, smoke_args, "train.max_steps=2") == 0
    allowed = ["train.log_every=2", "eval.batch_size=3", "train.checkpoint_every=5"]
    assert cli.main(["train", "--output", str(run), "--resume", *smoke_args, *allowed]) == 0
    (resume,) = read_metrics(run, "resume")
    assert resume["step"] == 2 and resume["checkpoint"] == "step_00000002"
    assert resume["changed"] == {
        "train.max_steps": [2, 0],  # the first part stopped early; this one runs to the end
        "train.log_every": [1, 2],
        "train.checkpoint_every": [0, 5],
        "eval.batch_size": [8, 3],
    }
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["log_every"] == 2 and saved["train"]["seed"] == 0
    assert read_meta(run).config["eval"]["batch_size"] == 3


def test_resume_safe_keys_are_config_keys() -> None:
    assert RESUME_SAFE_KEYS <= set(valid_keys())
    for key in ("train.seed", "train.batch_size", "train.lr", "train.epochs", "data.train_list", "model.variant"):
        assert key not in RESUME_SAFE_KEYS


# --- the last pointer ----------------------------------------------------------------------------------------------


@pytest.fixture
def three_steps(smoke_args, tmp_path) -> Path:
    """A run stopped at step 3 with a checkpoint at every step."""
    run = tmp_path / "run"
    extra = ["train.max_steps=3", "train.checkpoint_every=1", "train.keep_checkpoints=10"]
    assert _train(run, smoke_args, *extra) == 0
    return run


@pytest.mark.parametrize(
    "pointer",
    [b"step_99999999\n", b"\xff\xfe\x00binary", b"../../other/checkpoints/step_00000001\n", "ABSOLUTE", b""],
    ids=["missing-step", "binary", "relative-escape", "absolute", "empty"],
)
def test_a_bad_last_pointer_falls_back_to_the_newest_complete_checkpoint(
    three_steps, tmp_path, caplog, pointer
) -> None:
    other = tmp_path / "other" / "checkpoints" / "step_00000001"
    shutil.copytree(three_steps / "checkpoints" / "step_00000001", other)
    raw = str(other).encode() if pointer == "ABSOLUTE" else pointer
    (three_steps / "checkpoints" / "last").write_bytes(raw)
    with caplog.at_level(logging.WARNING, logger="omniclip"):
        found = find_checkpoint(three_steps)
    assert found == three_steps / "checkpoints" / "step_00000003"
    assert "using the newest complete checkpoint, step_00000003" in caplog.text
    model, meta = load_trained_model(three_steps)
    assert meta.step == 3


def test_a_pointer_to_an_incomplete_checkpoint_is_not_followed(three_steps, caplog) -> None:
    (three_steps / "checkpoints" / "step_00000003" / "state.json").unlink()
    with caplog.at_level(logging.WARNING, logger="omniclip"):
        assert find_checkpoint(three_steps).name == "step_00000002"
    assert "names step_00000003, which is not a complete checkpoint" in caplog.text


def test_resume_with_a_bad_pointer_continues_from_the_newest_complete_checkpoint(three_steps, smoke_args) -> None:
    (three_steps / "checkpoints" / "last").write_bytes(b"\x00\x01garbage")
    stale = three_steps / "checkpoints" / ".tmp-step_00000004-12345"  # a writer killed while saving step 4
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    assert cli.main(["train", "--output", str(three_steps), "--resume", *smoke_args, "train.max_steps=4"]) == 0
    assert not stale.exists()
    assert read_meta(three_steps).step == 4
    assert [r["step"] for r in read_metrics(three_steps, "train")] == [1, 2, 3, 4]


def test_a_step_is_never_deleted_while_last_names_it(smoke_args, tmp_path, monkeypatch) -> None:
    # checkpoint_every=2 with 4 steps per epoch: step 4 is both a periodic and an epoch-end checkpoint
    removed_while_named: list[str] = []
    real_rmtree = shutil.rmtree

    def watching_rmtree(path, *args, **kwargs):
        path = Path(path)
        pointer = path.parent / "last"
        if pointer.is_file() and pointer.read_text().strip() == path.name:
            removed_while_named.append(path.name)
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(ckpt.shutil, "rmtree", watching_rmtree)
    run = tmp_path / "run"
    assert _train(run, smoke_args, "train.epochs=1", "train.checkpoint_every=2", "train.keep_checkpoints=10") == 0
    assert removed_while_named == []
    state = json.loads((run / "checkpoints" / "step_00000004" / "state.json").read_text())
    assert (state["epoch"], state["micro"]) == (1, 0)  # saved once, as the end of the epoch


# --- the backbone fingerprint --------------------------------------------------------------------------------------


@pytest.fixture
def own_clip(tiny_clip_file, tmp_path) -> Path:
    """A copy of the tiny CLIP this test may replace."""
    return Path(shutil.copy(tiny_clip_file, tmp_path / "clip.safetensors"))


def _swap_backbone(path: Path) -> None:
    """Other weights, same architecture, same file name: another release under the same name."""
    from omniclip.clip import build_clip
    from omniclip.clip.weights import save_clip

    torch.manual_seed(123)
    save_clip(build_clip("tiny"), path)


def test_a_checkpoint_refuses_another_backbone_under_the_same_name(
    own_clip, smoke_args, synthetic, tmp_path, capsys, caplog
) -> None:
    run = tmp_path / "run"
    args = [*smoke_args, f"clip.source={own_clip}"]
    assert _train(run, args, "train.max_steps=2") == 0
    trained = read_meta(run).clip_fingerprint
    assert trained.startswith("sha256:") and len(trained) == 7 + 64
    _swap_backbone(own_clip)
    capsys.readouterr()

    with pytest.raises(ValueError, match="trained on another CLIP backbone") as err:
        load_trained_model(run)
    assert trained in str(err.value) and str(own_clip) in str(err.value)
    (now,) = [f for f in re.findall(r"sha256:[0-9a-f]{64}", str(err.value)) if f != trained]

    evaluate = ["eval", "--config", smoke_args[1], *args[2:], "--checkpoint", str(run), "--output", str(tmp_path / "e")]
    assert cli.main(evaluate) == 2
    assert trained in _error_line(capsys)
    assert cli.main(["train", "--output", str(run), "--resume", *args]) == 2
    line = _error_line(capsys)
    assert trained in line and now in line and "--allow-other-backbone" in line

    video = str(next(p for p in sorted((synthetic.root / "videos").rglob("*.mp4")) if p.name != "broken.mp4"))
    assert cli.main(["predict", video, "--checkpoint", str(run)]) == 2
    assert trained in _error_line(capsys)

    with caplog.at_level(logging.WARNING, logger="omniclip"):
        model, meta = load_trained_model(run, allow_other_backbone=True)
        assert cli.main([*evaluate, "--allow-other-backbone"]) == 0
        assert cli.main(["predict", video, "--checkpoint", str(run), "--allow-other-backbone"]) == 0
    assert "loading anyway" in caplog.text


def test_an_old_checkpoint_without_fingerprint_loads_with_a_warning(smoke_args, tmp_path, caplog) -> None:
    run = tmp_path / "run"
    assert _train(run, smoke_args, "train.max_steps=1") == 0
    file = find_checkpoint(run) / "model.safetensors"
    with safe_open(str(file), "pt") as f:
        meta = json.loads(f.metadata()["omniclip"])
    del meta["clip_fingerprint"]
    save_file(load_file(str(file)), str(file), metadata={"omniclip": json.dumps(meta)})
    with caplog.at_level(logging.WARNING, logger="omniclip"):
        model, loaded = load_trained_model(run)
    assert loaded.clip_fingerprint == "" and "has no backbone fingerprint" in caplog.text


# --- damaged checkpoints and unusable output folders ---------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "pickled"])
def test_a_damaged_model_file_is_one_line_naming_it(smoke_args, tmp_path, capsys, damage) -> None:
    run = tmp_path / "run"
    assert _train(run, smoke_args, "train.max_steps=1") == 0
    file = find_checkpoint(run) / "model.safetensors"
    if damage == "truncated":
        file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    else:
        torch.save({"weights": torch.zeros(3)}, file)
    capsys.readouterr()
    video = next((Path(smoke_args[3].split("=", 1)[1]) / "videos").glob("*.mp4"))
    commands = [
        ["predict", str(video), "--checkpoint", str(run)],
        ["predict", str(video), "--checkpoint", str(file)],
        ["eval", "--config", smoke_args[1], *smoke_args[2:], "--checkpoint", str(run), "--output", str(tmp_path / "e")],
        ["train", "--output", str(run), "--resume", *smoke_args],
    ]
    for argv in commands:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "Traceback" not in err
        (line,) = [x for x in err.splitlines() if " error: " in x]
        assert str(file) in line and "not a readable safetensors file" in line, argv


def test_eval_output_that_is_a_file_fails_before_evaluating(smoke_args, tmp_path, capsys, monkeypatch) -> None:
    run = tmp_path / "run"
    assert _train(run, smoke_args, "train.max_steps=1") == 0
    a_file = tmp_path / "report.txt"
    a_file.write_text("not a folder")
    loaded: list[str] = []
    monkeypatch.setattr(ckpt, "load_clip", lambda *a, **k: loaded.append("clip"))
    base = ["eval", "--config", smoke_args[1], *smoke_args[2:], "--checkpoint", str(run)]
    capsys.readouterr()
    assert cli.main([*base, "--output", str(a_file)]) == 2
    assert f"{a_file} is an existing file" in _error_line(capsys)
    assert cli.main([*base, "--output", str(a_file / "eval")]) == 2
    assert "lies under a file" in _error_line(capsys)
    assert loaded == []  # refused before the model was loaded

    missing = ["eval", "--config", smoke_args[1], *smoke_args[2:], "--checkpoint", str(tmp_path / "typo" / "run")]
    assert cli.main(missing) == 2
    assert "no checkpoint at" in _error_line(capsys) and not (tmp_path / "typo").exists()


def test_train_output_under_a_file_fails_before_any_work(smoke_args, tmp_path, capsys) -> None:
    a_file = tmp_path / "runs"
    a_file.write_text("not a folder")
    assert _train(a_file / "run", smoke_args) == 2
    assert "--output" in (line := _error_line(capsys)) and "lies under a file" in line
    assert _train(a_file, smoke_args) == 2
    assert "is an existing file" in _error_line(capsys)


def test_resume_into_a_missing_folder_creates_nothing(smoke_args, tmp_path, capsys) -> None:
    run = tmp_path / "typo"
    assert cli.main(["train", "--output", str(run), "--resume", *smoke_args]) == 2
    assert f"run folder {run} does not exist" in _error_line(capsys)
    assert not run.exists()
