"""Each protocol end to end through ``omniclip.cli.main``: train a few steps, evaluate, check the files and numbers."""

from __future__ import annotations

import json
import statistics

import pytest
import torch
from safetensors.torch import load_file

from omniclip import cli
from omniclip.config import load_config
from omniclip.data.records import read_annotations
from omniclip.runlog import read_metrics
from omniclip.train.checkpoint import find_checkpoint

SPLITS = "data.test_lists=[test1.txt,test2.txt,test3.txt]"


def _run(argv: list[str], capsys) -> dict:
    assert cli.main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _sane(metrics: dict, videos: int, failed: int = 0) -> None:
    assert metrics["num_videos"] == videos and metrics["num_failed"] == failed
    assert metrics["num_scored"] == videos - failed
    assert 0 <= metrics["top1"] <= metrics["top5"] <= 100


def test_supervised_trains_then_evaluates_multiview(smoke_args, tmp_path, capsys) -> None:
    out = tmp_path / "sup"
    res = _run(
        ["train", "--output", str(out), *smoke_args, "eval.clips=2", "eval.crops=3", "data.test_lists=[test3.txt]"],
        capsys,
    )
    assert res["protocol"] == "supervised" and res["run_dir"] == str(out)
    _sane(res["splits"]["test3"], videos=7, failed=1)
    assert json.loads((out / "results.json").read_text())["splits"] == res["splits"]
    for name in ("metrics.json", "per_class.csv", "confusion.png", "failed.txt"):
        assert (out / "eval" / "test3" / name).is_file(), name
    assert "broken.mp4" in (out / "eval" / "test3" / "failed.txt").read_text()
    assert (out / "config.yaml").is_file() and (out / "checkpoints" / "last").is_file()
    assert len(read_metrics(out, "train")) == 8 and read_metrics(out, "done")[0]["finished"]


def test_supervised_over_several_seeds_reports_mean_std_worst_and_best(smoke_args, tmp_path, capsys) -> None:
    out = tmp_path / "sup-seeds"
    args = ["train", "--output", str(out), *smoke_args, "protocol.seeds=[3,5]", "train.max_steps=2"]
    res = _run([*args, "data.test_lists=[test1.txt]"], capsys)
    top1 = [res["seeds"][s]["splits"]["test1"]["top1"] for s in ("3", "5")]
    summary = res["summary"]["top1"]
    assert summary["values"] == top1 and summary["mean"] == pytest.approx(sum(top1) / 2)
    assert summary["std"] == pytest.approx(statistics.stdev(top1), abs=1e-9)
    assert (summary["worst"], summary["best"]) == (min(top1), max(top1))
    for seed in (3, 5):  # one model per seed, trained with that seed
        assert load_config(out / f"seed_{seed}" / "config.yaml").train.seed == seed
        assert (out / f"seed_{seed}" / "eval" / "test1" / "metrics.json").is_file()
    first, second = (load_file(str(find_checkpoint(out / f"seed_{s}") / "model.safetensors")) for s in (3, 5))
    assert any(not torch.equal(first[k], second[k]) for k in first)  # different seeds, different models


def test_few_shot_draws_k_per_class_and_averages_three_splits(smoke_args, synthetic, tmp_path, capsys) -> None:
    out = tmp_path / "fs"
    res = _run(
        ["train", "--output", str(out), *smoke_args, "protocol.name=few_shot", "protocol.shots=2", SPLITS], capsys
    )
    shots = read_annotations(out / "splits" / "train_2shot_seed0.txt", root=synthetic.root)
    assert sorted(r.label for r in shots) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert all(r.path.is_file() for r in shots)
    assert load_config(out / "config.yaml").data.train_list == str((out / "splits" / "train_2shot_seed0.txt").resolve())
    assert set(res["splits"]) == {"test1", "test2", "test3"}
    _sane(res["splits"]["test3"], videos=7, failed=1)
    top1 = [res["splits"][k]["top1"] for k in ("test1", "test2", "test3")]
    assert res["summary"]["top1"]["mean"] == pytest.approx(sum(top1) / 3)
    assert res["splits"]["test1"] == res["splits"]["test2"]  # the same videos in another order
    assert res["shots"] == 2 and len(read_metrics(out, "train")) == 4  # 8 clips / 4 per step x 2 epochs


def test_zero_shot_eval_of_a_checkpoint_and_of_plain_clip(smoke_args, tmp_path, capsys) -> None:
    run = tmp_path / "src"
    _run(
        [
            "train",
            "--output",
            str(run),
            *smoke_args,
            "protocol.name=zero_shot",
            "train.max_steps=2",
            "data.test_lists=[test1.txt]",
        ],
        capsys,
    )
    res = _run(["eval", "--checkpoint", str(run), *smoke_args, "protocol.name=zero_shot", SPLITS], capsys)
    assert res["output"] == str(run / "eval-smoke")
    top1 = [res["splits"][k]["top1"] for k in ("test1", "test2", "test3")]
    assert res["summary"]["num_splits"] == 3
    assert res["summary"]["top1"]["std"] == pytest.approx(statistics.stdev(top1), abs=1e-9)
    assert (run / "eval-smoke" / "results.json").is_file() and (run / "eval-smoke" / "test2" / "metrics.json").is_file()
    subsets = _run(
        [
            "eval",
            "--output",
            str(tmp_path / "plain"),
            *smoke_args,
            "protocol.name=zero_shot",
            "protocol.class_subset=3",
            "protocol.num_subsets=2",
            "data.test_lists=[test1.txt]",
        ],
        capsys,
    )
    assert set(subsets["splits"]) == {"test1_subset0", "test1_subset1"}
    for metrics in subsets["splits"].values():
        _sane(metrics, videos=6)  # 3 classes x 2 test videos
        assert metrics["top5"] == 100.0  # the top 5 of 3 classes hold every label


@pytest.mark.slow
def test_base_to_novel_trains_on_base_and_reports_the_harmonic_mean(smoke_args, synthetic, tmp_path, capsys) -> None:
    out = tmp_path / "b2n"
    res = _run(
        [
            "train",
            "--output",
            str(out),
            *smoke_args,
            "protocol.name=base_to_novel",
            "protocol.shots=2",
            "protocol.seeds=[0,1]",
            "data.test_lists=[test1.txt]",
            "train.epochs=1",
        ],
        capsys,
    )
    assert (res["base"], res["novel"]) == (2, 2)
    for seed in ("0", "1"):
        r = res["seeds"][seed]
        b, n = r["base_top1"], r["novel_top1"]
        assert r["harmonic_mean"] == pytest.approx(0 if b + n == 0 else 2 * b * n / (b + n))
        _sane(r["base"]["splits"]["test1_base"], videos=4)
        _sane(r["novel"]["splits"]["test1_novel"], videos=4)
        shots = read_annotations(out / f"seed_{seed}" / "splits" / f"train_2shot_seed{seed}.txt")
        assert sorted(r.label for r in shots) == [0, 0, 1, 1]  # base classes only
        assert (out / f"seed_{seed}" / "splits" / "base_classes.csv").read_text().splitlines()[1:] == [
            f"{i},{name}" for i, name in enumerate(synthetic.class_names[:2])
        ]
    assert res["summary"]["harmonic_mean"]["values"] == [res["seeds"][s]["harmonic_mean"] for s in ("0", "1")]
    first = read_annotations(out / "seed_0" / "splits" / "train_2shot_seed0.txt")
    second = read_annotations(out / "seed_1" / "splits" / "train_2shot_seed1.txt")
    assert [r.path for r in first] != [r.path for r in second]  # seeds draw different shots


def _class_column(report_dir) -> list[str]:
    """The class names of an evaluation report's ``per_class.csv``, in label order."""
    return [line.split(",")[1] for line in (report_dir / "per_class.csv").read_text().splitlines()[1:]]


def test_published_class_files_choose_subsets_and_base_classes(smoke_args, tmp_path, capsys) -> None:
    """Class files (as ViFi-CLIP publishes them) name K600-style subsets and the base half, in any spelling."""
    sub_a, sub_b = tmp_path / "ZS_splitA.csv", tmp_path / "ZS_splitB.txt"
    sub_a.write_text("id,name\n0,shrinking\n1,moving left\n")
    sub_b.write_text("growing\nMoving_Right\nshrinking\n")
    args = [*smoke_args, "protocol.name=zero_shot", "data.test_lists=[test1.txt]"]
    res = _run(
        ["eval", "--output", str(tmp_path / "zs"), *args, f"protocol.subset_class_files=[{sub_a},{sub_b}]"], capsys
    )
    assert set(res["splits"]) == {"test1_ZS_splitA", "test1_ZS_splitB"}
    _sane(res["splits"]["test1_ZS_splitA"], videos=4)  # 2 classes x 2 test videos
    _sane(res["splits"]["test1_ZS_splitB"], videos=6)
    assert _class_column(tmp_path / "zs" / "test1_ZS_splitA") == ["shrinking", "moving left"]

    base = tmp_path / "base.csv"
    base.write_text("id,name\n0,growing\n1,shrinking\n")
    args = [*smoke_args, "protocol.name=base_to_novel", "data.test_lists=[test1.txt]"]
    res = _run(["eval", "--output", str(tmp_path / "b2n"), *args, f"protocol.base_class_file={base}"], capsys)
    _sane(res["base"]["splits"]["test1_base"], videos=4)
    assert _class_column(tmp_path / "b2n" / "test1_base") == ["growing", "shrinking"]
    assert _class_column(tmp_path / "b2n" / "test1_novel") == ["moving left", "moving right"]

    assert (
        cli.main(["eval", "--output", str(tmp_path / "x"), *args, "protocol.base_class_file=hmdb_51_base_labels.csv"])
        == 2
    )
    err = capsys.readouterr().err
    assert "protocol.base_class_file" in err and "hmdb_51_base_labels.csv" in err and "ViFi-CLIP" in err


def test_given_shot_lists_replace_the_draw(smoke_args, synthetic, tmp_path, capsys) -> None:
    """Published K-shot lists (ViFi-CLIP's train1_few_shot_K.txt) train as given, one per seed, checked for K."""
    by_class: dict[int, list[str]] = {}
    for line in synthetic.train.read_text().splitlines():
        by_class.setdefault(int(line.split()[-1]), []).append(line)
    first, last = tmp_path / "first.txt", tmp_path / "last.txt"
    first.write_text("".join(f"{ln}\n" for lines in by_class.values() for ln in lines[:2]))
    last.write_text("".join(f"{ln}\n" for lines in by_class.values() for ln in lines[-2:]))
    args = [*smoke_args, "protocol.name=few_shot", "protocol.shots=2", "data.test_lists=[test1.txt]", "train.epochs=1"]
    out = tmp_path / "fs"
    _run(
        ["train", "--output", str(out), *args, "protocol.seeds=[0,1]", f"protocol.shot_lists=[{first},{last}]"], capsys
    )
    for seed, given in (("0", first), ("1", last)):
        used = read_annotations(out / f"seed_{seed}" / "splits" / f"train_2shot_seed{seed}.txt", root=synthetic.root)
        assert [(r.path, r.label) for r in used] == [(r.path, r.label) for r in read_annotations(given, synthetic.root)]

    one_list = [*args, "protocol.seeds=[0,1]", f"protocol.shot_lists=[{first}]"]
    assert cli.main(["train", "--output", str(tmp_path / "a"), *one_list]) == 2
    assert "2 seeds" in capsys.readouterr().err
    short = tmp_path / "short.txt"
    short.write_text(first.read_text().splitlines(keepends=True)[0] + "".join(last.read_text().splitlines(True)[2:]))
    assert cli.main(["train", "--output", str(tmp_path / "b"), *args, f"protocol.shot_lists=[{short}]"]) == 2
    assert "short.txt: 1 classes do not have K=2 videos (class 0: 1)" in capsys.readouterr().err
