"""Runs that agree: the harder benchmark's recipe, reduced, over three seeds through ``omniclip train``.

The shipped recipe (``demo/recipes.py``, budget "hard") on three of the harder benchmark's twin pairs in its full
scene (distractor, stripes, flicker, noise, random timing), with fewer videos and steps. The seeds must end close to
each other and above a floor that every seed of frame averaging trained the same way stays below, near a coin toss
within pairs (docs/model.md, "Runs that agree"). The two variants are two tests, so that two workers share them.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from omniclip import cli
from omniclip.demo.dataset import HARD, DatasetSpec, ensure_dataset
from omniclip.demo.recipes import BUDGETS, RunSpec, run_overrides
from omniclip.demo.report import group_metrics, read_confusion

SEEDS = [0, 1, 2]
GROUPS = (
    ("direction", ("moving left", "moving right")),
    ("scale", ("growing", "shrinking")),
    ("colour", ("turning blue", "turning red")),
)
SPEC = DatasetSpec(groups=GROUPS, train=16, val=1, test=10, num_frames=HARD.num_frames, scene=HARD.scene)
STEPS = 180
OMNICLIP_FLOOR = 85  # every OmniCLIP seed ends at least here, every frame averaging seed below it


def _train(variant: str, data: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[dict, list[dict]]:
    budget = dataclasses.replace(BUDGETS["hard"], dataset=SPEC)
    run = RunSpec(variant, variant, "supervised", variant)  # type: ignore[arg-type]
    raw = run_overrides(budget, run, data_root=str(data), clip="omniclip-tiny", seed=0, steps=STEPS)
    raw["protocol"]["seeds"] = SEEDS
    config = out.parent / f"{variant}.yaml"
    config.write_text(yaml.safe_dump(raw))
    capsys.readouterr()
    assert cli.main(["train", "--config", str(config), "--output", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]["top1"]
    per_seed = [
        group_metrics(*read_confusion(out / f"seed_{s}" / "eval" / "test" / "confusion.csv"), SPEC.group_map)
        for s in SEEDS
    ]
    return summary, per_seed


@pytest.mark.slow(minutes=7.5)
@pytest.mark.timeout(1200)
def test_three_seeds_of_the_hard_recipe_agree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ensure_dataset(tmp_path / "data", SPEC).root
    omniclip, seeds = _train("omniclip", data, tmp_path / "omniclip", capsys)
    assert omniclip["best"] - omniclip["worst"] <= 10, omniclip  # the seeds agree (one test clip is 1.7 points)
    assert omniclip["worst"] >= OMNICLIP_FLOOR, omniclip
    assert min(m["within pair"] for m in seeds) >= 85, seeds


@pytest.mark.slow(minutes=2.5)
@pytest.mark.timeout(1200)
def test_frame_averaging_trained_the_same_way_stays_below_every_seed_and_at_a_coin_toss_within_pairs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ensure_dataset(tmp_path / "data", SPEC).root
    average, seeds = _train("frame_average", data, tmp_path / "frame_average", capsys)
    assert average["best"] < OMNICLIP_FLOOR, average  # so every OmniCLIP seed above ends above every one of these
    assert max(m["within pair"] for m in seeds) <= 70, seeds  # order stays out of its reach
