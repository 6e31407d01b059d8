"""ParamSpace: any Ray Tune param space (or its YAML form) as a raynas search space."""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from spaces._base import Arch, SearchSpace
from spaces._registry import register_space
from spaces.params.convert import CONSTANT, DOMAINS, Path, flat_name, parse_params
from spaces.params.decisions import ParamDecision, dumps, short

logger = logging.getLogger(__name__)

_CACHE_LIMIT = 65536


@register_space("params")
class ParamSpace(SearchSpace):
    """A space of named hyper-parameters: categorical, ordered integer and continuous ones.

    Built from a Ray Tune ``param_space`` (``tune.choice``, ``randint``, ``qrandint``,
    ``lograndint``, ``qlograndint``, ``uniform``, ``quniform``, ``loguniform``,
    ``qloguniform``, constants, nested dicts) or from the same structure in YAML
    (``{width: {choice: [16, 32, 64]}, lr: {loguniform: [1.0e-4, 0.1]}}``), with Tune's bound
    conventions (``randint`` excludes its upper bound, quantised domains include it).

    An architecture is the JSON object of the decision values in declaration order, keyed by
    their flat names (``'{"model/width":32,"lr":0.0012}'``): hashable, readable in MLflow, and
    exact (floats round-trip). ``to_config`` gives the nested dict the trainable expects,
    constants included; ``from_config`` reads a nested or flat config and ignores other keys.

    The vector encoding (``encode``) holds one gene per decision: the index of a categorical
    value or of an integer on its grid (an integer), or a continuous value's position in
    [0, 1], in log scale for log domains (a real). ``gene_integral`` tells which is which.
    Mutation changes one decision (categorical: another value; ordered and continuous: a
    Gaussian step in the normalised scale, clipped); crossover takes each decision from
    either parent. Spaces whose decisions are all finite are enumerable and deduplicated
    like any discrete space; a continuous decision makes the space infinite.

    Example:
        >>> import numpy as np
        >>> space = ParamSpace({"width": {"choice": [16, 32]}, "lr": {"loguniform": [1e-4, 0.1]},
        ...                     "epochs": 3})
        >>> arch = space.sample(np.random.default_rng(0))
        >>> config = space.to_config(arch)
        >>> config["epochs"], config["width"] in (16, 32), space.from_config(config) == arch
        (3, True, True)
    """

    name = "params"

    def __init__(self, params: Mapping[str, Any]) -> None:
        pairs, template = parse_params(params)
        self._paths: tuple[Path, ...] = tuple(p for p, _ in pairs)
        self._decisions: tuple[ParamDecision, ...] = tuple(d for _, d in pairs)
        self._template = template
        self._by_name = {d.name: i for i, d in enumerate(self._decisions)}
        if len(self._by_name) != len(self._decisions):
            raise ValueError("two keys of the param space flatten to the same name")
        self._params = params
        self._cache: dict[str, str] = {}
        self._upper = np.array([d.gene_upper for d in self._decisions], dtype=np.float64)
        self._integral = np.array([d.integral for d in self._decisions], dtype=bool)
        self._upper.setflags(write=False)
        self._integral.setflags(write=False)

    @classmethod
    def from_tune(cls, param_space: Mapping[str, Any]) -> ParamSpace:
        """The space of a Tune ``param_space`` dict (the same as ``ParamSpace(param_space)``)."""
        return cls(param_space)

    # ------------------------------------------------------------------ contract
    @property
    def decisions(self) -> tuple[ParamDecision, ...]:  # type: ignore[override]
        """The decisions, in declaration order."""
        return self._decisions

    @property
    def dims(self) -> tuple[int, ...]:
        """Values of each integral gene (0 for a continuous one)."""
        return tuple(int(d.size) if d.integral else 0 for d in self._decisions)

    @property
    def gene_upper(self) -> np.ndarray:
        """Upper bound of each gene (indices: size - 1; continuous: 1)."""
        return self._upper

    @property
    def gene_integral(self) -> np.ndarray:
        """Which genes are integer indices."""
        return self._integral

    @property
    def size(self) -> int:
        """Number of distinct configurations (``math.inf`` with a continuous decision)."""
        sizes = [d.size for d in self._decisions]
        if not all(math.isfinite(s) for s in sizes):
            return math.inf  # type: ignore[return-value]
        return int(np.prod([int(s) for s in sizes], dtype=object))

    def validate(self, arch: Any) -> Arch:
        """The canonical string of an architecture string, a values dict or a config."""
        if isinstance(arch, str):
            hit = self._cache.get(arch)
            if hit is not None:
                return hit
            try:
                raw = json.loads(arch)
            except ValueError:
                raise ValueError(
                    f"a params architecture is a JSON object of values, got {short(arch)}"
                ) from None
            if not isinstance(raw, dict):
                raise ValueError(f"a params architecture is a JSON object, got {short(arch)}")
            text = self._dump(self._values_from_keys(raw))
            if len(self._cache) < _CACHE_LIMIT:
                self._cache[arch] = text
            return text
        if isinstance(arch, Mapping):
            return self.from_config(arch)
        raise ValueError(f"a params architecture is a JSON string, got {type(arch).__name__}")

    def canonical(self, arch: Arch) -> str:
        """The architecture string itself (every configuration is a different computation)."""
        return str(self.validate(arch))

    def encode(self, arch: Arch) -> np.ndarray:
        """One gene per decision (indices for discrete decisions, [0, 1] for continuous)."""
        values = self.values(arch)
        return np.array([d.to_gene(v) for d, v in zip(self._decisions, values, strict=True)],
                        dtype=np.float64)

    def decode(self, vector: Sequence[float] | np.ndarray) -> Arch:
        """The architecture of a gene vector (genes rounded and clipped into their domains)."""
        vec = np.asarray(vector, dtype=np.float64)
        if vec.shape != (len(self._decisions),):
            raise ValueError(
                f"params space expects a vector of {len(self._decisions)} genes, got shape "
                f"{vec.shape}"
            )
        if not np.all(np.isfinite(vec)):
            raise ValueError(f"gene vector has non-finite entries: {short(vec.tolist())}")
        return self._dump([d.from_gene(g) for d, g in zip(self._decisions, vec, strict=True)])

    # ----------------------------------------------------------------- operators
    def sample(self, rng: np.random.Generator) -> Arch:
        """Each decision drawn from its own distribution."""
        return self._dump([d.sample(rng) for d in self._decisions])

    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        """One decision changed by its own mutation (another value, or a Gaussian step)."""
        values = self.values(arch)
        mutable = [i for i, d in enumerate(self._decisions) if d.size > 1]
        if not mutable:
            raise ValueError("the param space has no decision with more than one value")
        original = self._dump(values)
        child = original
        for _ in range(64):
            i = mutable[int(rng.integers(len(mutable)))]
            new = list(values)
            new[i] = self._decisions[i].mutate(values[i], rng)
            child = self._dump(new)
            if child != original:
                return child
        return child

    def crossover(self, a: Arch, b: Arch, rng: np.random.Generator) -> Arch:
        """Uniform crossover: each decision from ``a`` or ``b`` with equal chance."""
        va, vb = self.values(a), self.values(b)
        mask = rng.random(len(va)) < 0.5
        return self._dump([x if m else y for x, y, m in zip(va, vb, mask, strict=True)])

    def neighbours(self, arch: Arch) -> list[Arch]:
        """Every configuration one decision away (one grid or Gaussian step for ordered ones)."""
        values = self.values(arch)
        out: list[Arch] = []
        for i, d in enumerate(self._decisions):
            for other in d.neighbours(values[i]):
                new = list(values)
                new[i] = other
                out.append(self._dump(new))
        return out

    def enumerate(self) -> Iterator[Arch]:
        """Every configuration (finite spaces only), in gene order."""
        if not math.isfinite(self.size):
            raise ValueError("a param space with a continuous decision cannot be enumerated")
        for values in itertools.product(*(d.values() for d in self._decisions)):
            yield self._dump(list(values))

    # -------------------------------------------------------------------- configs
    def to_config(self, arch: Arch) -> dict[str, Any]:
        """The nested config the trainable expects: decision values and constants."""
        config = copy.deepcopy(self._template)
        for path, value in zip(self._paths, self.values(arch), strict=True):
            node = config
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
        return config

    def from_config(self, config: Mapping[str, Any]) -> Arch:
        """The architecture of a nested (or ``/``-flat) config; other keys are ignored."""
        if not isinstance(config, Mapping):
            raise ValueError(f"a config is a mapping, got {type(config).__name__}")
        values = []
        for path, d in zip(self._paths, self._decisions, strict=True):
            found, value = _lookup(config, path)
            if not found:
                raise ValueError(f"config for the params space lacks key {d.name!r}")
            values.append(d.validate(value))
        return self._dump(values)

    def values(self, arch: Arch) -> list[Any]:
        """The decision values of an architecture, in declaration order."""
        raw = json.loads(str(self.validate(arch)))
        return [d.from_key(raw[d.name]) for d in self._decisions]

    # ------------------------------------------------------------------ describe
    def describe(self) -> dict[str, Any]:
        """Name, size (``"inf"`` when continuous) and each decision's domain."""
        size = self.size
        return {
            "name": self.name,
            "size": size if math.isfinite(size) else "inf",
            "decisions": {d.name: d.describe() for d in self._decisions},
        }

    def spec(self) -> dict[str, Any]:
        """``{"name": "params", "options": {"params": <YAML form>}}``; rebuilds an equal space."""
        params = copy.deepcopy(self._template)
        prefixes = {path[:i] for path in self._paths for i in range(len(path) + 1)}
        _escape_constants(params, (), prefixes)
        for path, d in zip(self._paths, self._decisions, strict=True):
            node = params
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = d.describe()
        try:
            json.dumps(params, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"the param space's constants are not JSON data: {exc}") from None
        return {"name": self.name, "options": {"params": params}}

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ParamSpace)
            and self._paths == other._paths
            and self._decisions == other._decisions
            and _same(self._template, other._template)
        )

    def __hash__(self) -> int:
        return hash(self._paths)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = {}
        state["_params"] = None  # may hold Tune domains; the decisions say everything
        return state

    def __repr__(self) -> str:
        return f"ParamSpace({', '.join(d.name for d in self._decisions)})"

    # ------------------------------------------------------------------ internal
    def _dump(self, values: Sequence[Any]) -> str:
        return dumps({d.name: d.key(v) for d, v in zip(self._decisions, values, strict=True)})

    def _values_from_keys(self, raw: Mapping[str, Any]) -> list[Any]:
        missing = [d.name for d in self._decisions if d.name not in raw]
        if missing:
            raise ValueError(f"architecture lacks key {missing[0]!r}")
        extra = sorted(set(raw) - set(self._by_name))
        if extra:
            raise ValueError(f"architecture has unknown key {extra[0]!r}")
        return [d.from_key(raw[d.name]) for d in self._decisions]


def _lookup(config: Mapping[str, Any], path: Path) -> tuple[bool, Any]:
    """The value at ``path`` in a nested config, or under its flat ``a/b`` key."""
    node: Any = config
    for key in path:
        if isinstance(node, Mapping) and key in node:
            node = node[key]
        else:
            break
    else:
        return True, node
    flat = flat_name(path)
    if flat in config:
        return True, config[flat]
    return False, None


def _escape_constants(node: dict[str, Any], path: Path, decided: set[Path]) -> None:
    """Wrap constant mappings that would read as domains in ``{constant: ...}``."""
    for key, value in node.items():
        here = (*path, key)
        if here in decided:
            if isinstance(value, dict):
                _escape_constants(value, here, decided)
        elif isinstance(value, dict) and (
            len(value) == 1 and next(iter(value)) in (*DOMAINS, CONSTANT) or _has_domain_key(value)
        ):
            node[key] = {CONSTANT: value}


def _has_domain_key(value: Any) -> bool:
    """Whether a constant holds, anywhere, a mapping that would read as a domain."""
    if isinstance(value, dict):
        if len(value) == 1 and next(iter(value)) in (*DOMAINS, CONSTANT, "grid_search"):
            return True
        return any(_has_domain_key(v) for v in value.values())
    return False


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # constants such as arrays do not compare to one bool
        return a is b
