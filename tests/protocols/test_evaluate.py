"""evaluate(): exact accuracies on hand-built scores, view averaging, failures, coverage checks, two gloo ranks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from omniclip.data.transforms import normalize
from omniclip.dist import shutdown
from omniclip.protocols.evaluate import EvalResult, check_coverage, evaluate, score_views

S, T = 2, 1  # tiny frames: the pixel value itself carries the video's identity


class LookupModel(nn.Module):
    """Returns hand-written logits: each view's frames are filled with a code that selects a row of ``table``."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table  # (codes, C)
        codes = torch.arange(table.shape[0], dtype=torch.uint8).view(-1, 1, 1, 1, 1).expand(-1, T, 3, S, S)
        self.keys = normalize(codes)[:, 0, 0, 0, 0].float()  # normalised value of each code
        self.calls: list[int] = []

    def forward(self, video: torch.Tensor, class_embeddings: torch.Tensor) -> torch.Tensor:
        assert video.dtype.is_floating_point and video.shape[1:] == (T, 3, S, S)
        self.calls.append(video.shape[0])
        code = (video[:, 0, 0, 0, 0].float()[:, None] - self.keys[None]).abs().argmin(dim=1)
        return self.table[code]


def make_batch(indices: list[int], labels: list[int], views: int, failed=()) -> dict:
    """A VideoBatch whose view ``v`` of video ``i`` is filled with code ``i * views + v``."""
    codes = torch.tensor([[i * views + v for v in range(views)] for i in indices], dtype=torch.uint8)
    video = codes.view(len(indices), views, 1, 1, 1, 1).expand(-1, -1, T, 3, S, S).contiguous()
    return {
        "video": video,
        "label": torch.tensor(labels, dtype=torch.long),
        "index": torch.tensor(indices, dtype=torch.long),
        "failed": list(failed),
    }


def ranking_logits(orders: list[list[int]], num_classes: int) -> torch.Tensor:
    """Logits that rank classes in the given order (best first); unnamed classes come last."""
    table = torch.full((len(orders), num_classes), -100.0)
    for row, order in enumerate(orders):
        for rank, c in enumerate(order):
            table[row, c] = float(num_classes - rank)
    return table


# Six videos over 7 classes; the label's position in each ranking decides top-1 and top-5 by hand.
LABELS = [0, 1, 2, 3, 0, 0]
ORDERS = [[0], [2, 1], [2], [0, 1, 2, 4, 5, 3], [0], [3, 4, 5, 6, 0]]


def known_run(batch_size: int = 4) -> tuple[LookupModel, list[dict]]:
    model = LookupModel(ranking_logits(ORDERS + [[0]], 7))
    batches = [
        make_batch([0, 1, 2, 3], LABELS[:4], views=1),
        make_batch([4, 5], LABELS[4:], views=1, failed=[(6, "moov atom not found")]),
    ]
    return model, batches


def test_exact_accuracies_on_known_scores() -> None:
    model, batches = known_run()
    res = evaluate(model, batches, torch.zeros(7, 4), device="cpu", expected=range(7))
    assert res.num_videos == 7 and res.num_scored == 6
    assert res.failed == [(6, "moov atom not found")]
    assert 6 not in res.predictions
    assert res.top1 == pytest.approx(100 * 3 / 6)  # videos 0, 2, 4
    assert res.top5 == pytest.approx(100 * 5 / 6)  # video 3's label is 6th
    assert res.per_class_accuracy[:4] == pytest.approx([100 * 2 / 3, 0.0, 100.0, 0.0])
    assert all(math.isnan(a) for a in res.per_class_accuracy[4:])  # no videos of classes 4-6
    assert res.mean_class_accuracy == pytest.approx((200 / 3 + 0 + 100 + 0) / 4)
    expected_conf = np.zeros((7, 7), dtype=np.int64)
    for true, pred in [(0, 0), (1, 2), (2, 2), (3, 0), (0, 0), (0, 3)]:
        expected_conf[true, pred] += 1
    np.testing.assert_array_equal(res.confusion, expected_conf)
    assert res.predictions == {0: 0, 1: 2, 2: 2, 3: 0, 4: 0, 5: 3}
    assert model.calls == [4, 2]  # one forward per batch


def test_to_dict_is_json_ready() -> None:
    model, batches = known_run()
    res = evaluate(model, batches, torch.zeros(7, 4), device="cpu", expected=range(7))
    d = json.loads(json.dumps(res.to_dict(full=True), allow_nan=False))
    assert d["num_failed"] == 1 and d["failed"] == [[6, "moov atom not found"]]
    assert d["per_class_accuracy"][4] is None
    assert d["confusion"][0][3] == 1 and d["predictions"]["5"] == 3
    assert "confusion" not in res.to_dict()


def test_views_average_probabilities_not_logits() -> None:
    # Video 0: two views mildly for class 0, one view very sure of class 1. Mean probabilities pick
    # class 0; mean logits would pick class 1.
    table = torch.tensor([[3.0, 0.0], [3.0, 0.0], [0.0, 20.0]])
    model = LookupModel(table)
    batch = make_batch([0], [0], views=3)
    probs = score_views(model, batch["video"], torch.zeros(2, 4))
    expected = table.softmax(dim=-1).mean(dim=0, keepdim=True)
    torch.testing.assert_close(probs, expected)
    assert model.calls == [3]  # all views of the batch in one forward
    res = evaluate(model, [batch], torch.zeros(2, 4), device="cpu", expected=[0])
    assert res.predictions == {0: 0} and res.top1 == 100.0
    assert table.mean(dim=0).argmax() == 1


def test_all_failed_batch_is_not_forwarded() -> None:
    model = LookupModel(ranking_logits([[0]], 3))
    batch = {"video": None, "label": torch.empty(0), "index": torch.empty(0), "failed": [(0, "bad"), (1, "worse")]}
    res = evaluate(model, [batch], torch.zeros(3, 4), device="cpu", expected=[0, 1])
    assert model.calls == [] and res.num_scored == 0 and res.num_videos == 2
    assert math.isnan(res.top1) and res.to_dict()["top1"] is None


@pytest.mark.parametrize(
    ("batches", "expected", "message"),
    [
        ([([0, 1], []), ([1], [])], [0, 1], "scored twice"),
        ([([0], [])], [0, 1], "never evaluated: [1]"),
        ([([0, 1], [(1, "x")])], [0, 1], "both scored and failed: [1]"),
        ([([0], [(1, "x"), (1, "x")])], [0, 1], "failed more than once: [1]"),
        ([([0, 5], [])], [0], "not in the dataset: [5]"),
    ],
)
def test_coverage_errors(batches, expected, message) -> None:
    model = LookupModel(ranking_logits([[0]] * 6, 2))
    loader = [make_batch(ids, [0] * len(ids), views=1, failed=failed) for ids, failed in batches]
    with pytest.raises(RuntimeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        evaluate(model, loader, torch.zeros(2, 4), device="cpu", expected=expected)


def test_check_coverage_accepts_exact_cover() -> None:
    check_coverage({0: (0, np.ones(2)), 2: (1, np.ones(2))}, [(1, "bad")], {0, 1, 2})


def test_expected_indices_default_to_the_dataset_length() -> None:
    class Loader(list):
        dataset = list(range(3))

    model = LookupModel(ranking_logits([[0]] * 3, 2))
    with pytest.raises(RuntimeError, match=r"never evaluated: \[2\]"):
        evaluate(model, Loader([make_batch([0, 1], [0, 0], views=1)]), torch.zeros(2, 4), device="cpu")


def test_labels_out_of_range_are_a_clear_error() -> None:
    model = LookupModel(ranking_logits([[0]], 2))
    with pytest.raises(ValueError, match="expected 2 classes"):
        evaluate(model, [make_batch([0], [5], views=1)], torch.zeros(2, 4), device="cpu", expected=[0])


def test_model_training_flag_is_restored() -> None:
    model, batches = known_run()
    model.train()
    evaluate(model, batches, torch.zeros(7, 4), device="cpu", expected=range(7))
    assert model.training


def test_bf16_autocast_runs_on_cpu() -> None:
    class Linear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3 * S * S * T, 4)

        def forward(self, video, class_embeddings):
            self.dtype_seen = self.fc(video.flatten(1)).dtype
            return self.fc(video.flatten(1))

    model = Linear()
    batch = make_batch([0, 1], [0, 1], views=2)
    res = evaluate(model, [batch], torch.zeros(4, 4), device="cpu", amp_dtype=torch.bfloat16, expected=[0, 1])
    assert model.dtype_seen == torch.bfloat16 and res.num_scored == 2


# ---- two gloo ranks ----------------------------------------------------------------------------------------------

N_DIST = 7  # not divisible by the 2 ranks


def _dist_table() -> tuple[torch.Tensor, list[int]]:
    gen = torch.Generator().manual_seed(3)
    views = 2
    return torch.randn(N_DIST * views, 5, generator=gen) * 3, [int(i % 5) for i in range(N_DIST)]


class CodeDataset(torch.utils.data.Dataset):
    """Map-style dataset of VideoItems filled with codes (as ``make_batch``); item 4 is unreadable."""

    failed_index = 4

    def __init__(self, labels: list[int], views: int = 2) -> None:
        self.labels, self.views = labels, views

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        if i == self.failed_index:
            return {"video": None, "label": self.labels[i], "index": i, "error": "truncated file"}
        video = make_batch([i], [self.labels[i]], views=self.views)["video"][0]  # (V, T, 3, S, S)
        return {"video": video, "label": self.labels[i], "index": i, "error": None}


def _dist_loader(rank: int, world: int, labels: list[int]):
    from omniclip.data.loader import build_loader

    return build_loader(CodeDataset(labels), batch_size=2, train=False, rank=rank, world_size=world)


def _worker(rank: int, world: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    store = dist.FileStore(str(Path(out_dir, "store")), world)  # no port to race other processes for
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world)
    done = False
    try:
        table, labels = _dist_table()
        loader = _dist_loader(rank, world, labels)  # ShardSampler: each index on exactly one rank, no padding
        res = evaluate(LookupModel(table), loader, torch.zeros(5, 4), device="cpu")
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(res.to_dict(full=True)))
        done = True
    finally:
        shutdown(wait_for_all=done)


def test_two_gloo_ranks_equal_single_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    table, labels = _dist_table()
    single = evaluate(LookupModel(table), _dist_loader(0, 1, labels), torch.zeros(5, 4), device="cpu")
    single = single.to_dict(full=True)
    ranks = [json.loads(Path(tmp_path, f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1] == single
    assert single["num_scored"] == N_DIST - 1 and single["failed"] == [[4, "truncated file"]]
    assert sorted(map(int, single["predictions"])) == [0, 1, 2, 3, 5, 6]


def test_eval_result_num_classes() -> None:
    res = EvalResult(1.0, 1.0, 1.0, [1.0, 1.0], np.zeros((2, 2), dtype=np.int64), 0, 0)
    assert res.num_classes == 2
