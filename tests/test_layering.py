"""Imports point one way, for every layer of the package: each unit imports only the units listed for it.

``files``, ``dist`` and ``precision`` are the neutral plumbing every layer may use; ``clip`` and ``data`` know nothing
of each other; ``protocols`` never imports ``train``; only ``commands`` (wired by ``cli``) sees everything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "omniclip"

PLUMBING = {"assets", "files", "dist", "precision"}
ALLOWED: dict[str, set[str]] = {
    "assets": set(),
    "files": set(),
    "dist": set(),
    "precision": set(),
    "runlog": {"files"},
    "clip": {"assets", "files"},
    "data": {"files"},
    "model": {"clip", "files"},
    "config": {"data", "model", "files"},
    "embedded": {"clip", "data", "model", "train"} | PLUMBING,  # pretraining uses the engine's schedule and groups
    "protocols": {"config", "data", "model"} | PLUMBING,
    "recipe": {"clip", "config", "data"} | PLUMBING,  # train --data: a run config from class folders and the hardware
    "train": {"clip", "config", "data", "model", "runlog"} | PLUMBING,
    "predict": {"clip", "data", "model", "protocols", "train"} | PLUMBING,
    "export": {"data", "model", "predict"} | PLUMBING,
    "bench": {"clip", "model"} | PLUMBING,
    "demo": {"clip", "config", "data", "embedded", "model", "predict", "protocols", "timeline", "train"} | PLUMBING,
    "timeline": {"clip", "data", "predict"} | PLUMBING,
    "commands": {
        "bench",
        "clip",
        "config",
        "data",
        "demo",
        "embedded",
        "export",
        "model",
        "predict",
        "protocols",
        "recipe",
        "runlog",
        "timeline",
        "train",
        "cli",  # the demo ends by running `omniclip predict` as a user would
    }
    | PLUMBING,
    "cli": set(PLUMBING),  # loads the command modules by name (COMMAND_MODULES)
    "__init__": {"config", "predict", "timeline"},
    "__main__": {"cli"},
}


def _unit(path: Path) -> str:
    return path.relative_to(SRC).parts[0].removesuffix(".py")


def _imported_units(path: Path) -> set[str]:
    units: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from omniclip import files" names the unit in the imported names
            names = [f"{node.module}.{a.name}" for a in node.names] if node.module == "omniclip" else [node.module]
        else:
            continue
        units.update(n.split(".")[1] for n in names if n.startswith("omniclip.") and n.count(".") >= 1)
    return units


def test_every_unit_has_a_place() -> None:
    units = {_unit(p) for p in SRC.rglob("*.py")}
    assert units <= ALLOWED.keys(), f"units without a layer in ALLOWED: {sorted(units - ALLOWED.keys())}"


@pytest.mark.parametrize("unit", sorted(ALLOWED))
def test_imports_point_one_way(unit: str) -> None:
    files = [SRC / f"{unit}.py"] if (SRC / f"{unit}.py").is_file() else sorted((SRC / unit).rglob("*.py"))
    assert files, f"no modules in omniclip/{unit}"
    for path in files:
        bad = _imported_units(path) - ALLOWED[unit] - {unit}
        assert not bad, f"{path.relative_to(SRC)} imports omniclip.{sorted(bad)} (allowed: {sorted(ALLOWED[unit])})"


def test_the_table_allows_no_cycle() -> None:
    seen: dict[str, int] = {}

    def depth(unit: str, path: tuple[str, ...] = ()) -> int:
        assert unit not in path, f"import cycle allowed: {' -> '.join((*path, unit))}"
        if unit not in seen:
            seen[unit] = 1 + max((depth(u, (*path, unit)) for u in ALLOWED[unit]), default=0)
        return seen[unit]

    for unit in ALLOWED:
        depth(unit)
