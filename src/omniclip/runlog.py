"""Run directories and run records: ``metrics.jsonl`` lines, optional TensorBoard scalars, a log file.

Run directories follow ``runs/<protocol>/<dataset>/<preset>_<T>f/<timestamp>`` unless an output is given.
Only the main process writes (``RunLog(..., enabled=False)`` on other ranks is a no-op).
"""

from __future__ import annotations

import json
import logging
import math
import time
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


def default_run_dir(protocol: str, dataset: str, source: str, num_frames: int, root: str | Path = "runs") -> Path:
    """``runs/<protocol>/<dataset>/<arch>_<T>f/<YYYYmmdd-HHMMSS>``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(root) / protocol / dataset / f"{arch_tag(source)}_{num_frames}f" / stamp


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
        self._tb = None
        self._handler: logging.Handler | None = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            self._tb = _tensorboard_writer(self.run_dir / "tb")
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


def _tensorboard_writer(path: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("train.tensorboard=true but tensorboard is not installed; writing metrics.jsonl only")
        return None
    return SummaryWriter(str(path))


def read_metrics(run_dir: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """Records of ``metrics.jsonl`` (of one ``kind`` when given)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if kind is None or r.get("kind") == kind]
