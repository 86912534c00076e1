"""``omniclip bench`` end to end on the CPU (``bench.run``, ``bench.report``): the JSON report's keys, its own
arithmetic, the table, the switches, and benchmarks/gpu_bench.sh's stages."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

import omniclip.bench.run as bench_run
from omniclip.bench import SUBJECTS, BenchConfig, compute_ratios, format_table, run_bench
from omniclip.cli import main

ROOT = Path(__file__).resolve().parents[1]
HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None
TIMING_KEYS = {
    "batch", "step_s", "clips_per_s", "step_s_repeats", "peak_memory_bytes", "memory_kind",
    "gflops_per_clip", "tflops_per_s", "matmul_fraction", "cpu_step_s",
}  # fmt: skip
ENTRY_KEYS = {"kind", "variant", "params_total", "params_trainable", "weights_bytes", "infer", "train"}


@pytest.fixture(scope="module")
def cli_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    """One CLI run of every subject at the tiny size, shared by the tests below."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["bench", "--arch", "tiny", "--frames", "4", "--size", "32", "--batch", "2", "--repeats", "2",
                   "--json", str(out)])  # fmt: skip
    assert rc == 0, buf.getvalue()
    return json.loads(out.read_text()), buf.getvalue()


def expected_subjects() -> list[str]:
    return [s for s in SUBJECTS if s != "xclip" or HAS_TRANSFORMERS]


def test_cli_report_has_every_subject_with_its_keys(cli_report: tuple[dict, str]) -> None:
    report, _ = cli_report
    assert set(report) >= {"schema", "config", "machine", "results", "ratios", "notes"}
    assert report["config"]["batch"] == 2 and report["config"]["frames"] == 4 and report["config"]["size"] == 32
    assert report["config"]["variants"] == list(SUBJECTS) and report["config"]["classes"] == 16
    machine = report["machine"]
    assert machine["device"] == "cpu" and machine["matmul_dtype"] == "fp32"
    assert machine["matmul_size"] in (256, 512, 1024)
    assert list(report["results"]) == list(SUBJECTS)
    for name in expected_subjects():
        entry = report["results"][name]
        assert "error" not in entry, entry
        assert ENTRY_KEYS <= set(entry), (name, set(entry))
        assert entry["weights_bytes"] == 4 * entry["params_total"]  # every weight fp32
        for mode in ("infer", "train"):
            t = entry[mode]
            assert TIMING_KEYS <= set(t), (name, mode, set(t))
            assert t["batch"] == 2 and len(t["step_s_repeats"]) == 2
            assert t["step_s"] == statistics.median(t["step_s_repeats"])
            assert math.isclose(t["clips_per_s"], 2 / t["step_s"], rel_tol=1e-9)
            assert math.isclose(t["tflops_per_s"], t["gflops_per_clip"] * t["clips_per_s"] / 1e3, rel_tol=1e-9)
            assert math.isclose(t["matmul_fraction"], t["tflops_per_s"] / machine["matmul_tflops"], rel_tol=1e-9)
            assert t["memory_kind"] in ("cpu_rss_peak_delta", "n/a")
        assert entry["frozen_params_with_grad"] == 0, f"{name}: frozen weights got gradient buffers"
    if not HAS_TRANSFORMERS:
        assert "skipped" in report["results"]["xclip"]


def test_cli_trainable_counts_match_the_variants(cli_report: tuple[dict, str]) -> None:
    results = cli_report[0]["results"]
    assert results["frame_average"]["params_trainable"] == 1  # the logit scale: bare CLIP
    assert results["pta"]["params_trainable"] == results["serial"]["params_trainable"]
    assert results["omniclip"]["params_trainable"] == (
        results["pta"]["params_trainable"] + results["spg"]["params_trainable"] - 1
    )
    for name in ("frame_average", "omniclip", "pta", "spg", "serial"):
        assert results[name]["params_total"] == results["frame_average"]["params_total"] + (
            results[name]["params_trainable"] - 1
        )
    v = results["vificlip"]  # frame averaging with every weight trained
    assert v["params_trainable"] == v["params_total"] == results["frame_average"]["params_total"]
    assert v["class_embeddings"] == "text tower runs every step"
    if HAS_TRANSFORMERS:
        x = results["xclip"]
        assert x["params_trainable"] == x["params_total"]  # X-CLIP trains every weight


def test_cli_ratios_come_from_the_reports_own_numbers(cli_report: tuple[dict, str]) -> None:
    report, _ = cli_report
    results, ratios = report["results"], report["ratios"]
    bases = ["frame_average"] + (["xclip"] if HAS_TRANSFORMERS else [])
    assert sorted(ratios) == sorted(f"vs_{b}" for b in bases)
    for base in bases:
        for name in expected_subjects():
            for mode in ("infer", "train"):
                a, b = results[name][mode], results[base][mode]
                row = ratios[f"vs_{base}"][name]
                assert math.isclose(row[f"{mode}_time"], a["step_s"] / b["step_s"], rel_tol=1e-12)
                assert math.isclose(row[f"{mode}_cpu_time"], a["cpu_step_s"] / b["cpu_step_s"], rel_tol=1e-12)
        assert ratios[f"vs_{base}"][base]["infer_time"] == 1.0
    assert compute_ratios(results) == ratios


def test_cli_flops_are_those_of_the_architecture(cli_report: tuple[dict, str]) -> None:
    """Frame-average inference FLOPs per clip by hand: tiny = 64 wide, 2 blocks, 8-px patches, 32-px frames.

    The last block computes queries, attention, output and MLP for the class token alone (the token ln_post reads).
    """
    report, _ = cli_report
    T, C, D, L, E, N = 4, report["config"]["classes"], 64, 2, 32, 1 + 16
    per_frame = 2 * 16 * D * 3 * 8 * 8  # patchify convolution
    per_frame += (L - 1) * (2 * N * 12 * D * D + 2 * 2 * N * N * D)  # qkv/out/MLP matmuls + attention scores and values
    per_frame += 2 * N * 2 * D * D + 2 * 10 * D * D + 2 * 2 * N * D  # last block: all keys/values, rest for 1 token
    per_frame += 2 * D * E  # projection
    want = T * per_frame + 2 * E * C  # + cosine logits against C classes
    got = report["results"]["frame_average"]["infer"]["gflops_per_clip"] * 1e9
    assert math.isclose(got, want, rel_tol=1e-9), (got, want)
    vifi, fa = report["results"]["vificlip"], report["results"]["frame_average"]
    assert vifi["infer"]["gflops_per_clip"] == fa["infer"]["gflops_per_clip"]  # same model, ...
    assert vifi["train"]["gflops_per_clip"] > 2 * fa["train"]["gflops_per_clip"]  # ... but backward through it all
    for name in ("omniclip", "pta", "spg", "serial"):  # branches cost something, and model-info splits it
        entry = report["results"][name]
        assert entry["infer"]["gflops_per_clip"] * 1e9 > want
        assert math.isclose(
            sum(entry["encoder_gflops"].values()) * 1e9 + 2 * E * C,
            entry["infer"]["gflops_per_clip"] * 1e9,
            rel_tol=1e-6,
        )


def test_cli_saved_activations_follow_what_trains(cli_report: tuple[dict, str]) -> None:
    """Backward through the frozen backbone keeps its activations; bare CLIP's frozen encoder keeps none."""
    saved = {n: e["train"]["saved_activation_bytes"] for n, e in cli_report[0]["results"].items() if "train" in e}
    assert 0 < saved["frame_average"] < 2**12  # a few logits, no encoder activations
    assert saved["vificlip"] > saved["omniclip"] > saved["spg"] > saved["frame_average"]
    assert saved["omniclip"] > saved["pta"]


def test_cli_prints_one_row_per_subject(cli_report: tuple[dict, str]) -> None:
    report, printed = cli_report
    assert printed.strip() == format_table(report)
    lines = printed.splitlines()
    assert "tiny 4x32px batch 2 fp32" in lines[0]
    for name in SUBJECTS:
        assert sum(line.startswith(name + " ") for line in lines) == 1, name


def phase(step_s: float, cpu_step_s: float, peak: int | None, **extra: object) -> dict:
    return {"step_s": step_s, "cpu_step_s": cpu_step_s, "peak_memory_bytes": peak, **extra}


def test_ratios_divide_the_given_timings() -> None:
    results = {
        "frame_average": {"infer": phase(0.5, 1.0, 2**20), "train": phase(1.0, 2.0, 2**21)},
        "omniclip": {"infer": phase(0.75, 1.5, 3 * 2**20), "train": phase(4.0, 3.0, None)},
        "spg": {"error": "RuntimeError: out of memory"},
        "pta": {"infer": phase(1.0, 0.5, 2**20), "train": {"skipped": "no trainable parameters"}},
    }
    ratios = compute_ratios(results)
    assert ratios == {"vs_frame_average": {
        "frame_average": {"infer_time": 1.0, "infer_cpu_time": 1.0, "infer_peak_memory": 1.0,
                          "train_time": 1.0, "train_cpu_time": 1.0, "train_peak_memory": 1.0},
        "omniclip": {"infer_time": 1.5, "infer_cpu_time": 1.5, "infer_peak_memory": 3.0,
                     "train_time": 4.0, "train_cpu_time": 1.5},  # no peak memory measured: no ratio
        "pta": {"infer_time": 2.0, "infer_cpu_time": 0.5, "infer_peak_memory": 1.0},
    }}  # fmt: skip
    assert compute_ratios({"omniclip": results["omniclip"]}) == {}  # no baseline, no ratios


def test_table_shows_the_given_numbers() -> None:
    measured = {
        "clips_per_s": 12.345,
        "gflops_per_clip": 1.5,
        "tflops_per_s": 0.0184,
        "memory_kind": "cuda_max_allocated",
    }
    report = {
        "config": {"arch": "tiny", "frames": 4, "size": 32, "batch": 2, "dtype": "bf16", "bf16_weights": True,
                   "compile": False, "grad_checkpointing": True, "cuda_graphs": False},
        "machine": {"device": "cuda:0", "device_name": "GPU", "date": "2026-01-01"},
        "results": {
            "frame_average": {"params_trainable": 1, "infer": phase(0.5, 1.0, 3 * 2**20, **measured),
                              "train": phase(1.0, 1.0, 5 * 2**20, saved_activation_bytes=2**19, **measured)},
            "xclip": {"kind": "xclip", "skipped": "transformers is not installed"},
            "omniclip": {"params_trainable": 11329, "infer": phase(1.0, 1.0, 2**20, **measured),
                         "train": {"skipped": "no trainable parameters"},
                         "max_batch": {"plain": {"max_batch": 48, "capped": False},
                                       "checkpointed": {"max_batch": 1024, "capped": True}}},
            "spg": {"max_batch": {"error": "RuntimeError: boom"}, "error": "RuntimeError: boom"},
        },
        "notes": ["cuda_graphs skipped"],
    }  # fmt: skip
    report["ratios"] = compute_ratios(report["results"])
    lines = format_table(report).splitlines()
    assert (
        lines[0] == "tiny 4x32px batch 2 bf16 bf16-weights ckpt on GPU (cuda:0), 2026-01-01; memory: cuda_max_allocated"
    )
    assert "cpu/FA" not in lines[1]  # CPU-time ratios only on a CPU
    assert lines[2].split() == ["frame_average", "1", "12.3", "1.50", "0.018", "3", "12.3", "1.50", "0.018", "5", "0.5",
                                "1.00", "1.00", "-", "-"]  # fmt: skip
    assert re.fullmatch(r"xclip +transformers is not installed", lines[3])
    assert lines[4].split() == ["omniclip", "11,329", "12.3", "1.50", "0.018", "1", "-", "-", "-", "-", "-",
                                "2.00", "-", "-", "-"]  # fmt: skip
    assert re.fullmatch(r"spg +RuntimeError: boom", lines[5])
    assert lines[6:] == [
        "max training batch omniclip: plain 48, checkpointed >= 1024 (limit)",
        "max training batch spg: error RuntimeError: boom",
        "note: cuda_graphs skipped",
    ]


def test_cuda_graphs_skip_cleanly_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    argv = ["bench", "--arch", "tiny", "--frames", "2", "--size", "16", "--batch", "1", "--repeats", "1",
            "--warmup", "0", "--batches", "1", "--variants", "frame_average", "--modes", "infer", "--cuda-graphs",
            "--device", "cpu", "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert report["config"]["cuda_graphs"] is False
    assert any("cuda_graphs skipped" in n for n in report["notes"])
    assert set(report["results"]["frame_average"]) >= {"infer"} and "train" not in report["results"]["frame_average"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--variants", "frame_average,clip4clip"], "--variants: unknown ['clip4clip']"),
        (["--modes", "speed"], "--modes"),
        (["--arch", "ViT-X-1"], "unknown CLIP architecture 'ViT-X-1'"),
        (["--size", "4"], "smaller than one 8-pixel patch"),
        (["--device", "cuda"] if not __import__("torch").cuda.is_available() else ["--device", "tpu:x"], "--device"),
    ],
)
def test_bad_options_end_with_one_line(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--arch", "tiny", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("omniclip bench: error:") and message in err and "\n" not in err


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("batch", 0, "--batch must be >= 1, got 0"),
        ("max_batch_limit", 0, "--max-batch-limit must be >= 1, got 0"),
        ("warmup", -1, "--warmup must be >= 0, got -1"),
        ("max_batch_tolerance", -0.5, "--max-batch-tolerance must be >= 0, got -0.5"),
        ("dtype", "fp16", "--dtype: unknown 'fp16'"),
        ("variants", (), "--variants: unknown empty list"),
    ],
)
def test_config_names_the_bad_option(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        BenchConfig(**{"arch": "tiny", "device": "cpu", field: value}).resolved()  # type: ignore[arg-type]


def test_config_fills_device_defaults() -> None:
    cfg = BenchConfig(arch="tiny", device="cpu", cuda_graphs=True).resolved()
    assert (cfg.size, cfg.batch, cfg.dtype, cfg.classes, cfg.max_batch_limit, cfg.cuda_graphs) == (
        32,
        4,
        "fp32",
        16,
        16,
        False,
    )
    assert cfg.clip_config().vision.image_size == 32
    assert BenchConfig(arch="tiny", device="cpu", size=48, batch=3).resolved().clip_config().vision.image_size == 48


def test_interleaved_run_times_every_subject_without_memory() -> None:
    cfg = BenchConfig(arch="tiny", frames=2, size=16, batch=1, repeats=2, warmup=1, batches=2, classes=3,
                      variants=("frame_average", "omniclip"), interleave=True)  # fmt: skip
    report = run_bench(cfg)
    for name in ("frame_average", "omniclip"):
        for mode in ("infer", "train"):
            t = report["results"][name][mode]
            assert len(t["step_s_repeats"]) == 2 and t["peak_memory_bytes"] is None
            assert t["memory_kind"] == "n/a (interleaved)"
    assert report["ratios"]["vs_frame_average"]["frame_average"]["train_time"] == 1.0


def test_max_batch_search_reports_both_modes_and_caps_on_the_cpu() -> None:
    cfg = BenchConfig(arch="tiny", frames=2, size=16, batch=1, repeats=1, warmup=0, batches=1, classes=3,
                      variants=("omniclip",), modes=("train",), max_batch=True, max_batch_limit=3)  # fmt: skip
    report = run_bench(cfg)
    mb = report["results"]["omniclip"]["max_batch"]
    for key in ("plain", "checkpointed"):
        assert mb[key]["max_batch"] == 3 and mb[key]["capped"] is True
        assert [size for size, _ in mb[key]["tries"]] == [1, 2, 3]
    assert "max training batch omniclip: plain >= 3 (limit), checkpointed >= 3 (limit)" in format_table(report)


@pytest.mark.slow
def test_compile_switch_runs_the_compiled_encoder() -> None:
    """``--compile`` with the eager backend: Dynamo traces the encoder (inductor would take minutes on the CPU)."""
    cfg = BenchConfig(arch="tiny", frames=2, size=16, batch=1, repeats=1, warmup=1, batches=1, classes=3,
                      variants=("omniclip",), compile=True, compile_backend="eager")  # fmt: skip
    report = run_bench(cfg)
    entry = report["results"]["omniclip"]
    assert "error" not in entry and len(entry["train"]["step_s_repeats"]) == 1
    assert report["config"]["compile"] is True


def test_progress_sees_each_subject_and_a_failure_spares_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    real = bench_run.build_subject

    def build(name: str, *args, **kwargs):
        if name == "spg":
            raise RuntimeError("simulated failure while building spg")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(bench_run, "build_subject", build)
    snapshots: list[list[str]] = []
    cfg = BenchConfig(arch="tiny", frames=2, size=16, batch=1, repeats=1, warmup=0, batches=1, classes=3,
                      variants=("frame_average", "spg", "pta"), modes=("infer",))  # fmt: skip
    report = run_bench(cfg, progress=lambda r: snapshots.append(list(r["results"])))
    assert snapshots == [["frame_average"], ["frame_average", "spg"], ["frame_average", "spg", "pta"]]
    assert report["results"]["spg"] == {"error": "RuntimeError: simulated failure while building spg"}
    assert len(report["results"]["pta"]["infer"]["step_s_repeats"]) == 1
    assert "spg" not in report["ratios"]["vs_frame_average"] and "pta" in report["ratios"]["vs_frame_average"]
    assert re.search(r"^spg +RuntimeError: simulated failure while building spg$", format_table(report), re.M)


@pytest.mark.slow(minutes=1)
def test_gpu_script_stages_on_a_tiny_cpu_model(tmp_path: Path) -> None:
    """benchmarks/gpu_bench.sh runs its stages in order and leaves one JSON report per stage (smoke run on the CPU)."""
    env = dict(
        os.environ,
        OUT=str(tmp_path),
        PYTHON=sys.executable,
        STAGES="xclip_b16 graphs",
        STAGE_LIMIT_SCALE="20",  # a loaded CI machine must not hit the GPU-sized stage limits
        BENCH_BASE="--arch tiny --frames 2 --size 16 --device cpu --threads 1 --repeats 1 --warmup 0 --batches 1",
        BENCH_TAIL="--repeats 2",  # after each stage's own arguments: two timed steps instead of ten
    )
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_bench.sh")], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["env.txt", "graphs.json", "log.txt", "xclip_b16.json"]  # unselected stages did not run
    log = (tmp_path / "log.txt").read_text()
    assert "== xclip_b16: exit 0" in log and "== graphs: exit 0" in log and "== eager" not in log
    xclip = json.loads((tmp_path / "xclip_b16.json").read_text())
    assert xclip["config"]["batch"] == 16 and xclip["config"]["classes"] == 400  # the stage's own arguments apply
    assert xclip["config"]["dtype"] == "bf16" and xclip["config"]["repeats"] == 2  # ... and the tail after them
    assert list(xclip["results"]) == ["xclip"] and len(xclip["results"]["xclip"]["train"]["step_s_repeats"]) == 2
    graphs = json.loads((tmp_path / "graphs.json").read_text())
    assert list(graphs["results"]) == ["frame_average", "omniclip"]
    assert graphs["config"]["bf16_weights"] is True and any("cuda_graphs skipped" in n for n in graphs["notes"])
