"""Dependencies point one way: raynas -> searchers -> spaces."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {"spaces": {"searchers", "raynas"}, "searchers": {"raynas"}, "cluster": {"raynas"}}


def _imports(path: Path, *, top_level: bool = False) -> set[str]:
    """Top-level package names imported anywhere in the file (or only at module level)."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in tree.body if top_level else ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_upward_imports(package: str) -> None:
    offenders = [
        f"{path.relative_to(REPO)} imports {sorted(_imports(path) & FORBIDDEN[package])}"
        for path in (REPO / package).rglob("*.py")
        if _imports(path) & FORBIDDEN[package]
    ]
    assert not offenders, offenders


def test_spaces_import_numpy_only_at_top_level() -> None:
    allowed = {"numpy", "spaces", "__future__"}
    for path in (REPO / "spaces").rglob("*.py"):
        if path.name in {"network.py", "supernet.py"}:
            continue
        third_party = {
            name for name in _imports(path, top_level=True)
            if name not in allowed and not _is_stdlib(name)
        }
        assert not third_party, f"{path.relative_to(REPO)} imports {third_party}"


def _is_stdlib(name: str) -> bool:
    import sys

    return name in sys.stdlib_module_names
