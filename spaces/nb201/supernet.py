"""Weight-sharing NAS-Bench-201 supernet for Single-Path One-Shot training (imports torch).

Every edge of every cell holds all five candidate operations; a path (an architecture string)
picks one per edge, the same six in every cell, as in NAS-Bench-201. Only the chosen
operations run (Guo et al., "Single Path One-Shot Neural Architecture Search with Uniform
Sampling", ECCV 2020), so a step costs what one sub-network costs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import cast

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from spaces._base import Arch
from spaces.nb201.network import NB201Network, macro_skeleton, make_op
from spaces.nb201.space import EDGES, NB201_OPS, NB201Space

logger = logging.getLogger(__name__)

# Supernet key ``cells.<i>.edges.<k>.<op>.<rest>`` <-> network key ``cells.<i>.edges.<k>.<rest>``.
_EDGE_KEY = re.compile(r"^cells\.(\d+)\.edges\.(\d+)\.(.+)$")
_E = tuple(enumerate(EDGES))


def live_edges(ops: Sequence[str]) -> tuple[bool, ...]:
    """Which of the 6 edges can change the cell's output (not ``none``, feeding a used node).

    An edge into a node that reaches the output only through ``none`` edges is dead: it
    changes nothing, so the supernet skips it and its parameters get no gradient.
    """
    needed = {3}
    for node in (2, 1):
        if any(ops[k] != "none" and src == node and dst in needed for k, (src, dst) in _E):
            needed.add(node)
    return tuple(ops[k] != "none" and dst in needed for k, (_, dst) in _E)


class SuperCell(nn.Module):
    """A NAS-Bench-201 cell whose every edge holds all candidate operations.

    ``edges[k][op]`` is the module of operation ``op`` on edge ``k``; each candidate owns its
    weights and batch norm (NAS-Bench-201's ``ReLUConvBN``).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.edges = nn.ModuleList(
            nn.ModuleDict({op: make_op(op, channels) for op in NB201_OPS}) for _ in EDGES
        )

    def op(self, edge: int, name: str) -> nn.Module:
        """The module of operation ``name`` on edge ``edge``."""
        return cast(nn.ModuleDict, self.edges[edge])[name]

    def forward(self, x: torch.Tensor, ops: Sequence[str], live: Sequence[bool]) -> torch.Tensor:
        """The output node's features on the path ``ops`` (``live`` from ``live_edges``)."""
        nodes: list[torch.Tensor | None] = [x]
        for node in (1, 2, 3):
            out: torch.Tensor | None = None
            for k, (src, dst) in _E:
                if dst != node or not live[k]:
                    continue
                source = nodes[src]
                if source is None:  # a used node whose inputs are all `none` edges
                    source = nodes[src] = torch.zeros_like(x)
                y = self.op(k, ops[k])(source)
                out = y if out is None else out + y
            nodes.append(out)
        out = nodes[3]
        return torch.zeros_like(x) if out is None else out


class NB201Supernet(nn.Module):
    """The NAS-Bench-201 skeleton with a ``SuperCell`` in place of every cell.

    Stem, reduction blocks, last batch norm and classifier are shared by all paths; each
    candidate operation of each edge of each cell has its own weights and batch norm, so
    per-architecture BN recalibration touches only the path's layers (``batchnorms``).
    Parameter names mirror ``NB201Network``'s with the operation name inserted after the edge
    index, which ``extract`` uses to copy a path's weights.

    Example:
        >>> import torch
        >>> from spaces.nb201 import NB201Space
        >>> space = NB201Space(channels=8, cells_per_stage=1)
        >>> net = space.build_supernet(in_channels=1)
        >>> arch = space.decode([3, 0, 1, 4, 0, 2])
        >>> net(torch.zeros(2, 1, 8, 8), arch).shape
        torch.Size([2, 10])
    """

    def __init__(self, space: NB201Space, *, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.space = space
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.stem, layers, width = macro_skeleton(
            in_channels, space.channels, space.cells_per_stage, SuperCell
        )
        self.cells = nn.ModuleList(layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor, arch: Arch) -> torch.Tensor:
        """Class logits of ``x`` ``(N, C, H, W)`` on the single path ``arch`` (validated)."""
        ops = self.space.ops(arch)
        live = live_edges(ops)
        x = self.stem(x)
        for layer in self.cells:
            x = layer(x, ops, live) if isinstance(layer, SuperCell) else layer(x)
        x = self.lastact(x)
        return self.classifier(torch.flatten(self.pool(x), 1))

    def path_modules(self, arch: Arch) -> list[nn.Module]:
        """The modules the path runs: shared layers and each cell's live chosen operations."""
        ops = self.space.ops(arch)
        live = live_edges(ops)
        out: list[nn.Module] = [self.stem]
        for layer in self.cells:
            if isinstance(layer, SuperCell):
                out += [layer.op(k, ops[k]) for k in range(len(EDGES)) if live[k]]
            else:
                out.append(layer)
        return out + [self.lastact, self.classifier]

    def path_parameters(self, arch: Arch) -> list[nn.Parameter]:
        """Parameters the path uses (exactly those that get gradients from its loss)."""
        return [p for m in self.path_modules(arch) for p in m.parameters()]

    def batchnorms(self, arch: Arch) -> list[_BatchNorm]:
        """Batch norm layers of the path, for per-architecture recalibration of statistics."""
        return [
            m for top in self.path_modules(arch) for m in top.modules() if isinstance(m, _BatchNorm)
        ]

    def extract(self, arch: Arch) -> NB201Network:
        """``space.build_network(arch)`` holding copies of the path's weights and BN buffers.

        In eval mode its ``forward(x)`` equals ``self(x, arch)``; it is independent of the
        supernet (fine-tuning it leaves the supernet unchanged) and starts in this module's
        training mode, on its device and dtype.
        """
        ops = self.space.ops(arch)
        net = cast(
            NB201Network,
            self.space.build_network(
                arch, num_classes=self.num_classes, in_channels=self.in_channels
            ),
        )
        source = self.state_dict()
        state = {}
        for key in net.state_dict():
            match = _EDGE_KEY.match(key)
            if match:
                cell, edge, rest = match.groups()
                state[key] = source[f"cells.{cell}.edges.{edge}.{ops[int(edge)]}.{rest}"]
            else:
                state[key] = source[key]
        reference = next(self.parameters())
        net.to(device=reference.device, dtype=reference.dtype)
        net.load_state_dict(state)  # copies, so the two never share storage
        return net.train(self.training)
