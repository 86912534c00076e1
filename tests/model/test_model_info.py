"""``omniclip model-info``: numbers consistent with CLIP's image encoder counted separately and with formulas."""

from __future__ import annotations

import json

import pytest
import torch

from omniclip.cli import main
from omniclip.clip import CLIP, build_clip, get_preset
from omniclip.model.flops import image_flops


def model_info(capsys, *extra: str) -> dict:
    assert main(["model-info", "--arch", "tiny", "--frames", "4", "--size", "32", "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_model_info_numbers_are_consistent(capsys) -> None:
    omni = model_info(capsys)
    frame_avg = model_info(capsys, "--variant", "frame_average")
    with torch.device("meta"):
        clip = CLIP(get_preset("tiny"))
    per_image = image_flops(clip, 32)
    assert frame_avg["gflops"] * 1e9 == pytest.approx(4 * per_image, rel=1e-12)
    assert frame_avg["gflops_pta"] == frame_avg["gflops_spg"] == 0.0
    assert omni["gflops_backbone"] == pytest.approx(frame_avg["gflops"], rel=1e-12)
    assert omni["gflops"] == pytest.approx(omni["gflops_backbone"] + omni["gflops_pta"] + omni["gflops_spg"])
    # PTA per block and clip: 2 FLOPs/MAC x (down + qkv + QK^T + AV + proj + up) = 2 T N (2 D d + 4 d^2 + 2 T d),
    # with N tokens in every block but the last, which computes the class token alone.
    T, N, D, d, L = 4, 1 + 4 * 4, 64, 16, 2
    tokens = (L - 1) * N + 1
    assert omni["gflops_pta"] * 1e9 == pytest.approx(2 * T * tokens * (2 * D * d + 4 * d * d + 2 * T * d), rel=1e-12)
    assert omni["params_total"] == frame_avg["params_total"] + omni["params_pta"] + omni["params_spg"]
    assert omni["params_trainable"] == omni["params_pta"] + omni["params_spg"] + 1  # + logit scale
    assert (
        omni["params_total"] == sum(p.numel() for p in build_clip("tiny").parameters()) + omni["params_trainable"] - 1
    )


def test_model_info_table_for_all_variants(capsys) -> None:
    assert main(["model-info", "--arch", "tiny", "--frames", "2", "4", "--variant", "all"]) == 0
    out = capsys.readouterr().out
    assert "2 FLOPs per multiply-add" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "variant" not in line]
    assert len(rows) == 10 and rows[0].startswith("| omniclip | 2 | 32 |")


def test_model_info_from_checkpoint(tmp_path, capsys) -> None:
    from omniclip.clip.weights import save_clip

    path = save_clip(build_clip("tiny"), tmp_path / "tiny.safetensors")
    assert main(["model-info", "--clip", str(path), "--frames", "4", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["arch"] == str(path) and info["image_size"] == 32
    assert info["gflops"] == pytest.approx(model_info(capsys)["gflops"])


def test_model_info_errors(capsys) -> None:
    assert main(["model-info", "--arch", "ViT-Q-99"]) == 2
    assert "unknown CLIP architecture 'ViT-Q-99'" in capsys.readouterr().err
    assert main(["model-info", "--arch", "tiny", "--frames", "0"]) == 2
    assert "--frames must be >= 1" in capsys.readouterr().err
    assert main(["model-info", "--arch", "tiny", "--size", "4"]) == 2
    assert "smaller than one 8-pixel patch" in capsys.readouterr().err


def test_cpu_and_meta_counts_agree(tiny_clip) -> None:
    """The CPU runs SDPA as a flash kernel the stock counter skips; the registered formula makes counts equal."""
    from omniclip.model import build_model
    from omniclip.model.flops import video_flops

    with torch.device("meta"):
        meta = build_model(CLIP(get_preset("tiny")), 4)
    assert video_flops(build_model(tiny_clip, 4), 4, 32) == video_flops(meta, 4, 32)
