"""The timed steps: a training step (forward, backward, AdamW) and CUDA-graph replays of a step with static shapes.

CUDA graphs follow PyTorch's whole-network capture recipe (``torch.cuda.graphs`` docs): warm up on a side stream,
free the gradients, capture forward, backward and a ``capturable`` optimiser step once, then copy each new batch
into the static input tensors and replay. Only static shapes qualify, which a benchmark's fixed batch guarantees.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from omniclip.bench.subjects import Batch, Subject


class TrainStep:
    """``step(batch)``: zero gradients, ``subject.loss(batch)``, backward, one AdamW step on the trainable parameters.

    Args:
        subject: the model under test.
        device: the optimiser is fused on CUDA.
        capturable: keep the optimiser's step counters on the device, as CUDA-graph capture requires.
    """

    def __init__(self, subject: Subject, device: torch.device, capturable: bool = False) -> None:
        if not subject.trainable:
            raise ValueError(f"{subject.name} has no trainable parameters; there is no training step to time")
        self.subject = subject
        cuda = device.type == "cuda"
        self.opt = torch.optim.AdamW(subject.trainable, lr=1e-6, fused=cuda, capturable=capturable and cuda)

    def forward_backward_step(self, batch: Batch) -> torch.Tensor:
        """Loss, backward and optimiser step, without zeroing gradients first (the part a CUDA graph captures)."""
        loss = self.subject.loss(batch)
        loss.backward()
        self.opt.step()
        return loss.detach()

    def __call__(self, batch: Batch) -> torch.Tensor:
        self.opt.zero_grad(set_to_none=True)
        return self.forward_backward_step(batch)


def _copy_into(static: Batch, batch: Batch) -> None:
    for key, value in static.items():
        if batch[key] is not value:
            value.copy_(batch[key], non_blocking=True)


def graph_replay(
    step: Callable[[Batch], Any],
    example: Batch,
    *,
    capture: Callable[[Batch], Any] | None = None,
    before_capture: Callable[[], None] | None = None,
    warmup: int = 3,
) -> Callable[[Batch], Any]:
    """Capture ``capture`` (default ``step``) in a CUDA graph and return ``replay(batch)``.

    ``step`` runs ``warmup`` times on a side stream first (lazy initialisation, autotuning, optimiser state);
    ``before_capture`` runs between warm-up and capture (a training step frees its gradients there, so that
    backward allocates them from the graph's pool). ``replay`` copies ``batch`` into private copies of ``example``'s
    tensors, replays, and returns the captured outputs (overwritten by the next replay).
    """
    if not torch.cuda.is_available():
        raise ValueError("CUDA graphs need a CUDA device; drop --cuda-graphs on the CPU")
    static = {k: v.clone() for k, v in example.items()}
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            step(static)
    torch.cuda.current_stream().wait_stream(side)
    if before_capture is not None:
        before_capture()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = (capture or step)(static)

    def replay(batch: Batch) -> Any:
        _copy_into(static, batch)
        graph.replay()
        return out

    return replay


def graphed_train_step(train: TrainStep, example: Batch, warmup: int = 3) -> Callable[[Batch], Any]:
    """A CUDA-graph replay of ``train`` (needs ``TrainStep(..., capturable=True)``)."""
    return graph_replay(
        train,
        example,
        capture=train.forward_backward_step,
        before_capture=lambda: train.opt.zero_grad(set_to_none=True),
        warmup=warmup,
    )
