"""Read the weights of a TorchScript archive (OpenAI's released ``.pt`` files) without running anything from it.

``torch.jit.load`` is not safe for files from elsewhere: a scripted class or module that exports ``__setstate__``
has that method compiled and run while the archive loads, and TorchScript can write files
(``torch.from_file(..., shared=True)``). This reader never compiles or runs the archive's code. The archive is a zip
(``<name>/data.pkl``, ``<name>/data/<key>``, ``<name>/code/...``, ``<name>/constants.pkl``); ``data.pkl`` is read by
a restricted unpickler that knows only

* ``torch._utils._rebuild_tensor_v2`` with the ``("storage", torch.<T>Storage, key, location, numel)`` persistent
  ids that point at ``data/<key>`` (the protocol ``torch.load`` uses), ``collections.OrderedDict``;
* the inert list and type-tag builders of TorchScript's pickler (``torch.jit._pickle.build_*list``,
  ``restore_type_tag``) and ``torch.device``, rebuilt as plain values;
* TorchScript objects (``__torch__.*`` classes), rebuilt as inert containers of their attributes.

Every other global is refused, and so is any class whose TorchScript source defines ``__setstate__`` or
``__getstate__`` (the code ``torch.jit.load`` would run), and C++ custom classes (``__torch__.torch.classes.*``).
The source is only parsed (``ast``) for each module class's ``__parameters__`` and ``__buffers__`` lists, which give
exactly the state dict ``torch.jit.load(path).state_dict()`` gives: parameters, then buffers, then submodules, with
dotted names. Tensors that share a storage in the file share it here too. Everything lands on the CPU.
"""

from __future__ import annotations

import ast
import io
import pickle
import re
import sys
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch

__all__ = ["ArchiveError", "read_torchscript"]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # used with fullmatch
_KEY = re.compile(r"[A-Za-z0-9_.-]+")
_LOAD_HOOKS = ("__setstate__", "__getstate__")  # methods torch.jit.load runs (or pairs with one it runs)
# The storage classes TorchScript's pickler names (``torch.<ScalarType>Storage``) and the dtype of their elements.
STORAGE_DTYPES: dict[str, torch.dtype] = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexDoubleStorage": torch.complex128,
    "ComplexFloatStorage": torch.complex64,
}


class ArchiveError(ValueError):
    """A TorchScript archive that is refused (it would run code) or cannot be read (corrupt); one line."""


class _StorageType(NamedTuple):
    name: str
    dtype: torch.dtype


class _StorageRef(NamedTuple):
    key: str
    dtype: torch.dtype
    numel: int


class _TensorRecord(NamedTuple):
    """A tensor as data.pkl describes it; made into a tensor only after unpickling, from the zip's storages."""

    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


@dataclass(frozen=True)
class ClassInfo:
    """What the archive's TorchScript source declares about one class (read with ``ast``, never run)."""

    is_module: bool
    parameters: tuple[str, ...]
    buffers: tuple[str, ...]
    load_hooks: tuple[str, ...]  # __setstate__ / __getstate__ defined by the class: code that runs on load


class ScriptObject:
    """An inert stand-in for one TorchScript object: it holds the pickled attributes and runs nothing."""

    __slots__ = ("attributes",)
    attributes: Any  # what data.pkl's BUILD gave: a dict of attributes for the objects TorchScript pickles
    qualname: ClassVar[str] = ""
    info: ClassVar[ClassInfo]

    def __new__(cls, *args: Any) -> ScriptObject:
        if args:
            raise ArchiveError(f"data.pkl builds {cls.qualname} with arguments; TorchScript's pickler never does")
        obj = super().__new__(cls)
        obj.attributes = None
        return obj

    def __setstate__(self, state: Any) -> None:  # what BUILD calls: store, never the file's own __setstate__
        if self.attributes is not None:
            raise ArchiveError(f"data.pkl sets the state of a {self.qualname} twice (corrupt?)")
        self.attributes = state


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _int_tuple(x: Any, what: str) -> tuple[int, ...]:
    if not isinstance(x, tuple) or not all(_is_int(v) and v >= 0 for v in x):
        raise ArchiveError(f"data.pkl gives a tensor {what} {x!r}, not a tuple of non-negative ints (corrupt?)")
    return x


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any,
    backward_hooks: Any,
    metadata: Any = None,
) -> _TensorRecord:
    """``torch._utils._rebuild_tensor_v2``'s arguments, checked and recorded; ``requires_grad`` is dropped."""
    if not isinstance(storage, _StorageRef):
        raise ArchiveError("data.pkl rebuilds a tensor from something that is not a storage of the archive")
    if not _is_int(storage_offset) or storage_offset < 0:
        raise ArchiveError(f"data.pkl gives a tensor storage offset {storage_offset!r} (corrupt?)")
    sizes, strides = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(sizes) != len(strides):
        raise ArchiveError(f"data.pkl gives a tensor size {sizes} and stride {strides} of different lengths")
    if not isinstance(requires_grad, bool):
        raise ArchiveError(f"data.pkl gives a tensor requires_grad {requires_grad!r} (corrupt?)")
    if backward_hooks or metadata:
        raise ArchiveError("data.pkl gives a tensor backward hooks or metadata; weights have neither")
    return _TensorRecord(storage, storage_offset, sizes, strides)


def _build_list(items: Any) -> list[Any]:
    if not isinstance(items, list):
        raise ArchiveError(f"data.pkl builds a typed list from a {type(items).__name__}")
    return list(items)


def _restore_type_tag(value: Any, type_str: Any) -> Any:
    return value  # the TorchScript type of a list or dict attribute: not needed for weights


def _device(name: Any) -> str:
    if not isinstance(name, str):
        raise ArchiveError(f"data.pkl builds a device from a {type(name).__name__}")
    return name  # kept as a string: everything is read to the CPU


_FUNCTIONS: dict[str, Any] = {
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
    "torch.jit._pickle.build_intlist": _build_list,
    "torch.jit._pickle.build_doublelist": _build_list,
    "torch.jit._pickle.build_boollist": _build_list,
    "torch.jit._pickle.build_tensorlist": _build_list,
    "torch.jit._pickle.restore_type_tag": _restore_type_tag,
    "torch.device": _device,
    "collections.OrderedDict": OrderedDict,
}


def _string_list(node: ast.expr, where: str) -> tuple[str, ...]:
    try:
        value = ast.literal_eval(node)
    except ValueError as err:
        raise ArchiveError(f"{where} is not a list of names") from err
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ArchiveError(f"{where} is not a list of names")
    return tuple(value)


def parse_classes(source: str, module: str, entry: str) -> dict[str, ClassInfo]:
    """The classes a TorchScript source file declares, by qualified name (``<module>.<Class>``); parsed, not run."""
    try:
        tree = ast.parse(source, filename=entry)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        raise ArchiveError(f"cannot parse the TorchScript source {entry}: {type(err).__name__}") from err
    found: dict[str, ClassInfo] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        lists: dict[str, tuple[str, ...]] = {}
        hooks: list[str] = []
        for stmt in node.body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                name = stmt.targets[0].id
                if name in ("__parameters__", "__buffers__"):
                    lists[name] = _string_list(stmt.value, f"{entry}: {node.name}.{name}")
            elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name in _LOAD_HOOKS:
                hooks.append(stmt.name)
        found[f"{module}.{node.name}"] = ClassInfo(
            is_module=any(isinstance(b, ast.Name) and b.id == "Module" for b in node.bases),
            parameters=lists.get("__parameters__", ()),
            buffers=lists.get("__buffers__", ()),
            load_hooks=tuple(hooks),
        )
    return found


class _Archive:
    """One open TorchScript zip: its prefix, class sources (parsed on demand) and storages (read on demand)."""

    def __init__(self, zf: zipfile.ZipFile) -> None:
        self.zip = zf
        pickles = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            found = "no" if not pickles else f"{len(pickles)}"
            raise ArchiveError(f"TorchScript archive has {found} <name>/data.pkl (older than PyTorch 1.4, or corrupt)")
        self.prefix = pickles[0][: -len("data.pkl")]
        order = (self._read_optional("byteorder") or b"little").decode("ascii", "replace").strip()  # older: little
        if order != sys.byteorder:
            raise ArchiveError(f"TorchScript archive is {order[:20]!r}-endian; this machine is {sys.byteorder}")
        self.classes: dict[str, ClassInfo] = {}
        self.parsed: set[str] = set()
        self.types: dict[str, type[ScriptObject]] = {}
        self.storages: dict[str, torch.UntypedStorage] = {}

    def _read_optional(self, name: str) -> bytes | None:
        try:
            return self.zip.read(self.prefix + name)
        except KeyError:
            return None

    def script_class(self, module: str, name: str) -> type[ScriptObject]:
        """An inert class standing for ``<module>.<name>``; refused when its source defines load-time code."""
        qualname = f"{module}.{name}"
        if qualname in self.types:
            return self.types[qualname]
        parts = module.split(".")
        if not all(_IDENT.fullmatch(p) for p in [*parts, name]):
            raise ArchiveError(f"data.pkl names the malformed TorchScript class {qualname!r}")
        if module == "__torch__.torch.classes" or module.startswith("__torch__.torch.classes."):
            raise ArchiveError(
                f"refused: it carries code that would run on load ({qualname} is a C++ custom class, whose "
                "__setstate__ runs native code); only weights are read from TorchScript archives"
            )
        entry = f"{self.prefix}code/{'/'.join(parts)}.py"
        if entry not in self.parsed:
            self.parsed.add(entry)
            source = self._read_optional(f"code/{'/'.join(parts)}.py")
            if source is not None:
                self.classes.update(parse_classes(source.decode("utf-8", "replace"), module, entry))
        info = self.classes.get(qualname)
        if info is None:
            raise ArchiveError(f"TorchScript archive has no source for class {qualname} (corrupt?)")
        if info.load_hooks:
            raise ArchiveError(
                f"refused: it carries code that would run on load ({qualname} defines "
                f"{' and '.join(info.load_hooks)}); only weights are read from TorchScript archives"
            )
        cls = type("ScriptObject", (ScriptObject,), {"__slots__": (), "qualname": qualname, "info": info})
        self.types[qualname] = cls
        return cls

    def tensor(self, record: _TensorRecord, name: str) -> torch.Tensor:
        """The tensor ``record`` describes, on its (shared, cached) storage; bounds checked before ``set_``."""
        ref = record.storage
        storage = self._storage(ref)
        itemsize = ref.dtype.itemsize
        needed = 0  # bytes up to the last element; none for an empty tensor
        if all(record.size):
            last = record.offset + sum((s - 1) * st for s, st in zip(record.size, record.stride, strict=True))
            needed = (last + 1) * itemsize
        if needed > storage.nbytes():
            raise ArchiveError(
                f"tensor {name} reaches past the end of its storage data/{ref.key} "
                f"({needed} > {storage.nbytes()} bytes; corrupt?)"
            )
        return torch.empty(0, dtype=ref.dtype).set_(storage, record.offset, record.size, record.stride)

    def _storage(self, ref: _StorageRef) -> torch.UntypedStorage:
        entry = f"{self.prefix}data/{ref.key}"
        try:
            info = self.zip.getinfo(entry)
        except KeyError:
            raise ArchiveError(f"TorchScript archive lacks {entry} (truncated?)") from None
        expected = ref.numel * ref.dtype.itemsize
        if info.file_size != expected:
            raise ArchiveError(
                f"TorchScript storage {entry} holds {info.file_size} bytes, data.pkl says {expected} "
                "(truncated or corrupt?)"
            )
        if ref.key not in self.storages:
            data = self.zip.read(info)
            storage = torch.UntypedStorage.from_buffer(data, dtype=torch.uint8) if data else torch.UntypedStorage(0)
            self.storages[ref.key] = storage
        return self.storages[ref.key]


class _Unpickler(pickle.Unpickler):
    """``data.pkl``'s pickle machine with every global and persistent id it may reach checked here."""

    def __init__(self, data: bytes, archive: _Archive) -> None:
        super().__init__(io.BytesIO(data), fix_imports=False)
        self.archive = archive

    def find_class(self, module: str, name: str) -> Any:
        qualname = f"{module}.{name}"
        if qualname in _FUNCTIONS:
            return _FUNCTIONS[qualname]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name, STORAGE_DTYPES[name])
        if module == "__torch__" or module.startswith("__torch__."):
            return self.archive.script_class(module, name)
        raise ArchiveError(
            f"refused: data.pkl asks for the Python global {qualname[:120]!r}, which loading would run; "
            "a TorchScript archive of weights holds only tensors, storages and TorchScript (__torch__) objects"
        )

    def persistent_load(self, pid: Any) -> _StorageRef:
        if (
            isinstance(pid, tuple)
            and len(pid) == 5
            and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)
            and isinstance(pid[2], str)
            and _KEY.fullmatch(pid[2])
            and _is_int(pid[4])
            and pid[4] >= 0
        ):
            return _StorageRef(pid[2], pid[1].dtype, pid[4])
        raise ArchiveError(f"data.pkl holds the persistent id {str(pid)[:120]}, not a storage of the archive")


def _collect(obj: ScriptObject, prefix: str, out: dict[str, _TensorRecord], path: tuple[int, ...]) -> None:
    """``nn.Module.state_dict``'s walk over the inert module tree: parameters, buffers, then submodules."""
    if id(obj) in path:
        raise ArchiveError(f"data.pkl's module {prefix or '<root>'} contains itself (corrupt?)")
    attributes = obj.attributes
    if not isinstance(attributes, dict) or not all(isinstance(k, str) for k in attributes):
        raise ArchiveError(f"module {prefix or '<root>'} ({obj.qualname}) has no attribute dict in data.pkl")
    for names in (obj.info.parameters, obj.info.buffers):
        for name, value in attributes.items():
            if name not in names or value is None:
                continue
            if not isinstance(value, _TensorRecord):
                raise ArchiveError(f"{prefix}{name} is a {type(value).__name__} in data.pkl, not a tensor")
            out[prefix + name] = value
    for name, value in attributes.items():
        if isinstance(value, ScriptObject) and value.info.is_module:
            _collect(value, f"{prefix}{name}.", out, (*path, id(obj)))


def read_torchscript(path: str | Path) -> dict[str, torch.Tensor]:
    """The parameters and buffers of a TorchScript archive, named as ``torch.jit.load(path).state_dict()`` names them.

    Nothing from the file is run: see the module docstring. Raises :class:`ArchiveError` (a ``ValueError``) with one
    line when the archive is refused or corrupt; a file that is not a zip raises ``zipfile.BadZipFile``.
    """
    with zipfile.ZipFile(path) as zf:
        archive = _Archive(zf)
        try:
            root = _Unpickler(archive.zip.read(archive.prefix + "data.pkl"), archive).load()
        except RecursionError as err:
            raise ArchiveError("data.pkl nests too deeply (corrupt?)") from err
        if not isinstance(root, ScriptObject) or not root.info.is_module:
            raise ArchiveError(f"data.pkl holds a {type(root).__name__}, not a TorchScript module")
        records: dict[str, _TensorRecord] = {}
        try:
            _collect(root, "", records, ())
        except RecursionError as err:
            raise ArchiveError("data.pkl's modules nest too deeply (corrupt?)") from err
        return {name: archive.tensor(record, name) for name, record in records.items()}
