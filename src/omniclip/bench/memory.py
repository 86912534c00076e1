"""Memory of a step: peak allocated memory while it runs, and the activations a training step keeps for backward.

Peak memory is CUDA's ``max_memory_allocated`` on a GPU; on Linux CPUs it is the growth of the process's peak RSS
(``VmHWM``, reset through ``/proc/self/clear_refs``), a lower bound since the allocator reuses memory freed earlier;
elsewhere it is reported as unknown rather than guessed. Saved activations are counted on any device through
autograd's saved-tensor hooks: the bytes of every distinct non-parameter storage that backward will read.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


class MemoryProbe:
    """Peak memory of the code run between ``start()`` and ``stop()``.

    CUDA: ``max_memory_allocated`` (absolute peak: weights, optimiser state and activations). CPU on Linux: peak RSS
    minus the RSS at ``start()`` (``cpu_rss_peak_delta``; the allocator may reuse memory freed earlier in the
    process, so this is a lower bound). Otherwise ``None`` with kind ``n/a``.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = (
            "cuda_max_allocated" if device.type == "cuda" else ("cpu_rss_peak_delta" if _rss_resettable() else "n/a")
        )
        self._rss0 = 0

    def start(self) -> None:
        if self.kind == "cuda_max_allocated":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.kind == "cpu_rss_peak_delta":
            PROC_CLEAR_REFS.write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            self._rss0 = _proc_kib("VmRSS")

    def stop(self) -> int | None:
        if self.kind == "cuda_max_allocated":
            return int(torch.cuda.max_memory_allocated(self.device))
        if self.kind == "cpu_rss_peak_delta":
            return max(0, _proc_kib("VmHWM") - self._rss0) * 1024
        return None


def _proc_kib(key: str) -> int:
    match = re.search(rf"^{key}:\s+(\d+) kB", PROC_STATUS.read_text(), re.MULTILINE)
    assert match, f"{key} missing from {PROC_STATUS}"
    return int(match.group(1))


def _rss_resettable() -> bool:
    try:
        PROC_CLEAR_REFS.write_text("5")
        _proc_kib("VmHWM")
    except (OSError, AssertionError):
        return False
    return True


def saved_activation_bytes(model: nn.Module, loss_fn: Callable[[], torch.Tensor]) -> int:
    """Bytes of the tensors ``loss_fn()`` saves for backward, parameters excluded (each storage counted once).

    This is the activation memory that training holds at the start of backward, whatever the device. Under
    activation checkpointing the recomputed blocks save nothing here; the block inputs they keep for recomputation
    (one ``(B*T, N, D)`` tensor per block) are not counted.
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn()
    loss.backward()  # frees the graph; the caller clears the gradients
    return sum(storages.values())
