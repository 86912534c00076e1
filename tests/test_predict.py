"""The two-line API and ``omniclip predict``: probabilities, ordering, equality with a by-hand computation, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from omniclip.cli import main
from omniclip.clip import build_clip, save_clip, tokenize
from omniclip.data.encode import write_video
from omniclip.data.transforms import normalize
from omniclip.predict import (
    Prediction,
    VideoClassifier,
    classifier_from_clip,
    load_model,
    load_video,
    parse_views,
    predict,
)

T = 4
CLASSES = ["archery", "juggling balls", "surfing", "playing violin", "yoga"]
TEMPLATES = ["a video of a person {}.", "a clip of {}."]


def _frames(n: int, seed: int) -> np.ndarray:
    """(n, 48, 64, 3) frames: a coloured square moving over a gradient."""
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, 64, dtype=np.float32)[None, :, None] * rng.uniform(0.3, 1.0, size=3)
    frames = np.broadcast_to(base, (n, 48, 64, 3)).astype(np.uint8).copy()
    for t in range(n):
        frames[t, 10:26, 4 * t : 4 * t + 16] = rng.integers(0, 255, size=3)
    return frames


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("videos")
    return [write_video(root / f"clip{i}.mp4", _frames(12, seed=i), fps=8) for i in range(2)]


@pytest.fixture(scope="module")
def classifier() -> VideoClassifier:
    torch.manual_seed(0)
    return classifier_from_clip(build_clip("tiny").eval(), num_frames=T)


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory, classifier: VideoClassifier) -> Path:
    """The classifier's CLIP saved as omniclip safetensors (``load_clip`` reads it back)."""
    return save_clip(classifier.model.clip, tmp_path_factory.mktemp("weights") / "tiny.safetensors")


def by_hand(clip, video_uint8: torch.Tensor, classes: list[str], templates: list[str]) -> torch.Tensor:
    """Zero-shot CLIP written out: mean of per-frame image embeddings vs template-averaged text embeddings."""
    frames = normalize(video_uint8[0, 0])  # (T, 3, S, S)
    with torch.no_grad():
        video = F.normalize(clip.encode_image(frames).mean(0), dim=-1)  # (E,)
        text = []
        for c in classes:
            emb = F.normalize(clip.encode_text(tokenize([t.format(c) for t in templates])), dim=-1).mean(0)
            text.append(F.normalize(emb, dim=-1))
        scale = clip.logit_scale.exp().clamp(max=100)
        return (scale * video @ torch.stack(text).T).softmax(-1)


def test_predict_matches_a_by_hand_computation(classifier: VideoClassifier, videos: list[Path]) -> None:
    preds = predict(classifier, videos[0], classes=CLASSES, templates=TEMPLATES, top_k=5)
    assert all(isinstance(p, Prediction) for p in preds) and len(preds) == 5
    probs = [p.probability for p in preds]
    assert sum(probs) == pytest.approx(1.0, abs=1e-5)
    assert probs == sorted(probs, reverse=True) and sorted(p.name for p in preds) == sorted(CLASSES)
    expected = by_hand(classifier.model.clip, load_video(classifier, videos[0]), CLASSES, TEMPLATES)
    got = torch.tensor([dict(preds)[c] for c in CLASSES])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_top_k_and_several_videos(classifier: VideoClassifier, videos: list[Path]) -> None:
    full = predict(classifier, videos, classes=CLASSES, top_k=5)
    two = predict(classifier, [str(v) for v in videos], classes=CLASSES, top_k=2)
    assert len(full) == len(two) == 2
    for f, t in zip(full, two, strict=True):
        assert t == f[:2]
    assert len(predict(classifier, videos[0], classes=CLASSES[:3], top_k=10)) == 3  # capped at C


def test_views_average_several_clips(classifier: VideoClassifier, videos: list[Path]) -> None:
    video = load_video(classifier, videos[0], clips=2, crops=3)
    assert video.shape == (1, 6, T, 3, 32, 32) and video.dtype == torch.uint8
    preds = predict(classifier, videos[0], classes=CLASSES, views="2x3")
    assert sum(p.probability for p in preds) == pytest.approx(1.0, abs=1e-5)
    assert parse_views("4x3") == (4, 3)
    with pytest.raises(ValueError, match="clips x crops"):
        parse_views("3")


def test_prediction_errors(classifier: VideoClassifier, videos: list[Path], tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothere.mp4"):
        predict(classifier, tmp_path / "nothere.mp4", classes=CLASSES)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 8)
    with pytest.raises(ValueError, match="cannot read video .*broken.mp4"):
        predict(classifier, broken, classes=CLASSES)
    with pytest.raises(ValueError, match="class names must be non-empty"):
        predict(classifier, videos[0], classes=[])
    with pytest.raises(ValueError, match="no classes"):
        predict(classifier, videos[0])
    with pytest.raises(ValueError, match="appear twice"):
        predict(classifier, videos[0], classes=["a", "a"])
    with pytest.raises(ValueError, match="list of names"):
        predict(classifier, videos[0], classes="a,b")
    with pytest.raises(ValueError, match="top_k"):
        predict(classifier, videos[0], classes=CLASSES, top_k=0)


def test_two_line_api_is_exported() -> None:
    import omniclip

    assert callable(omniclip.predict) and callable(omniclip.load_model)
    assert omniclip.predict is predict


# ---- command line ------------------------------------------------------------------------------------------------


def test_load_model_from_clip_weights(classifier: VideoClassifier, clip_file: Path, videos: list[Path]) -> None:
    loaded = load_model(clip_file, num_frames=T)
    assert loaded.num_frames == T and loaded.image_size == 32 and loaded.class_names is None
    assert loaded.source == str(clip_file) and loaded.model.config.variant == "frame_average"
    got, want = (dict(predict(c, videos[0], classes=CLASSES)) for c in (loaded, classifier))
    assert got == pytest.approx(want, abs=1e-6)
    assert load_model(clip_file).num_frames == 8  # the default for CLIP weights
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        load_model(clip_file.with_name("nowhere.safetensors"))


def test_cli_json_and_table(videos: list[Path], clip_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["predict", *map(str, videos), "--clip", str(clip_file), "--classes", ",".join(CLASSES), "--frames", "4"]
    assert main([*argv, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["video"] for r in rows] == [str(v) for v in videos]
    for row in rows:
        probs = [p["probability"] for p in row["predictions"]]
        assert sum(probs) == pytest.approx(1.0, abs=1e-5) and probs == sorted(probs, reverse=True)
    assert main([*argv, "--top-k", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str(videos[0]) and out[1].lstrip().startswith("1. ") and len(out) == 6
    assert rows[0]["predictions"][0]["class"] in out[1]


def test_cli_classes_file_and_errors(
    videos: list[Path], clip_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny = str(clip_file)
    names = tmp_path / "classes.csv"
    names.write_text("id,name\n0,archery\n1,surfing\n")
    assert main(["predict", str(videos[0]), "--clip", tiny, "--classes-file", str(names), "--json"]) == 0
    assert {p["class"] for p in json.loads(capsys.readouterr().out)[0]["predictions"]} == {"archery", "surfing"}
    assert main(["predict", str(tmp_path / "gone.mp4"), "--clip", tiny, "--classes", "a,b"]) == 2
    assert "gone.mp4" in capsys.readouterr().err
    assert main(["predict", str(videos[0]), "--clip", tiny, "--classes", " , "]) == 2
    assert "--classes is empty" in capsys.readouterr().err
    assert main(["predict", str(videos[0]), "--clip", tiny]) == 2
    assert "no classes" in capsys.readouterr().err


# ---- trained checkpoints -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, clip_file: Path) -> tuple[Path, VideoClassifier]:
    """A checkpoint written by the training engine's ``save_checkpoint``, from a model with non-zero adapters."""
    from omniclip.clip import load_clip
    from omniclip.config import config_from_dict, config_to_dict
    from omniclip.train.checkpoint import TrainedMeta, build_run_model, save_checkpoint

    run = tmp_path_factory.mktemp("run")
    cfg = config_from_dict({"clip": {"source": str(clip_file)}, "data": {"num_frames": T, "image_size": 32}})
    model = build_run_model(cfg, load_clip(clip_file)).eval()
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(0.05 * torch.randn_like(p))
    meta = TrainedMeta(CLASSES[:3], T, 32, ("a video of {}.",), config_to_dict(cfg), str(clip_file),
                       clip_arch=model.clip.cfg.to_dict(), step=1)  # fmt: skip
    save_checkpoint(run, model=model, optimizer=None, meta=meta, state={"step": 1})
    return run, VideoClassifier(model, T, 32, templates=("a video of {}.",), class_names=CLASSES[:3])


def test_load_model_from_a_trained_checkpoint(trained_run, clip_file: Path, videos: list[Path]) -> None:
    run, reference = trained_run
    loaded = load_model(run)  # detected as a checkpoint
    assert loaded.class_names == CLASSES[:3] and loaded.num_frames == T and loaded.image_size == 32
    assert loaded.model.config.variant == "omniclip"
    preds = predict(loaded, videos[0])  # the checkpoint's own classes
    assert [p.name for p in preds] == [p.name for p in predict(reference, videos[0])]
    assert dict(preds) == pytest.approx(dict(predict(reference, videos[0])), abs=1e-6)
    frame_average = predict(load_model(clip_file, num_frames=T), videos[0], classes=CLASSES[:3])
    assert dict(preds) != pytest.approx(dict(frame_average), abs=1e-4)  # the trained adapters matter
    with pytest.raises(ValueError, match="trained with 4 frames"):
        load_model(run, num_frames=8)
    with pytest.raises(ValueError, match="CLIP weights only"):
        load_model(run, variant="pta")


def test_cli_with_checkpoint(trained_run, videos: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    run, reference = trained_run
    assert main(["predict", str(videos[1]), "--checkpoint", str(run), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    want = predict(reference, videos[1])
    assert [p["class"] for p in row["predictions"]] == [p.name for p in want]


def test_cli_accepts_the_embedded_tiny_clip(videos: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    from omniclip.embedded import embedded_path

    if not embedded_path().is_file():
        pytest.skip(f"{embedded_path()} is not built yet (omniclip pretrain-tiny)")
    argv = ["predict", str(videos[0]), "--clip", "omniclip-tiny", "--classes", "a red square,a blue circle", "--json"]
    assert main(argv) == 0
    probs = [p["probability"] for p in json.loads(capsys.readouterr().out)[0]["predictions"]]
    assert len(probs) == 2 and sum(probs) == pytest.approx(1.0, abs=1e-5)
    loaded = load_model("omniclip-tiny")
    assert loaded.num_frames == 8 and loaded.source == "omniclip-tiny"


def test_cli_templates_and_views_reach_the_api(
    classifier: VideoClassifier, clip_file: Path, videos: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["predict", str(videos[1]), "--clip", str(clip_file), "--frames", "4", "--classes", ",".join(CLASSES)]
    argv += ["--templates", TEMPLATES[0], "--templates", TEMPLATES[1], "--views", "2x3", "--json"]
    assert main(argv) == 0
    got = {p["class"]: p["probability"] for p in json.loads(capsys.readouterr().out)[0]["predictions"]}
    want = dict(predict(classifier, videos[1], classes=CLASSES, templates=TEMPLATES, views="2x3"))
    assert got == pytest.approx(want, abs=1e-6)
    assert got != pytest.approx(dict(predict(classifier, videos[1], classes=CLASSES)), abs=1e-6)


# ---- folders, unreadable videos in a batch, overlong class names --------------------------------------------------


def test_cli_predicts_every_video_in_a_folder(videos: list[Path], clip_file: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "set"
    (folder / "b").mkdir(parents=True)
    for i, v in enumerate(videos):
        (folder / ("b" if i else "") / f"v{i}.MP4").write_bytes(v.read_bytes())
    (folder / "notes.txt").write_text("not a video")
    argv = ["predict", str(folder), str(folder / "v0.MP4"), "--clip", str(clip_file), "--frames", "4"]
    assert main([*argv, "--classes", ",".join(CLASSES), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["video"] for r in rows] == [str(folder / "b" / "v1.MP4"), str(folder / "v0.MP4")]  # sorted, each once
    assert all(len(r["predictions"]) == 5 for r in rows)
    with pytest.raises(ValueError, match=f"video {folder} is a folder"):
        predict(load_model(clip_file, num_frames=T), folder, classes=CLASSES)
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(tmp_path / "empty"), "--clip", str(clip_file), "--classes", "a,b"]) == 2
    assert f"folder {tmp_path / 'empty'} holds no videos" in capsys.readouterr().err


def test_cli_reports_an_unreadable_video_and_goes_on(
    videos: list[Path], clip_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 8)
    argv = ["predict", str(videos[0]), str(broken), str(videos[1]), "--clip", str(clip_file), "--frames", "4"]
    argv += ["--classes", ",".join(CLASSES), "--top-k", "1"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines()[::2] == [str(videos[0]), str(videos[1])]
    skipped = [line for line in captured.err.splitlines() if "omniclip predict" in line]
    assert skipped[0].startswith(f"omniclip predict: skipped: cannot read video {broken}: ")
    assert skipped[1] == "omniclip predict: 1 of 3 videos could not be read" and len(skipped) == 2
    assert main([*argv, "--json"]) == 1
    rows = json.loads(capsys.readouterr().out)
    assert [sorted(r) for r in rows] == [["predictions", "video"], ["error", "video"], ["predictions", "video"]]
    assert rows[1]["video"] == str(broken) and rows[1]["error"].startswith(f"cannot read video {broken}: ")


def test_an_overlong_class_name_is_named_without_a_python_only_hint(
    classifier: VideoClassifier, videos: list[Path], clip_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    long_name = "juggling " * 222 + "yoga"  # 2,002 characters
    with pytest.raises(ValueError, match=r"class name 'juggling juggling .*\.\.\.' \(2002 characters\) is too long"):
        predict(classifier, videos[0], classes=["archery", long_name])
    argv = ["predict", str(videos[0]), "--clip", str(clip_file), "--classes", f"archery,{long_name}"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is too long" in err[0] and "at most 77" in err[0] and "truncate" not in err[0], err


def test_a_checkpoint_is_predicted_with_the_sampling_it_was_trained_with(
    clip_file: Path, videos: list[Path], tmp_path: Path
) -> None:
    from omniclip.clip import load_clip
    from omniclip.config import config_from_dict, config_to_dict
    from omniclip.predict import load_video
    from omniclip.train.checkpoint import TrainedMeta, build_run_model, save_checkpoint

    data = {"num_frames": T, "image_size": 32, "sampling": "dense", "frame_interval": 1}
    cfg = config_from_dict({"clip": {"source": str(clip_file)}, "data": data})
    model = build_run_model(cfg, load_clip(clip_file)).eval()
    meta = TrainedMeta(CLASSES[:3], T, 32, ("a video of {}.",), config_to_dict(cfg), str(clip_file),
                       clip_arch=model.clip.cfg.to_dict(), step=1)  # fmt: skip
    save_checkpoint(tmp_path, model=model, optimizer=None, meta=meta, state={"step": 1})
    loaded = load_model(tmp_path)
    assert (loaded.sampling, loaded.frame_interval) == ("dense", 1)
    segment = VideoClassifier(loaded.model, T, 32)
    assert not torch.equal(load_video(loaded, videos[0]), load_video(segment, videos[0]))
