"""What a layer-wise latency lookup table needs of a space (ProxylessNAS, FBNet).

A space that supports ``raynas latency build`` returns a ``LatencyLayout`` from
``SearchSpace.latency_layout()``: the distinct layers to time once (keys, torch modules and
example inputs), the fixed parts every network has, and how an architecture decomposes into
the keys. The timing, the Parquet file and the predictions live in ``raynas.latency.lut``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import torch

Layer = tuple[str, "torch.nn.Module", "torch.Tensor"]


@runtime_checkable
class LatencyLayout(Protocol):
    """The layers of a space a lookup table times, and how architectures are made of them.

    An architecture's latency is ``sum(entry[k] * n for k, n in fixed().items())`` plus
    ``sum(entry[k] * n for k, n in arch_layers(arch).items())``; ``compile`` returns the
    second sum as a vectorised function of index vectors (``SearchSpace.encode``).
    """

    def keys(self) -> list[str]:
        """Every table key: the fixed parts, then each distinct layer choice."""
        ...

    def layers(self, batch: int, in_channels: int, num_classes: int) -> list[Layer]:
        """``(key, module, example input)`` for every key, as timed (torch imported lazily)."""
        ...

    def fixed(self) -> dict[str, int]:
        """Keys every network contains, with their multiplicities."""
        ...

    def arch_layers(self, arch: Hashable) -> dict[str, int]:
        """The variable keys ``arch`` uses, with multiplicities."""
        ...

    def compile(self, entries: Mapping[str, float]) -> Callable[[np.ndarray], np.ndarray]:
        """A function from index vectors ``(n, d)`` to the sum of their variable entries."""
        ...

    def expected(self, entries: Mapping[str, float],
                 probabilities: Sequence[torch.Tensor]) -> torch.Tensor:
        """The variable sum's expectation when decision ``k`` is drawn from ``probabilities[k]``.

        Differentiable in the probabilities (torch): ProxylessNAS's latency loss.
        """
        ...


__all__ = ["LatencyLayout", "Layer"]
