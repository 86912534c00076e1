"""What the bench measures and how (``bench.subjects``, ``bench.measurements``): values checked against hand counts."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from omniclip.bench import BenchConfig, find_max_batch, is_oom, measure, measure_interleaved
from omniclip.bench.measurements import matmul_tflops, saved_activation_bytes
from omniclip.bench.subjects import build_subject, class_tokens, make_batch, make_step, xclip_config
from omniclip.clip import build_clip, get_preset
from omniclip.model import build_model
from omniclip.model.flops import count_flops
from omniclip.precision import cast_frozen_

CPU = torch.device("cpu")


def tiny_config(**kw: object) -> BenchConfig:
    return BenchConfig(**{"arch": "tiny", "frames": 2, "size": 32, "classes": 3, "device": "cpu", **kw}).resolved()  # type: ignore[arg-type]


def fake_oom_above(limit: int, calls: list[int]):
    def try_batch(size: int) -> None:
        calls.append(size)
        if size > limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {size} GiB")

    return try_batch


@pytest.mark.parametrize("fits", [1, 2, 3, 37, 64, 100, 1000])
def test_max_batch_doubles_then_bisects_to_the_exact_size(fits: int) -> None:
    calls: list[int] = []
    found = find_max_batch(fake_oom_above(fits, calls), start=1, limit=4096)
    assert found.max_batch == fits and not found.capped
    assert [s for s, _ in found.tries] == calls and all(ok == (s <= fits) for s, ok in found.tries)
    doubling = [s for s in calls if s & (s - 1) == 0][: fits.bit_length() + 1]
    assert calls[: len(doubling)] == [2**i for i in range(len(doubling))]
    assert len(calls) <= 2 * fits.bit_length() + 1  # logarithmic, not linear


def test_max_batch_traces() -> None:
    calls: list[int] = []
    assert find_max_batch(fake_oom_above(37, calls), start=4, limit=4096).max_batch == 37
    assert calls == [4, 8, 16, 32, 64, 48, 40, 36, 38, 37]
    below: list[int] = []  # the starting size does not fit: the search continues below it
    found = find_max_batch(fake_oom_above(5, below), start=32, limit=64)
    assert (found.max_batch, found.capped, below) == (5, False, [32, 16, 8, 4, 6, 5])


def test_max_batch_edges() -> None:
    assert find_max_batch(fake_oom_above(0, []), start=1, limit=8).max_batch == 0
    assert find_max_batch(fake_oom_above(0, calls := []), start=8, limit=8).max_batch == 0 and calls == [8, 4, 2, 1]
    capped = find_max_batch(fake_oom_above(10**6, calls := []), start=3, limit=20)
    assert capped.max_batch == 20 and capped.capped and calls == [3, 6, 12, 20]
    with pytest.raises(ValueError, match="1 <= start <= limit"):
        find_max_batch(fake_oom_above(1, []), start=5, limit=4)
    with pytest.raises(ValueError, match="tolerance"):
        find_max_batch(fake_oom_above(1, []), tolerance=-0.5)


def test_max_batch_tolerance_stops_bisecting_early() -> None:
    exact: list[int] = []
    loose: list[int] = []
    assert find_max_batch(fake_oom_above(1000, exact), start=64, limit=4096).max_batch == 1000
    found = find_max_batch(fake_oom_above(1000, loose), start=64, limit=4096, tolerance=1 / 16)
    assert 1000 - 1000 // 16 <= found.max_batch <= 1000 and len(loose) < len(exact)


def test_max_batch_lets_other_errors_through() -> None:
    def broken(size: int) -> None:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        find_max_batch(broken, start=1, limit=8)


def test_is_oom_recognises_allocator_failures() -> None:
    assert is_oom(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert is_oom(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes"))
    assert is_oom(MemoryError())
    assert not is_oom(RuntimeError("expected scalar type Float"))
    assert not is_oom(ValueError("out of memory"))


def test_measure_rotates_batches_and_reports_medians() -> None:
    seen: list[int] = []
    timing = measure(seen.append, [0, 1, 2], batch_size=4, device=CPU, warmup=2, repeats=3)
    assert seen == [0, 1] + [0, 1, 2] * 3
    assert len(timing.step_s_repeats) == 3 and timing.batch == 4
    assert timing.step_s == sorted(timing.step_s_repeats)[1]
    assert timing.clips_per_s == 4 / timing.step_s
    with pytest.raises(ValueError, match="input batches"):
        measure([].append, [], batch_size=1, device=CPU)


def test_measure_interleaved_takes_turns() -> None:
    seen: list[tuple[str, int]] = []
    steps = {n: (lambda b, n=n: seen.append((n, b))) for n in ("a", "b")}
    out = measure_interleaved(steps, [0, 1], batch_size=1, device=CPU, warmup=1, repeats=2)
    assert seen == [("a", 0), ("b", 0)] + [("a", 0), ("a", 1), ("b", 0), ("b", 1)] * 2
    assert set(out) == {"a", "b"}
    assert all(t.peak_memory_bytes is None and t.memory_kind == "n/a (interleaved)" for t in out.values())


PEAK_OF_A_KNOWN_TENSOR = """
import json, torch
from omniclip.bench import measure
def fill(_):
    return torch.ones(16 * 2**20)
cpu = torch.device("cpu")
measure(fill, [None], batch_size=1, device=cpu, warmup=0, repeats=1)  # first-call allocations happen here
timing = measure(fill, [None], batch_size=1, device=cpu, warmup=1, repeats=2)
print(json.dumps([timing.memory_kind, timing.peak_memory_bytes]))
"""


def test_measure_reports_the_peak_memory_of_a_known_tensor() -> None:
    """A step that fills a fresh 64 MiB tensor raises the process's peak RSS by about 64 MiB.

    Measured in a fresh process, as ``omniclip bench`` runs: inside a test worker that earlier tests have used, the
    64 MiB can come from memory the process already holds, and every reading was 0 (three in a row, 2026-12-02).
    """
    done = subprocess.run([sys.executable, "-c", PEAK_OF_A_KNOWN_TENSOR], capture_output=True, text=True, check=True)
    kind, peak = json.loads(done.stdout.splitlines()[-1])
    if kind == "n/a":
        pytest.skip("peak RSS cannot be reset on this system")
    assert kind == "cpu_rss_peak_delta"
    assert 0.95 * 2**26 <= peak <= 1.05 * 2**26, peak


def test_flops_of_a_tiny_matmul_model_are_hand_counted() -> None:
    """(16, 8) @ (8, 4): 2 * 16 * 8 * 4 = 1024 FLOPs forward; backward to the weight alone is one more such product."""
    linear = torch.nn.Linear(8, 4, bias=False)
    x = torch.randn(16, 8)
    assert count_flops(lambda: linear(x)) == 1024
    assert count_flops(lambda: linear(x).sum().backward()) == 2 * 1024
    assert count_flops(lambda: linear(x.requires_grad_()).sum().backward()) == 3 * 1024  # and the input's gradient


def test_cpu_attention_flops_count_forward_and_backward() -> None:
    """CPU SDPA: forward is 2 products (scores, values), backward 5 (scores recomputed, dV, dP, dQ, dK)."""
    B, H, Lq, Lk, E = 2, 3, 10, 12, 16
    q = torch.randn(B, H, Lq, E, requires_grad=True)
    k, v = torch.randn(B, H, Lk, E, requires_grad=True), torch.randn(B, H, Lk, E, requires_grad=True)
    product = 2 * B * H * Lq * Lk * E
    assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v)) == 2 * product
    assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v).sum().backward()) == 7 * product


def test_saved_activations_of_a_known_model() -> None:
    """``linear(x).square()`` saves x for the weight's gradient (16 x 8 fp32) and the linear output for the square
    (16 x 4 fp32); the weight is a parameter and is not counted."""
    linear = torch.nn.Linear(8, 4, bias=False)
    x = torch.randn(16, 8)
    assert saved_activation_bytes(linear, lambda: linear(x).square().sum()) == 16 * 8 * 4 + 16 * 4 * 4
    assert linear.weight.grad is not None  # backward ran


def test_activation_checkpointing_shrinks_saved_activations() -> None:
    subject = build_subject("omniclip", tiny_config(frames=4), CPU)
    batch = make_batch(2, 4, 32, 3, device=CPU)
    subject.model.train()
    plain = saved_activation_bytes(subject.model, lambda: subject.loss(batch))
    subject.set_checkpointing(True)
    checkpointed = saved_activation_bytes(subject.model, lambda: subject.loss(batch))
    BT, N, D = 2 * 4, 17, 64
    assert plain > 2 * BT * N * D * 4 * 2  # at least a few (B*T, N, D) fp32 tensors per block
    assert 0 < checkpointed < plain / 4


def branchy_model(frames: int = 4):
    """A tiny OmniCLIP whose branches contribute (zero-initialised parts randomised)."""
    model = build_model(build_clip("tiny"), frames)
    for name, p in model.named_trainable_parameters():
        if name.endswith(("up.weight", "gate")):
            torch.nn.init.normal_(p, std=0.5)
    return model.eval()


def test_bf16_frozen_weights_keep_outputs_close_and_trainables_fp32() -> None:
    """Tolerance: video embeddings within 3% relative L2 error and cosine > 0.999 of the fp32 model's."""
    model = branchy_model()
    video = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        ref = model.encode_video(video)
    branch_out = ref - build_model(build_clip("tiny"), 4).eval().encode_video(video)
    assert branch_out.abs().max() > 1e-2  # the branches really change the output, so they are compared too
    trainable = {n for n, _ in model.named_trainable_parameters()}
    cast = cast_frozen_(model)
    assert cast == sum(1 for n, _ in model.named_parameters() if n not in trainable) > 0
    for n, p in model.named_parameters():
        assert p.dtype == (torch.float32 if n in trainable else torch.bfloat16), n
    with torch.no_grad():
        out = model.encode_video(video).float()
    rel = (out - ref).norm() / ref.norm()
    assert rel < 3e-2, rel
    assert F.cosine_similarity(out, ref, dim=-1).min() > 0.999


def test_bf16_frozen_weights_train_only_fp32_parameters() -> None:
    model = branchy_model().train()
    cast_frozen_(model)
    classes = F.normalize(torch.randn(5, 32), dim=-1)
    loss = F.cross_entropy(model(torch.randn(2, 4, 3, 32, 32), classes).float(), torch.tensor([0, 3]))
    loss.backward()
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.dtype == torch.float32, n
        else:
            assert p.grad is None, n


@pytest.mark.parametrize("full_finetune", [False, True])
def test_train_step_allocates_gradients_only_for_trainable_weights(full_finetune: bool) -> None:
    subject = build_subject("omniclip", tiny_config(full_finetune=full_finetune), CPU)
    before = {id(p): p.detach().clone() for p in subject.trainable}
    make_step(subject, "train", CPU)(make_batch(2, 2, 32, 3, device=CPU))
    assert subject.model.training
    for p in subject.model.parameters():
        assert (p.grad is not None) == p.requires_grad
    assert any(not torch.equal(before[id(p)], p) for p in subject.trainable)  # the optimiser stepped
    frozen = [p for p in subject.model.parameters() if not p.requires_grad]
    assert (len(frozen) == 0) == full_finetune


def test_subjects_bf16_weights_vificlip_and_errors() -> None:
    cast = build_subject("omniclip", tiny_config(bf16_weights=True), CPU)
    assert cast.info["params_cast_to_bf16"] == sum(1 for p in cast.model.parameters() if p.dtype == torch.bfloat16) > 0
    vifi = build_subject("vificlip", tiny_config(), CPU)
    assert (vifi.name, vifi.info["kind"], vifi.info["variant"]) == ("vificlip", "vificlip", "frame_average")
    assert all(p.requires_grad for p in vifi.model.parameters())
    frame_average = build_subject("frame_average", tiny_config(), CPU)
    assert [p.numel() for p in frame_average.trainable] == [1]  # the logit scale
    with pytest.raises(ValueError, match="no trainable parameters"):
        make_step(dataclasses.replace(frame_average, trainable=[]), "train", CPU)
    with pytest.raises(ValueError, match="unknown bench subject 'clip4clip'"):
        build_subject("clip4clip", tiny_config(), CPU)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
            make_step(frame_average, "infer", CPU, graph_example=make_batch(1, 2, 32, 3, device=CPU))


def test_class_texts_are_encoded_once_when_the_text_tower_is_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    subject = build_subject("omniclip", tiny_config(), CPU)
    calls = []
    original = subject.model.clip.encode_text
    monkeypatch.setattr(subject.model.clip, "encode_text", lambda t: calls.append(t) or original(t))
    batch = make_batch(2, 2, 32, 3, device=CPU)
    subject.infer(batch)
    make_step(subject, "train", CPU)(batch)
    assert calls == []
    names = ["archery", "juggling"]  # and the model's own cache returns the very same tensor
    assert subject.model.encode_classes(names) is subject.model.encode_classes(names)


def test_class_tokens_look_like_clip_tokens() -> None:
    tokens, mask = class_tokens(20, 77, 49408, seed=1)
    assert tokens.shape == mask.shape == (20, 77)
    assert (tokens[:, 0] == 49406).all()
    assert (tokens.argmax(dim=-1) == mask.sum(dim=-1) - 1).all()  # CLIP pools at the end token
    assert ((tokens != 0) == mask.bool()).all()
    assert torch.equal(tokens, class_tokens(20, 77, 49408, seed=1)[0])


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="transformers not installed")
def test_xclip_is_sized_like_the_clip_preset() -> None:
    cfg = get_preset("ViT-B-16")
    x = xclip_config(cfg, 8)
    assert x.vision_config.mit_hidden_size == x.projection_dim == 512
    assert (x.vision_config.hidden_size, x.vision_config.num_hidden_layers, x.vision_config.patch_size) == (768, 12, 16)
    assert (x.vision_config.num_frames, x.vision_config.image_size) == (8, 224)
    assert x.text_config.eos_token_id == x.text_config.vocab_size - 1
    subject = build_subject("xclip", tiny_config(), CPU)
    batch = make_batch(2, 2, 32, 3, device=CPU)
    assert subject.infer(batch).shape == (2, 32)
    subject.set_checkpointing(True)
    make_step(subject, "train", CPU)(batch)
    assert all(p.grad is not None for p in subject.trainable)


def test_the_reference_matmul_shrinks_until_one_product_fits_the_budget() -> None:
    cpu = torch.device("cpu")
    tflops, n = matmul_tflops(cpu, torch.float32)
    assert n in (256, 512, 1024) and tflops > 0
    tflops, n = matmul_tflops(cpu, torch.float32, budget_s=0.0)  # no product fits: halved down to the floor
    assert n == 256 and tflops > 0
