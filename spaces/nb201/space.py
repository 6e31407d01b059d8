"""NAS-Bench-201: a 4-node cell, one of 5 operations on each of its 6 edges (Dong & Yang, 2020)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from spaces._base import Arch, Decision, SearchSpace, positive_int
from spaces._registry import register_space

if TYPE_CHECKING:
    import torch

    from spaces.layout import LatencyLayout

logger = logging.getLogger(__name__)

NB201_OPS: tuple[str, ...] = (
    "none",
    "skip_connect",
    "nor_conv_1x1",
    "nor_conv_3x3",
    "avg_pool_3x3",
)
PARAMETER_FREE: frozenset[str] = frozenset({"none", "skip_connect", "avg_pool_3x3"})
# Edge i goes from node EDGES[i][0] into node EDGES[i][1], in the order of the string form.
EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))


def parse_nb201(text: str) -> list[list[tuple[str, int]]]:
    """Parse ``|op~0|+|op~0|op~1|+|...|`` into per-node lists of (op, input node)."""
    if not isinstance(text, str):
        raise ValueError(f"a NAS-Bench-201 architecture is a string, got {type(text).__name__}")
    nodes = text.split("+")
    if len(nodes) != 3:
        raise ValueError(f"NAS-Bench-201 string must have 3 nodes separated by '+': {text!r}")
    parsed: list[list[tuple[str, int]]] = []
    for node_index, node in enumerate(nodes, start=1):
        if not (node.startswith("|") and node.endswith("|")):
            raise ValueError(f"node {node_index} of {text!r} must be enclosed in '|': {node!r}")
        items = node[1:-1].split("|")
        if len(items) != node_index:
            raise ValueError(f"node {node_index} of {text!r} must have {node_index} inputs")
        edges = []
        for expected_input, item in enumerate(items):
            op, sep, src = item.partition("~")
            if not sep or op not in NB201_OPS:
                raise ValueError(
                    f"unknown operation {op!r} in {text!r}; allowed: {', '.join(NB201_OPS)}"
                )
            if src != str(expected_input):
                raise ValueError(
                    f"edge {item!r} of node {node_index} must read from node {expected_input}"
                )
            edges.append((op, expected_input))
        parsed.append(edges)
    return parsed


def ops_to_string(ops: Sequence[str]) -> str:
    """NAS-Bench-201 string of the 6 edge operations in ``EDGES`` order."""
    return "+".join(
        "|" + "|".join(f"{ops[k]}~{src}" for k, (src, dst) in enumerate(EDGES) if dst == node) + "|"
        for node in (1, 2, 3)
    )


@lru_cache(maxsize=32768)
def _canonical(text: str) -> str:
    # As NAS-Bench-201's `to_unique_str(consider_zero=True)`: skip edges forward their input,
    # zero edges and zero inputs vanish, and a node's inputs are an unordered set.
    node_expr = {0: "0"}
    for node, edges in enumerate(parse_nb201(text), start=1):
        terms = []
        for op, src in edges:
            if op == "none" or node_expr[src] == "#":
                terms.append("#")
            elif op == "skip_connect":
                terms.append(node_expr[src])
            else:
                terms.append(f"({node_expr[src]})@{op}")
        node_expr[node] = "+".join(sorted(terms))
    return node_expr[3]


@register_space("nb201")
class NB201Space(SearchSpace):
    """The NAS-Bench-201 cell space: 5^6 = 15,625 strings, 6,466 distinct computations.

    An architecture is its NAS-Bench-201 string, so results can be looked up in the public
    tables. Flat config keys are ``op/0`` .. ``op/5`` in the edge order of the string
    (1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2).

    Keyword options ``channels`` (C), ``cells_per_stage`` (N) and ``resolution`` shape the
    networks of ``build_network`` / ``count_params`` / ``count_flops``; NAS-Bench-201 used
    C=16, N=5 on 32x32 images.

    Example:
        >>> import numpy as np
        >>> space = NB201Space()
        >>> arch = space.sample(np.random.default_rng(0))
        >>> space.validate(arch) == arch
        True
    """

    name = "nb201"

    def __init__(
        self, *, channels: int = 16, cells_per_stage: int = 5, resolution: int = 32
    ) -> None:
        self.channels = positive_int("channels", channels)
        self.cells_per_stage = positive_int("cells_per_stage", cells_per_stage)
        self.resolution = positive_int("resolution", resolution)
        self._decisions = tuple(
            Decision(f"op/{i}", NB201_OPS) for i in range(len(EDGES))
        )

    @property
    def decisions(self) -> tuple[Decision, ...]:
        """Six decisions, one operation per edge."""
        return self._decisions

    def describe(self) -> dict[str, Any]:
        """The base summary plus the network options and the number of distinct cells."""
        out = super().describe()
        out["num_canonical"] = 6466
        out["options"] = {
            "channels": self.channels,
            "cells_per_stage": self.cells_per_stage,
            "resolution": self.resolution,
        }
        return out

    def validate(self, arch: Any) -> Arch:
        """Return the string if it is a well-formed NAS-Bench-201 architecture."""
        parse_nb201(arch)
        return str(arch)

    def encode(self, arch: Arch) -> np.ndarray:
        """Index of each edge's operation in ``NB201_OPS``."""
        nodes = parse_nb201(arch)  # type: ignore[arg-type]
        ops = {(src, dst): op for dst, edges in enumerate(nodes, 1) for op, src in edges}
        return np.array([NB201_OPS.index(ops[e]) for e in EDGES], dtype=np.int64)

    def decode(self, vector: Sequence[int] | np.ndarray) -> Arch:
        """NAS-Bench-201 string of an index vector."""
        vec = self._check_vector(vector)
        return ops_to_string([NB201_OPS[int(i)] for i in vec])

    def canonical(self, arch: Arch) -> str:
        """Isomorphism-invariant form (NAS-Bench-201's ``to_unique_str(consider_zero=True)``)."""
        return _canonical(str(arch))

    def ops(self, arch: Arch) -> list[str]:
        """The 6 edge operations in ``EDGES`` order."""
        return [NB201_OPS[int(i)] for i in self.encode(arch)]

    def is_connected(self, arch: Arch) -> bool:
        """Whether the output node receives anything but zeros."""
        zero = {0: False}
        for node, edges in enumerate(parse_nb201(str(arch)), start=1):
            zero[node] = all(op == "none" or zero[src] for op, src in edges)
        return not zero[3]

    def build_network(
        self, arch: Arch, *, num_classes: int = 10, in_channels: int = 3
    ) -> torch.nn.Module:
        """A freshly initialised NAS-Bench-201 network (C, N from the space) of ``arch``."""
        from spaces.nb201.network import NB201Network

        return NB201Network(
            self.ops(arch),
            channels=self.channels,
            cells_per_stage=self.cells_per_stage,
            num_classes=positive_int("num_classes", num_classes),
            in_channels=positive_int("in_channels", in_channels),
        )

    def build_supernet(self, *, num_classes: int = 10, in_channels: int = 3) -> torch.nn.Module:
        """A weight-sharing ``NB201Supernet`` (C, N from the space) holding every edge's 5 ops."""
        from spaces.nb201.supernet import NB201Supernet

        return NB201Supernet(
            self,
            num_classes=positive_int("num_classes", num_classes),
            in_channels=positive_int("in_channels", in_channels),
        )

    def build_differentiable(
        self, *, num_classes: int = 10, in_channels: int = 3, **options: Any
    ) -> torch.nn.Module:
        """A ``DifferentiableNB201`` (every edge a mix of the 5 operations, one alpha row each)."""
        from spaces.nb201.differentiable import DifferentiableNB201

        return DifferentiableNB201(
            self,
            num_classes=positive_int("num_classes", num_classes),
            in_channels=positive_int("in_channels", in_channels),
            **options,
        )

    def parameter_free_fraction(self, arch: Arch) -> float:
        """Fraction of the 6 edges that are ``none``, ``skip_connect`` or ``avg_pool_3x3``."""
        ops = self.ops(arch)
        return sum(op in PARAMETER_FREE for op in ops) / len(ops)

    def skip_connections(self, arch: Arch) -> int:
        """Edges that are ``skip_connect``."""
        return self.ops(arch).count("skip_connect")

    def count_params(self, arch: Arch, *, num_classes: int = 10, in_channels: int = 3) -> int:
        """Trainable parameters of ``build_network(arch, ...)`` (conv, BN affine, linear)."""
        num_classes = positive_int("num_classes", num_classes)
        in_channels = positive_int("in_channels", in_channels)
        ops = self.ops(arch)
        c = self.channels
        total = in_channels * c * 9 + 2 * c  # stem
        for stage in range(3):
            if stage > 0:  # reduction block: conv_a, conv_b, shortcut 1x1
                total += 9 * c * 2 * c + 2 * 2 * c + 9 * (2 * c) ** 2 + 2 * 2 * c + c * 2 * c
                c *= 2
            total += self.cells_per_stage * sum(_OP_PARAMS[op](c) for op in ops)
        return total + 2 * c + c * num_classes + num_classes  # last BN, classifier

    def count_flops(
        self,
        arch: Arch,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        resolution: int | None = None,
    ) -> int:
        """MACs of one image's forward pass, counting convolutions and the classifier only.

        Batch norm, activations, pooling, zero ops and additions are not counted.
        """
        num_classes = positive_int("num_classes", num_classes)
        in_channels = positive_int("in_channels", in_channels)
        size = self.resolution if resolution is None else positive_int("resolution", resolution)
        ops = self.ops(arch)
        c = self.channels
        total = size * size * c * in_channels * 9  # stem
        for stage in range(3):
            if stage > 0:
                size = (size - 1) // 2 + 1  # stride 2: conv_a and the ceil-mode shortcut pool
                total += size * size * (9 * c * 2 * c + 9 * (2 * c) ** 2 + c * 2 * c)
                c *= 2
            cell = sum(_OP_MACS[op] for op in ops) * c * c
            total += self.cells_per_stage * size * size * cell
        return total + c * num_classes

    # --------------- what the core asks of a space
    def latency_layout(self) -> LatencyLayout:
        """Per-stage cell operations, timed once each (``spaces.nb201.latency``)."""
        from spaces.nb201.latency import NB201Layout

        return NB201Layout(self)

    def table_key(self, arch: Arch) -> str:
        """The NAS-Bench-201 string, as in the ``arch_str`` column of the public tables."""
        return str(self.validate(arch))

    def cost_features(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The one-hot with liveness: operations off every input-output path cost no time on
        runtimes that drop dead branches (``spaces.nb201.liveness``)."""
        from spaces.nb201.liveness import cost_features

        vectors = np.asarray(vectors, dtype=np.int64).reshape(-1, len(self.dims))
        return cost_features(self.features(vectors), vectors)


# Per-operation trainable parameters at c channels, and MACs per output pixel divided by c^2.
_OP_PARAMS: dict[str, Callable[[int], int]] = {
    "none": lambda c: 0,
    "skip_connect": lambda c: 0,
    "nor_conv_1x1": lambda c: c * c + 2 * c,
    "nor_conv_3x3": lambda c: 9 * c * c + 2 * c,
    "avg_pool_3x3": lambda c: 0,
}
_OP_MACS = {"none": 0, "skip_connect": 0, "nor_conv_1x1": 1, "nor_conv_3x3": 9, "avg_pool_3x3": 0}
