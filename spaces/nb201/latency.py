"""The latency lookup-table layout of NAS-Bench-201 networks (torch imported lazily)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from spaces.layout import Layer
from spaces.nb201.space import NB201_OPS

if TYPE_CHECKING:
    import torch

    from spaces.nb201.space import NB201Space

logger = logging.getLogger(__name__)


class NB201Layout:
    """Cell operations per stage; stem, two reduction blocks, head and additions fixed.

    Every edge of every cell of a stage runs at that stage's shape, so an operation costs
    the same on any edge: 3 stages x 5 operations, each counted ``cells_per_stage`` times
    per edge using it. A node's sum of its inputs is timed as one addition (3 per cell).

    Example:
        >>> from spaces.nb201.space import NB201Space
        >>> layout = NB201Layout(NB201Space(cells_per_stage=2))
        >>> len(layout.keys())  # stem, 2 reductions, head, 3 additions, 3 stages x 5 ops
        22
        >>> layout.arch_layers("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|")[
        ...     "cell0/none"]
        10
    """

    def __init__(self, space: NB201Space) -> None:
        self.space, self.ops = space, NB201_OPS
        size = space.resolution
        self.sizes = [size]
        for _ in range(2):
            size = (size - 1) // 2 + 1
            self.sizes.append(size)

    def keys(self) -> list[str]:
        """The fixed parts, then each stage's operations."""
        cells = [f"cell{st}/{op}" for st in range(3) for op in self.ops]
        return [*self.fixed(), *cells]

    def layers(self, batch: int, in_channels: int, num_classes: int) -> list[Layer]:
        """Stem, head, reductions, and per stage an addition and each operation."""
        import torch
        from torch import nn

        from spaces.nb201.network import make_op

        s, c = self.space, self.space.channels
        net: Any = s.build_network(s.decode([0] * 6), num_classes=num_classes,
                                   in_channels=in_channels)
        reductions = [m for m in net.cells if not hasattr(m, "edges")]

        def x(ch: int, size: int) -> torch.Tensor:
            return torch.randn(batch, ch, size, size)

        head = nn.Sequential(net.lastact, net.pool, nn.Flatten(1), net.classifier)
        out: list[Layer] = [("stem", net.stem, x(in_channels, s.resolution)),
                            ("head", head, x(4 * c, self.sizes[2]))]
        for k, block in enumerate(reductions, start=1):
            out.append((f"reduce{k}", block, x(c * 2 ** (k - 1), self.sizes[k - 1])))
        for stage, size in enumerate(self.sizes):
            ch = c * 2**stage
            out.append((f"cell{stage}/add", _add_module(), x(ch, size)))
            out += [(f"cell{stage}/{op}", make_op(op, ch), x(ch, size)) for op in self.ops]
        return out

    def fixed(self) -> dict[str, int]:
        """Stem, reductions, head, and three node additions per cell."""
        adds = {f"cell{st}/add": 3 * self.space.cells_per_stage for st in range(3)}
        return {"stem": 1, "reduce1": 1, "reduce2": 1, "head": 1, **adds}

    def arch_layers(self, arch: Hashable) -> dict[str, int]:
        """Each edge's operation in each stage, ``cells_per_stage`` times."""
        counts: dict[str, int] = {}
        for op in self.space.ops(arch):
            for stage in range(3):
                key = f"cell{stage}/{op}"
                counts[key] = counts.get(key, 0) + self.space.cells_per_stage
        return counts

    def compile(self, entries: Mapping[str, float]) -> Callable[[np.ndarray], np.ndarray]:
        """Per-operation cost summed over stages, gathered by each edge's index."""
        n = self.space.cells_per_stage
        per_op = np.array([n * sum(entries[f"cell{st}/{op}"] for st in range(3))
                           for op in self.ops])

        def predict(v: np.ndarray) -> np.ndarray:
            return np.asarray(per_op[v].sum(axis=1))

        return predict

    def expected(self, entries: Mapping[str, float],
                 probabilities: Sequence[torch.Tensor]) -> torch.Tensor:
        """Expected variable cost under independent per-edge operation distributions."""
        import torch

        n = self.space.cells_per_stage
        per_op = torch.as_tensor(
            [n * sum(entries[f"cell{st}/{op}"] for st in range(3)) for op in self.ops],
            dtype=probabilities[0].dtype, device=probabilities[0].device)
        return sum((p * per_op).sum() for p in probabilities)  # type: ignore[return-value]


def _add_module() -> torch.nn.Module:
    """A module adding a tensor to itself: one node sum of a cell."""
    from torch import nn

    class Add(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + x

    return Add()
