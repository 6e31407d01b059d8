"""A differentiable NAS-Bench-201 supernet: every edge a weighted mix of the 5 operations.

One architecture-parameter row ``alpha[k]`` per edge ``k`` (shared by every cell, as
NAS-Bench-201 shares one cell), turned into operation weights by one of the relaxations
the gradient-based methods use:

- ``softmax``: DARTS (Liu et al., "DARTS: Differentiable Architecture Search", ICLR 2019);
- ``gumbel``: a hard one-hot sample of Gumbel-softmax in the forward pass with the soft
  sample's gradient, only the sampled operation run (GDAS: Dong & Yang, "Searching for a
  Robust Neural Architecture in Four GPU Hours", CVPR 2019);
- ``sigmoid``: an independent sigmoid per operation (FairDARTS: Chu et al., "Fair DARTS:
  Eliminating Unfair Advantages in Differentiable Architecture Search", ECCV 2020);
- ``partial_channels=K``: a 1/K slice of the channels through the mix, the rest bypassing it,
  channels shuffled after, and edge normalisation (``beta``) weighting a node's inputs
  (PC-DARTS: Xu et al., "PC-DARTS: Partial Channel Connections for Memory-Efficient
  Architecture Search", ICLR 2020);
- ``aux_skip``: a skip connection beside every mix, weighted by a decaying coefficient
  (DARTS-: Chu et al., "DARTS-: Robustly Stepping out of Performance Collapse Without
  Indicators", ICLR 2021);
- ``derived``: the argmax operation of each edge alone (an evaluation network trained on the
  current architecture, as Cyclic-DARTS's: Yu et al., "Cyclic Differentiable Architecture
  Search", TPAMI 2022).

Depth and width are the network's own, so a shallow search network and a deeper evaluation
network can share one ``alpha`` (pass it to both).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from spaces._base import Arch
from spaces.nb201.network import macro_skeleton, make_op
from spaces.nb201.space import EDGES, NB201_OPS, NB201Space

RELAXATIONS: tuple[str, ...] = ("softmax", "gumbel", "sigmoid", "derived")
_INPUTS = {node: [k for k, (_, dst) in enumerate(EDGES) if dst == node] for node in (1, 2, 3)}


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave ``groups`` channel groups (ShuffleNet's shuffle, as PC-DARTS uses)."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def edge_weights(alpha: torch.Tensor, relaxation: str, *, tau: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Operation weights ``(edges, ops)`` of ``alpha`` under ``relaxation``.

    ``gumbel`` returns the hard one-hot sample whose gradient is the soft sample's
    (straight-through); ``derived`` the argmax one-hot, without gradient.
    """
    if relaxation == "softmax":
        return F.softmax(alpha, dim=-1)
    if relaxation == "sigmoid":
        return torch.sigmoid(alpha)
    if relaxation == "gumbel":
        uniform = torch.rand(alpha.shape, generator=generator, device="cpu").to(alpha.device)
        uniform = uniform.clamp(1e-10, 1.0 - 1e-7)  # both logs finite
        gumbels = -torch.log(-torch.log(uniform))
        soft = F.softmax((F.log_softmax(alpha, dim=-1) + gumbels) / tau, dim=-1)
        hard = F.one_hot(soft.argmax(dim=-1), alpha.shape[-1]).to(soft.dtype)
        return hard - soft.detach() + soft
    if relaxation == "derived":
        return F.one_hot(alpha.detach().argmax(dim=-1), alpha.shape[-1]).to(alpha.dtype)
    raise ValueError(f"unknown relaxation {relaxation!r}; allowed: {', '.join(RELAXATIONS)}")


class MixedEdge(nn.Module):
    """All 5 operations of one edge, on ``channels // partial`` of its input's channels."""

    def __init__(self, channels: int, partial: int = 1) -> None:
        super().__init__()
        if partial < 1 or channels % partial:
            raise ValueError(f"partial_channels must divide the width {channels}, got {partial}")
        self.partial = partial
        mixed = channels // partial
        self.ops = nn.ModuleDict({op: make_op(op, mixed) for op in NB201_OPS})
        # PC-DARTS's convolutions keep their batch norm affine-free during search; the
        # stand-alone network has affine BN, so affine here too keeps weights comparable.

    def forward(self, x: torch.Tensor, weights: torch.Tensor, hard: bool) -> torch.Tensor:
        """Weighted sum of the operations (only the selected one when ``hard``)."""
        if self.partial > 1:
            part = x.shape[1] // self.partial
            head, rest = x[:, :part], x[:, part:]
        else:
            head, rest = x, None
        if hard:
            index = int(weights.detach().argmax())
            out = cast(torch.Tensor, self.ops[NB201_OPS[index]](head)) * weights[index]
        else:
            out = sum(w * op(head) for w, op in zip(weights, self.ops.values(), strict=True))
            out = cast(torch.Tensor, out)
        if rest is None:
            return out
        return channel_shuffle(torch.cat([out, rest], dim=1), self.partial)


class MixedCell(nn.Module):
    """A NAS-Bench-201 cell whose every edge is a ``MixedEdge``."""

    def __init__(self, channels: int, partial: int = 1) -> None:
        super().__init__()
        self.edges = nn.ModuleList(MixedEdge(channels, partial) for _ in EDGES)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, hard: bool,
                node_weights: Sequence[torch.Tensor] | None, aux_skip: float) -> torch.Tensor:
        """The output node's features; ``node_weights[j]`` scales node j+1's inputs."""
        nodes = [x]
        for node in (1, 2, 3):
            total: torch.Tensor | None = None
            for position, k in enumerate(_INPUTS[node]):
                source = nodes[EDGES[k][0]]
                y = self.edges[k](source, weights[k], hard)
                if aux_skip:
                    y = y + aux_skip * source
                if node_weights is not None:
                    y = y * node_weights[node - 1][position]
                total = y if total is None else total + y
            nodes.append(cast(torch.Tensor, total))
        return nodes[3]


class DifferentiableNB201(nn.Module):
    """NAS-Bench-201's skeleton with a ``MixedCell`` in every cell position.

    Example:
        >>> import torch
        >>> from spaces.nb201 import NB201Space
        >>> net = DifferentiableNB201(NB201Space(channels=8, cells_per_stage=1), in_channels=1)
        >>> net(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
        >>> net.space.to_string(net.derive()).count("none")  # alpha at zero: argmax is the first
        6
    """

    def __init__(
        self,
        space: NB201Space,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        channels: int | None = None,
        cells_per_stage: int | None = None,
        partial_channels: int = 1,
        edge_normalisation: bool | None = None,
        alpha: nn.Parameter | None = None,
    ) -> None:
        super().__init__()
        self.space = space
        self.channels = channels or space.channels
        self.cells_per_stage = cells_per_stage or space.cells_per_stage
        self.partial_channels = partial_channels
        self.stem, layers, width = macro_skeleton(
            in_channels, self.channels, self.cells_per_stage,
            lambda w: MixedCell(w, partial_channels),
        )
        self.cells = nn.ModuleList(layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(width, num_classes)
        shape = (len(EDGES), len(NB201_OPS))
        if alpha is not None and tuple(alpha.shape) != shape:
            raise ValueError(f"alpha must have shape {shape}, got {tuple(alpha.shape)}")
        # An alpha given by another network is shared, not registered as this one's (a tuple
        # hides it from nn.Module's registration, so this network's optimizers never see it).
        self._shared_alpha: tuple[nn.Parameter, ...] = (alpha,) if alpha is not None else ()
        self._alpha = None if alpha is not None else nn.Parameter(torch.zeros(shape))
        normalise = partial_channels > 1 if edge_normalisation is None else edge_normalisation
        self.beta = nn.ParameterList(
            nn.Parameter(torch.zeros(len(_INPUTS[node]))) for node in (1, 2, 3)
        ) if normalise else None

    @property
    def alpha(self) -> nn.Parameter:
        """The architecture parameters, one row per edge, one column per operation."""
        return self._shared_alpha[0] if self._alpha is None else self._alpha

    def arch_parameters(self) -> list[nn.Parameter]:
        """Alpha (when this network owns it) and the edge-normalisation weights."""
        own = [self._alpha] if self._alpha is not None else []
        return own + (list(self.beta) if self.beta is not None else [])

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter that is not an architecture parameter."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def forward(self, x: torch.Tensor, relaxation: str = "softmax", *, tau: float = 1.0,
                aux_skip: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Class logits of ``x`` with operation weights from ``alpha`` under ``relaxation``."""
        weights = edge_weights(self.alpha, relaxation, tau=tau, generator=generator)
        hard = relaxation in ("gumbel", "derived")
        node_weights = None if self.beta is None else [F.softmax(b, dim=-1) for b in self.beta]
        x = self.stem(x)
        for layer in self.cells:
            if isinstance(layer, MixedCell):
                x = layer(x, weights, hard, node_weights, aux_skip)
            else:
                x = layer(x)
        x = self.lastact(x)
        return cast(torch.Tensor, self.classifier(torch.flatten(self.pool(x), 1)))

    def probabilities(self, relaxation: str = "softmax") -> torch.Tensor:
        """Per-edge operation probabilities (sigmoids normalised per edge for ``sigmoid``)."""
        with torch.no_grad():
            if relaxation == "sigmoid":
                s = torch.sigmoid(self.alpha)
                return s / s.sum(dim=-1, keepdim=True)
            return F.softmax(self.alpha, dim=-1)

    def derive(self) -> Arch:
        """The architecture of each edge's largest alpha (ties: the first operation)."""
        indices = self.alpha.detach().argmax(dim=-1).tolist()
        return self.space.decode([int(i) for i in indices])

