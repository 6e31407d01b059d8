"""The worked example of docs/spaces.md: a user's space, registered, searched and resumed."""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

import spaces._registry
from searchers import create_searcher
from searchers.testing import METRIC, drive
from spaces import Arch, Decision, SearchSpace, create_space, list_spaces, register_space

if TYPE_CHECKING:
    import torch


# ----------------------------------------------------- the example, as in docs/spaces.md
@register_space("mlp_widths")
class WidthSpace(SearchSpace):
    """Widths of a stack of dense layers; an architecture is a string like ``"16-64-32"``.

    Example:
        >>> WidthSpace(layers=2).decode([0, 2])
        '16-64'
    """

    name = "mlp_widths"

    def __init__(self, *, layers: int = 3, widths: Sequence[int] = (16, 32, 64)) -> None:
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
            raise ValueError(f"layers must be a positive integer, got {layers!r}")
        if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 1
                             for w in widths):
            raise ValueError(f"widths must be positive integers, got {widths!r}")
        self.layers = layers
        self.widths = tuple(sorted(set(widths)))

    # Required: the decisions and the arch <-> index vector mapping.
    @property
    def decisions(self) -> tuple[Decision, ...]:
        """One width per layer: flat config keys ``width/0``, ``width/1``, ..."""
        return tuple(Decision(f"width/{i}", self.widths) for i in range(self.layers))

    def validate(self, arch: Any) -> Arch:
        """``arch`` in its canonical string form, or ``ValueError`` saying what is wrong."""
        parts = arch.split("-") if isinstance(arch, str) else []
        if len(parts) != self.layers or not all(p.isdigit() and int(p) in self.widths
                                                for p in parts):
            raise ValueError(f"a {self.name} architecture is {self.layers} widths of "
                             f"{list(self.widths)} joined by '-', got {arch!r}")
        return "-".join(str(int(p)) for p in parts)

    def encode(self, arch: Arch) -> np.ndarray:
        """Index of each layer's width in ``widths``."""
        parts = str(self.validate(arch)).split("-")
        return np.array([self.widths.index(int(p)) for p in parts], dtype=np.int64)

    def decode(self, vector: Sequence[int] | np.ndarray) -> Arch:
        """The string of an index vector."""
        return "-".join(str(self.widths[int(i)]) for i in self._check_vector(vector))

    # Optional: spec() takes these options, so a bare searcher can rebuild the space.
    def describe(self) -> dict[str, Any]:
        """The base summary plus the constructor options."""
        options = {"layers": self.layers, "widths": list(self.widths)}
        return {**super().describe(), "options": options}

    # Optional: networks, for the training evaluator and `raynas latency measure`.
    def build_network(
        self, arch: Arch, *, num_classes: int = 10, in_channels: int = 3
    ) -> torch.nn.Module:
        """A dense network on 4x4-pooled images (torch is imported here, not by the module)."""
        from torch import nn

        layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(4), nn.Flatten()]
        width = in_channels * 16
        for part in str(self.validate(arch)).split("-"):
            layers += [nn.Linear(width, int(part)), nn.ReLU()]
            width = int(part)
        layers.append(nn.Linear(width, num_classes))
        return nn.Sequential(*layers)

    def count_params(self, arch: Arch, *, num_classes: int = 10, in_channels: int = 3) -> int:
        """Weights and biases of ``build_network(arch, ...)``, without torch."""
        sizes = [in_channels * 16, *map(int, str(self.validate(arch)).split("-")), num_classes]
        return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


# ----------------------------------------------------------------------------- tests
def test_created_by_name_and_searched() -> None:
    assert "mlp_widths" in list_spaces()
    space = create_space("mlp_widths", layers=4)
    assert space.size == 81 and space.validate("016-32-64-16") == "16-32-64-16"
    searcher = create_searcher("regularized_evolution", space, metric=METRIC, mode="max",
                               seed=0, population_size=10)
    archs = drive(searcher, space, 40, concurrency=2)
    assert len(set(archs)) == 40 and all(space.validate(a) == a for a in archs)
    config = space.to_config(archs[0])
    assert sorted(config) == ["width/0", "width/1", "width/2", "width/3"]
    assert space.from_config(config) == archs[0]
    with pytest.raises(ValueError, match="bad options for space 'mlp_widths'"):
        create_space("mlp_widths", depth=2)


def test_resumes_from_a_bare_searcher(tmp_path: Path) -> None:
    space = create_space("mlp_widths", layers=4, widths=[8, 16, 24, 32])
    assert space.spec() == {"name": "mlp_widths",
                            "options": {"layers": 4, "widths": [8, 16, 24, 32]}}

    def searcher() -> Any:
        return create_searcher("regularized_evolution", space, metric=METRIC, mode="max",
                               seed=3, population_size=8)

    uninterrupted = drive(searcher(), space, 30)
    first = searcher()
    head = drive(first, space, 15)
    first.save(str(tmp_path / "state.json"))
    bare = create_searcher("regularized_evolution")  # as Tune's restore path builds it
    bare.restore(str(tmp_path / "state.json"))
    assert bare.space.spec() == space.spec()
    assert head + drive(bare, space, 15, prefix="u") == uninterrupted


def test_registered_through_an_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    ep = EntryPoint(name="mlp_widths_ep", value=f"{__name__}:WidthSpace", group="raynas.spaces")

    def entry_points(*, group: str) -> list[EntryPoint]:
        return [ep] if group == "raynas.spaces" else []

    monkeypatch.setattr(spaces._registry, "entry_points", entry_points)
    # A copy of the registry, so the name loaded from the entry point goes with the test.
    monkeypatch.setattr(spaces._registry, "_SPACES", dict(spaces._registry._SPACES))
    assert "mlp_widths_ep" in list_spaces()
    assert isinstance(create_space("mlp_widths_ep", layers=2), WidthSpace)


def test_networks_and_counts() -> None:
    import torch

    space = WidthSpace()
    arch = space.decode([2, 0, 1])
    net = space.build_network(arch, num_classes=5, in_channels=1)
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 5)
    n_params = sum(p.numel() for p in net.parameters())
    assert space.count_params(arch, num_classes=5, in_channels=1) == n_params


def test_core_hooks_defaults_and_clear_errors(tmp_path: Path) -> None:
    from raynas.evaluators.base import TabularEvaluator
    from raynas.latency.lut import build_table

    space = WidthSpace(layers=2)
    vectors = np.array([[0, 2], [1, 1]])
    assert space.active_mask(vectors).all()
    np.testing.assert_array_equal(space.features(vectors),
                                  [[1, 0, 0, 0, 0, 1], [0, 1, 0, 0, 1, 0]])
    assert space.encode_strings(["16-64"]) is None  # no fast path: encoded one by one
    with pytest.raises(NotImplementedError, match="space 'mlp_widths' has no latency_layout"):
        space.latency_layout()
    with pytest.raises(ValueError, match=r"no layer-wise latency table for space 'mlp_widths'"
                                         r".*SearchSpace.latency_layout"):
        build_table(space)
    with pytest.raises(NotImplementedError, match="space 'mlp_widths' has no table_key"):
        space.table_key("16-64")
    table = tmp_path / "table.csv"
    table.write_text("arch_str,val_acc_200ep\n16-64,50.0\n")
    with pytest.raises(ValueError, match=r"space 'mlp_widths' has no table key "
                                         r"\(SearchSpace.table_key\)"):
        TabularEvaluator(space, table_path=table)


def test_docs_show_this_example() -> None:
    import inspect

    docs = (Path(__file__).resolve().parents[2] / "docs" / "spaces.md").read_text()
    assert inspect.getsource(WidthSpace) in docs, "update the example in docs/spaces.md"
