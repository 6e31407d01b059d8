"""Decision types of a parameter space: categorical, ordered integer and continuous.

Each decision owns its sampling, mutation, crossover, neighbours, validation, canonical value
and its entry ("gene") in the space's vector encoding:

* ``Categorical``: a value from a list; gene = the value's index (an integer).
* ``Integer``: an integer on ``[low, high]`` (multiples of ``q``), uniform or log-uniform; gene =
  the value's index on that grid (an integer).
* ``Float``: a real on ``[low, high]``, uniform or log-uniform, optionally rounded to multiples
  of ``q``; gene = the value normalised to ``[0, 1]`` (in log scale for log domains).

Mutation of ordered and continuous decisions is a Gaussian step of ``MUTATION_SIGMA`` in the
normalised (log where the domain is log) scale, clipped to the domain; categorical mutation
picks another value uniformly.
"""

from __future__ import annotations

import json
import math
import reprlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import numpy as np

MUTATION_SIGMA = 0.15  # Gaussian mutation step, as a fraction of the normalised range
_MAX_VALUES_SHOWN = 8


def short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` in at most ``limit`` characters, computed in bounded time (for errors).

    A copy of ``raynas.run.config.short`` (spaces import nothing of raynas): nested values
    are cut by depth and length before they are printed, so a YAML alias bomb stays cheap.
    """
    cut = reprlib.Repr()
    cut.maxlevel, cut.maxlist, cut.maxtuple, cut.maxdict, cut.maxset = 3, 6, 6, 4, 6
    cut.maxlong, cut.maxother, cut.maxstring = 60, 100, max(limit, 10)
    text = cut.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _plain(value: Any) -> Any:
    """numpy scalars as Python scalars (Tune and pymoo hand those out)."""
    return value.item() if isinstance(value, np.generic) else value


class ParamDecision(ABC):
    """One decision of a parameter space, addressed by its flat key (``"model/width"``)."""

    kind: str = ""

    def __init__(self, name: str) -> None:
        self.name = name

    # --------------------------------------------------------------- the domain
    @property
    @abstractmethod
    def size(self) -> float:
        """Number of distinct values (``math.inf`` for a continuous decision)."""

    @property
    def finite(self) -> bool:
        """Whether the decision has finitely many values."""
        return math.isfinite(self.size)

    @property
    @abstractmethod
    def integral(self) -> bool:
        """Whether the gene is an integer index (else a real in ``[0, 1]``)."""

    @property
    def gene_upper(self) -> float:
        """Upper bound of the gene (the lower bound is 0)."""
        return float(self.size - 1) if self.integral else 1.0

    @abstractmethod
    def validate(self, value: Any) -> Any:
        """The value in canonical form, or ``ValueError`` naming the key and the domain."""

    @abstractmethod
    def values(self) -> Iterator[Any]:
        """Every value, in gene order (finite decisions only)."""

    @abstractmethod
    def to_gene(self, value: Any) -> float:
        """The value's gene (index, or position in ``[0, 1]``)."""

    @abstractmethod
    def from_gene(self, gene: float) -> Any:
        """The value of a gene (rounded and clipped into the domain)."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """The YAML form of the domain (``{"loguniform": [0.0001, 0.1]}``)."""

    # ------------------------------------------------------------ the operators
    def sample(self, rng: np.random.Generator) -> Any:
        """A value drawn from the domain's distribution."""
        return self.from_gene(float(rng.random()) * self.gene_upper)

    def mutate(self, value: Any, rng: np.random.Generator) -> Any:
        """A different value near ``value`` (Gaussian step in the normalised scale)."""
        u = self._unit(value) + float(rng.normal(0.0, MUTATION_SIGMA))
        return self._from_unit(min(1.0, max(0.0, u)))

    def neighbours(self, value: Any) -> list[Any]:
        """Values one step away: the next ones on the grid, or one step of ``MUTATION_SIGMA``."""
        out = []
        base = self._unit(value)
        for u in (base - MUTATION_SIGMA, base + MUTATION_SIGMA):
            if 0.0 <= u <= 1.0:
                other = self._from_unit(u)
                if other != value and other not in out:
                    out.append(other)
        return out

    def key(self, value: Any) -> Any:
        """The JSON value standing for ``value`` in an architecture string."""
        return value

    def from_key(self, key: Any) -> Any:
        """Inverse of ``key``."""
        return self.validate(key)

    # ------------------------------------------------------------- internals
    def _unit(self, value: Any) -> float:
        return self.to_gene(value) / self.gene_upper if self.gene_upper > 0 else 0.0

    def _from_unit(self, u: float) -> Any:
        return self.from_gene(u * self.gene_upper)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.name))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.describe()})"


class Categorical(ParamDecision):
    """A value from a list (``tune.choice``); no order among the values."""

    kind = "choice"

    def __init__(self, name: str, choices: Any) -> None:
        super().__init__(name)
        if isinstance(choices, (str, bytes)) or not hasattr(choices, "__len__") or not choices:
            raise ValueError(f"key {name!r}: choice needs a non-empty list, got {short(choices)}")
        self.choices = tuple(_plain(c) for c in choices)
        # Values that are not JSON scalars (lists, dicts) are written as their index.
        self.by_index = not all(
            c is None or isinstance(c, (str, bool, int, float)) for c in self.choices
        )
        for i, c in enumerate(self.choices):
            if self._find(c) != i:
                raise ValueError(f"key {name!r}: choice lists {short(c)} twice")

    @property
    def size(self) -> float:
        """Number of choices."""
        return len(self.choices)

    @property
    def integral(self) -> bool:
        """Genes are indices."""
        return True

    def _find(self, value: Any) -> int | None:
        value = _plain(value)
        for i, c in enumerate(self.choices):
            # type-strict first, so True is not taken for 1
            if type(c) is type(value) and c == value:
                return i
        for i, c in enumerate(self.choices):
            if c == value and isinstance(c, bool) == isinstance(value, bool):
                return i
        return None

    def validate(self, value: Any) -> Any:
        """The listed choice equal to ``value``."""
        i = self._find(value)
        if i is None:
            shown = ", ".join(short(c, 30) for c in self.choices[:_MAX_VALUES_SHOWN])
            more = ", ..." if len(self.choices) > _MAX_VALUES_SHOWN else ""
            raise ValueError(
                f"key {self.name!r} has value {short(value)}; allowed: [{shown}{more}]"
            )
        return self.choices[i]

    def values(self) -> Iterator[Any]:
        """The choices in order."""
        return iter(self.choices)

    def to_gene(self, value: Any) -> float:
        """Index of the choice."""
        i = self._find(value)
        if i is None:
            self.validate(value)
        return float(i)  # type: ignore[arg-type]

    def from_gene(self, gene: float) -> Any:
        """Choice at the rounded, clipped index."""
        return self.choices[int(min(len(self.choices) - 1, max(0, round(float(gene)))))]

    def sample(self, rng: np.random.Generator) -> Any:
        """A choice drawn uniformly."""
        return self.choices[int(rng.integers(len(self.choices)))]

    def mutate(self, value: Any, rng: np.random.Generator) -> Any:
        """Another choice, drawn uniformly."""
        n = len(self.choices)
        if n == 1:
            return self.choices[0]
        i = int(self.to_gene(value))
        return self.choices[(i + int(rng.integers(1, n))) % n]

    def neighbours(self, value: Any) -> list[Any]:
        """Every other choice."""
        i = int(self.to_gene(value))
        return [c for j, c in enumerate(self.choices) if j != i]

    def key(self, value: Any) -> Any:
        """The value itself, or its index for non-scalar choices."""
        return int(self.to_gene(value)) if self.by_index else self.validate(value)

    def from_key(self, key: Any) -> Any:
        """Inverse of ``key``."""
        if self.by_index:
            n = len(self.choices)
            if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key < n:
                raise ValueError(f"key {self.name!r}: bad choice index {short(key)}")
            return self.choices[key]
        return self.validate(key)

    def describe(self) -> dict[str, Any]:
        """``{"choice": [...]}``."""
        return {"choice": list(self.choices)}


class Integer(ParamDecision):
    """An ordered integer: the multiples of ``q`` in ``[low, high]``, uniform or log-uniform.

    ``high`` is inclusive here; ``from_tune`` converts Tune's exclusive bounds.
    """

    kind = "integer"

    def __init__(self, name: str, low: int, high: int, *, q: int = 1, log: bool = False) -> None:
        super().__init__(name)
        for label, v in (("low", low), ("high", high), ("q", q)):
            if not _is_number(v) or float(v) != int(v):
                raise ValueError(
                    f"key {name!r}: integer {label} must be an integer, got {short(v)}"
                )
        low, high, q = int(low), int(high), int(q)
        if q < 1:
            raise ValueError(f"key {name!r}: q must be >= 1, got {q}")
        first, last = -(-low // q), high // q  # grid indices, rounded inwards
        if last < first:
            raise ValueError(f"key {name!r}: no multiple of {q} in [{low}, {high}]")
        if log and first * q <= 0:
            raise ValueError(f"key {name!r}: a log domain needs low > 0, got {low}")
        self.low, self.high, self.q, self.log = first * q, last * q, q, bool(log)
        self._first, self._count = first, last - first + 1

    @property
    def size(self) -> float:
        """Number of grid values."""
        return self._count

    @property
    def integral(self) -> bool:
        """Genes are grid indices."""
        return True

    def validate(self, value: Any) -> int:
        """``value`` as an int, if it is on the grid."""
        value = _plain(value)
        if not _is_number(value) or float(value) != math.floor(float(value)):
            raise ValueError(f"key {self.name!r} must be an integer, got {short(value)}")
        v = int(value)
        if not self.low <= v <= self.high or v % self.q:
            grid = f" (multiples of {self.q})" if self.q > 1 else ""
            raise ValueError(f"key {self.name!r} has {v}; allowed: [{self.low}, {self.high}]{grid}")
        return v

    def values(self) -> Iterator[int]:
        """The grid, ascending."""
        return iter(range(self.low, self.high + 1, self.q))

    def to_gene(self, value: Any) -> float:
        """Index on the grid."""
        return float((self.validate(value) - self.low) // self.q)

    def from_gene(self, gene: float) -> int:
        """Grid value at the rounded, clipped index."""
        i = int(min(self._count - 1, max(0, round(float(gene)))))
        return self.low + i * self.q

    def sample(self, rng: np.random.Generator) -> int:
        """Uniform over the grid, or log-uniform over ``[low, high]`` snapped to it."""
        if not self.log:
            return self.low + int(rng.integers(self._count)) * self.q
        return self._from_unit(float(rng.random()))

    def mutate(self, value: Any, rng: np.random.Generator) -> int:
        """A Gaussian step, at least one grid step away from ``value``."""
        if self._count == 1:
            return self.low
        v = self.validate(value)
        out = super().mutate(v, rng)
        if out == v:
            step = self.q if rng.random() < 0.5 else -self.q
            if not self.low <= v + step <= self.high:
                step = -step
            out = v + step
        return int(out)

    def neighbours(self, value: Any) -> list[int]:
        """The grid values just below and above."""
        v = self.validate(value)
        return [x for x in (v - self.q, v + self.q) if self.low <= x <= self.high]

    def _unit(self, value: Any) -> float:
        v = self.validate(value)
        if self._count == 1:
            return 0.0
        if self.log:
            return math.log(v / self.low) / math.log(self.high / self.low)
        return (v - self.low) / (self.high - self.low)

    def _from_unit(self, u: float) -> int:
        if self.log:
            x = self.low * (self.high / self.low) ** u
        else:
            x = self.low + u * (self.high - self.low)
        return self.from_gene((x - self.low) / self.q)

    def describe(self) -> dict[str, Any]:
        """``{"randint": [low, high + 1]}`` and the like (Tune's exclusive ``high`` when q = 1)."""
        if self.q == 1:
            return {("lograndint" if self.log else "randint"): [self.low, self.high + 1]}
        return {("qlograndint" if self.log else "qrandint"): [self.low, self.high, self.q]}


class Float(ParamDecision):
    """A real on ``[low, high]``, uniform or log-uniform, optionally a multiple of ``q``."""

    kind = "float"

    def __init__(
        self, name: str, low: float, high: float, *, q: float | None = None, log: bool = False
    ) -> None:
        super().__init__(name)
        for label, v in (("low", low), ("high", high)):
            if not _is_number(v) or not math.isfinite(float(v)):
                raise ValueError(f"key {name!r}: {label} must be a finite number, got {short(v)}")
        low, high = float(low), float(high)
        if q is not None:
            if not _is_number(q) or not float(q) > 0:
                raise ValueError(f"key {name!r}: q must be a number > 0, got {short(q)}")
            q = float(q)
            first, last = _grid_index(low, q, math.ceil), _grid_index(high, q, math.floor)
            if last < first:
                raise ValueError(f"key {name!r}: no multiple of {q:g} in [{low:g}, {high:g}]")
            low, high = first * q, last * q
            self._first, self._count = first, last - first + 1
        if not low < high and q is None:
            raise ValueError(f"key {name!r}: low must be < high, got [{low:g}, {high:g}]")
        if log and not low > 0:
            raise ValueError(f"key {name!r}: a log domain needs low > 0, got {low:g}")
        self.low, self.high, self.q, self.log = low, high, q, bool(log)

    @property
    def size(self) -> float:
        """Infinite, or the number of multiples of ``q``."""
        return math.inf if self.q is None else self._count

    @property
    def integral(self) -> bool:
        """Genes are reals in [0, 1]."""
        return False

    @property
    def gene_upper(self) -> float:
        """Genes span [0, 1]."""
        return 1.0

    def validate(self, value: Any) -> float:
        """``value`` as a float in the domain (rounded to ``q``)."""
        value = _plain(value)
        if not _is_number(value) or not math.isfinite(float(value)):
            raise ValueError(f"key {self.name!r} must be a finite number, got {short(value)}")
        v = float(value)
        tol = 1e-9 * max(1.0, abs(self.high), abs(self.low))
        if not self.low - tol <= v <= self.high + tol:
            raise ValueError(f"key {self.name!r} has {v:g}; allowed: [{self.low:g}, {self.high:g}]")
        v = min(self.high, max(self.low, v))
        return self._round(v)

    def _round(self, v: float) -> float:
        if self.q is None:
            return v
        i = min(self._first + self._count - 1, max(self._first, round(v / self.q)))
        return float(round(i * self.q, 12))

    def values(self) -> Iterator[float]:
        """The multiples of ``q``, ascending (quantised domains only)."""
        if self.q is None:
            raise ValueError(f"key {self.name!r} is continuous: its values cannot be listed")
        return (float(round((self._first + i) * self.q, 12)) for i in range(self._count))

    def to_gene(self, value: Any) -> float:
        """Position in [0, 1] (in log scale for log domains)."""
        v = self.validate(value)
        if self.high == self.low:
            return 0.0
        if self.log:
            return math.log(v / self.low) / math.log(self.high / self.low)
        return (v - self.low) / (self.high - self.low)

    def from_gene(self, gene: float) -> float:
        """The value at a position in [0, 1], clipped and rounded to ``q``."""
        u = min(1.0, max(0.0, float(gene)))
        if self.log:
            v = self.low * (self.high / self.low) ** u
        else:
            v = self.low + u * (self.high - self.low)
        return self._round(min(self.high, max(self.low, v)))

    def _unit(self, value: Any) -> float:
        return self.to_gene(value)

    def _from_unit(self, u: float) -> float:
        return self.from_gene(u)

    def sample(self, rng: np.random.Generator) -> float:
        """Uniform (or log-uniform) over the domain, rounded to ``q``."""
        return self.from_gene(float(rng.random()))

    def mutate(self, value: Any, rng: np.random.Generator) -> float:
        """A Gaussian step; a quantised value moves at least one multiple of ``q``."""
        v = self.validate(value)
        out = float(super().mutate(v, rng))
        if out == v and self.q is not None and self._count > 1:
            step = self.q if rng.random() < 0.5 else -self.q
            if not self.low <= v + step <= self.high:
                step = -step
            out = self._round(v + step)
        return out

    def key(self, value: Any) -> Any:
        """The float itself (``repr`` round-trips exactly through JSON)."""
        return self.validate(value)

    def describe(self) -> dict[str, Any]:
        """``{"uniform": [low, high]}`` and the like."""
        name = ("q" if self.q is not None else "") + ("loguniform" if self.log else "uniform")
        args = [self.low, self.high] + ([self.q] if self.q is not None else [])
        return {name: args}


def _grid_index(bound: float, q: float, round_fn: Any) -> int:
    """``bound``'s index on the multiples of ``q``, rounded inwards (as Tune's ``Quantized``)."""
    scaled = bound / q
    nearest = round(scaled)
    return int(nearest) if math.isclose(scaled, nearest) else int(round_fn(scaled))


def dumps(values: dict[str, Any]) -> str:
    """Compact, order-preserving JSON of an architecture's decision values."""
    return json.dumps(values, separators=(",", ":"), allow_nan=False)
