"""The search-space contract every searcher works through."""

from __future__ import annotations

import itertools
import logging
from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from spaces.layout import LatencyLayout

logger = logging.getLogger(__name__)

Arch = Hashable
Primitive = int | float | str | bool

_MAX_MUTATION_TRIES = 64


def positive_int(name: str, value: Any) -> int:
    """``value`` as an int if it is a positive integer, else a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Decision:
    """One categorical decision of a space: a flat config key and its allowed values."""

    name: str
    choices: tuple[Primitive, ...]

    @property
    def size(self) -> int:
        """Number of allowed values."""
        return len(self.choices)


class SearchSpace(ABC):
    """A discrete architecture space described by a list of categorical decisions.

    Subclasses define ``decisions`` and the mapping between an architecture (a hashable
    value, e.g. the NAS-Bench-201 string) and its integer vector of choice indices
    (``encode`` / ``decode``). Sampling, mutation, crossover, neighbours and the flat Tune
    config are implemented here once on top of that vector.

    Example:
        >>> import numpy as np
        >>> from spaces import create_space
        >>> space = create_space("nb201")
        >>> arch = space.sample(np.random.default_rng(0))
        >>> space.from_config(space.to_config(arch)) == arch
        True
    """

    name: str = ""

    @property
    @abstractmethod
    def decisions(self) -> tuple[Decision, ...]:
        """The categorical decisions, in vector order."""

    @abstractmethod
    def encode(self, arch: Arch) -> np.ndarray:
        """Integer vector of choice indices of ``arch`` (validated)."""

    @abstractmethod
    def decode(self, vector: Sequence[int] | np.ndarray) -> Arch:
        """Architecture of an integer vector of choice indices."""

    @abstractmethod
    def validate(self, arch: Any) -> Arch:
        """Return ``arch`` if it belongs to this space, else raise ``ValueError`` naming why."""

    def canonical(self, arch: Arch) -> str:
        """A string shared by all architectures that compute the same function."""
        return self.to_string(arch)

    def to_string(self, arch: Arch) -> str:
        """The architecture's string form (round-trips through ``from_string``)."""
        return str(self.validate(arch))

    def from_string(self, text: str) -> Arch:
        """Parse the string form of an architecture."""
        return self.validate(text)

    # ----------------------------------------------------------------- derived
    @property
    def dims(self) -> tuple[int, ...]:
        """Number of choices of each decision, in vector order."""
        return tuple(d.size for d in self.decisions)

    @property
    def size(self) -> int:
        """Number of distinct vectors (architecture strings) in the space."""
        return int(np.prod(self.dims, dtype=object))

    @property
    def gene_upper(self) -> np.ndarray:
        """Upper bound of each entry of ``encode``'s vector (the lower bound is 0)."""
        return np.array(self.dims, dtype=np.float64) - 1.0

    @property
    def gene_integral(self) -> np.ndarray:
        """Which entries of ``encode``'s vector are integer indices (else reals in [0, 1])."""
        return np.ones(len(self.dims), dtype=bool)

    @property
    def finite(self) -> bool:
        """Whether the space has finitely many architectures (no continuous decision)."""
        return bool(self.gene_integral.all())

    def sample(self, rng: np.random.Generator) -> Arch:
        """A uniformly random architecture."""
        return self.decode([int(rng.integers(n)) for n in self.dims])

    def decision_groups(self) -> tuple[tuple[int, ...], ...]:
        """Decisions that together choose one layer, as indices (FP-NAS's joint distributions).

        By default every decision is its own group; a space whose layer is chosen by several
        decisions (a block's kernel and expansion) groups them.
        """
        return tuple((k,) for k in range(len(self.decisions)))

    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        """One random local change: a single decision set to another value.

        Changes that leave the computation unchanged (same canonical form) are redrawn,
        so a mutation always yields a different network when one exists.
        """
        vec = self.encode(arch)
        original = self.canonical(arch)
        mutable = [i for i, n in enumerate(self.dims) if n > 1]
        if not mutable:
            raise ValueError(f"space {self.name!r} has no decision with more than one choice")
        child = arch
        for _ in range(_MAX_MUTATION_TRIES):
            i = mutable[int(rng.integers(len(mutable)))]
            new = vec.copy()
            offset = int(rng.integers(1, self.dims[i]))
            new[i] = (vec[i] + offset) % self.dims[i]
            child = self.decode(new)
            if self.canonical(child) != original:
                return child
        return child

    def crossover(self, a: Arch, b: Arch, rng: np.random.Generator) -> Arch:
        """Uniform crossover: each decision taken from ``a`` or ``b`` with equal chance."""
        va, vb = self.encode(a), self.encode(b)
        mask = rng.random(len(va)) < 0.5
        return self.decode(np.where(mask, va, vb))

    def neighbours(self, arch: Arch) -> list[Arch]:
        """All architectures one decision away, skipping those computing the same function."""
        vec = self.encode(arch)
        original = self.canonical(arch)
        seen: set[str] = {original}
        out: list[Arch] = []
        for i, n in enumerate(self.dims):
            for value in range(n):
                if value == vec[i]:
                    continue
                new = vec.copy()
                new[i] = value
                child = self.decode(new)
                key = self.canonical(child)
                if key not in seen:
                    seen.add(key)
                    out.append(child)
        return out

    def enumerate(self) -> Iterator[Arch]:
        """Every architecture string of the space, in vector order (only for small spaces)."""
        for vec in itertools.product(*(range(n) for n in self.dims)):
            yield self.decode(vec)

    def to_config(self, arch: Arch) -> dict[str, Primitive]:
        """Flat Tune config of primitives (``{"op/0": "nor_conv_3x3", ...}``)."""
        vec = self.encode(arch)
        return {d.name: d.choices[int(i)] for d, i in zip(self.decisions, vec, strict=True)}

    def from_config(self, config: Mapping[str, Any]) -> Arch:
        """Architecture of a flat config; extra keys are ignored, missing or bad ones raise."""
        vec = []
        for d in self.decisions:
            if d.name not in config:
                raise ValueError(f"config for space {self.name!r} lacks key {d.name!r}")
            value = config[d.name]
            if isinstance(value, np.generic):
                value = value.item()
            try:
                vec.append(d.choices.index(value))
            except ValueError:
                raise ValueError(
                    f"config key {d.name!r} of space {self.name!r} has value {value!r}; "
                    f"allowed: {list(d.choices)}"
                ) from None
        return self.decode(vec)

    # ---------------------------------------------------------------- networks
    def build_network(
        self, arch: Arch, *, num_classes: int = 10, in_channels: int = 3
    ) -> torch.nn.Module:
        """A freshly initialised, stand-alone trainable torch network of ``arch``.

        Spaces import torch lazily here, so ``import spaces`` never loads it.
        """
        raise NotImplementedError(f"space {self.name!r} has no build_network")

    def build_supernet(self, *, num_classes: int = 10, in_channels: int = 3) -> torch.nn.Module:
        """A freshly initialised weight-sharing supernet of the whole space (one-shot NAS).

        Built with the space's own network options. The returned module provides
        ``forward(x, arch)`` (logits of the single path ``arch``; only its operations run),
        ``extract(arch)`` (a stand-alone module with copied weights, equal in eval mode),
        ``path_modules(arch)``, ``path_parameters(arch)`` and ``batchnorms(arch)`` (the batch
        norm layers to recalibrate per architecture). Torch is imported lazily here.
        """
        raise NotImplementedError(f"space {self.name!r} has no build_supernet")

    def build_differentiable(
        self, *, num_classes: int = 10, in_channels: int = 3, **options: Any
    ) -> torch.nn.Module:
        """A differentiable supernet: every decision a weighted mix of its choices (DARTS).

        The module provides ``alpha`` (the architecture parameters), ``arch_parameters()``,
        ``weight_parameters()``, ``forward(x, relaxation, *, tau, aux_skip, generator)``,
        ``probabilities(relaxation)`` and ``derive()`` (the argmax architecture), and takes
        ``channels``, ``cells_per_stage``, ``partial_channels`` and a shared ``alpha``.
        """
        raise NotImplementedError(f"space {self.name!r} has no build_differentiable")

    def parameter_free_fraction(self, arch: Arch) -> float:
        """Fraction of ``arch``'s operations that have no parameters (skip, pooling, none)."""
        raise NotImplementedError(f"space {self.name!r} has no parameter_free_fraction")

    def skip_connections(self, arch: Arch) -> int:
        """How many of ``arch``'s operations are skip connections (DARTS+'s stopping rule)."""
        raise NotImplementedError(f"space {self.name!r} has no skip_connections")

    def count_params(self, arch: Arch, *, num_classes: int = 10, in_channels: int = 3) -> int:
        """Trainable parameters of ``build_network(arch, ...)``, computed without torch."""
        raise NotImplementedError(f"space {self.name!r} has no count_params")

    def count_flops(
        self,
        arch: Arch,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        resolution: int | None = None,
    ) -> int:
        """Multiply-accumulates (MACs) of one forward pass of one image, without torch.

        ``resolution`` overrides the space's input resolution (square images).
        """
        raise NotImplementedError(f"space {self.name!r} has no count_flops")

    def provides(self, method: str) -> bool:
        """Whether this space implements the optional ``method`` (e.g. ``"build_supernet"``)."""
        mine = getattr(type(self), method, None)
        return mine is not None and mine is not getattr(SearchSpace, method, None)

    def spec(self) -> dict[str, Any]:
        """``{"name", "options"}`` from which ``spaces.space_from_spec`` rebuilds this space.

        The default takes the ``options`` of ``describe()``; JSON-friendly (tuples as lists).
        """
        options = dict(self.describe().get("options", {}))
        return {
            "name": self.name,
            "options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
        }

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly summary of the space (name, decisions, size) for logging."""
        return {
            "name": self.name,
            "size": self.size,
            "decisions": {d.name: list(d.choices) for d in self.decisions},
        }

    def _check_vector(self, vector: Sequence[int] | np.ndarray) -> np.ndarray:
        """Validate an index vector's length and ranges; return it as an int array."""
        vec = np.asarray(vector)
        if vec.shape != (len(self.dims),):
            raise ValueError(
                f"space {self.name!r} expects a vector of {len(self.dims)} indices, "
                f"got shape {vec.shape}"
            )
        if not np.issubdtype(vec.dtype, np.integer):
            if not np.all(np.equal(np.mod(vec, 1), 0)):
                raise ValueError(f"space {self.name!r} expects integer indices, got {vec!r}")
            vec = vec.astype(np.int64)
        for i, (value, n) in enumerate(zip(vec, self.dims, strict=True)):
            if not 0 <= value < n:
                raise ValueError(
                    f"index {int(value)} of decision {self.decisions[i].name!r} is out of "
                    f"range [0, {n})"
                )
        return vec.astype(np.int64)

    # --------------- what the core asks of a space
    # Hooks raynas calls instead of branching on a space's name. The optional ones raise
    # NotImplementedError naming the space and the hook; callers turn that into a ValueError.
    def active_mask(self, vectors: np.ndarray) -> np.ndarray:
        """Which decisions of each index vector ``(n, d)`` shape the network (default: all)."""
        shape = np.asarray(vectors).reshape(-1, len(self.dims)).shape
        return np.ones(shape, dtype=bool)

    def features(self, vectors: np.ndarray) -> np.ndarray:
        """Learned predictors' float32 inputs: one-hot of each active choice (reals as is)."""
        vectors = np.asarray(vectors).reshape(-1, len(self.dims))
        integral = self.gene_integral
        widths = np.where(integral, self.dims, 1)
        offsets = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)
        out = np.zeros((len(vectors), int(widths.sum())), dtype=np.float32)
        active = self.active_mask(vectors)
        rows, genes = np.nonzero(active & integral)
        out[rows, offsets[genes] + vectors[rows, genes].astype(np.int64)] = 1.0
        rows, genes = np.nonzero(active & ~integral)
        out[rows, offsets[genes]] = vectors[rows, genes]
        return out

    def active_probability(self, probabilities: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Per decision, the probability it shapes the network when decision ``k`` is drawn
        from ``probabilities[k]`` independently (default: always, 1)."""
        return [p.new_ones(()) for p in probabilities]

    def expected_features(self, probabilities: Sequence[torch.Tensor]) -> torch.Tensor:
        """The expectation of ``features`` when decision ``k`` is drawn from
        ``probabilities[k]`` independently: each decision's probabilities times the chance it
        is active (differentiable; a learned latency predictor's soft input)."""
        import torch

        if not self.finite:
            raise NotImplementedError(f"space {self.name!r} has continuous decisions: "
                                      "no expected one-hot")
        active = self.active_probability(probabilities)
        return torch.cat([p * a for p, a in zip(probabilities, active, strict=True)])

    def cost_features(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inputs of an additive latency model and of its learned residual (float64).

        By default both are ``features``; a space that knows what costs time (NB201: only
        operations on a path from input to output) adds that.
        """
        x = np.asarray(self.features(vectors), dtype=np.float64)
        return x, x

    def encode_strings(self, texts: Sequence[str]) -> np.ndarray | None:
        """Index vectors of many string forms at once, or None to ``encode`` them one by one."""
        return None

    def input_resolution(self) -> int | None:
        """Side of the square images ``build_network``'s networks are shaped for, or None.

        The default reads a positive integer ``resolution`` of ``describe()["options"]``.
        """
        value = self.describe().get("options", {}).get("resolution")
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            return None
        return int(value)

    def latency_layout(self) -> LatencyLayout:
        """The layers a latency lookup table times, and how an architecture is made of them."""
        raise NotImplementedError(f"space {self.name!r} has no latency_layout")

    def table_key(self, arch: Arch) -> str:
        """The key of ``arch``'s row in a benchmark table (its ``arch_str``)."""
        raise NotImplementedError(f"space {self.name!r} has no table_key")

    # Progressive shrinking (Cai et al., "Once-for-All: Train One Network and Specialize it
    # for Efficient Deployment", ICLR 2020): the supernet trainer's ``method="ofa"``.
    def shrinking_order(self) -> tuple[str, ...]:
        """The elastic dimensions, in the order progressive shrinking enables them (OFA)."""
        raise NotImplementedError(f"space {self.name!r} has no shrinking_order")

    def largest(self) -> Arch:
        """The largest architecture: every elastic dimension at its largest value (OFA)."""
        raise NotImplementedError(f"space {self.name!r} has no largest")

    def sample_shrunk(self, rng: np.random.Generator, elastic: Sequence[str]) -> Arch:
        """Uniform over the ``elastic`` dimensions (of ``shrinking_order``), the rest largest.

        Unknown dimension names raise ``ValueError`` naming them (OFA's progressive shrinking).
        """
        raise NotImplementedError(f"space {self.name!r} has no sample_shrunk")
