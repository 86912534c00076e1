"""Run directories and run records: ``metrics.jsonl`` lines, optional TensorBoard scalars, a log file.

Run directories follow ``runs/<protocol>/<dataset>/<preset>_<T>f/<timestamp>`` unless an output is given.
Only the main process writes (``RunLog(..., enabled=False)`` on other ranks is a no-op).

A run folder has one writer at a time: ``run_lock`` holds an exclusive ``flock`` on ``<run>/.lock`` (which names
the holder) for as long as the run goes. The kernel drops the lock when its process ends, however it ends, so a
lock file left by a killed run is only a file and blocks nothing.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from omniclip.files import write_text

log = logging.getLogger(__name__)


def arch_tag(source: str) -> str:
    """A short architecture name for paths: ``ViT-B/16`` -> ``ViT-B-16``, ``/x/tiny.safetensors`` -> ``tiny``."""
    name = Path(source.rstrip("/")).name if ("/" in source and not source.startswith("ViT")) else source
    for suffix in (".safetensors", ".pt", ".pth", ".bin"):
        name = name.removesuffix(suffix)
    return name.replace("/", "-").replace("@", "-") or "clip"


def default_run_dir(protocol: str, dataset: str, source: str, num_frames: int) -> Path:
    """``runs/<protocol>/<dataset>/<arch>_<T>f/<YYYYmmdd-HHMMSS>``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / protocol / dataset / f"{arch_tag(source)}_{num_frames}f" / stamp


LOCK_FILE = ".lock"
_HELD: set[Path] = set()  # run folders whose lock this process holds


@contextmanager
def run_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold the exclusive lock of a run folder (created if needed) for the body; yields the lock file.

    The lock file records the holder (pid, host, start time) for the refusal message. Nested use in the process that
    holds the lock of the folder, or of a folder above it, is a no-op (a protocol's per-seed runs inside a run).

    Raises:
        ValueError: another process holds the lock; the message names it.
    """
    folder = Path(run_dir).resolve()
    path = folder / LOCK_FILE
    if any(held == folder or held in folder.parents for held in _HELD):
        yield path
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _describe_holder(os.pread(fd, 4096, 0))
        os.close(fd)
        raise ValueError(
            f"run folder {run_dir} is in use by {holder}; wait for that run to end or choose another --output"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    try:
        since = datetime.now().astimezone().isoformat(timespec="seconds")
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}) + "\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        _HELD.add(folder)
        yield path
    finally:
        _HELD.discard(folder)
        os.ftruncate(fd, 0)  # the file stays (unlinking it would let a waiting opener lock a dead inode)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _describe_holder(raw: bytes) -> str:
    try:
        info = json.loads(raw.decode("utf-8"))
        return f"pid {int(info['pid'])} on host {info['host']} since {info['since']}"
    except (ValueError, KeyError, TypeError):
        return "another process (it has not written its pid yet)"


def run_contents(run_dir: str | Path) -> list[Path]:
    """What a run folder holds besides its lock file (empty when the folder does not exist)."""
    folder = Path(run_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name != LOCK_FILE)


def empty_run_dir(run_dir: str | Path) -> None:
    """Delete everything in a run folder but its lock file (hold the lock); links are removed, not followed."""
    for p in run_contents(run_dir):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf
    if hasattr(value, "item") and callable(value.item):
        return _jsonable(value.item())
    return value


class RunLog:
    """Appends one JSON object per line to ``metrics.jsonl``; mirrors scalars to TensorBoard when asked.

    Args:
        run_dir: the run directory.
        enabled: False on non-main ranks (nothing is written).
        tensorboard: also write TensorBoard event files under ``run_dir/tb`` if tensorboard is installed.
        log_file: also copy ``logging`` output to ``run_dir/train.log``.
    """

    def __init__(self, run_dir: str | Path, *, enabled: bool = True, tensorboard: bool = False, log_file: bool = True):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.path = self.run_dir / "metrics.jsonl"
        self._tb: Any = None
        self._handler: logging.Handler | None = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.warning("train.tensorboard=true but tensorboard is not installed; writing metrics.jsonl only")
            else:
                self._tb = SummaryWriter(str(self.run_dir / "tb"))
        if log_file:
            self._handler = logging.FileHandler(self.run_dir / "train.log")
            self._handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
            logging.getLogger("omniclip").addHandler(self._handler)

    def write(self, kind: str, **values: Any) -> None:
        """Append ``{"kind": kind, "time": ..., **values}``; numeric values also go to TensorBoard."""
        if not self.enabled:
            return
        record = {"kind": kind, "time": round(time.time(), 3), **{k: _jsonable(v) for k, v in values.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None and "step" in values:
            for k, v in values.items():
                if isinstance(v, (int, float)) and k != "step":
                    self._tb.add_scalar(f"{kind}/{k}", v, int(values["step"]))

    def drop_after(self, step: int) -> None:
        """Remove records past optimizer step ``step`` (a resumed run logs them again), atomically."""
        if not self.enabled or not self.path.is_file():
            return
        lines = self.path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if not line.strip() or json.loads(line).get("step", 0) <= step]
        write_text(self.path, "".join(kept))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._handler is not None:
            logging.getLogger("omniclip").removeHandler(self._handler)
            self._handler.close()


def read_metrics(run_dir: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """Records of ``metrics.jsonl`` (of one ``kind`` when given)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if kind is None or r.get("kind") == kind]
