"""``omniclip train --data``: a folder of class folders to a trained, evaluated run without a config file."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from omniclip.cli import main

TINY = ["train.max_steps=2", "data.num_frames=4", "data.image_size=32", "eval.batch_size=16"]
FOLDERS = {
    "moving left": "moving_left",
    "moving_right": "moving_right",
    "Growing": "growing",
    "shrink-ing": "shrinking",
}


@pytest.fixture
def class_folders(synthetic, tmp_path: Path) -> Path:
    """The synthetic videos (6 per class) as class folders with odd names, one class nested a level down."""
    root = tmp_path / "my videos"
    for folder, slug in FOLDERS.items():
        for k, video in enumerate(sorted((synthetic.root / "videos").glob(f"*/{slug}_*.mp4"))):
            dest = root / folder / ("takes" if k % 2 else "") / f"clip {k}.mp4"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(video, dest)
    (root / "moving left" / "notes.txt").write_text("not a video")
    return root


def _train(*args: str) -> int:
    return main(["train", *args])


def test_train_data_writes_lists_trains_evaluates_and_predicts(
    class_folders: Path, tiny_clip_file: Path, tmp_path: Path, capsys
) -> None:
    run = tmp_path / "run"
    assert _train("--data", str(class_folders), "--clip", str(tiny_clip_file), "--output", str(run), *TINY) == 0
    out = capsys.readouterr().out
    # the lists are those of `omniclip splits folders` with the same seed, written into the run
    assert main(["splits", "folders", str(class_folders), "--out", str(tmp_path / "lists")]) == 0
    capsys.readouterr()
    for name in ("train.txt", "val.txt", "classes.csv", "folders.csv"):
        assert (run / "data" / name).read_bytes() == (tmp_path / "lists" / name).read_bytes(), name
    assert (run / "data" / "classes.csv").read_text() == (
        "id,name\n0,Growing\n1,moving left\n2,moving right\n3,shrink ing\n"
    )
    # the resolved config: the recipe for a small backbone, the overrides, lists in the run, root the user's folder
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["data"]["root"] == str(class_folders)
    assert cfg["data"]["train_list"] == str(run / "data" / "train.txt")
    assert cfg["data"]["test_lists"] == [str(run / "data" / "val.txt")]
    assert cfg["data"]["class_names"] == str(run / "data" / "classes.csv")
    assert (cfg["data"]["dataset"], cfg["data"]["num_frames"], cfg["data"]["image_size"]) == ("my videos", 4, 32)
    assert cfg["data"]["flip"] is False, "class names say left and right: a mirrored clip shows the other class"
    assert (cfg["protocol"]["name"], cfg["model"]["text_context"], cfg["train"]["max_steps"]) == ("supervised", 8, 2)
    assert cfg["train"]["batch_size"] == 5  # a quarter of the 20 training videos (under the cap of 8)
    assert cfg["eval"]["batch_size"] == 16  # the override wins over the recipe's 10
    assert yaml.safe_load((run / "data" / "recipe.yaml").read_text()) == cfg
    # evaluated on the held-out split; the report ends with the commands that use the model
    results = json.loads((run / "results.json").read_text())
    assert results["splits"]["val"]["num_scored"] == 4
    assert "held-out val: 4 of 4 videos scored, top-1 " in out
    assert (run / "eval" / "val" / "per_class.csv").is_file()
    assert f"omniclip predict NEW_VIDEOS/ --checkpoint {run}" in out
    assert f"omniclip timeline LONG_VIDEO.mp4 --checkpoint {run} --out {run / 'timeline'}" in out
    # predict with the run: the folders' class names
    video = class_folders / "moving left" / "clip 0.mp4"
    assert main(["predict", str(video), "--checkpoint", str(run), "--json", "--top-k", "4"]) == 0
    predictions = json.loads(capsys.readouterr().out)[0]["predictions"]
    assert sorted(p["class"] for p in predictions) == ["Growing", "moving left", "moving right", "shrink ing"]
    # the lists in the run work with every other command: eval with the run's own config
    evaluation = ["eval", "--config", str(run / "config.yaml"), "--checkpoint", str(run)]
    assert main([*evaluation, "--output", str(tmp_path / "e")]) == 0
    assert json.loads(capsys.readouterr().out)["splits"]["val"]["num_scored"] == 4
    # lists edited before training: the overrides win over the written lists, and the report names what was evaluated
    edited = tmp_path / "lists" / "test.txt"
    edited.write_text("".join((tmp_path / "lists" / "val.txt").read_text().splitlines(keepends=True)[:3]))
    other = ["--data", str(class_folders), "--clip", str(tiny_clip_file), "--output", str(tmp_path / "run2"), *TINY]
    assert _train(*other, f"data.test_lists=[{edited}]") == 0
    assert "held-out test: 3 of 3 videos scored" in capsys.readouterr().out
    assert yaml.safe_load((tmp_path / "run2" / "config.yaml").read_text())["data"]["test_lists"] == [str(edited)]


def test_train_data_resume_reuses_the_lists_and_refuses_a_reused_folder(
    class_folders: Path, tiny_clip_file: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)  # relative --output and --data: the config's paths are absolute all the same
    run = tmp_path / "run"
    base = ["--data", "my videos", "--clip", str(tiny_clip_file), "--output", "run", *TINY[1:]]
    assert _train(*base, "train.max_steps=1") == 0
    lists = {p.name: p.read_bytes() for p in (run / "data").iterdir()}
    shutil.copyfile(class_folders / "Growing" / "clip 0.mp4", class_folders / "Growing" / "new.mp4")
    capsys.readouterr()
    assert _train(*base, "--resume", "train.max_steps=2") == 0  # the folder changed: the lists stay
    assert {p.name: p.read_bytes() for p in (run / "data").iterdir()} == lists
    assert '"step": 2' in (run / "metrics.jsonl").read_text()
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert (cfg["data"]["root"], cfg["data"]["train_list"]) == (str(class_folders), str(run / "data" / "train.txt"))
    assert _train(*base) == 2  # a run folder in use needs --resume or --overwrite
    assert "is not empty; continue its run with --resume" in capsys.readouterr().err
    assert _train(*base, "--overwrite", "--val", "0.4", "train.max_steps=1") == 0  # a new draw, with the new video
    assert "new.mp4" in (run / "data" / "train.txt").read_text() + (run / "data" / "val.txt").read_text()
    assert (run / "data" / "val.txt").read_bytes() != lists["val.txt"]


def test_train_data_few_shot_on_a_split_on_disk_with_a_config_file(
    synthetic, tiny_clip_file: Path, tmp_path: Path, capsys
) -> None:
    root = tmp_path / "split"
    for split, count in (("train", 4), ("test", 2)):
        for slug in ("moving_left", "growing"):
            for k in range(count):
                dest = root / split / slug / f"{k}.mp4"
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(synthetic.root / "videos" / split / f"{slug}_{k:04d}.mp4", dest)
    config = tmp_path / "mine.yaml"  # laid over the recipe; the flags and overrides come after it
    config.write_text(
        "model:\n  templates: ['a clip of a shape {}.']\nprotocol:\n  seeds: [0, 1]\ntrain:\n  lr: 1.0e-3\n"
    )
    run = tmp_path / "run"
    flags = ["--data", str(root), "--clip", str(tiny_clip_file), "--config", str(config), "--shots", "2"]
    assert _train(*flags, "--output", str(run), *TINY, "train.epochs=4") == 0
    out = capsys.readouterr().out
    assert "held-out test: top-1 " in out and "over seeds 0, 1 (worst " in out
    assert f"omniclip predict NEW_VIDEOS/ --checkpoint {run / 'seed_0'}" in out  # one model per seed
    assert sorted(p.name for p in (run / "data").iterdir()) == [
        "classes.csv",
        "folders.csv",
        "recipe.yaml",
        "test.txt",
        "train.txt",
    ]
    assert (run / "data" / "test.txt").read_text() == (
        "test/growing/0.mp4 0\ntest/growing/1.mp4 0\ntest/moving_left/0.mp4 1\ntest/moving_left/1.mp4 1\n"
    )
    cfg = yaml.safe_load((run / "data" / "recipe.yaml").read_text())
    assert (cfg["protocol"]["name"], cfg["protocol"]["shots"], cfg["protocol"]["seeds"]) == ("few_shot", 2, [0, 1])
    assert (cfg["model"]["templates"], cfg["train"]["lr"]) == (["a clip of a shape {}."], 1e-3)
    assert (cfg["train"]["epochs"], cfg["train"]["warmup_epochs"]) == (4, 0.4)  # warmup follows the given epochs
    assert cfg["train"]["batch_size"] == 1  # a quarter of K x classes = 4 videos
    assert len((run / "seed_1" / "splits" / "train_2shot_seed1.txt").read_text().splitlines()) == 4
    assert _train(*flags[:-1], "5", "--output", str(tmp_path / "x")) == 2
    err = capsys.readouterr().err
    assert "--shots 5: classes with fewer training videos than that: 'growing' (4), 'moving_left' (4)" in err


def test_train_data_recipe_scales_with_data_and_hardware() -> None:
    from omniclip.recipe import Hardware, backbone_of, recipe

    vit, tiny = backbone_of("ViT-B/16"), backbone_of("omniclip-tiny")
    assert (vit.image_size, vit.small, tiny.image_size, tiny.small) == (224, False, 64, True)
    h200, small_gpu, cpu = Hardware("cuda", 16, 139.0), Hardware("cuda", 8, 24.0), Hardware("cpu", 2)
    names = ["archery", "juggling"]

    def pick(raw: dict) -> tuple:
        return (
            raw["data"]["num_frames"],
            raw["data"]["image_size"],
            raw["data"]["workers"],
            raw["train"]["batch_size"],
            raw["train"]["epochs"],
            raw["train"]["lr"],
        )

    assert pick(recipe(train_videos=10_000, class_names=names, backbone=vit, hardware=h200)) == (
        8,
        224,
        8,
        16,
        10,
        2e-4,
    )
    assert pick(recipe(train_videos=200, class_names=names, backbone=vit, hardware=h200)) == (8, 224, 8, 16, 34, 2e-4)
    assert pick(recipe(train_videos=200, class_names=names, backbone=vit, hardware=small_gpu))[3] == 8
    assert pick(recipe(train_videos=200, class_names=names, backbone=vit, hardware=cpu)) == (8, 224, 0, 2, 10, 2e-4)
    assert pick(recipe(train_videos=64, class_names=names, backbone=tiny, hardware=cpu)) == (4, 64, 0, 8, 50, 5e-3)
    assert pick(recipe(train_videos=6, class_names=names, backbone=tiny, hardware=cpu))[3:5] == (1, 50)
    assert recipe(train_videos=64, class_names=names, backbone=vit, hardware=cpu)["data"]["flip"] is True
    assert recipe(train_videos=64, class_names=["turning Left"], backbone=vit, hardware=cpu)["data"]["flip"] is False


HOLD_LOCK = (
    "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); print(1, flush=True); "
    "time.sleep(60)"
)


def test_train_data_lists_are_written_only_under_the_lock(
    class_folders: Path, tiny_clip_file: Path, tmp_path: Path, capsys
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "old.txt").write_text("an earlier run")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run / ".lock")],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline()  # the other process holds the lock
        args = ["--data", str(class_folders), "--clip", str(tiny_clip_file), "--output", str(run), "--overwrite"]
        assert _train(*args, *TINY) == 2
        assert "is in use by" in capsys.readouterr().err
        assert sorted(p.name for p in run.iterdir()) == [".lock", "old.txt"], "nothing written, nothing deleted"
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], r"give --data FOLDER \(a folder of class folders\) or --config FILE"),
        (["--config", "configs/smoke.yaml", "--shots", "4"], "--shots go with --data FOLDER"),
        (["--data", "no/such/folder"], "video folder .*no/such/folder does not exist"),
        (["--data", "{tmp}/empty"], "holds no class folder with videos"),
        (["--data", "{tmp}/empty", "--resume"], "--resume: run folder .*run does not exist"),
        (["--data", "{tmp}/videos", "--clip", "ViT-Q-99"], "CLIP weights 'ViT-Q-99' not found; tried "),
    ],
)
def test_train_data_user_errors(args: list[str], message: str, capsys, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.md").write_text("no videos here")
    for name in ("a", "b"):  # a class folder (the scan reads names, not frames)
        (tmp_path / "videos" / "cat").mkdir(parents=True, exist_ok=True)
        (tmp_path / "videos" / "cat" / f"{name}.mp4").write_bytes(b"")
    assert _train(*[a.format(tmp=tmp_path) for a in args], "--output", str(tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err), err
    assert not (tmp_path / "run").exists()
