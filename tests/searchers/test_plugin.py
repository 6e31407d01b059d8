"""The plug-in contract, exercised with examples/custom_searcher (never pip-installed here)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from searchers import NASSearch, create_searcher, get_searcher_class, list_searchers
from searchers.testing import METRIC, SearcherConformance, drive
from spaces import SearchSpace, create_space

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_searcher"
MODULE = "raynas_hill_climb"
SPEC = f"{MODULE}:HillClimbSearch"


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The example module, importable from its folder for this test only."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    sys.modules.pop(MODULE, None)
    yield importlib.import_module(MODULE)
    sys.modules.pop(MODULE, None)


@pytest.fixture
def installed(example: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake installed distribution declaring the entry point, as pip would write it."""
    dist = tmp_path / "raynas_hill_climb-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: raynas-hill-climb\nVersion: 0.1.0\n"
    )
    (dist / "entry_points.txt").write_text(f"[raynas.searchers]\nhill_climb = {SPEC}\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # also invalidates importlib's caches
    return tmp_path


def test_module_class_spec(example: ModuleType) -> None:
    space = create_space("nb201")
    searcher = create_searcher(SPEC, space, metric=METRIC, mode="max", seed=0)
    assert isinstance(searcher, example.HillClimbSearch)
    assert isinstance(searcher, NASSearch)
    assert len(drive(searcher, space, 10)) == 10


def test_entry_point_is_found(installed: Path, example: ModuleType) -> None:
    assert "hill_climb" in list_searchers()
    assert get_searcher_class("hill_climb") is example.HillClimbSearch
    space = create_space("nb201")
    searcher = create_searcher("hill_climb", space, metric=METRIC, mode="min", seed=1)
    assert isinstance(searcher, example.HillClimbSearch)
    assert len(drive(searcher, space, 5)) == 5


def test_entry_point_absent_without_distribution() -> None:
    if any(ep.name == "hill_climb" for ep in entry_points(group="raynas.searchers")):
        pytest.skip("raynas-hill-climb is pip-installed in this environment")
    assert "hill_climb" not in list_searchers()
    with pytest.raises(ValueError, match=r"unknown searcher 'hill_climb'; available: .*greedynas"):
        get_searcher_class("hill_climb")


class TestHillClimbConformance(SearcherConformance):
    @pytest.fixture(autouse=True)
    def _bind(self, example: ModuleType) -> None:
        self.cls = example.HillClimbSearch

    def make_searcher(self, space: SearchSpace, **kwargs: Any) -> Any:  # type: ignore[override]
        return self.cls(space, **kwargs)


def test_hill_climb_moves_to_better_neighbours(example: ModuleType) -> None:
    space = create_space("nb201")
    searcher = example.HillClimbSearch(space, metric=METRIC, mode="max", seed=0)

    def score(arch: Any) -> float:
        return float(str(arch).count("nor_conv_3x3"))

    archs = drive(searcher, space, 100, score=score)
    # No local optima in this landscape: the climb reaches all six edges convolutional.
    assert max(map(score, archs)) == 6.0
    first_moves = {space.canonical(n) for n in space.neighbours(archs[0])}
    assert space.canonical(archs[1]) in first_moves


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("collections:OrderedDict", r"searcher 'collections:OrderedDict' is .*not a subclass"),
        (f"{MODULE}:logger", rf"searcher '{MODULE}:logger' is .*not a subclass"),
        (f"{MODULE}:NoSuchSearch", rf"cannot import searcher '{MODULE}:NoSuchSearch'"),
        ("no_such_module_xyz:Search", r"cannot import searcher 'no_such_module_xyz:Search'"),
    ],
)
def test_bad_module_class_spec_names_it(example: ModuleType, spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_searcher(spec, create_space("nb201"), metric=METRIC, mode="max")
