"""A stand-alone trainable NAS-Bench-201 network of one cell string (imports torch)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch import nn

from spaces.nb201.space import EDGES, NB201_OPS

logger = logging.getLogger(__name__)


class ReLUConvBN(nn.Sequential):
    """ReLU, convolution without bias, batch norm (NAS-Bench-201's ``ReLUConvBN``)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__(
            nn.ReLU(inplace=False),  # a node feeds several edges: never modify it in place
            nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False),
            nn.BatchNorm2d(c_out),
        )


class Zero(nn.Module):
    """The ``none`` operation: zeros shaped like the input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Zeros like ``x``."""
        return x.mul(0.0)


def make_op(name: str, channels: int) -> nn.Module:
    """The torch module of one NAS-Bench-201 operation at ``channels`` in and out, stride 1."""
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, 1, 0)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, 1, 1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown NAS-Bench-201 operation {name!r}; allowed: {', '.join(NB201_OPS)}")


class InferCell(nn.Module):
    """A 4-node cell: node j is the sum over i < j of op_ij(node i); node 3 is the output."""

    def __init__(self, ops: Sequence[str], channels: int) -> None:
        super().__init__()
        if len(ops) != len(EDGES):
            raise ValueError(f"a NAS-Bench-201 cell needs {len(EDGES)} operations, got {ops!r}")
        self.edges = nn.ModuleList(make_op(op, channels) for op in ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The output node's features."""
        nodes = [x]
        for node in (1, 2, 3):
            terms = [self.edges[k](nodes[src]) for k, (src, dst) in enumerate(EDGES) if dst == node]
            nodes.append(sum(terms[1:], terms[0]))
        return nodes[3]


class ResNetBasicBlock(nn.Module):
    """NAS-Bench-201's stride-2 residual reduction block between stages."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, 1)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1)
        # ceil_mode keeps the shortcut's size equal to conv_a's on odd inputs (and 1x1 inputs);
        # on even sizes, as in NAS-Bench-201, it changes nothing.
        self.downsample = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0, ceil_mode=True),
            nn.Conv2d(c_in, c_out, 1, 1, 0, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shortcut plus the two-convolution branch."""
        return self.downsample(x) + self.conv_b(self.conv_a(x))


def macro_skeleton(
    in_channels: int, channels: int, cells_per_stage: int, make_cell: Callable[[int], nn.Module]
) -> tuple[nn.Module, list[nn.Module], int]:
    """NAS-Bench-201's stem and its 3 stages of cells with residual reductions between them.

    Returns the stem, the list of cells and reduction blocks, and the final width; shared by
    the stand-alone network and the supernet so their weight names line up.
    """
    stem = nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
    )
    layers: list[nn.Module] = []
    width = channels
    for stage in range(3):
        if stage > 0:
            layers.append(ResNetBasicBlock(width, 2 * width))
            width *= 2
        layers += [make_cell(width) for _ in range(cells_per_stage)]
    return stem, layers, width


class NB201Network(nn.Module):
    """NAS-Bench-201's macro skeleton: stem, 3 stages of N cells, reductions, classifier.

    Example:
        >>> import torch
        >>> ops = ["nor_conv_3x3"] * 6
        >>> net = NB201Network(ops, channels=8, cells_per_stage=1, in_channels=1)
        >>> net(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        ops: Sequence[str],
        *,
        channels: int = 16,
        cells_per_stage: int = 5,
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.stem, layers, width = macro_skeleton(
            in_channels, channels, cells_per_stage, lambda w: InferCell(ops, w)
        )
        self.cells = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(width, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The feature map before global pooling (what Zen-NAS scores)."""
        return self.lastact(self.cells(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of a batch of images ``(N, C, H, W)``."""
        return self.classifier(torch.flatten(self.pool(self.forward_features(x)), 1))
