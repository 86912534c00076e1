"""The shipped tiny CLIP: loads by name in float32, is small, and understands the rendered world zero-shot."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from omniclip.clip import PRESETS, load_clip
from omniclip.embedded import EMBEDDED_CLIP, embedded_path, record_path
from omniclip.embedded.captions import HELD_OUT_PAIRS
from omniclip.embedded.pretrain import EVAL_SEED, PretrainConfig, chance_levels, zero_shot_accuracy

# Thresholds sit well inside what the shipped model measures on fresh images (docs/embedded.md, the record's
# "zero_shot" block: colour 1.00, size 0.87, position 1.00, (shape, colour) pair 0.23 seen / 0.25 unseen); chance is
# 1/10 colour, 1/3 size, 1/9 position, 1/60 pair. Shape (0.24 seen vs 1/6) is near chance and is not asserted.
MIN_SEEN = {"color": 0.9, "size": 0.75, "position": 0.9, "pair": 0.12}
MIN_UNSEEN = {"color": 0.9, "size": 0.75, "position": 0.9, "pair": 0.12}


@pytest.fixture(scope="module")
def embedded() -> torch.nn.Module:
    return load_clip(EMBEDDED_CLIP)


def test_embedded_file_is_small_and_recorded() -> None:
    path = embedded_path()
    assert path.is_file(), f"{path} is missing: run omniclip pretrain-tiny --out {path}"
    assert path.stat().st_size <= 20 * 1024 * 1024
    record = json.loads(record_path().read_text())
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["file_bytes"] == path.stat().st_size
    assert record["architecture"] == PRESETS[EMBEDDED_CLIP].to_dict()
    for key in ("zero_shot", "torch_version", "date", "held_out_pairs"):
        assert key in record


def test_embedded_file_was_made_by_the_default_recipe() -> None:
    """``omniclip pretrain-tiny`` with no recipe options rebuilds the shipped bytes (docs/embedded.md)."""
    record = json.loads(record_path().read_text())
    assert record["pretrain"] == json.loads(json.dumps(PretrainConfig().to_dict()))
    assert record["steps"] == PretrainConfig().steps and record["seed"] == PretrainConfig().seed
    assert record["held_out_pairs"] == [list(p) for p in HELD_OUT_PAIRS]


def test_embedded_loads_by_name_in_float32(embedded: torch.nn.Module) -> None:
    assert embedded.cfg == PRESETS[EMBEDDED_CLIP]
    assert all(p.dtype == torch.float32 for p in embedded.parameters())
    assert not embedded.training
    assert load_clip(EMBEDDED_CLIP, dtype=torch.float16).dtype == torch.float16


def test_embedded_zero_shot_is_far_above_chance(embedded: torch.nn.Module) -> None:
    seed = EVAL_SEED + 17  # fresh images, neither the training stream nor the recorded evaluation
    accuracy = zero_shot_accuracy(embedded, seed=seed, images=256)
    chance = chance_levels()
    for task, floor in MIN_SEEN.items():
        assert accuracy["seen"][task] >= floor > 2 * chance[task], (task, accuracy)
    for task, floor in MIN_UNSEEN.items():
        assert accuracy["unseen"][task] >= floor > 2 * chance[task], (task, accuracy)
