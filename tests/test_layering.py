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
        if path.name in {"network.py", "supernet.py", "differentiable.py"}:
            continue  # the torch networks, imported lazily by the space's build_* methods
        third_party = {
            name for name in _imports(path, top_level=True)
            if name not in allowed and not _is_stdlib(name)
        }
        assert not third_party, f"{path.relative_to(REPO)} imports {third_party}"


def _is_stdlib(name: str) -> bool:
    import sys

    return name in sys.stdlib_module_names


# ----------------------------------------------------------------- no branching on a space
# What the core needs of a space is a SearchSpace method (STYLE.md section 1); modules outside
# spaces/ must not branch on which built-in space they were given.
BUNDLED_NAMES = {"nb201", "mobilenet"}
BUNDLED_CLASSES = {"NB201Space", "MobileNetSpace"}
BUNDLED_MODULES = ("spaces.nb201", "spaces.mobilenet")
# (file, line) -> why a use of a bundled space is legitimate there. Plain string values, such
# as the CLI's `--space` default or docstring examples, are not branching and need no entry.
ALLOWED: dict[tuple[str, int], str] = {}


def _is_bundled_module(name: str) -> bool:
    return any(name == m or name.startswith(m + ".") for m in BUNDLED_MODULES)


def _names_bundled(node: ast.AST) -> bool:
    """Whether ``node`` is a bundled space's name literal or holds one (tuple, list, set)."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and node.value.lower() in BUNDLED_NAMES
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_names_bundled(e) for e in node.elts)
    return False


def _is_bundled_class(node: ast.AST) -> bool:
    if isinstance(node, ast.Name):
        return node.id in BUNDLED_CLASSES
    if isinstance(node, ast.Attribute):
        return node.attr in BUNDLED_CLASSES
    if isinstance(node, ast.Tuple):
        return any(_is_bundled_class(e) for e in node.elts)
    return False


def space_branches(source: str) -> list[tuple[int, str]]:
    """``(line, what)`` for each place ``source`` branches on a bundled space.

    Found: comparisons with ``"nb201"`` / ``"mobilenet"`` (``==``, ``!=``, ``in``, ...),
    ``match`` cases and dict keys with those names (a dispatch table), ``isinstance`` /
    ``issubclass`` with ``NB201Space`` / ``MobileNetSpace`` and comparisons with those classes,
    and imports of ``spaces.nb201`` / ``spaces.mobilenet``. Docstrings and comments are not
    code, and a name passed as a value (a default, an example) is not a branch.
    """
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(_names_bundled(o) for o in operands):
                found.append((node.lineno, "compares with a bundled space's name"))
            elif any(_is_bundled_class(o) for o in operands):
                found.append((node.lineno, "compares with a bundled space's class"))
        elif isinstance(node, ast.MatchValue) and _names_bundled(node.value):
            found.append((node.value.lineno, "matches a bundled space's name"))
        elif isinstance(node, ast.Dict) and any(
            k is not None and _names_bundled(k) for k in node.keys
        ):
            found.append((node.lineno, "keys a dict by a bundled space's name"))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("isinstance", "issubclass")
            and len(node.args) == 2
            and _is_bundled_class(node.args[1])
        ):
            found.append((node.lineno, f"{node.func.id} with a bundled space's class"))
        elif isinstance(node, ast.Import) and any(_is_bundled_module(a.name) for a in node.names):
            found.append((node.lineno, "imports a bundled space's module"))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
            _is_bundled_module(node.module)
            or (node.module == "spaces" and any(
                _is_bundled_module(f"spaces.{a.name}") for a in node.names))
        ):
            found.append((node.lineno, "imports a bundled space's module"))
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and _is_bundled_module(str(node.args[0].value))
        ):
            found.append((node.lineno, "imports a bundled space's module"))
    return sorted(found)


@pytest.mark.parametrize("package", ["raynas", "searchers"])
def test_core_does_not_branch_on_a_space(package: str) -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{line}: {what}"
        for path in sorted((REPO / package).rglob("*.py"))
        for line, what in space_branches(path.read_text())
        if (str(path.relative_to(REPO)), line) not in ALLOWED
    ]
    assert not offenders, (
        "ask the space (a SearchSpace method, see docs/spaces.md) instead of branching on "
        f"it: {offenders}"
    )


@pytest.mark.parametrize(
    "code",
    [
        'if space.name == "nb201":\n    pass',
        'ok = space.name != "mobilenet"',
        'ok = name.lower() in ("nb201", "params")',
        'LAYOUTS = {"nb201": A, "mobilenet": B}',
        'match space.name:\n    case "nb201":\n        pass',
        "ok = isinstance(space, NB201Space)",
        "ok = isinstance(space, (SearchSpace, mobilenet.MobileNetSpace))",
        "ok = type(space) is MobileNetSpace",
        "from spaces.nb201.space import NB201_OPS",
        "from spaces import mobilenet",
        "import spaces.mobilenet.network",
        'mod = importlib.import_module("spaces.nb201.space")',
    ],
)
def test_branch_check_finds(code: str) -> None:
    assert space_branches(code), code


@pytest.mark.parametrize(
    "code",
    [
        '"""Example: create_space("nb201") or space.name == "nb201"."""',
        "# if space.name == 'nb201'",
        'p.add_argument("--space", default="nb201")',
        'spec = {"name": "nb201", "options": {}}',
        "from spaces import create_space, SearchSpace",
        'ok = space.name == other.name and kind == "lut"',
    ],
)
def test_branch_check_allows(code: str) -> None:
    assert not space_branches(code), code
