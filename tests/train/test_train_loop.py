"""The training loop on the smoke config: golden losses, exact resume, NaN stop, accumulation, unreadable videos."""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from omniclip import cli
from omniclip.config import load_config
from omniclip.data.dataset import VideoDataset, item_generator
from omniclip.data.loader import TrainSampler, collate_videos
from omniclip.data.records import read_annotations
from omniclip.data.transforms import mixup, normalize
from omniclip.runlog import read_metrics
from omniclip.train.checkpoint import find_checkpoint, load_trained_model, read_meta
from omniclip.train.loop import NonFiniteLossError, build_train_model, plan_steps, train
from omniclip.train.optim import GradClipper

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"
CLASSES = ["moving left", "moving right", "growing", "shrinking"]  # conftest.CLASSES

# Loss of the first 3 optimizer steps of configs/smoke.yaml (seed 0) on the PNG frame folders of the frame_folders
# fixture (no video encoder involved) with the seed-0 tiny CLIP. Re-record only for a known reason (a deliberate
# change of initialisation, data or loss).
GOLDEN_LOSSES = [1.3395916223526, 1.2607271671295166, 1.4911588430404663]


def _cfg(tiny_clip_file, data, *overrides: str):
    """configs/smoke.yaml on the tiny CLIP and ``data``: the synthetic videos, or a root folder (frame_folders)."""
    root = data if isinstance(data, Path) else data.root
    return load_config(SMOKE, [f"clip.source={tiny_clip_file}", f"data.root={root}", *overrides])


def _weights(run_dir) -> dict[str, torch.Tensor]:
    return load_file(str(find_checkpoint(run_dir) / "model.safetensors"))


def test_three_step_golden_loss(tiny_clip_file, frame_folders, tmp_path) -> None:
    result = train(_cfg(tiny_clip_file, frame_folders, "train.max_steps=3"), tmp_path / "run")
    losses = [r["loss"] for r in read_metrics(tmp_path / "run", "train")]
    assert result.step == 3 and not result.finished
    assert losses == pytest.approx(GOLDEN_LOSSES, abs=1e-5), losses


@pytest.mark.parametrize(
    "keys", [[], ["data.label_smoothing=0.1"], ["data.mixup_alpha=0.8", "data.label_smoothing=0.1"]], ids=str
)
def test_first_loss_is_the_cross_entropy_of_the_first_batch(tiny_clip_file, frame_folders, tmp_path, keys) -> None:
    """Without mixup the loss is plain cross-entropy on the class ids, bit for bit; with it, cross-entropy against the
    mixed one-hot rows of the mixed clips (drawn from the batch's own generator); label smoothing applies to both."""
    cfg = _cfg(tiny_clip_file, frame_folders, "train.max_steps=1", *keys)
    train(cfg, tmp_path / "run")
    logged = read_metrics(tmp_path / "run", "train")[0]["loss"]
    d = cfg.data
    records = read_annotations(frame_folders / "train.txt", frame_folders)
    dataset = VideoDataset(records, num_frames=d.num_frames, mode="train", size=d.image_size, seed=cfg.train.seed)
    batch = collate_videos([dataset[key] for key in list(TrainSampler(16, seed=cfg.train.seed))[:4]])
    model = build_train_model(cfg, torch.device("cpu"))
    x, target = normalize(batch["video"][:, 0]), batch["label"]
    if d.mixup_alpha:  # the generator of (seed, epoch, micro-batch, rank + 1)
        x, target = mixup(x, target, 4, alpha=d.mixup_alpha, generator=item_generator(cfg.train.seed, 0, 0, 1))
        assert not torch.equal(x, normalize(batch["video"][:, 0]))
    logits = model(x, model.encode_classes(CLASSES))
    loss = F.cross_entropy(logits.float(), target, reduction="sum", label_smoothing=d.label_smoothing)
    assert logged == loss.item() / 4
    assert (logged == pytest.approx(GOLDEN_LOSSES[0], abs=1e-5)) == (keys == [])  # the golden run's first step


def test_a_run_with_mixup_resumes_exactly(tiny_clip_file, synthetic, tmp_path) -> None:
    """Mixing draws are a function of (seed, epoch, micro-batch, rank): a resumed run mixes as the uninterrupted one."""
    keys = ["data.mixup_alpha=0.8", "data.label_smoothing=0.1", "data.rand_augment_ops=2"]
    full = train(_cfg(tiny_clip_file, synthetic, *keys), tmp_path / "full")
    train(_cfg(tiny_clip_file, synthetic, *keys, "train.max_steps=3"), tmp_path / "split")
    resumed = train(_cfg(tiny_clip_file, synthetic, *keys), tmp_path / "split", resume=True)
    assert full.finished and resumed.finished
    assert [r["loss"] for r in read_metrics(tmp_path / "split", "train")] == pytest.approx(
        [r["loss"] for r in read_metrics(tmp_path / "full", "train")], abs=1e-6
    )
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "split")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_resume_gives_the_same_final_weights(tiny_clip_file, synthetic, tmp_path) -> None:
    full = train(_cfg(tiny_clip_file, synthetic), tmp_path / "full")
    assert full.finished and full.step == 8  # 16 clips / 4 per step x 2 epochs
    # stop mid-epoch (step 3 of 4 in epoch 0), then continue to the end in a new process-like call
    first = train(_cfg(tiny_clip_file, synthetic, "train.max_steps=3"), tmp_path / "split")
    assert first.step == 3 and read_meta(tmp_path / "split").step == 3
    resumed = train(_cfg(tiny_clip_file, synthetic), tmp_path / "split", resume=True)
    assert resumed.finished and resumed.step == 8
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "split")
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    trained = dict(full.model.named_trainable_parameters())
    assert any((trained[k].detach() - v).abs().max() > 0 for k, v in _fresh_state(tiny_clip_file, synthetic).items())


def _fresh_state(tiny_clip_file, synthetic) -> dict[str, torch.Tensor]:
    model = build_train_model(_cfg(tiny_clip_file, synthetic), torch.device("cpu"))
    return {k: v.detach() for k, v in model.named_trainable_parameters()}


def test_gradient_accumulation_matches_one_big_batch(tiny_clip_file, synthetic, tmp_path) -> None:
    big = train(_cfg(tiny_clip_file, synthetic, "train.max_steps=2"), tmp_path / "big")
    acc = train(
        _cfg(tiny_clip_file, synthetic, "train.max_steps=2", "train.batch_size=2", "train.global_batch_size=4"),
        tmp_path / "acc",
    )
    assert [r["loss"] for r in read_metrics(tmp_path / "acc", "train")] == pytest.approx(
        [r["loss"] for r in read_metrics(tmp_path / "big", "train")], abs=1e-5
    )
    for (n, p), (_, q) in zip(
        big.model.named_trainable_parameters(), acc.model.named_trainable_parameters(), strict=True
    ):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=n)


def test_plan_derives_accumulation_and_rejects_bad_batches(tiny_clip_file, synthetic) -> None:
    cfg = _cfg(tiny_clip_file, synthetic, "train.batch_size=2", "train.global_batch_size=8", "train.warmup_epochs=1")
    plan = plan_steps(16, cfg, world_size=2)
    assert (plan.accum, plan.global_batch, plan.steps_per_epoch, plan.total_steps, plan.warmup_steps) == (2, 8, 2, 4, 2)
    with pytest.raises(ValueError, match="must be a multiple of train.batch_size x processes = 2 x 3"):
        plan_steps(16, cfg, world_size=3)
    with pytest.raises(ValueError, match="fewer than one global batch of 8"):
        plan_steps(7, cfg, world_size=1)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(smoke_args, tmp_path, capsys) -> None:
    out = tmp_path / "nan"
    code = cli.main(
        [
            "train",
            "--output",
            str(out),
            *smoke_args,
            "train.lr=1e30",
            "train.checkpoint_every=1",
            "train.warmup_epochs=0",
            "train.grad_clip=0",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "stopped" in err and "Last good checkpoint" in err and "Lower train.lr" in err
    assert "non-finite in " in err  # the report names the parameter groups whose gradients broke
    last = find_checkpoint(out)
    stop = read_metrics(out, "stop")
    assert any(k.startswith("grad_norm_") for k in stop[0])
    assert len(stop) == 1 and read_meta(last).step == stop[0]["step"] >= 1
    assert sorted(p.name for p in (out / "checkpoints").glob("step_*"))[-1] == last.name
    assert not (out / "results.json").exists()
    with pytest.raises(NonFiniteLossError):
        train(load_config(SMOKE, [*smoke_args[2:], "train.lr=1e30", "train.warmup_epochs=0"]), tmp_path / "again")


def test_metrics_carry_gradient_norms_per_group_the_clip_factor_and_the_logit_scale(
    tiny_clip_file, synthetic, tmp_path
) -> None:
    cfg = _cfg(tiny_clip_file, synthetic, "model.text_context=2", "train.grad_clip=0.05", "train.max_steps=3")
    result = train(cfg, tmp_path / "run")
    rows = read_metrics(tmp_path / "run", "train")
    assert len(rows) == 3
    for row in rows:
        groups = {k.removeprefix("grad_norm_"): v for k, v in row.items() if k.startswith("grad_norm_")}
        assert set(groups) == {"pta", "spg", "temporal_embedding", "text_context", "logit_scale"}
        assert row["grad_norm"] == pytest.approx(math.sqrt(sum(v * v for v in groups.values())), rel=1e-5)
        assert row["clip_factor"] == pytest.approx(min(1.0, 0.05 / (row["grad_norm"] + 1e-6)), rel=1e-6)
        assert row["clip_factor"] < 1  # the norm is logged before clipping
    assert rows[-1]["logit_scale"] == pytest.approx(float(result.model.logit_scale()), rel=1e-6)


def test_a_fixed_logit_scale_is_kept_by_training_and_by_the_checkpoint(tiny_clip_file, synthetic, tmp_path) -> None:
    cfg = _cfg(tiny_clip_file, synthetic, "model.logit_scale=30", "model.train_logit_scale=false", "train.max_steps=2")
    train(cfg, tmp_path / "run")
    assert [row["logit_scale"] for row in read_metrics(tmp_path / "run", "train")] == pytest.approx([30.0, 30.0])
    model, _ = load_trained_model(tmp_path / "run")
    assert float(model.logit_scale()) == pytest.approx(30.0)


def test_a_gradient_spike_is_logged_with_the_group_that_carries_it(
    tiny_clip_file, synthetic, tmp_path, monkeypatch, caplog
) -> None:
    monkeypatch.setattr(GradClipper, "MIN_RECENT", 1)
    monkeypatch.setattr(GradClipper, "SPIKE", 1e-9)  # every step after the first counts as one
    with caplog.at_level(logging.WARNING, logger="omniclip"):
        train(_cfg(tiny_clip_file, synthetic, "train.max_steps=3"), tmp_path / "run")
    spikes = read_metrics(tmp_path / "run", "spike")
    assert [s["step"] for s in spikes] == [2, 3]
    groups = {k: v for k, v in spikes[0].items() if k.startswith("grad_norm_")}
    top = max(groups, key=lambda k: groups[k]).removeprefix("grad_norm_")
    assert "step 2: gradient norm" in caplog.text and f"mostly {top} (" in caplog.text


def test_unreadable_training_videos_are_skipped_and_counted(tiny_clip_file, synthetic, tmp_path) -> None:
    cfg = _cfg(
        tiny_clip_file,
        synthetic,
        "data.train_list=broken_train.txt",
        "train.global_batch_size=17",
        "train.batch_size=17",
        "train.epochs=2",
    )
    result = train(cfg, tmp_path / "run")
    epochs = read_metrics(tmp_path / "run", "epoch")
    assert result.finished and [e["failed_videos"] for e in epochs] == [1, 1]
    assert all(r["failed"] == 1 for r in read_metrics(tmp_path / "run", "train"))


@pytest.mark.parametrize("qk_norm", [False, True])
def test_load_trained_model_rebuilds_the_trained_weights(tiny_clip_file, synthetic, tmp_path, qk_norm: bool) -> None:
    cfg = _cfg(tiny_clip_file, synthetic, "train.max_steps=2", f"model.qk_norm={str(qk_norm).lower()}")
    result = train(cfg, tmp_path / "run")
    model, meta = load_trained_model(tmp_path / "run")
    assert any(".attn.q_norm." in n for n, _ in model.named_trainable_parameters()) is qk_norm
    assert meta.class_names == synthetic.class_names and meta.num_frames == 4 and meta.step == 2
    assert meta.clip_source == str(tiny_clip_file) and meta.config["data"]["image_size"] == 32
    for (n, p), (_, q) in zip(
        model.named_trainable_parameters(), result.model.named_trainable_parameters(), strict=True
    ):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=n)
    video = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        classes = model.encode_classes(meta.class_names)
        torch.testing.assert_close(
            model(video, classes), result.model(video, result.model.encode_classes(meta.class_names))
        )
    file_only, _ = load_trained_model(find_checkpoint(tmp_path / "run") / "model.safetensors")
    assert file_only.num_frames == 4


def test_resume_after_a_kill_drops_the_lines_logged_past_the_checkpoint(tiny_clip_file, synthetic, tmp_path) -> None:
    cfg = _cfg(tiny_clip_file, synthetic, "train.checkpoint_every=3", "train.keep_checkpoints=10")
    full = train(cfg, tmp_path / "full")
    # as if the process died at step 5: only the step-3 checkpoint (mid-epoch) exists, metrics went further
    run = tmp_path / "killed"
    train(
        _cfg(tiny_clip_file, synthetic, "train.checkpoint_every=3", "train.keep_checkpoints=10", "train.max_steps=5"),
        run,
    )
    for late in ("step_00000004", "step_00000005"):
        shutil.rmtree(run / "checkpoints" / late)
    (run / "checkpoints" / "last").write_text("step_00000003\n")
    resumed = train(cfg, run, resume=True)
    assert [r["step"] for r in read_metrics(run, "train")] == list(range(1, 9))
    assert [r["loss"] for r in read_metrics(run, "train")] == pytest.approx(
        [r["loss"] for r in read_metrics(tmp_path / "full", "train")], abs=1e-6
    )
    for (n, p), (_, q) in zip(
        full.model.named_trainable_parameters(), resumed.model.named_trainable_parameters(), strict=True
    ):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=n)


def test_bf16_frozen_weights_keep_trainable_weights_and_optimizer_state_fp32(tiny_clip_file, synthetic, tmp_path):
    result = train(_cfg(tiny_clip_file, synthetic, "train.frozen_dtype=bf16", "train.max_steps=2"), tmp_path / "run")
    params = dict(result.model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    assert trainable and len(trainable) < len(params)
    assert all(p.dtype == (torch.float32 if n in trainable else torch.bfloat16) for n, p in params.items())
    saved = find_checkpoint(tmp_path / "run")
    weights, optim = load_file(str(saved / "model.safetensors")), load_file(str(saved / "optimizer.safetensors"))
    assert weights.keys() == trainable and {v.dtype for v in weights.values()} == {torch.float32}
    slots = {k: v for k, v in optim.items() if k.endswith((".exp_avg", ".exp_avg_sq"))}
    assert len(slots) == 2 * len(trainable) and {v.dtype for v in slots.values()} == {torch.float32}
    assert all(v.abs().sum() > 0 for k, v in slots.items() if k.endswith(".exp_avg_sq"))


def test_a_bf16_run_resumes_bit_for_bit(tiny_clip_file, synthetic, tmp_path) -> None:
    keys = ["train.frozen_dtype=bf16", "train.amp=bf16", "train.epochs=1"]
    full = train(_cfg(tiny_clip_file, synthetic, *keys), tmp_path / "full")
    train(_cfg(tiny_clip_file, synthetic, *keys, "train.max_steps=2"), tmp_path / "split")
    resumed = train(_cfg(tiny_clip_file, synthetic, *keys), tmp_path / "split", resume=True)
    assert full.finished and resumed.finished and full.step == resumed.step == 4
    losses = [[r["loss"] for r in read_metrics(tmp_path / run, "train")] for run in ("full", "split")]
    assert losses[0] == losses[1]
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "split")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_precision_settings_may_change_on_resume(tiny_clip_file, synthetic, tmp_path) -> None:
    train(_cfg(tiny_clip_file, synthetic, "train.max_steps=1"), tmp_path / "run")
    keys = ["train.frozen_dtype=bf16", "train.amp=bf16", "train.max_steps=2"]
    assert train(_cfg(tiny_clip_file, synthetic, *keys), tmp_path / "run", resume=True).step == 2
    changed = read_metrics(tmp_path / "run", "resume")[0]["changed"]
    assert changed.keys() == {"train.frozen_dtype", "train.amp", "train.max_steps"}


@pytest.mark.slow(minutes=2.5)  # the first torch.compile in a process: 20-40 s warm, 2.5 min with a cold cache
def test_a_compiled_encoder_trains_like_the_eager_one(tiny_clip_file, frame_folders, tmp_path) -> None:
    result = train(_cfg(tiny_clip_file, frame_folders, "train.compile=true", "train.max_steps=2"), tmp_path / "run")
    assert getattr(result.model.clip.visual, "_compiled_call_impl", None) is not None
    losses = [r["loss"] for r in read_metrics(tmp_path / "run", "train")]
    assert losses == pytest.approx(GOLDEN_LOSSES[:2], abs=1e-4), losses


def test_evaluation_runs_in_the_configured_precision(tiny_clip_file, synthetic, tmp_path) -> None:
    from omniclip.protocols.runners import evaluate_protocol

    cpu = torch.device("cpu")
    cfg = _cfg(tiny_clip_file, synthetic, "train.frozen_dtype=bf16")
    model = build_train_model(cfg, cpu).eval()
    bf16 = evaluate_protocol(cfg, model, tmp_path / "bf16", device=cpu)
    assert all((p.dtype == torch.float32) == p.requires_grad for p in model.parameters())
    fresh = build_train_model(cfg, cpu).eval()
    fp32 = evaluate_protocol(_cfg(tiny_clip_file, synthetic), fresh, tmp_path / "fp32", device=cpu)
    assert {p.dtype for p in fresh.parameters()} == {torch.float32}  # smoke.yaml: fp32
    assert bf16["summary"]["num_scored"] == fp32["summary"]["num_scored"] > 0


def test_image_layernorms_train_at_the_backbone_rate_and_come_back_with_the_checkpoint(
    tiny_clip_file, synthetic, tmp_path
) -> None:
    pristine = build_train_model(load_config(SMOKE, [f"clip.source={tiny_clip_file}"]), torch.device("cpu"))
    initial = dict(pristine.named_parameters())
    layernorms = sorted(
        f"clip.visual.{m}.{p}"
        for m, module in pristine.clip.visual.named_modules()
        if isinstance(module, torch.nn.LayerNorm)
        for p in ("weight", "bias")
    )
    moved = {}
    for scale in ("1", "0.1"):
        cfg = _cfg(
            tiny_clip_file,
            synthetic,
            "model.train_image_layernorms=true",
            f"train.backbone_lr_scale={scale}",
            "train.weight_decay=0",
            "train.max_steps=1",
        )
        run = tmp_path / f"scale_{scale}"
        train(cfg, run)
        assert "grad_norm_backbone" in read_metrics(run, "train")[0]
        saved = _weights(run)
        norms = sorted(n for n in saved if n.startswith("clip.visual.") and ".pta." not in n and ".spg." not in n)
        assert norms == layernorms  # the image tower's LayerNorms and nothing else of CLIP's
        moved[scale] = {n: saved[n] - initial[n].detach() for n in norms}
        model, _ = load_trained_model(run)
        trained = dict(model.named_parameters())
        for n in norms:
            torch.testing.assert_close(trained[n], saved[n], rtol=0, atol=0)
    # one AdamW step moves each weight by the learning rate times the sign of its gradient: the scale shows as is
    for n, delta in moved["1"].items():
        assert delta.abs().max() > 0, n
        torch.testing.assert_close(moved["0.1"][n], 0.1 * delta, rtol=1e-3, atol=1e-9)
