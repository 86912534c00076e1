"""evaluate() on real decoded videos: synthetic mp4s, the test-time dataset and loader, a tiny OmniCLIP, a report."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch

from omniclip.clip import build_clip
from omniclip.data import loader as loader_module
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


class ThreadNoting(VideoDataset):
    """A ``VideoDataset`` that notes which thread decodes each item and can fail hard at one index."""

    def __init__(self, *args, crash_at: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.crash_at, self.threads = crash_at, []

    def __getitem__(self, key):
        self.threads.append(threading.current_thread().name)
        if key == self.crash_at:
            raise RuntimeError(f"loader broke at item {key}")
        return super().__getitem__(key)


def _prefetch_threads() -> int:
    return sum(t.name == "omniclip-prefetch" for t in threading.enumerate())


@pytest.fixture
def spare_core(monkeypatch):
    """A core left over beside torch's threads, so that ``decode_ahead`` reads ahead in a thread."""
    monkeypatch.setattr(loader_module, "usable_cores", lambda: torch.get_num_threads() + 1)


def test_evaluate_without_workers_decodes_ahead_in_a_thread_with_the_same_results(dataset, spare_core) -> None:
    data, records = dataset
    torch.manual_seed(0)
    classifier = classifier_from_clip(build_clip("tiny").eval(), num_frames=T, variant="omniclip")
    embeddings = classifier.class_embeddings(data.class_names)
    ds = ThreadNoting(records, num_frames=T, mode="test", size=32, clips=2, crops=1)
    loader = build_loader(ds, batch_size=2, train=False, workers=0)
    in_main = evaluate(classifier.model, list(loader), embeddings, device="cpu", expected=range(6))  # no prefetch
    assert set(ds.threads) == {threading.current_thread().name}
    ds.threads.clear()
    ahead = evaluate(classifier.model, loader, embeddings, device="cpu")
    assert set(ds.threads) == {"omniclip-prefetch"} and len(ds.threads) == 6  # every video decoded once, off-thread
    assert ahead.to_dict(full=True) == in_main.to_dict(full=True)
    assert [i for i, _ in ahead.failed] == [3] and str(records[3].path) in ahead.failed[0][1]  # the unreadable file
    assert ahead.num_videos == 6 and ahead.num_scored == 5


def test_evaluate_decodes_in_line_when_torch_holds_every_core(dataset, monkeypatch) -> None:
    data, records = dataset
    monkeypatch.setattr(loader_module, "usable_cores", torch.get_num_threads)
    classifier = classifier_from_clip(build_clip("tiny").eval(), num_frames=T, variant="omniclip")
    ds = ThreadNoting(records, num_frames=T, mode="test", size=32, clips=2, crops=1)
    loader = build_loader(ds, batch_size=2, train=False, workers=0)
    result = evaluate(classifier.model, loader, classifier.class_embeddings(data.class_names), device="cpu")
    assert set(ds.threads) == {threading.current_thread().name} and result.num_scored == 5


def test_a_loader_error_during_prefetched_evaluation_surfaces_as_without_it(dataset, spare_core) -> None:
    data, records = dataset
    classifier = classifier_from_clip(build_clip("tiny"), num_frames=T, variant="omniclip")
    embeddings, model = classifier.class_embeddings(data.class_names), classifier.model.train()
    ds = ThreadNoting(records, num_frames=T, mode="test", size=32, crash_at=4)
    loader = build_loader(ds, batch_size=2, train=False, workers=0)
    for batches in (loader, iter(loader)):  # read ahead by a thread; read in this thread (an iterator, no prefetch)
        with pytest.raises(RuntimeError, match="loader broke at item 4"):
            evaluate(model, batches, embeddings, device="cpu", expected=range(6))
        assert model.training  # the model's mode is restored
        assert _prefetch_threads() == 0  # and no thread is left decoding


def test_a_model_error_during_prefetched_evaluation_stops_the_thread(dataset, spare_core) -> None:
    class Broken(torch.nn.Module):
        def forward(self, video: torch.Tensor, class_embeddings: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("model broke")

    _, records = dataset
    ds = VideoDataset(records, num_frames=T, mode="test", size=32)
    loader = build_loader(ds, batch_size=1, train=False, workers=0)  # 6 batches: the thread waits to hand on more
    with pytest.raises(RuntimeError, match="model broke") as caught:
        evaluate(Broken(), loader, torch.zeros(len(CLASSES), 8), device="cpu")
    assert _prefetch_threads() == 0  # stopped by evaluate, not later by collecting the traceback that it keeps
    assert caught.traceback
