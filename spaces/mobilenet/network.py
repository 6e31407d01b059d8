"""A stand-alone trainable MobileNetV3-style network of one ``MobileNetArch`` (imports torch)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from spaces.mobilenet.space import BlockSpec

logger = logging.getLogger(__name__)


def _conv_bn(
    c_in: int, c_out: int, kernel: int, *, stride: int = 1, groups: int = 1, act: bool = True
) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if act:
        layers.append(nn.Hardswish())
    return layers


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise k x k, linear 1x1 project (MobileNetV2)."""

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        mid = spec.mid_channels
        layers: list[nn.Module] = []
        if spec.expand != 1:
            layers += _conv_bn(spec.in_channels, mid, 1)
        layers += _conv_bn(mid, mid, spec.kernel, stride=spec.stride, groups=mid)
        layers += _conv_bn(mid, spec.out_channels, 1, act=False)
        self.body = nn.Sequential(*layers)
        self.residual = spec.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Block output, plus the input when shapes allow."""
        out = self.body(x)
        return x + out if self.residual else out


class MobileNetNetwork(nn.Module):
    """Stem, inverted residual blocks, 1x1 head conv, global pooling and a linear classifier.

    Example:
        >>> import torch
        >>> from spaces.mobilenet.space import BlockSpec
        >>> net = MobileNetNetwork([BlockSpec(16, 24, 3, 4, 2)], stem_width=16, head_width=32)
        >>> net(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        blocks: Sequence[BlockSpec],
        *,
        stem_width: int = 16,
        head_width: int = 960,
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(in_channels, stem_width, 3, stride=2))
        self.blocks = nn.Sequential(*(MBConv(b) for b in blocks))
        last = blocks[-1].out_channels if blocks else stem_width
        self.head = nn.Sequential(*_conv_bn(last, head_width, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(head_width, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The feature map before global pooling (what Zen-NAS scores)."""
        return self.head(self.blocks(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of a batch of images ``(N, C, H, W)``."""
        return self.classifier(torch.flatten(self.pool(self.forward_features(x)), 1))
