"""Asynchronous generations for Tune: hand out one member per suggest, breed when all reported.

``GenerationalSearch`` turns any breed-then-select algorithm into a Tune searcher;
``searchers.genetic.GeneticSearch`` (DEAP operators) and ``searchers.nsga2.NSGA2Search``
(pymoo) build on it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from searchers._base import NASSearch
from searchers.objectives import Constraint, Outcome
from searchers.pareto import pareto_mask
from spaces import Arch, SearchSpace

logger = logging.getLogger(__name__)

# Member states within a generation: not yet looked at, awaiting its key's result, reported.
TODO, OUT, DONE = 0, 1, 2


def constraint_vector(constraints: Sequence[Constraint], result: Mapping[str, Any]) -> list[float]:
    """Each constraint as ``g <= 0`` relative to its bound (``(value - bound) / |bound|``
    for ``<=``, ``(bound - value) / |bound|`` for ``>=``); positive parts sum to the violation.
    """
    out = []
    for c in constraints:
        value = float(result[c.metric])
        excess = value - c.bound if c.op == "<=" else c.bound - value
        out.append(excess / max(abs(c.bound), 1e-12))
    return out


@dataclass
class Evaluated:
    """One evaluated architecture; ``values`` is ``None`` for a failed trial."""

    text: str
    values: list[float] | None = None
    signed: list[float] | None = None
    scalar: float = float("-inf")
    violation: float = 0.0
    G: list[float] | None = None

    def to_json(self) -> list[Any]:
        """Compact JSON form."""
        return [self.text, self.values, self.signed, self.scalar, self.violation, self.G]

    @classmethod
    def from_json(cls, row: Sequence[Any]) -> Evaluated:
        """Inverse of ``to_json``."""
        text, values, signed, scalar, violation, G = row
        return cls(str(text), values, signed, float(scalar), float(violation), G)


class GenerationalSearch(NASSearch):
    """Generations handed out one member per ``suggest``, bred once all have reported.

    Subclasses implement ``_breed(seed) -> list of gene vectors`` (the next generation,
    preferably architectures never suggested; ``[]`` lets random unseen architectures form
    it) and ``_survive(seed, rows)`` with the reported ``(vector, Evaluated)`` pairs.
    ``seed`` is drawn from the searcher's RNG once per generation, so breeding and
    survival are reproducible and restorable.

    ``suggest`` returns ``None`` while every member is out and some have not reported.
    A member repeating an already evaluated architecture takes its known result; one
    repeating a pending architecture waits for that trial. Failed members are left out of
    ``_survive``. Results from outside the generation (``add_evaluated_point``, the base's
    fallback sampling) join the next ``_survive`` as extras.
    """

    def __init__(self, space: SearchSpace | Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(space, **kwargs)
        self._archive: dict[str, Evaluated] = {}  # canonical -> result, in arrival order
        self._extras: list[str] = []  # evaluated outside the generation, for the next survival
        self._generation: dict[str, Any] | None = None  # {"seed", "members": [[x, state]]}
        self._keys: list[str] = []  # canonical form of each member
        self._stalled_at: int | None = None  # len(seen) when breeding last brought nothing
        self._result: Mapping[str, Any] | None = None

    # ---------------------------------------------------------- subclass hooks
    def _breed(self, seed: int) -> list[list[Any]]:
        raise NotImplementedError

    def _survive(self, seed: int, rows: list[tuple[list[Any], Evaluated]]) -> None:
        raise NotImplementedError

    def _batch_size(self) -> int:
        raise NotImplementedError

    # ------------------------------------------------------------- NASSearch hooks
    def _propose(self) -> Arch | None:
        for _ in range(3):
            if self._generation is None:
                if self._stalled_at == len(self._seen):
                    break
                self._start_generation()
                if self._generation is None:
                    break
            arch = self._hand_out()
            if arch is not None:
                return arch
            if not self._is_complete():
                if self._waits_on_pending():
                    return None
                self._fail_orphans()
            self._finish_generation()
        # nothing new to breed: the base dedupes this and proves exhaustion
        return self.space.sample(self._rng)

    def _record(
        self, arch: Arch, result: Mapping[str, Any] | None, error: bool, trial_id: str
    ) -> None:
        # constrained keys outside the objectives are only in the raw result
        self._result = result
        try:
            super()._record(arch, result, error, trial_id)
        finally:
            self._result = None

    def _observe_outcome(self, arch: Arch, outcome: Outcome | None) -> None:
        key = self.space.canonical(arch)
        entry = Evaluated(self.space.to_string(arch))
        if outcome is not None and self._result is not None:
            entry.values = [float(v) for v in outcome.values]
            entry.signed = [float(v) for v in outcome.signed]
            entry.scalar = float(outcome.scalar)
            entry.violation = float(outcome.violation)
            entry.G = constraint_vector(self.objectives.constraints, self._result)
        previous = self._archive.get(key)
        known = previous is not None and previous.values is not None
        if known and entry.values is None:
            return  # a later failure of a known architecture does not erase its result
        self._archive[key] = entry
        filled = False
        if self._generation is not None:
            for member, member_key in zip(self._generation["members"], self._keys):
                if member[1] != DONE and member_key == key:
                    member[1] = DONE
                    filled = True
        if not filled and not known and entry.values is not None and key not in self._extras:
            self._extras.append(key)
        if filled and self._settled():
            # tell the optimiser now, not at the next suggest: its population is then
            # current, and a search ending on a full generation still learns from it
            self._finish_generation()

    # ------------------------------------------------------------ generations
    def _start_generation(self) -> None:
        seed = int(self._rng.integers(2**63))
        rows = self._breed(seed) or self._immigrants(self._batch_size())
        if not rows:
            self._stalled_at = len(self._seen)
            return
        self._stalled_at = None
        self._generation = {"seed": seed, "members": [[list(r), TODO] for r in rows]}
        self._keys = [self.vector_key(r) for r in rows]

    def _immigrants(self, n: int) -> list[list[Any]]:
        """Up to ``n`` uniformly sampled, distinct, unseen architectures."""
        rows: list[list[Any]] = []
        taken: set[str] = set()
        for _ in range(20 * n):
            arch = self.space.sample(self._rng)
            key = self.space.canonical(arch)
            if key not in self._seen and key not in taken:
                taken.add(key)
                rows.append(self.genes(self.space.encode(arch)))
                if len(rows) == n:
                    break
        return rows

    def _hand_out(self) -> Arch | None:
        assert self._generation is not None
        for member, key in zip(self._generation["members"], self._keys):
            if member[1] != TODO:
                continue
            if key in self._archive:
                member[1] = DONE  # a repeat: its known result counts
                continue
            member[1] = OUT
            if key not in self._seen:
                return self.space.decode(member[0])
            # else: suggested but not reported yet; that trial's result fills this member
        return None

    def _settled(self) -> bool:
        """Whether every member has reported or repeats a known result (marking the repeats)."""
        assert self._generation is not None
        members = list(zip(self._generation["members"], self._keys))
        if any(m[1] != DONE and not (m[1] == TODO and k in self._archive) for m, k in members):
            return False
        for member, _ in members:
            member[1] = DONE
        return True

    def _is_complete(self) -> bool:
        assert self._generation is not None
        return all(m[1] == DONE for m in self._generation["members"])

    def _waits_on_pending(self) -> bool:
        assert self._generation is not None
        pending = {self.space.canonical(self.space.from_string(t)) for t in self._pending.values()}
        return any(
            m[1] == OUT and key in pending
            for m, key in zip(self._generation["members"], self._keys)
        )

    def _fail_orphans(self) -> None:
        # members waiting on a result that no pending trial will deliver count as failed
        assert self._generation is not None
        for member in self._generation["members"]:
            if member[1] == OUT:
                logger.warning("%s: generation member %s has no pending trial", self, member[0])
                member[1] = DONE

    def _finish_generation(self) -> None:
        assert self._generation is not None
        pairs = [
            (list(m[0]), self._archive.get(k))
            for m, k in zip(self._generation["members"], self._keys)
        ]
        pairs += [(self._encode(self._archive[k].text), self._archive[k]) for k in self._extras]
        rows = [(x, e) for x, e in pairs if e is not None and e.values is not None]
        seed = int(self._generation["seed"])
        self._generation, self._keys, self._extras = None, [], []
        if rows:
            self._survive(seed, rows)

    # ---------------------------------------------------------------- helpers
    def vector_key(self, vector: Sequence[float] | np.ndarray) -> str:
        """Canonical form of a gene vector (cached)."""
        return _vector_key(self.space, tuple(self.genes(vector)))

    def genes(self, vector: Sequence[float] | np.ndarray) -> list[Any]:
        """A gene vector as JSON-friendly numbers: ints for index genes, floats for the rest."""
        cached = self.__dict__.get("_mask")
        if cached is None or cached[0] is not self.space:
            cached = self._mask = (self.space, self.space.gene_integral)
        integral = cached[1]
        if integral.all():
            return [int(v) for v in vector]
        return [int(round(float(v))) if f else float(v) for v, f in zip(vector, integral,
                                                                         strict=True)]

    def _encode(self, text: str) -> list[Any]:
        return self.genes(self.space.encode(self.space.from_string(text)))

    def pareto_front(self) -> list[tuple[Arch, dict[str, float]]]:
        """Non-dominated evaluated architectures with their metric values.

        Only feasible ones when any evaluated architecture meets every constraint; else the
        non-dominated among the least violating ones.
        """
        rows = [e for e in self._archive.values() if e.signed is not None]
        if not rows:
            return []
        least = min(e.violation for e in rows)
        rows = [e for e in rows if e.violation <= least]
        mask = pareto_mask(-1.0 * _matrix([e.signed or [] for e in rows]))
        metrics = self.objectives.metrics
        return [
            (self.space.from_string(e.text), dict(zip(metrics, e.values or [])))
            for e, keep in zip(rows, mask)
            if keep
        ]

    def _get_state(self) -> dict[str, Any]:
        generation = None
        if self._generation is not None:  # a copy: the live members keep changing
            members = [[list(x), s] for x, s in self._generation["members"]]
            generation = {"seed": self._generation["seed"], "members": members}
        return {
            "archive": [e.to_json() for e in self._archive.values()],
            "extras": [self._archive[k].text for k in self._extras],
            "generation": generation,
            "stalled_at": self._stalled_at,
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        self._archive = {}
        for row in state["archive"]:
            entry = Evaluated.from_json(row)
            self._archive[self.space.canonical(self.space.from_string(entry.text))] = entry
        self._extras = [self.space.canonical(self.space.from_string(t)) for t in state["extras"]]
        generation = state["generation"]
        if generation is None:
            self._generation, self._keys = None, []
        else:
            vectors = [self.genes(x) for x, _ in generation["members"]]
            states = [int(s) for _, s in generation["members"]]
            self._generation = {
                "seed": int(generation["seed"]),
                "members": [[x, s] for x, s in zip(vectors, states)],
            }
            self._keys = [self.vector_key(x) for x in vectors]
        stalled = state["stalled_at"]
        self._stalled_at = None if stalled is None else int(stalled)


@lru_cache(maxsize=65536)
def _vector_key(space: SearchSpace, vector: tuple[Any, ...]) -> str:
    return space.canonical(space.decode(vector))


def _matrix(rows: list[list[float]]) -> Any:
    import numpy as np

    return np.array(rows, dtype=float)
