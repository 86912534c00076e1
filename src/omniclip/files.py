"""Files written whole or not at all, with the mode the user's umask asks for.

Every output of the project (configs, checkpoints, reports, figures, exports, lists) goes through ``atomic_path``: the
content is written to a temporary file beside the target and moved onto it with ``os.replace``, so a reader never sees
half a file and a killed writer leaves the old file in place. The temporary file is created with mode ``0o666`` less
the umask, as ``open()`` would create the target itself, so a teammate on a shared machine can read a run's
checkpoints and reports (``tempfile.mkstemp`` would make them 0600).
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _create_beside(path: Path) -> tuple[Path, int]:
    """Create an empty, uniquely named file next to ``path`` (same folder, so ``os.replace`` is atomic).

    Returns it with its mode: ``0o666`` less the umask, applied by the kernel as for any new file.
    """
    while True:
        tmp = path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        try:
            return tmp, stat.S_IMODE(os.fstat(fd).st_mode)
        finally:
            os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` when the body ends normally, else is deleted.

    The temporary name keeps the target's suffix (``torch.export.save`` warns about files not ending in ``.pt2``).
    Parent folders are created. Writers that make their file anew with their own mode (safetensors writes 0600) get
    the umask's mode back before the move.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, mode = _create_beside(path)
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    return Path(path)


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON (with a final newline) to ``path`` atomically."""
    return write_text(path, json.dumps(data, indent=2) + "\n")


def pyplot() -> Any:
    """``matplotlib.pyplot`` with the file-only Agg backend (training machines have no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Write a matplotlib figure as a PNG atomically and close it."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        pyplot().close(fig)
    return Path(path)


def save_safetensors(path: str | Path, tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> Path:
    """``safetensors.torch.save_file`` atomically, with the umask's mode (the writer alone makes its files 0600)."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def writable_dir(path: str | Path, what: str = "output folder") -> Path:
    """Create ``path`` (and its parents) and check that a file can be written in it, before any work starts.

    Raises:
        ValueError: ``path`` is a file, lies under a file, or cannot be written; the message names it.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {path} is an existing file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe, _ = _create_beside(path / "write-check")
        probe.unlink()
    except (NotADirectoryError, FileExistsError):
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), path)
        raise ValueError(f"{what} {path} lies under a file ({blocker})") from None
    except OSError as err:
        raise ValueError(f"{what} {path} cannot be written: {err.strerror}") from None
    return path
