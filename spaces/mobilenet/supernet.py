"""Once-for-All style elastic MobileNet supernet for Single-Path One-Shot training (imports torch).

Each block slot keeps the weights of its largest variant (largest kernel, largest expansion);
a path uses the first ``depth`` blocks of each stage and, in each, a centre crop of the
depthwise kernel and the first ``mid = in_channels * expand`` channels of the expanded layers
(Cai et al., "Once-for-All: Train One Network and Specialize it for Efficient Deployment",
ICLR 2020; trained here by uniform single-path sampling, Guo et al., ECCV 2020).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import cast

import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from spaces._base import Arch
from spaces.mobilenet.network import MBConv, MobileNetNetwork, _conv_bn
from spaces.mobilenet.space import BlockSpec, MobileNetArch, MobileNetSpace

logger = logging.getLogger(__name__)

_BN_TENSORS = ("weight", "bias", "running_mean", "running_var")


class SlicedBatchNorm2d(nn.BatchNorm2d):
    """A max-width batch norm that normalises the first ``C`` channels of a ``C``-channel input.

    It calls ``F.batch_norm`` with the first ``C`` entries (views) of its affine parameters and
    running statistics; ``F.batch_norm`` updates the running statistics in place, so training
    and per-architecture recalibration (``reset_running_stats()``, ``momentum = None``, a few
    batches in train mode) write exactly the path's entries of the shared buffers and leave the
    others alone. ``num_batches_tracked`` is shared by all widths. This is OFA's
    ``DynamicBatchNorm2d``, as a ``BatchNorm2d`` so generic BN code applies to it.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Batch norm of ``x`` with the first ``x.shape[1]`` channels' parameters and stats."""
        c = x.shape[1]
        if c == self.num_features:
            return super().forward(x)
        if c > self.num_features:
            raise ValueError(f"input has {c} channels, more than this layer's {self.num_features}")
        # As _BatchNorm.forward, on the first c entries.
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        use_stats = not self.training or self.track_running_stats
        mean, var = self.running_mean, self.running_var
        return F.batch_norm(
            x,
            mean[:c] if use_stats and mean is not None else None,
            var[:c] if use_stats and var is not None else None,
            None if self.weight is None else self.weight[:c],
            None if self.bias is None else self.bias[:c],
            self.training or (mean is None and var is None),
            factor,
            self.eps,
        )


class ElasticMBConv(nn.Module):
    """An inverted residual block with elastic kernel size and expansion ratio.

    Holds the ``max_kernel`` depthwise kernel and ``in_channels * max_expand`` expanded
    channels. A variant ``(kernel, expand)`` uses the centre ``kernel x kernel`` crop of the
    depthwise kernel (OFA additionally learns kernel transformation matrices; a plain crop
    keeps a sub-network's weights a copy of the supernet's) and the first ``mid`` channels of
    the 1x1 expansion's outputs, the depthwise layer and the projection's inputs. An
    ``expand`` of 1 skips the expansion, as ``MBConv`` does.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, *, max_kernel: int, max_expand: int
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.max_kernel = max_kernel
        mid = in_channels * max_expand
        self.expand_conv = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.expand_bn = SlicedBatchNorm2d(mid)
        self.depth_conv = nn.Conv2d(
            mid, mid, max_kernel, stride, max_kernel // 2, groups=mid, bias=False
        )
        self.depth_bn = SlicedBatchNorm2d(mid)
        self.project_conv = nn.Conv2d(mid, out_channels, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(out_channels)
        self.act = nn.Hardswish()
        self.residual = stride == 1 and in_channels == out_channels

    def sliced_weights(
        self, kernel: int, expand: int
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """Views ``(expand [mid,in,1,1] or None, depthwise [mid,1,k,k], project [out,mid,1,1])``."""
        mid = self.in_channels * expand
        start = (self.max_kernel - kernel) // 2
        depth = self.depth_conv.weight[:mid, :, start : start + kernel, start : start + kernel]
        expand_w = self.expand_conv.weight[:mid] if expand != 1 else None
        return expand_w, depth, self.project_conv.weight[:, :mid]

    def forward(self, x: torch.Tensor, kernel: int, expand: int) -> torch.Tensor:
        """Output of the ``(kernel, expand)`` variant."""
        expand_w, depth_w, project_w = self.sliced_weights(kernel, expand)
        h = x if expand_w is None else self.act(self.expand_bn(F.conv2d(x, expand_w)))
        mid = depth_w.shape[0]
        h = F.conv2d(h, depth_w, None, self.stride, kernel // 2, 1, mid)
        h = self.project_bn(F.conv2d(self.act(self.depth_bn(h)), project_w))
        return x + h if self.residual else h

    def used_modules(self, expand: int) -> list[nn.Module]:
        """The layers whose parameters the ``expand`` variant uses (in part)."""
        head = [self.expand_conv, self.expand_bn] if expand != 1 else []
        return head + [self.depth_conv, self.depth_bn, self.project_conv, self.project_bn]

    def sliced_state(self, kernel: int, expand: int) -> dict[str, torch.Tensor]:
        """The variant's weights and BN buffers keyed as ``MBConv``'s state dict."""
        layers: list[tuple[torch.Tensor | None, nn.BatchNorm2d, int]] = []
        expand_w, depth_w, project_w = self.sliced_weights(kernel, expand)
        mid = depth_w.shape[0]
        if expand_w is not None:
            layers.append((expand_w, self.expand_bn, mid))
        layers += [(depth_w, self.depth_bn, mid), (project_w, self.project_bn, self.out_channels)]
        state: dict[str, torch.Tensor] = {}
        index = 0
        for weight, bn, width in layers:
            state[f"body.{index}.weight"] = cast(torch.Tensor, weight)
            for name in _BN_TENSORS:
                state[f"body.{index + 1}.{name}"] = getattr(bn, name)[:width]
            state[f"body.{index + 1}.num_batches_tracked"] = cast(
                torch.Tensor, bn.num_batches_tracked
            )
            index += 3  # conv, BN, activation (the last BN has none, and nothing follows it)
        return state


class MobileNetSupernet(nn.Module):
    """The whole ``MobileNetSpace`` as one Once-for-All style elastic network.

    Stem, the fixed first block, head and classifier are shared by all paths. Block slot ``b``
    (``s * max_depth + j``) is an ``ElasticMBConv`` built for the largest kernel and expansion;
    a path runs the first ``depths[s]`` slots of each stage. Batch norms of the expanded
    layers are max-width ``SlicedBatchNorm2d`` shared by all expansions of a block: a path
    reads and, in train mode, updates the first ``mid`` entries of their statistics, so
    ``batchnorms(arch)`` followed by the usual recalibration gives that path its own statistics.

    Example:
        >>> import torch
        >>> from spaces.mobilenet import MobileNetSpace
        >>> space = MobileNetSpace(resolution=32, widths=(16, 24), strides=(2, 2), head_width=32)
        >>> net = space.build_supernet()
        >>> arch = space.decode([0] * len(space.dims))
        >>> net(torch.zeros(2, 3, 32, 32), arch).shape
        torch.Size([2, 10])
    """

    def __init__(
        self, space: MobileNetSpace, *, num_classes: int = 10, in_channels: int = 3
    ) -> None:
        super().__init__()
        self.space = space
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.stem = nn.Sequential(*_conv_bn(in_channels, space.stem_width, 3, stride=2))
        self.first = MBConv(BlockSpec(space.stem_width, space.stem_width, 3, 1, 1))
        blocks: list[ElasticMBConv] = []
        width = space.stem_width
        for s, out in enumerate(space.widths):
            for j in range(space.max_depth):
                blocks.append(
                    ElasticMBConv(
                        width,
                        out,
                        space.strides[s] if j == 0 else 1,
                        max_kernel=max(space.kernel_choices),
                        max_expand=max(space.expand_choices),
                    )
                )
                width = out
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Sequential(*_conv_bn(width, space.head_width, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(space.head_width, num_classes)

    def _path(self, arch: Arch) -> list[tuple[ElasticMBConv, int, int]]:
        a: MobileNetArch = self.space.validate(arch)
        return [
            (cast(ElasticMBConv, self.blocks[b]), a.kernels[b], a.expands[b])
            for b in self.space.active_blocks(a)
        ]

    def forward(self, x: torch.Tensor, arch: Arch) -> torch.Tensor:
        """Class logits of ``x`` ``(N, C, H, W)`` on the single path ``arch`` (validated)."""
        x = self.first(self.stem(x))
        for block, kernel, expand in self._path(arch):
            x = block(x, kernel, expand)
        x = self.head(x)
        return self.classifier(torch.flatten(self.pool(x), 1))

    def gate_gradients(
        self, x: torch.Tensor, y: torch.Tensor, arch: Arch,
        alternatives: Mapping[int, Sequence[int]],
    ) -> tuple[float, dict[int, dict[int, float]]]:
        """Cross-entropy of ``arch`` on ``(x, y)`` and ProxylessNAS's binary-gate gradients.

        For each decision ``k`` (its index in ``space.decisions``) of ``alternatives``, the
        derivative of the loss with respect to the gate of the active choice and of each listed
        choice index: ``<dL/d out, out_c>``, where ``out`` is the decision's output (a block's,
        for its kernel and expansion; a stage's, for its depth) and ``out_c`` what choice ``c``
        would output from the same input (Cai et al., "ProxylessNAS: Direct Neural Architecture
        Search on Target Task and Hardware", ICLR 2019, Sec. 3.2.1). Only the active path is
        kept for the backward pass; alternatives run without gradients. Kernel and expansion
        decisions of blocks beyond their stage's depth have no gate and are left out. Weight
        gradients are not touched.
        """
        s = self.space
        a: MobileNetArch = s.validate(arch)
        stages, depth, slots = s.num_stages, s.max_depth, s.num_stages * s.max_depth
        h = self.first(self.stem(x))
        inputs: dict[int, torch.Tensor] = {}
        outputs: dict[int, torch.Tensor] = {}
        for st in range(stages):
            for j in range(a.depths[st]):
                b = st * depth + j
                inputs[b] = h
                h = self.blocks[b](h, a.kernels[b], a.expands[b])
                outputs[b] = h
        logits = self.classifier(torch.flatten(self.pool(self.head(h)), 1))
        loss = F.cross_entropy(logits, y)
        keys = list(outputs)
        grads = dict(zip(keys, torch.autograd.grad(loss, [outputs[b] for b in keys]),
                         strict=True))
        scores: dict[int, dict[int, float]] = {}

        def dot(g: torch.Tensor, o: torch.Tensor) -> float:
            return float((g * o).sum())

        with torch.no_grad():
            for k, alts in alternatives.items():
                if k < stages:  # the depth of stage k: the stage's output after d blocks
                    d = a.depths[k]
                    last = k * depth + d - 1
                    out = {s.depth_choices.index(d): dot(grads[last], outputs[last])}
                    for c in alts:
                        d2 = s.depth_choices[c]
                        o = outputs[k * depth + min(d, d2) - 1]
                        for j in range(d, d2):
                            b = k * depth + j
                            o = self.blocks[b](o, a.kernels[b], a.expands[b])
                        out[c] = dot(grads[last], o)
                    scores[k] = out
                    continue
                b = (k - stages) % slots
                if b not in outputs:
                    continue
                kernel_decision = k < stages + slots
                choices = s.kernel_choices if kernel_decision else s.expand_choices
                active = a.kernels[b] if kernel_decision else a.expands[b]
                out = {choices.index(active): dot(grads[b], outputs[b])}
                for c in alts:
                    kernel = choices[c] if kernel_decision else a.kernels[b]
                    expand = a.expands[b] if kernel_decision else choices[c]
                    out[c] = dot(grads[b], self.blocks[b](inputs[b], kernel, expand))
                scores[k] = out
        return float(loss.detach()), scores

    def path_modules(self, arch: Arch) -> list[nn.Module]:
        """Modules whose parameters the path uses; elastic layers are used only in part."""
        out: list[nn.Module] = [self.stem, self.first]
        for block, _, expand in self._path(arch):
            out += block.used_modules(expand)
        return out + [self.head, self.classifier]

    def path_parameters(self, arch: Arch) -> list[nn.Parameter]:
        """Parameters the path uses (whole tensors; gradients outside its slices are zero)."""
        return [p for m in self.path_modules(arch) for p in m.parameters()]

    def batchnorms(self, arch: Arch) -> list[_BatchNorm]:
        """Batch norm layers of the path (sliced ones included), for BN recalibration."""
        return [
            m for top in self.path_modules(arch) for m in top.modules() if isinstance(m, _BatchNorm)
        ]

    def extract(self, arch: Arch) -> MobileNetNetwork:
        """``space.build_network(arch)`` holding copies of the path's (sliced) weights and stats.

        In eval mode its ``forward(x)`` equals ``self(x, arch)``; it is independent of the
        supernet and starts in this module's training mode, on its device and dtype.
        """
        net = cast(
            MobileNetNetwork,
            self.space.build_network(
                arch, num_classes=self.num_classes, in_channels=self.in_channels
            ),
        )
        reference = next(self.parameters())
        net.to(device=reference.device, dtype=reference.dtype)
        # load_state_dict copies, so the network never shares storage with the supernet.
        net.stem.load_state_dict(self.stem.state_dict())
        net.blocks[0].load_state_dict(self.first.state_dict())
        for target, (block, kernel, expand) in zip(
            list(net.blocks)[1:], self._path(arch), strict=True
        ):
            target.load_state_dict(block.sliced_state(kernel, expand))
        net.head.load_state_dict(self.head.state_dict())
        net.classifier.load_state_dict(self.classifier.state_dict())
        return net.train(self.training)
