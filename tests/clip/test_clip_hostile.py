"""Hostile CLIP weight files: loading never runs anything from the file, on every route that loads CLIP weights.

``torch.jit.load`` runs a TorchScript archive's exported ``__setstate__``. The archives here use it to write a file
(``torch.from_file(..., shared=True)`` creates it, or overwrites the first bytes of an existing one); each test first
shows what a careless loader would do, then that ``load_clip``, ``read_clip_state`` and the CLI run nothing.
"""

from __future__ import annotations

import copy
import os
import pickle
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from omniclip.cli import main
from omniclip.clip import load_clip
from omniclip.clip.torchscript import read_torchscript
from omniclip.clip.weights import read_clip_state
from omniclip.data.encode import write_video

REFUSED_CODE = "refused: it carries code that would run on load"


class _FileWritingNorm(nn.LayerNorm):
    """A LayerNorm whose exported ``__setstate__`` writes b"XXXX" over the first bytes of ``target`` (creating it)."""

    def __init__(self, norm: nn.LayerNorm, target: str) -> None:
        super().__init__(norm.normalized_shape)
        self.load_state_dict(norm.state_dict())
        self.target = target

    @torch.jit.export
    def __getstate__(self) -> tuple[str, torch.Tensor, torch.Tensor, bool]:
        return (self.target, self.weight, self.bias, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, torch.Tensor, torch.Tensor, bool]) -> None:
        self.target, self.weight, self.bias, self.training = state
        written = torch.from_file(state[0], shared=True, size=4, dtype=torch.uint8).fill_(88)  # 88: "X"
        self.weight = self.weight + written[:0].sum()  # uses the write, so TorchScript keeps it; adds 0


def _file_writing_archive(clip: nn.Module, path: Path, target: Path, trace) -> Path:
    """A complete, valid tiny-CLIP TorchScript archive whose final LayerNorm writes ``target`` when loaded."""
    clip = copy.deepcopy(clip)
    clip.ln_final = _FileWritingNorm(clip.ln_final, str(target))
    trace(clip).save(str(path))
    assert not target.exists()
    return path


def _jit_load(path: Path) -> dict[str, torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return dict(torch.jit.load(str(path)).state_dict())


@pytest.fixture
def video(tmp_path: Path) -> Path:
    frames = np.zeros((8, 32, 32, 3), dtype=np.uint8)
    frames[:, 8:24, 8:24] = 200
    return write_video(tmp_path / "video.mp4", frames, fps=8)


def _refused_everywhere(path: Path, video: Path, capsys: pytest.CaptureFixture[str], match: str) -> None:
    """Every route that loads CLIP weights refuses ``path`` with one line naming it."""
    with pytest.raises(ValueError, match=match):
        load_clip(path)
    with pytest.raises(ValueError, match=match):
        read_clip_state(path)
    capsys.readouterr()
    assert main(["predict", str(video), "--clip", str(path), "--classes", "a,b"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"omniclip predict: error: {path}: ") and err.count("\n") == 1
    assert main(["model-info", "--clip", str(path)]) == 2
    assert f"{path}: " in capsys.readouterr().err


def test_setstate_archive_runs_under_jit_load_but_never_here(
    tmp_path: Path, tiny_clip, trace_openai_archive, video: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "written-on-load"
    path = _file_writing_archive(tiny_clip, tmp_path / "ViT-B-16.pt", target, trace_openai_archive)
    sd = _jit_load(path)  # what the file does to a careless loader: a working CLIP, and a file written
    assert target.read_bytes() == b"XXXX" and "ln_final.weight" in sd and "transformer.resblocks.1.ln_2.bias" in sd
    target.unlink()

    _refused_everywhere(path, video, capsys, rf"ViT-B-16\.pt: {REFUSED_CODE} \(__torch__\.\S*_FileWritingNorm")
    assert not target.exists()

    target.write_bytes(b"precious data")  # aimed at an existing file, torch.jit.load overwrites its first bytes
    with pytest.raises(ValueError, match=REFUSED_CODE):
        read_torchscript(path)
    assert main(["predict", str(video), "--clip", str(path), "--classes", "a,b"]) == 2
    assert target.read_bytes() == b"precious data"
    _jit_load(path)
    assert target.read_bytes() == b"XXXXious data"


# ---- hand-made data.pkl files: what a hostile archive can put in the pickle ----

MODULE_SOURCE = 'class Root(Module):\n  __parameters__ = ["w", ]\n  __buffers__ = []\n  w : Tensor\n  training : bool\n'


def _global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _str(text: str) -> bytes:
    data = text.encode()
    return pickle.BINUNICODE + len(data).to_bytes(4, "little") + data


def _int(value: int) -> bytes:
    return pickle.BININT + value.to_bytes(4, "little", signed=True)


def _ints(*values: int) -> bytes:
    return pickle.MARK + b"".join(_int(v) for v in values) + pickle.TUPLE


def _tensor(size: int, numel: int = 4) -> bytes:
    """``_rebuild_tensor_v2`` of a float tensor of ``size`` elements on storage ``0``, as TorchScript pickles it."""
    storage = pickle.MARK + _str("storage") + _global("torch", "FloatStorage") + _str("0") + _str("cpu")
    storage += _int(numel) + pickle.TUPLE + pickle.BINPERSID
    hooks = _global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE
    args = pickle.MARK + storage + _int(0) + _ints(size) + _ints(1) + pickle.NEWFALSE + hooks + pickle.TUPLE
    return _global("torch._utils", "_rebuild_tensor_v2") + args + pickle.REDUCE


def _module(attribute: bytes, cls: tuple[str, str] = ("__torch__", "Root")) -> bytes:
    """A ``__torch__`` module object with one attribute ``w``, as TorchScript's pickler writes a module."""
    state = pickle.EMPTY_DICT + pickle.MARK + _str("w") + attribute + _str("training") + pickle.NEWFALSE
    body = _global(*cls) + pickle.EMPTY_TUPLE + pickle.NEWOBJ + state + pickle.SETITEMS + pickle.BUILD
    return pickle.PROTO + b"\x02" + body + pickle.STOP


def _torchscript_zip(path: Path, data_pkl: bytes, storage: bytes = b"\0" * 16) -> Path:
    """A zip laid out as a TorchScript archive (``code/``, ``constants.pkl``), so it is read as one."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("root/data.pkl", data_pkl)
        z.writestr("root/data/0", storage)
        z.writestr("root/code/__torch__.py", MODULE_SOURCE)
        z.writestr("root/constants.pkl", pickle.dumps((), protocol=2))
        z.writestr("root/version", "3\n")
    return path


class _Call:
    """Pickles as a call of ``func(*args)``: the usual payload of a hostile pickle (nothing runs when pickling)."""

    def __init__(self, func: object, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.func, self.args


def test_hand_made_archive_layout(tmp_path: Path) -> None:
    """The hand-made archive is read as torch.jit.load reads it: the hostile ones below differ in one place each."""
    storage = torch.arange(4.0).numpy().tobytes()
    path = _torchscript_zip(tmp_path / "ok.pt", _module(_tensor(4)), storage)
    sd = read_torchscript(path)
    assert list(sd) == ["w"] and torch.equal(sd["w"], torch.arange(4.0))
    assert torch.equal(_jit_load(path)["w"], sd["w"])


def test_forbidden_globals_are_refused(tmp_path: Path, video: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "made-by-the-pickle"
    call = _global(os.system.__module__, "system") + _str(f"touch {target}") + pickle.TUPLE1 + pickle.REDUCE
    payloads = {
        "system-top": pickle.dumps(_Call(os.system, f"touch {target}"), protocol=2),
        "eval-top": pickle.dumps(_Call(eval, f"open({str(target)!r}, 'w')"), protocol=2, fix_imports=False),
        "system-nested": _module(call),  # as the value of a module attribute
    }
    for name, data in payloads.items():
        path = _torchscript_zip(tmp_path / f"{name}.pt", data)
        match = rf"{name}\.pt: refused: data\.pkl asks for the Python global '(posix|os|nt|builtins)\.(system|eval)'"
        _refused_everywhere(path, video, capsys, match)
        assert not target.exists()
    plain = tmp_path / "system.pt"  # the same payload as a plain pickle goes to torch.load(weights_only=True)
    plain.write_bytes(payloads["system-top"])
    _refused_everywhere(plain, video, capsys, r"system\.pt: ")
    assert not target.exists()


def test_custom_class_and_bad_tensors_are_refused(tmp_path: Path) -> None:
    torchbind = _module(pickle.NONE, cls=("__torch__.torch.classes.quantized", "LinearPackedParamsBase"))
    with pytest.raises(ValueError, match=rf"{REFUSED_CODE} \(__torch__\.torch\.classes\.quantized\.Linear.* C\+\+"):
        load_clip(_torchscript_zip(tmp_path / "torchbind.pt", torchbind))
    # torch's Tensor.set_ would grow the storage to fit; the reader refuses a tensor larger than its storage
    with pytest.raises(ValueError, match=r"big\.pt: tensor w reaches past the end of its storage data/0"):
        load_clip(_torchscript_zip(tmp_path / "big.pt", _module(_tensor(1000))))
    with pytest.raises(ValueError, match=r"numel\.pt: TorchScript storage root/data/0 holds 16 bytes, data\.pkl says"):
        load_clip(_torchscript_zip(tmp_path / "numel.pt", _module(_tensor(4, numel=1 << 30))))
    other_pid = _module(pickle.MARK + _str("module") + _str("x") + pickle.TUPLE + pickle.BINPERSID)
    with pytest.raises(ValueError, match=r"pid\.pt: data\.pkl holds the persistent id \('module', 'x'\)"):
        load_clip(_torchscript_zip(tmp_path / "pid.pt", other_pid))
    not_a_tensor = _module(_str("text"))
    with pytest.raises(ValueError, match=r"str\.pt: w is a str in data\.pkl, not a tensor"):
        load_clip(_torchscript_zip(tmp_path / "str.pt", not_a_tensor))
