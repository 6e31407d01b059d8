"""The ProxylessNAS / Once-for-All block space: depth, kernel size and expansion per block."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from spaces._base import Arch, Decision, SearchSpace, positive_int
from spaces._registry import register_space

if TYPE_CHECKING:
    import torch

    from spaces.layout import LatencyLayout

logger = logging.getLogger(__name__)

# Once-for-All's MobileNetV3 space (Cai et al., 2020): widths after a 16-channel stem.
OFA_WIDTHS: tuple[int, ...] = (24, 40, 80, 112, 160)
OFA_STRIDES: tuple[int, ...] = (2, 2, 2, 1, 2)
# Progressive shrinking's order (Cai et al., 2020): elastic kernel, then depth, then expansion.
SHRINKING_ORDER: tuple[str, ...] = ("kernel", "depth", "expand")


@dataclass(frozen=True)
class MobileNetArch:
    """A MobileNet block architecture: a depth per stage, a kernel and expansion per block slot.

    ``kernels`` and ``expands`` hold ``stages * max_depth`` entries, stage by stage; block ``j``
    of stage ``s`` is slot ``s * max_depth + j`` and is active only when ``j < depths[s]``.
    """

    depths: tuple[int, ...]
    kernels: tuple[int, ...]
    expands: tuple[int, ...]

    def __post_init__(self) -> None:
        # Lists would make the frozen dataclass unhashable; store tuples whatever was passed.
        for field in ("depths", "kernels", "expands"):
            object.__setattr__(self, field, tuple(getattr(self, field)))


@dataclass(frozen=True)
class BlockSpec:
    """One active inverted residual block of a network, as the torch builder needs it."""

    in_channels: int
    out_channels: int
    kernel: int
    expand: int
    stride: int

    @property
    def mid_channels(self) -> int:
        """Channels of the depthwise convolution (``in_channels * expand``)."""
        return self.in_channels * self.expand

    @property
    def residual(self) -> bool:
        """Whether the block adds its input to its output."""
        return self.stride == 1 and self.in_channels == self.out_channels


def _choices(name: str, values: Any, *, odd: bool = False) -> tuple[int, ...]:
    """Validated, sorted tuple of distinct positive ints for a choice-set option."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ValueError(f"{name} must be a non-empty sequence of positive ints, got {values!r}")
    out = tuple(positive_int(f"each of {name}", v) for v in values)
    if len(set(out)) != len(out):
        raise ValueError(f"{name} must not repeat values, got {values!r}")
    if odd and any(v % 2 == 0 for v in out):
        raise ValueError(f"{name} must be odd (for 'same' padding), got {values!r}")
    return tuple(sorted(out))


def _int_list(text: str, part: str, full: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split("."))
    except ValueError:
        raise ValueError(
            f"part {part!r} of MobileNet arch {full!r} must be dot-separated integers"
        ) from None


@register_space("mobilenet")
class MobileNetSpace(SearchSpace):
    """Once-for-All / ProxylessNAS style MobileNetV3 blocks (Cai et al., ICLR 2019 and 2020).

    Fixed stage widths and first-block strides; per stage a depth, per block a depthwise
    kernel size and an expansion ratio. Flat config keys are ``depth/{stage}``, then
    ``ks/{block}`` and ``e/{block}`` for each block slot, holding the values themselves.
    Blocks beyond a stage's depth are inactive: ``canonical`` resets them, so architectures
    differing only there share one canonical string.

    Example:
        >>> import numpy as np
        >>> space = MobileNetSpace()
        >>> arch = space.sample(np.random.default_rng(0))
        >>> space.from_string(space.to_string(arch)) == arch
        True
    """

    name = "mobilenet"

    def __init__(
        self,
        *,
        resolution: int = 224,
        stem_width: int = 16,
        widths: Sequence[int] = OFA_WIDTHS,
        strides: Sequence[int] = OFA_STRIDES,
        depth_choices: Sequence[int] = (2, 3, 4),
        kernel_choices: Sequence[int] = (3, 5, 7),
        expand_choices: Sequence[int] = (3, 4, 6),
        head_width: int = 960,
    ) -> None:
        self.resolution = positive_int("resolution", resolution)
        self.stem_width = positive_int("stem_width", stem_width)
        self.head_width = positive_int("head_width", head_width)
        if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or not widths:
            raise ValueError(f"widths must be a non-empty sequence of ints, got {widths!r}")
        self.widths = tuple(positive_int("each of widths", w) for w in widths)
        if isinstance(strides, (str, bytes)) or not isinstance(strides, Sequence):
            raise ValueError(f"strides must be a sequence of 1s and 2s, got {strides!r}")
        if len(strides) != len(self.widths) or any(s not in (1, 2) for s in strides):
            raise ValueError(
                f"strides must be {len(self.widths)} values of 1 or 2 (one per stage of "
                f"widths), got {strides!r}"
            )
        self.strides = tuple(int(s) for s in strides)
        self.depth_choices = _choices("depth_choices", depth_choices)
        self.kernel_choices = _choices("kernel_choices", kernel_choices, odd=True)
        self.expand_choices = _choices("expand_choices", expand_choices)
        blocks = range(self.num_stages * self.max_depth)
        self._decisions = (
            tuple(Decision(f"depth/{s}", self.depth_choices) for s in range(self.num_stages))
            + tuple(Decision(f"ks/{b}", self.kernel_choices) for b in blocks)
            + tuple(Decision(f"e/{b}", self.expand_choices) for b in blocks)
        )

    # -------------------------------------------------------------- structure
    @property
    def num_stages(self) -> int:
        """Number of searchable stages."""
        return len(self.widths)

    @property
    def max_depth(self) -> int:
        """Block slots per stage (the largest depth choice)."""
        return max(self.depth_choices)

    @property
    def decisions(self) -> tuple[Decision, ...]:
        """Depth per stage, then kernel size per block slot, then expansion per block slot."""
        return self._decisions

    @property
    def num_canonical(self) -> int:
        """Number of distinct networks (canonical strings) in the space."""
        per_block = len(self.kernel_choices) * len(self.expand_choices)
        per_stage = sum(per_block**d for d in self.depth_choices)
        return int(per_stage**self.num_stages)

    def decision_groups(self) -> tuple[tuple[int, ...], ...]:
        """Each stage's depth alone, each block slot's kernel and expansion together."""
        n, slots = self.num_stages, self.num_stages * self.max_depth
        return tuple((k,) for k in range(n)) + tuple((n + b, n + slots + b) for b in range(slots))

    def active_blocks(self, arch: Arch) -> tuple[int, ...]:
        """Slot indices of the blocks ``arch`` uses, in network order."""
        a = self.validate(arch)
        return tuple(s * self.max_depth + j for s, d in enumerate(a.depths) for j in range(d))

    def block_specs(self, arch: Arch) -> list[BlockSpec]:
        """Every inverted residual block of the network, the fixed first block included."""
        a = self.validate(arch)
        specs = [BlockSpec(self.stem_width, self.stem_width, 3, 1, 1)]
        width = self.stem_width
        for s, depth in enumerate(a.depths):
            for j in range(depth):
                slot = s * self.max_depth + j
                stride = self.strides[s] if j == 0 else 1
                specs.append(
                    BlockSpec(width, self.widths[s], a.kernels[slot], a.expands[slot], stride)
                )
                width = self.widths[s]
        return specs

    # -------------------------------------------------------------- contract
    def validate(self, arch: Any) -> MobileNetArch:
        """Return ``arch`` (a ``MobileNetArch`` or its string) as a checked ``MobileNetArch``."""
        if isinstance(arch, str):
            arch = self._parse(arch)
        if not isinstance(arch, MobileNetArch):
            raise ValueError(
                f"a MobileNet architecture is a MobileNetArch or its string, "
                f"got {type(arch).__name__}"
            )
        slots = self.num_stages * self.max_depth
        fields = (
            ("depths", arch.depths, self.num_stages, self.depth_choices),
            ("kernels", arch.kernels, slots, self.kernel_choices),
            ("expands", arch.expands, slots, self.expand_choices),
        )
        checked = []
        for field, values, length, allowed in fields:
            if len(values) != length:
                raise ValueError(
                    f"MobileNet arch {field} must have {length} entries, got {len(values)}"
                )
            for i, v in enumerate(values):
                if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v not in allowed:
                    raise ValueError(
                        f"MobileNet arch {field}[{i}] is {v!r}; allowed: {list(allowed)}"
                    )
            checked.append(tuple(int(v) for v in values))
        return MobileNetArch(*checked)

    def encode(self, arch: Arch) -> np.ndarray:
        """Index of each depth, kernel and expansion value in its choice tuple."""
        a = self.validate(arch)
        values = a.depths + a.kernels + a.expands
        return np.array(
            [d.choices.index(v) for d, v in zip(self.decisions, values, strict=True)],
            dtype=np.int64,
        )

    def decode(self, vector: Sequence[int] | np.ndarray) -> MobileNetArch:
        """``MobileNetArch`` of an index vector."""
        vec = self._check_vector(vector)
        values = [int(d.choices[int(i)]) for d, i in zip(self.decisions, vec, strict=True)]
        n, slots = self.num_stages, self.num_stages * self.max_depth
        return MobileNetArch(
            tuple(values[:n]), tuple(values[n : n + slots]), tuple(values[n + slots :])
        )

    def canonical(self, arch: Arch) -> str:
        """String form with inactive block slots reset to the smallest kernel and expansion."""
        a = self.validate(arch)
        active = set(self.active_blocks(a))
        k0, e0 = self.kernel_choices[0], self.expand_choices[0]
        kernels = tuple(k if b in active else k0 for b, k in enumerate(a.kernels))
        expands = tuple(e if b in active else e0 for b, e in enumerate(a.expands))
        return self.to_string(MobileNetArch(a.depths, kernels, expands))

    def to_string(self, arch: Arch) -> str:
        """``d<depths>|k<kernels>|e<expands>``, values dot-separated (``d2.3.4.2.3|k3.5...``)."""
        a = self.validate(arch)
        return "|".join(
            prefix + ".".join(str(v) for v in values)
            for prefix, values in (("d", a.depths), ("k", a.kernels), ("e", a.expands))
        )

    def from_string(self, text: str) -> MobileNetArch:
        """Parse the string form of ``to_string``."""
        return self.validate(text)

    def _parse(self, text: str) -> MobileNetArch:
        parts = text.split("|")
        if len(parts) != 3 or [p[:1] for p in parts] != ["d", "k", "e"]:
            raise ValueError(
                f"MobileNet arch string must look like 'd2.3...|k3.5...|e3.4...', got {text!r}"
            )
        depths, kernels, expands = (_int_list(p[1:], p[:1], text) for p in parts)
        return MobileNetArch(depths, kernels, expands)

    def describe(self) -> dict[str, Any]:
        """The base summary plus the space's options and its number of distinct networks."""
        out = super().describe()
        out["num_canonical"] = self.num_canonical
        out["options"] = {
            "resolution": self.resolution,
            "stem_width": self.stem_width,
            "widths": list(self.widths),
            "strides": list(self.strides),
            "head_width": self.head_width,
        }
        return out

    def spec(self) -> dict[str, Any]:
        """Name and every constructor option, JSON-friendly."""
        return {
            "name": self.name,
            "options": {
                "resolution": self.resolution,
                "stem_width": self.stem_width,
                "widths": list(self.widths),
                "strides": list(self.strides),
                "depth_choices": list(self.depth_choices),
                "kernel_choices": list(self.kernel_choices),
                "expand_choices": list(self.expand_choices),
                "head_width": self.head_width,
            },
        }

    # -------------------------------------------------------------- networks
    def build_network(
        self, arch: Arch, *, num_classes: int = 10, in_channels: int = 3
    ) -> torch.nn.Module:
        """A freshly initialised MobileNetV3-style torch network of ``arch``."""
        from spaces.mobilenet.network import MobileNetNetwork

        return MobileNetNetwork(
            self.block_specs(arch),
            stem_width=self.stem_width,
            head_width=self.head_width,
            num_classes=positive_int("num_classes", num_classes),
            in_channels=positive_int("in_channels", in_channels),
        )

    def build_supernet(self, *, num_classes: int = 10, in_channels: int = 3) -> torch.nn.Module:
        """A weight-sharing ``MobileNetSupernet``: elastic depth, kernel and expansion (OFA)."""
        from spaces.mobilenet.supernet import MobileNetSupernet

        return MobileNetSupernet(
            self,
            num_classes=positive_int("num_classes", num_classes),
            in_channels=positive_int("in_channels", in_channels),
        )

    def count_params(self, arch: Arch, *, num_classes: int = 10, in_channels: int = 3) -> int:
        """Trainable parameters of ``build_network(arch, ...)`` (conv, BN affine, linear)."""
        num_classes = positive_int("num_classes", num_classes)
        in_channels = positive_int("in_channels", in_channels)
        total = in_channels * self.stem_width * 9 + 2 * self.stem_width
        width = self.stem_width
        for b in self.block_specs(arch):
            mid = b.mid_channels
            if b.expand != 1:
                total += b.in_channels * mid + 2 * mid
            total += mid * b.kernel**2 + 2 * mid
            total += mid * b.out_channels + 2 * b.out_channels
            width = b.out_channels
        total += width * self.head_width + 2 * self.head_width
        return total + self.head_width * num_classes + num_classes

    def count_flops(
        self,
        arch: Arch,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        resolution: int | None = None,
    ) -> int:
        """MACs of one image's forward pass, counting convolutions and the classifier only.

        Batch norm, activations, residual additions and pooling are not counted.
        """
        num_classes = positive_int("num_classes", num_classes)
        in_channels = positive_int("in_channels", in_channels)
        size = self.resolution if resolution is None else positive_int("resolution", resolution)
        size = (size - 1) // 2 + 1  # stem: 3x3, stride 2, padding 1
        total = size * size * self.stem_width * in_channels * 9
        width = self.stem_width
        for b in self.block_specs(arch):
            mid = b.mid_channels
            if b.expand != 1:
                total += size * size * b.in_channels * mid
            size = (size - 1) // b.stride + 1  # k x k, padding k // 2, k odd
            total += size * size * mid * b.kernel**2
            total += size * size * mid * b.out_channels
            width = b.out_channels
        total += size * size * width * self.head_width
        return total + self.head_width * num_classes

    # --------------- what the core asks of a space
    def active_mask(self, vectors: np.ndarray) -> np.ndarray:
        """Every depth, and the kernel and expansion of the blocks within each stage's depth."""
        vectors = np.asarray(vectors, dtype=np.int64).reshape(-1, len(self.dims))
        stages, depth = self.num_stages, self.max_depth
        depths = np.asarray(self.depth_choices)[vectors[:, :stages]]  # (n, stages)
        slot = np.arange(stages * depth) % depth  # position of each slot within its stage
        stage = np.arange(stages * depth) // depth
        active = slot[None, :] < depths[:, stage]  # (n, slots)
        return np.hstack([np.ones((len(vectors), stages), dtype=bool), active, active])

    def active_probability(self, probabilities: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Depths always; a slot's kernel and expansion when its stage is deeper than it."""
        n, depth = self.num_stages, self.max_depth
        slots = [probabilities[slot // depth][[i for i, d in enumerate(self.depth_choices)
                                               if d > slot % depth]].sum()
                 for slot in range(n * depth)]
        return [probabilities[k].new_ones(()) for k in range(n)] + slots + slots

    def encode_strings(self, texts: Sequence[str]) -> np.ndarray | None:
        """Index vectors of well-formed strings by whole-batch numpy; None if any is not."""
        from spaces.mobilenet.strings import encode_strings

        return encode_strings(self, texts)

    # Progressive shrinking (Cai et al., "Once-for-All", ICLR 2020, section 3.2).
    def shrinking_order(self) -> tuple[str, ...]:
        """OFA's order: elastic kernel size, then elastic depth, then elastic expansion."""
        return SHRINKING_ORDER

    def largest(self) -> MobileNetArch:
        """The largest network: every stage at max depth, every block max kernel and expansion."""
        slots = self.num_stages * self.max_depth
        return MobileNetArch(
            (self.max_depth,) * self.num_stages,
            (max(self.kernel_choices),) * slots,
            (max(self.expand_choices),) * slots,
        )

    def sample_shrunk(self, rng: np.random.Generator, elastic: Sequence[str]) -> MobileNetArch:
        """Uniform depths, kernels or expansions where named in ``elastic``, the rest largest.

        ``elastic`` names dimensions of ``shrinking_order()`` (``"kernel"``, ``"depth"``,
        ``"expand"``); each elastic value is drawn uniformly per stage (depth) or per block
        slot (kernel, expansion), as ``sample`` draws it. Unknown names raise ``ValueError``.
        """
        if isinstance(elastic, str) or not isinstance(elastic, Sequence):
            raise ValueError(
                f"elastic must be a sequence of dimension names of {list(SHRINKING_ORDER)}, "
                f"got {elastic!r}"
            )
        unknown = sorted({str(e) for e in elastic} - set(SHRINKING_ORDER))
        if unknown:
            raise ValueError(
                f"unknown elastic dimension(s) {', '.join(map(repr, unknown))} of space "
                f"{self.name!r}; known: {', '.join(SHRINKING_ORDER)}"
            )
        big = self.largest()
        slots = self.num_stages * self.max_depth

        def draw(
            name: str, choices: tuple[int, ...], n: int, fixed: tuple[int, ...]
        ) -> tuple[int, ...]:
            if name not in elastic:
                return fixed
            return tuple(int(choices[i]) for i in rng.integers(len(choices), size=n))

        return MobileNetArch(
            draw("depth", self.depth_choices, self.num_stages, big.depths),
            draw("kernel", self.kernel_choices, slots, big.kernels),
            draw("expand", self.expand_choices, slots, big.expands),
        )

    def latency_layout(self) -> LatencyLayout:
        """Block choices per stage and position, timed once each (``spaces.mobilenet.latency``)."""
        from spaces.mobilenet.latency import MobileNetLayout

        return MobileNetLayout(self)
