"""Imports point one way: clip <- model <- protocols <- train <- cli; data never imports clip or model."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "omniclip"

FORBIDDEN = {
    "clip": ("omniclip.model", "omniclip.data", "omniclip.protocols", "omniclip.train", "omniclip.cli"),
    "model": ("omniclip.data", "omniclip.protocols", "omniclip.train", "omniclip.cli"),
    "data": ("omniclip.clip", "omniclip.model", "omniclip.protocols", "omniclip.train", "omniclip.cli"),
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_point_one_way(package: str) -> None:
    files = sorted((SRC / package).rglob("*.py"))
    assert files, f"no modules in omniclip/{package}"
    for path in files:
        # Match whole package names: "omniclip.cli" must not catch "omniclip.clip".
        bad = [m for m in _imports(path) if any(m == f or m.startswith(f + ".") for f in FORBIDDEN[package])]
        assert not bad, f"{path.relative_to(SRC)} imports {bad}"
