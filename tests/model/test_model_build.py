"""ModelConfig validation, build_model wiring, what trains (counted by formula), gradients and checkpointing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from omniclip.clip import build_clip
from omniclip.model import VARIANTS, ModelConfig, build_model


def pta_params(D: int, d: int, F_: int) -> int:
    """down + temporal_embedding + attn.qkv + attn.proj + up."""
    return (D * d + d) + F_ * d + (3 * d * d + 3 * d) + (d * d + d) + (d * D + D)


def spg_params(D: int, d: int, F_: int, R: int, mixing: str = "both") -> int:
    """down + region_embedding [+ temporal_embedding + mix] [+ motion] + q + kv + out + gate."""
    n = (D * d + d) + R * d + (d * d + d) + (2 * d * d + 2 * d) + (d * D + D) + D
    if mixing in ("attention", "both"):
        n += F_ * d + (3 * d * d + 3 * d) + (d * d + d)
    if mixing in ("difference", "both"):
        n += d * d + d
    return n


@pytest.mark.parametrize("variant", VARIANTS)
def test_trainable_parameter_counts_by_formula(tiny_clip, variant: str) -> None:
    cfg = tiny_clip.cfg.vision  # tiny: D = 64, L = 2 -> d = 16; SPG in the last half (block 1)
    D, L, F_ = cfg.width, cfg.layers, 8
    d = D // 4
    n_pta = L if variant in ("omniclip", "pta", "serial") else 0
    n_spg = L - L // 2 if variant in ("omniclip", "spg") else 0
    expected = n_pta * pta_params(D, d, F_) + n_spg * spg_params(D, d, F_, 1 + 4 + 16) + 1  # + logit scale
    model = build_model(tiny_clip, F_, variant=variant)
    assert sum(p.numel() for p in model.trainable_parameters()) == expected
    assert all(
        not p.requires_grad
        for n, p in model.clip.named_parameters()
        if ".pta." not in n and ".spg." not in n and n != "logit_scale"
    )


def test_counts_follow_options(tiny_clip) -> None:
    model = build_model(
        tiny_clip,
        4,
        pta_layers=[-1],
        spg_layers=(0, 1),
        spg_scales=(1, 3),
        spg_mixing="difference",
        pta_ratio=0.5,
        text_context=3,
        train_logit_scale=False,
    )
    D, d_pta, d_spg = 64, 32, 16
    expected = pta_params(D, d_pta, 4) + 2 * spg_params(D, d_spg, 4, 1 + 9, "difference") + 3 * 32
    assert sum(p.numel() for p in model.trainable_parameters()) == expected
    blocks = model.clip.visual.transformer.resblocks
    assert blocks[0].pta is None and blocks[1].pta is not None and blocks[0].spg is not None
    names = {n for n, _ in model.named_trainable_parameters()}
    assert "clip.visual.transformer.resblocks.1.pta.up.weight" in names
    assert "clip.visual.transformer.resblocks.0.spg.gate" in names and "text_prompt.context" in names
    assert "clip.logit_scale" not in names


def test_full_finetune_trains_everything(tiny_clip) -> None:
    model = build_model(tiny_clip, 2, variant="frame_average", full_finetune=True)
    assert len(model.trainable_parameters()) == len(list(model.parameters()))


def test_pretrained_keys_stay_and_new_keys_are_additive() -> None:
    clip = build_clip("tiny")
    before = set(clip.state_dict())
    model = build_model(clip, 2)
    after = set(model.clip.state_dict())
    assert before <= after
    assert all(".pta." in k or ".spg." in k for k in after - before)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_reach_every_trainable_parameter_after_one_step(tiny_clip, variant: str) -> None:
    model = build_model(tiny_clip, 3, variant=variant, text_context=2)
    opt = torch.optim.SGD(model.trainable_parameters(), lr=0.1)
    video, labels = torch.randn(2, 3, 3, 32, 32), torch.tensor([0, 1])
    for _ in range(2):  # step 0 moves the zero-initialised ``up``/``gate``; then everything behind them gets gradient
        opt.zero_grad()
        F.cross_entropy(model(video, model.encode_classes(["a", "b"])), labels).backward()
        opt.step()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_no_weight_decay_names(tiny_clip) -> None:
    model = build_model(tiny_clip, 2, text_context=2)
    skip = model.no_weight_decay()
    names = {n for n, _ in model.named_trainable_parameters()}
    assert skip <= names
    block = "clip.visual.transformer.resblocks.1"
    for name in (
        "clip.logit_scale",
        "text_prompt.context",
        f"{block}.pta.temporal_embedding",
        f"{block}.pta.up.bias",
        f"{block}.spg.gate",
        f"{block}.spg.region_embedding",
        f"{block}.spg.temporal_embedding",
    ):
        assert name in skip, name
    assert f"{block}.pta.up.weight" not in skip and f"{block}.spg.kv.weight" not in skip


def wake_branches(model: torch.nn.Module) -> None:
    """Non-zero weights for the zero-initialised branch outputs (PTA ``up``, SPG ``gate``), so every path matters."""
    for name, p in model.named_parameters():
        if ".up." in name or name.endswith("gate"):
            torch.nn.init.normal_(p, std=0.3)


@pytest.mark.parametrize("drop_path", [0.0, 0.5])
def test_grad_checkpointing_gives_same_outputs_and_gradients(drop_path: float) -> None:
    """With drop path too: the recomputed blocks draw the same clips to skip (checkpoint restores the RNG)."""
    video = torch.randn(2, 3, 3, 32, 32)
    results = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = build_model(build_clip("tiny"), 3, grad_checkpointing=ckpt, full_finetune=True, drop_path=drop_path)
        wake_branches(model)
        out = model.encode_video(video)
        out.square().sum().backward()
        results.append((out, [p.grad for p in model.parameters()]))
        assert model.clip.visual.transformer.grad_checkpointing is ckpt
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-6, rtol=0)
    for a, b in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_drop_path_rises_to_the_last_image_block_and_leaves_evaluation_unchanged() -> None:
    video = torch.randn(2, 4, 3, 32, 32)
    models = []
    for rate in (0.0, 0.4):
        torch.manual_seed(0)
        model = build_model(build_clip("tiny"), 4, drop_path=rate)
        wake_branches(model)
        models.append(model)
    image_blocks = models[1].clip.visual.transformer.resblocks
    L = len(image_blocks)
    assert [b.drop_path for b in image_blocks] == pytest.approx([0.4 * i / (L - 1) for i in range(L)])
    assert all(b.drop_path == 0 for b in models[1].clip.transformer.resblocks)  # the text tower: never
    plain, dropping = (m.eval().encode_video(video) for m in models)
    torch.testing.assert_close(dropping, plain, rtol=0, atol=0)
    torch.manual_seed(1)
    assert not torch.allclose(models[1].train().encode_video(video), plain)


def test_drop_path_skips_a_branch_in_every_frame_of_a_clip_and_scales_the_kept_ones() -> None:
    from omniclip.clip.model import FrameLayout, ResidualAttentionBlock

    torch.manual_seed(0)
    clips, T, D = 24, 3, 32
    block = ResidualAttentionBlock(D, 2)
    block.drop_path, keep = 0.5, 0.5
    x = torch.randn(clips * T, 5, D)
    with torch.no_grad():
        out = block(x, FrameLayout(T, (2, 2))).view(clips, T, 5, D)
        attn = block.attn(block.ln_1(x))
        candidates = {}  # (attention kept, MLP kept) -> the block's output
        for a in (False, True):
            mid = x + attn / keep if a else x
            for m in (False, True):
                candidates[a, m] = (mid + block.mlp(block.ln_2(mid)) / keep if m else mid).view(clips, T, 5, D)
    seen = []
    for c in range(clips):
        match = [k for k, y in candidates.items() if torch.allclose(out[c], y[c], atol=1e-5)]
        assert len(match) == 1, f"clip {c}: its frames match {match}"  # one draw for all of its frames
        seen.append(match[0])
    assert len(set(seen)) == 4  # 24 clips at 0.5 drew every combination (seed fixed)
    block.eval()
    torch.testing.assert_close(block(x, FrameLayout(T, (2, 2))), x + attn + block.mlp(block.ln_2(x + attn)))


def test_config_validation_names_the_key() -> None:
    cases = [
        ({"variant": "aim"}, "model.variant: unknown 'aim'"),
        ({"pta_ratio": 0.0}, r"model.pta_ratio must be in \(0, 1\]"),
        ({"pta_heads": 0}, "model.pta_heads must be >= 1"),
        ({"pta_layers": []}, "model.pta_layers must be null"),
        ({"spg_layers": [1, 1]}, "model.spg_layers has duplicates"),
        ({"spg_scales": (1, 0)}, "model.spg_scales must be positive"),
        ({"spg_mixing": "conv"}, "model.spg_mixing: unknown 'conv'"),
        ({"spg_window": -1}, "model.spg_window must be >= 0"),
        ({"text_context": -2}, "model.text_context must be >= 0"),
        ({"drop_path": -0.1}, r"model.drop_path must be in \[0, 1\)"),
        ({"drop_path": 1.0}, r"model.drop_path must be in \[0, 1\)"),
        ({"drop_path": float("nan")}, r"model.drop_path must be in \[0, 1\)"),
        ({"temporal_init_std": 0.0}, "model.temporal_init_std must be positive and finite"),
        ({"logit_scale": 0.0}, r"model.logit_scale must be in \(0, 100\]"),
        ({"logit_scale": 150.0}, r"model.logit_scale must be in \(0, 100\]"),
        ({"templates": ("a video",)}, r"exactly one '\{\}'"),
        ({"templates": ("{} of {0}",)}, "does not format"),
        ({"templates": ("{} {x}",)}, "does not format"),
        ({"templates": ()}, "at least one template"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            ModelConfig(**kwargs)


@pytest.mark.parametrize("trained", [False, True])
def test_logit_scale_sets_the_starting_temperature_and_null_keeps_the_checkpoints(trained: bool) -> None:
    kept = build_model(build_clip("tiny"), 2)
    model = build_model(build_clip("tiny"), 2, logit_scale=50.0, train_logit_scale=trained)
    assert float(kept.logit_scale()) == pytest.approx(float(build_clip("tiny").logit_scale.exp()))
    assert float(model.logit_scale()) == pytest.approx(50.0)
    assert model.clip.logit_scale.requires_grad is trained


def test_temporal_init_std_scales_the_pta_and_spg_temporal_embeddings() -> None:
    models = {}
    for std in (0.5, 2.0):
        torch.manual_seed(0)
        models[std] = build_model(build_clip("tiny"), 4, temporal_init_std=std)
    embeddings = {
        std: [p for name, p in model.named_parameters() if name.endswith("temporal_embedding")]
        for std, model in models.items()
    }
    assert len(embeddings[0.5]) == 3  # one PTA per block (two) and the SPG's attention mixing (one)
    for small, large in zip(embeddings[0.5], embeddings[2.0], strict=True):
        torch.testing.assert_close(large, 4 * small)  # the same draw, scaled: the default keeps every run's init


def test_config_dict_round_trip_and_unknown_keys() -> None:
    cfg = ModelConfig(variant="pta", pta_layers=[0, 1], templates=["{}"])
    assert cfg.pta_layers == (0, 1) and cfg.templates == ("{}",)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"unknown model config keys \['pta_ratoi'\]; valid keys: variant, pta_layers"):
        ModelConfig.from_dict({"pta_ratoi": 0.5})
    with pytest.raises(ValueError, match="unknown model config keys"):
        build_model(build_clip("tiny"), 2, bottleneck=8)


def test_build_errors(tiny_clip) -> None:
    with pytest.raises(ValueError, match=r"model.pta_layers: block 5 does not exist; the image tower has 2"):
        build_model(build_clip("tiny"), 2, pta_layers=(5,))
    with pytest.raises(ValueError, match="names a block twice"):
        build_model(build_clip("tiny"), 2, spg_layers=(1, -1))
    with pytest.raises(ValueError, match="num_frames must be >= 1"):
        build_model(build_clip("tiny"), 0)
    with pytest.raises(ValueError, match="leaves no room"):
        build_model(build_clip("tiny"), 2, text_context=75)
    build_model(tiny_clip, 2)
    with pytest.raises(ValueError, match="already carries PTA/SPG branches"):
        build_model(tiny_clip, 2)


def test_image_layernorms_train_when_asked_and_nothing_else_of_clip(tiny_clip) -> None:
    plain = {n for n, _ in build_model(build_clip("tiny"), 2).named_trainable_parameters()}
    model = build_model(tiny_clip, 2, train_image_layernorms=True)
    added = {n for n, _ in model.named_trainable_parameters()} - plain
    layernorms = {
        f"clip.visual.{m}.{p}"
        for m, module in model.clip.visual.named_modules()
        if isinstance(module, torch.nn.LayerNorm)
        for p in ("weight", "bias")
    }
    assert added == layernorms and len(layernorms) == 2 * (2 + 2 * len(model.clip.visual.transformer.resblocks))
