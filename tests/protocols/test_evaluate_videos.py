"""evaluate() on real decoded videos: synthetic mp4s, the test-time dataset and loader, a tiny OmniCLIP, a report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from omniclip.clip import build_clip
from omniclip.data.dataset import VideoDataset
from omniclip.data.loader import build_loader
from omniclip.data.records import read_annotations
from omniclip.data.synthetic import write_synthetic_dataset
from omniclip.predict import classifier_from_clip, predict
from omniclip.protocols.evaluate import evaluate
from omniclip.protocols.report import write_eval_report

T, CLASSES = 4, ["moving left", "moving right", "growing"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    data = write_synthetic_dataset(root, classes=CLASSES, videos_per_class=2, splits=("test",), num_frames=8, size=32)
    records = read_annotations(data.lists["test"], data.root)
    records[3].path.write_bytes(b"not a video at all" * 10)  # one unreadable file
    return data, records


def test_evaluate_real_videos_matches_predict(dataset, tmp_path: Path) -> None:
    data, records = dataset
    torch.manual_seed(0)
    classifier = classifier_from_clip(build_clip("tiny").eval(), num_frames=T, variant="omniclip")
    ds = VideoDataset(records, num_frames=T, mode="test", size=32, clips=2, crops=1)
    loader = build_loader(ds, batch_size=4, train=False)
    embeddings = classifier.class_embeddings(data.class_names)
    res = evaluate(classifier.model, loader, embeddings, device="cpu")
    assert res.num_videos == 6 and res.num_scored == 5
    assert [i for i, _ in res.failed] == [3] and str(records[3].path) in res.failed[0][1]
    assert sorted(res.predictions) == [0, 1, 2, 4, 5]
    correct = 0
    for rec in records:
        if rec.index == 3:
            continue
        best = predict(classifier, rec.path, classes=data.class_names, views="2x1", top_k=1)[0]
        assert data.class_names.index(best.name) == res.predictions[rec.index]  # same decoding, same scores
        correct += res.predictions[rec.index] == rec.label
    assert res.top1 == pytest.approx(100 * correct / 5)
    assert res.top5 == 100.0  # 3 classes: the label is always among the top 5
    paths = write_eval_report(res, tmp_path, data.class_names)
    assert json.loads(paths["metrics"].read_text())["num_failed"] == 1
    assert str(records[3].path) in paths["failed"].read_text()
