"""The latency lookup-table layout of MobileNet block networks (torch imported lazily)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from spaces.layout import Layer
from spaces.mobilenet.space import BlockSpec

if TYPE_CHECKING:
    import torch

    from spaces.mobilenet.space import MobileNetSpace

logger = logging.getLogger(__name__)


class MobileNetLayout:
    """Blocks per stage, position (first or later) and (kernel, expansion); stem and head fixed.

    The first block of a stage changes width and stride, the later ones keep both, so each
    stage has two block shapes, each timed for every (kernel, expansion) pair. The fixed
    first block after the stem, the stem and the head are constant.

    Example:
        >>> from spaces.mobilenet.space import MobileNetSpace
        >>> layout = MobileNetLayout(MobileNetSpace())
        >>> len(layout.keys())  # stem, first, head; 5 stages x 2 positions x 9 choices
        93
    """

    def __init__(self, space: MobileNetSpace) -> None:
        self.space = space
        size = (space.resolution - 1) // 2 + 1
        self.stem_size = size
        self.sizes = []  # input size of the first block of each stage, then the final size
        for stride in space.strides:
            self.sizes.append(size)
            size = (size - 1) // stride + 1
        self.sizes.append(size)

    def _choices(self) -> list[tuple[int, int]]:
        return [(k, e) for k in self.space.kernel_choices for e in self.space.expand_choices]

    def keys(self) -> list[str]:
        """The fixed parts, then every (stage, position, kernel, expansion)."""
        positions = ("first", "rest") if self.space.max_depth > 1 else ("first",)
        blocks = [f"s{st}/{pos}/k{k}/e{e}" for st in range(self.space.num_stages)
                  for pos in positions for k, e in self._choices()]
        return [*self.fixed(), *blocks]

    def layers(self, batch: int, in_channels: int, num_classes: int) -> list[Layer]:
        """Stem, fixed first block, head, and each block choice at its stage's shapes."""
        import torch
        from torch import nn

        from spaces.mobilenet.network import MBConv

        s = self.space
        net: Any = s.build_network(s.decode([0] * len(s.dims)), num_classes=num_classes,
                                   in_channels=in_channels)

        def x(ch: int, size: int) -> torch.Tensor:
            return torch.randn(batch, ch, size, size)

        head = nn.Sequential(net.head, net.pool, nn.Flatten(1), net.classifier)
        out: list[Layer] = [
            ("stem", net.stem, x(in_channels, s.resolution)),
            ("first", net.blocks[0], x(s.stem_width, self.stem_size)),
            ("head", head, x(s.widths[-1], self.sizes[-1])),
        ]
        width = s.stem_width
        for st, (w, stride) in enumerate(zip(s.widths, s.strides, strict=True)):
            for k, e in self._choices():
                spec = BlockSpec(width, w, k, e, stride)
                out.append((f"s{st}/first/k{k}/e{e}", MBConv(spec), x(width, self.sizes[st])))
                if s.max_depth > 1:
                    spec = BlockSpec(w, w, k, e, 1)
                    out.append((f"s{st}/rest/k{k}/e{e}", MBConv(spec), x(w, self.sizes[st + 1])))
            width = w
        return out

    def fixed(self) -> dict[str, int]:
        """Stem, the fixed first block and the head, once each."""
        return {"stem": 1, "first": 1, "head": 1}

    def arch_layers(self, arch: Hashable) -> dict[str, int]:
        """The key of each active block of ``arch``."""
        a = self.space.validate(arch)
        counts: dict[str, int] = {}
        for slot in self.space.active_blocks(a):
            st, j = divmod(slot, self.space.max_depth)
            key = f"s{st}/{'first' if j == 0 else 'rest'}/k{a.kernels[slot]}/e{a.expands[slot]}"
            counts[key] = counts.get(key, 0) + 1
        return counts

    def _table(self, entries: Mapping[str, float]) -> np.ndarray:
        """Entries as a ``(slot, kernel index, expansion index)`` array."""
        s = self.space
        ks, es = s.kernel_choices, s.expand_choices
        slots = s.num_stages * s.max_depth
        table = np.zeros((slots, len(ks), len(es)))
        for slot in range(slots):
            st, j = divmod(slot, s.max_depth)
            pos = "first" if j == 0 else "rest"
            for ki, k in enumerate(ks):
                for ei, e in enumerate(es):
                    table[slot, ki, ei] = entries[f"s{st}/{pos}/k{k}/e{e}"]
        return table

    def compile(self, entries: Mapping[str, float]) -> Callable[[np.ndarray], np.ndarray]:
        """A (slot, kernel, expansion) cost table gathered by index, summed over active slots."""
        s = self.space
        table = self._table(entries)
        slots = s.num_stages * s.max_depth
        n = s.num_stages

        def predict(v: np.ndarray) -> np.ndarray:
            active = s.active_mask(v)[:, n:n + slots]
            values = table[np.arange(slots), v[:, n:n + slots], v[:, n + slots:]]
            return np.asarray((values * active).sum(axis=1))

        return predict

    def expected(self, entries: Mapping[str, float],
                 probabilities: Sequence[torch.Tensor]) -> torch.Tensor:
        """Expected variable cost when every decision is drawn independently (differentiable).

        ``probabilities[k]`` is the distribution of decision ``k`` of ``space.decisions``.
        A block slot is active with the probability that its stage's depth exceeds its
        position; an active slot costs the probability-weighted sum of its (kernel, expansion)
        entries (ProxylessNAS's expected latency, Cai et al. 2019, Eq. 4).
        """
        import torch

        s = self.space
        table = torch.as_tensor(self._table(entries), dtype=probabilities[0].dtype,
                                device=probabilities[0].device)
        n, slots, depth = s.num_stages, s.num_stages * s.max_depth, s.max_depth
        total = probabilities[0].new_zeros(())
        for slot in range(slots):
            st, j = divmod(slot, depth)
            deeper = [i for i, d in enumerate(s.depth_choices) if d > j]
            active = probabilities[st][deeper].sum()
            pk, pe = probabilities[n + slot], probabilities[n + slots + slot]
            total = total + active * (pk[:, None] * pe[None, :] * table[slot]).sum()
        return total
