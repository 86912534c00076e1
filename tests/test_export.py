"""``omniclip export``: the exported encoder equals the eager model; exported embeddings give the model's logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from omniclip.cli import main
from omniclip.clip import build_clip, save_clip
from omniclip.export import VideoEncoder, export_model, load_export
from omniclip.predict import VideoClassifier, classifier_from_clip

T = 3
CLASSES = ["archery", "juggling balls", "surfing"]


def _perturbed(classifier: VideoClassifier) -> VideoClassifier:
    """Make the zero-initialised branches non-zero, so the export is checked on a model that uses them."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in classifier.model.named_parameters():
            if ".pta." in name or ".spg." in name:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return classifier


@pytest.fixture(scope="module", params=["frame_average", "omniclip"])
def classifier(request) -> VideoClassifier:
    torch.manual_seed(0)
    return _perturbed(classifier_from_clip(build_clip("tiny").eval(), num_frames=T, variant=request.param))


def test_exported_encoder_equals_eager(classifier: VideoClassifier, tmp_path: Path) -> None:
    paths = export_model(classifier, tmp_path, classes=CLASSES)
    assert {p.name for p in tmp_path.iterdir()} == {p.name for p in paths.values()}  # no temporary files left
    exported = load_export(tmp_path)
    for batch in (1, 3):  # the batch dimension is dynamic
        video = torch.randn(batch, T, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            want = F.normalize(classifier.model.encode_video(video), dim=-1)
            torch.testing.assert_close(exported.encoder(video), want, atol=1e-5, rtol=0)
            logits = classifier.model(video, classifier.class_embeddings(CLASSES))
            torch.testing.assert_close(exported.logits(video), logits, atol=1e-4, rtol=1e-5)
    assert exported.meta["logit_scale"] == pytest.approx(float(classifier.model.logit_scale().detach()))
    stored = torch.export.load(str(paths["encoder"])).state_dict
    assert stored and all(k.startswith("model.clip.visual.") for k in stored)  # no text tower in the file
    assert set(VideoEncoder(classifier.model).state_dict()) == set(stored)


def test_embeddings_and_meta_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    classifier = classifier_from_clip(build_clip("tiny").eval(), num_frames=T)
    templates = ["a video of {}."]
    paths = export_model(classifier, tmp_path, classes=CLASSES, templates=templates)
    stored = load_file(str(paths["embeddings"]))["class_embeddings"]
    torch.testing.assert_close(stored, classifier.class_embeddings(CLASSES, templates), atol=0, rtol=0)
    assert stored.shape == (3, 32) and torch.allclose(stored.norm(dim=-1), torch.ones(3))
    assert json.loads(paths["names"].read_text()) == CLASSES
    meta = json.loads(paths["meta"].read_text())
    assert meta["num_frames"] == T and meta["image_size"] == 32 and meta["templates"] == templates
    assert meta["input"]["shape"] == ["B", T, 3, 32, 32] and meta["output"]["shape"] == ["B", 32]
    assert meta["mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    assert meta["encoder"] == "video_encoder.pt2"


def test_export_errors(tmp_path: Path) -> None:
    classifier = classifier_from_clip(build_clip("tiny").eval(), num_frames=T)
    with pytest.raises(ValueError, match="no classes"):
        export_model(classifier, tmp_path, classes=None)
    with pytest.raises(ValueError, match="unknown export format"):
        export_model(classifier, tmp_path, classes=CLASSES, fmt="tflite")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="export.json"):
        load_export(tmp_path / "nothing")


def test_onnx_without_onnx_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else find_spec(name, *a))
    classifier = classifier_from_clip(build_clip("tiny").eval(), num_frames=T)
    with pytest.raises(ValueError, match="pip install onnx"):
        export_model(classifier, tmp_path, classes=CLASSES, fmt="onnx")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("inline", [True, False], ids=["weights-inside", "external-weights"])
def test_onnx_encoder_equals_eager_in_onnxruntime(
    classifier: VideoClassifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inline: bool
) -> None:
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    import omniclip.export as export

    if not inline:  # as an image tower over ONNX_INLINE_BYTES is written
        monkeypatch.setattr(export, "ONNX_INLINE_BYTES", 0)
    (tmp_path / "video_encoder.onnx.data").write_bytes(b"stale")  # an earlier export's weights must not survive
    paths = export_model(classifier, tmp_path, classes=CLASSES, fmt="onnx")
    files = {p.name for p in tmp_path.iterdir()}
    weights = {"video_encoder.onnx.data"} if not inline else set()
    assert files == {p.name for p in paths.values()} | weights  # no temporary files, no stale weights
    moved = tmp_path / "moved"  # the graph finds its weights by a relative name: the folder can move
    moved.mkdir()
    for name in files:
        (tmp_path / name).rename(moved / name)
    for batch in (1, 3):  # the batch dimension is dynamic
        video = torch.randn(batch, T, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            want = F.normalize(classifier.model.encode_video(video), dim=-1)
        got = torch.from_numpy(export.run_onnx(moved / "video_encoder.onnx", video.numpy()))
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    meta = json.loads((moved / "export.json").read_text())
    assert meta["format"] == "onnx" and meta["encoder"] == "video_encoder.onnx"
    with pytest.raises(ValueError, match="onnxruntime"):
        load_export(moved)


def test_cli_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "exported"
    tiny = str(save_clip(build_clip("tiny"), tmp_path / "tiny.safetensors"))
    argv = ["export", "--clip", tiny, "--classes", ",".join(CLASSES), "--frames", "2", "--out", str(out)]
    assert main(argv) == 0
    assert "video_encoder.pt2" in capsys.readouterr().out
    exported = load_export(out)
    assert exported.class_names == CLASSES and exported.meta["num_frames"] == 2
    size = exported.meta["image_size"]
    logits = exported.logits(torch.randn(2, 2, 3, size, size))
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    assert main(["export", "--clip", tiny, "--out", str(out), "--classes", "a,a"]) == 2
    assert "appear twice" in capsys.readouterr().err


def test_export_leaves_the_eager_model_usable(tmp_path: Path) -> None:
    """torch.export runs the model on fake tensors; nothing made then may stay in the model for later eager calls."""
    torch.manual_seed(0)
    classifier = _perturbed(classifier_from_clip(build_clip("tiny").eval(), num_frames=T, variant="omniclip"))
    export_model(classifier, tmp_path, classes=CLASSES)
    video = torch.randn(2, T, 3, 32, 32)
    with torch.no_grad():
        emb = classifier.model.encode_video(video)
    assert type(emb) is torch.Tensor and torch.isfinite(emb).all()
    assert all(type(p) is torch.nn.Parameter for p in classifier.model.parameters())
    assert all(type(t) is torch.Tensor for t in classifier.model.buffers())
    torch.testing.assert_close(load_export(tmp_path).encoder(video), F.normalize(emb, dim=-1), atol=1e-5, rtol=0)
