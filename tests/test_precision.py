"""Precision as a run setting: what ``auto`` picks on which hardware, the reasons it logs, and what bf16 changes.

bf16 tolerance (docs/benchmarks.md "Precision"): bf16 video embeddings keep a cosine above 0.999 with fp32's and the
cosines behind the logits (logits / logit scale) move by at most 0.01; measured at most 0.0004 and 0.004.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from omniclip import cli, precision
from omniclip.clip import build_clip
from omniclip.config import load_config
from omniclip.data.encode import write_video
from omniclip.model import build_model
from omniclip.precision import Precision, cpu_bf16_units, named_precision, resolve_precision

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
FLAGS = {"amx": {"avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}, "avx512_bf16": {"avx512f", "avx512_bf16"}}


@pytest.fixture(autouse=True)
def _fresh_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "_LOGGED", set())  # every test sees each decision logged


def _fake_cpu(monkeypatch: pytest.MonkeyPatch, units: str) -> None:
    monkeypatch.setattr(precision, "_cpu_flags", lambda: FLAGS.get(units, {"avx2", "fma"}))


@pytest.mark.parametrize(
    ("units", "width", "frozen", "reason"),
    [
        ("amx", 768, torch.bfloat16, "frozen weights in bf16: this CPU has AMX bf16 units"),
        ("amx", None, torch.bfloat16, "frozen weights in bf16: this CPU has AMX bf16 units"),
        ("amx", 64, torch.float32, "the image tower is 64 wide, under 128"),
        ("avx512_bf16", 768, torch.float32, "this CPU has AVX512-BF16 but no AMX"),
        ("", 768, torch.float32, "frozen weights in fp32: this CPU has no native bf16"),
    ],
)
def test_auto_on_a_cpu_follows_its_bf16_units(monkeypatch, caplog, units, width, frozen, reason) -> None:
    _fake_cpu(monkeypatch, units)
    assert cpu_bf16_units() == units
    with caplog.at_level(logging.INFO, logger="omniclip.precision"):
        got = resolve_precision("cpu", "auto", "auto", "auto", width=width)
        again = resolve_precision("cpu", "auto", "auto", "auto", width=width)
    assert got == again == Precision(amp=None, frozen=frozen, compile=False)
    lines = [r.getMessage() for r in caplog.records]
    assert any(reason in line and "(frozen_dtype=auto)" in line for line in lines), lines
    assert any("no autocast on the CPU" in line for line in lines) and any("no torch.compile" in line for line in lines)
    assert len(lines) == len(set(lines)) == 3  # each decision once, however often it is asked


@pytest.mark.parametrize(("supported", "amp"), [(True, torch.bfloat16), (False, None)])
def test_auto_on_a_gpu_autocasts_where_it_has_bf16(monkeypatch, caplog, supported, amp) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
    with caplog.at_level(logging.INFO, logger="omniclip.precision"):
        got = resolve_precision("cuda:0", width=64)  # the width matters on a CPU only
    assert got == Precision(amp=amp, frozen=torch.float32, compile=True)
    want = "bf16 autocast: the GPU computes bf16 natively" if supported else "no autocast: this GPU has no native bf16"
    assert want in caplog.text


def test_explicit_settings_are_kept_on_any_hardware(monkeypatch) -> None:
    _fake_cpu(monkeypatch, "")
    assert resolve_precision("cpu", "bf16", "bf16", True) == Precision(torch.bfloat16, torch.bfloat16, True)
    _fake_cpu(monkeypatch, "amx")
    assert resolve_precision("cpu", "off", "fp32", "off", width=768) == Precision()
    assert named_precision("cpu", "fp32", width=768) == Precision()
    assert named_precision("cpu", "bf16", width=64) == Precision(frozen=torch.bfloat16)
    assert named_precision("cuda", "bf16") == Precision(amp=torch.bfloat16, frozen=torch.bfloat16)
    assert named_precision("cpu", "auto", width=768) == Precision(frozen=torch.bfloat16)
    assert precision.amp_dtype(torch.device("cpu"), "auto") is None  # what the CPU did before it was a setting


def test_bad_settings_are_refused() -> None:
    for kwargs in ({"amp": "fp16"}, {"frozen_dtype": "half"}, {"compile": "maybe"}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            resolve_precision("cpu", **kwargs)
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, got 'fp16'"):
        named_precision("cpu", "fp16")


def test_the_probe_reads_what_the_kernel_reports() -> None:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo to compare torch's CPU flags with")
    flags = next(line.split(":")[1].split() for line in cpuinfo.read_text().splitlines() if line.startswith("flags"))
    want = "amx" if "amx_bf16" in flags else "avx512_bf16" if "avx512_bf16" in flags else ""
    assert cpu_bf16_units() == want


@pytest.mark.parametrize("variant", ["frame_average", "omniclip"])
def test_bf16_logits_agree_with_fp32_within_the_tolerance(variant: str) -> None:
    """bf16 frozen weights, bf16 autocast and both against fp32; branches given non-zero weights so they count."""
    clip = build_clip("tiny")
    ref = build_model(clip, 4, variant=variant).eval()
    for name, p in ref.named_parameters():
        if p.requires_grad and name != "clip.logit_scale":
            p.data.normal_(0, 0.02)
    x = torch.randn(3, 4, 3, 32, 32)
    classes = F.normalize(torch.randn(5, clip.cfg.embed_dim), dim=-1)
    with torch.no_grad():
        emb, logits = F.normalize(ref.encode_video(x), dim=-1), ref(x, classes)
    scale = ref.logit_scale().item()
    bf16 = torch.bfloat16
    for p in (Precision(frozen=bf16), Precision(amp=bf16), Precision(amp=bf16, frozen=bf16)):
        model = p.apply(copy.deepcopy(ref))
        with torch.no_grad(), p.autocast("cpu"):
            got_emb, got_logits = F.normalize(model.encode_video(x).float(), dim=-1), model(x, classes).float()
        assert (got_emb * emb).sum(-1).min() > 0.999, p.name
        assert ((got_logits - logits).abs().max() / scale) < 0.01, p.name


def test_auto_picks_bf16_for_a_wide_model_on_this_cpu_where_it_has_amx() -> None:
    if cpu_bf16_units() != "amx":
        pytest.skip(f"this CPU has no AMX bf16 units ({cpu_bf16_units() or 'no native bf16'}): auto stays fp32 here")
    assert resolve_precision("cpu", width=768).frozen == torch.bfloat16
    assert resolve_precision("cpu", width=64).frozen == torch.float32


def test_apply_casts_only_frozen_weights_and_compiles_in_place() -> None:
    model = build_model(build_clip("tiny"), 4, variant="omniclip")
    names = [n for n, _ in model.named_parameters()]
    Precision(frozen=torch.bfloat16, compile=True).apply(model, model.clip.visual)
    assert [n for n, _ in model.named_parameters()] == names  # in place: checkpoints keep their keys
    assert all((p.dtype == torch.float32) == p.requires_grad for p in model.parameters())
    assert getattr(model.clip.visual, "_compiled_call_impl", None) is not None


def test_config_keys_take_their_choices_and_refuse_others(tmp_path: Path, capsys) -> None:
    t = load_config(SMOKE, ["train.frozen_dtype=bf16", "train.compile=true"]).train
    assert (t.frozen_dtype, t.compile) == ("bf16", True)
    assert load_config(None, ["train.compile=off"]).train.compile is False  # YAML reads off as False
    assert load_config(None, []).train.compile == "auto" and load_config(None, []).train.frozen_dtype == "auto"
    for key, value in (("train.frozen_dtype", "fp16"), ("train.compile", "maybe")):
        run = tmp_path / key
        assert cli.main(["train", "--config", str(SMOKE), "--output", str(run), f"{key}={value}"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and key in err[0] and repr(value) in err[0] and not run.exists(), err


def test_the_smoke_config_is_fp32_on_every_machine(monkeypatch) -> None:
    _fake_cpu(monkeypatch, "amx")  # the golden losses of the tests were recorded in fp32
    t = load_config(SMOKE, []).train
    assert resolve_precision("cpu", t.amp, t.frozen_dtype, t.compile, width=768) == Precision()


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(0, 255, (1, 64, 64, 3), dtype=np.uint8), 12, axis=0)
    for t in range(12):
        frames[t, 16:40, 4 * t : 4 * t + 20] = (220, 30, 30)
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", frames, fps=8)


def _predict(video: Path, capsys, *flags: str) -> dict[str, float]:
    argv = ["predict", str(video), "--clip", "omniclip-tiny", "--classes", "red square,blue circle,green star"]
    assert cli.main([*argv, "--json", *flags]) == 0
    return {p["class"]: p["probability"] for p in json.loads(capsys.readouterr().out)[0]["predictions"]}


def test_predict_precision_flag(video: Path, capsys, monkeypatch) -> None:
    fp32 = _predict(video, capsys, "--precision", "fp32")
    bf16 = _predict(video, capsys, "--precision", "bf16")
    assert bf16 == pytest.approx(fp32, abs=0.02) and bf16 != fp32
    _fake_cpu(monkeypatch, "")
    assert _predict(video, capsys) == fp32  # auto on a CPU without native bf16 is fp32, bit for bit
    _fake_cpu(monkeypatch, "amx")
    assert _predict(video, capsys) == bf16  # omniclip-tiny is 128 wide: bf16 frozen weights with AMX
    with pytest.raises(SystemExit) as exit_:
        cli.main(["predict", str(video), "--clip", "omniclip-tiny", "--precision", "fp16"])
    assert exit_.value.code == 2
    assert "--precision: invalid choice: 'fp16'" in capsys.readouterr().err


def test_export_precision_flag(tmp_path: Path) -> None:
    from omniclip.export import load_export

    base = ["export", "--clip", "omniclip-tiny", "--classes", "red square,blue circle", "--frames", "4"]
    assert cli.main([*base, "--out", str(tmp_path / "fp32")]) == 0
    assert cli.main([*base, "--out", str(tmp_path / "bf16"), "--precision", "bf16"]) == 0
    metas = [json.loads((tmp_path / k / "export.json").read_text()) for k in ("fp32", "bf16")]
    assert [(m["precision"], m["weights_dtype"]) for m in metas] == [
        ("fp32", "float32"),
        ("bf16 frozen weights", "bfloat16"),
    ]
    x = torch.randn(2, 4, 3, 64, 64)
    a, b = (load_export(tmp_path / k).encoder(x) for k in ("fp32", "bf16"))
    assert (a * b).sum(-1).min() > 0.999
    size = {k: (tmp_path / k / "video_encoder.pt2").stat().st_size for k in ("fp32", "bf16")}
    assert size["bf16"] < 0.7 * size["fp32"]  # the frozen weights, most of the file, at half the bytes
