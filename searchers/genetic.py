"""A configurable generational genetic algorithm on DEAP (Fortin et al., JMLR 2012)."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from searchers._base import renamed_option
from searchers._generational import (
    Evaluated,
    GenerationalSearch,
    constraint_vector,
)
from spaces import Arch, SearchSpace

logger = logging.getLogger(__name__)

SELECTIONS = ("tournament", "nsga2")
CROSSOVERS = ("uniform", "two_point", "sbx")
REAL_ETA = 20.0  # DEAP's NSGA-II example: SBX and polynomial mutation, eta 20
SURVIVORS = ("plus", "generational")
_BREED_TRIES = 100

__all__ = ["GeneticSearch", "constraint_vector", "seeded_global_random", "select_dcd"]


@contextmanager
def seeded_global_random(seed: int) -> Iterator[None]:
    """Run a block with Python's global ``random`` seeded, then put its old state back.

    DEAP's operators draw from the global module; this keeps them reproducible from the
    searcher's own RNG without leaving the caller's global state changed.
    """
    saved = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(saved)



@lru_cache(maxsize=None)
def _fitness_class(n_obj: int) -> type:
    """A DEAP fitness maximising ``n_obj`` values, without ``creator``'s global classes."""
    from deap import base

    return type(f"Fitness{n_obj}", (base.Fitness,), {"weights": (1.0,) * n_obj})


class _Individual(list):  # type: ignore[type-arg]
    """A gene vector with the ``fitness`` attribute DEAP's operators read."""

    fitness: Any


def mate_mixed(
    a: list[Any], b: list[Any], *, integral: Sequence[bool], crossover: str, eta: float
) -> tuple[list[Any], list[Any]]:
    """DEAP crossover on a vector of index and continuous genes, in place.

    ``"sbx"``: ``cxSimulatedBinaryBounded`` on the continuous genes (on [0, 1]) and
    ``cxUniform`` on the index genes; ``"uniform"`` / ``"two_point"`` on every gene.
    """
    from deap import tools

    if crossover == "two_point" and len(a) >= 2:
        tools.cxTwoPoint(a, b)
        return a, b
    if crossover != "sbx":
        tools.cxUniform(a, b, indpb=0.5)
        return a, b
    for select, op in ((False, "sbx"), (True, "uniform")):
        idx = [i for i, f in enumerate(integral) if f == select]
        if not idx:
            continue
        sa, sb = [a[i] for i in idx], [b[i] for i in idx]
        if op == "sbx":
            tools.cxSimulatedBinaryBounded(sa, sb, eta=eta, low=0.0, up=1.0)
        else:
            tools.cxUniform(sa, sb, indpb=0.5)
        for j, i in enumerate(idx):
            a[i], b[i] = sa[j], sb[j]
    return a, b


def mutate_mixed(
    ind: list[Any], *, integral: Sequence[bool], upper: Sequence[float], indpb: float, eta: float
) -> tuple[list[Any]]:
    """DEAP mutation per gene type, in place: ``mutUniformInt`` on index genes,
    ``mutPolynomialBounded`` on continuous genes (on [0, 1])."""
    from deap import tools

    for select in (True, False):
        idx = [i for i, f in enumerate(integral) if f == select]
        if not idx:
            continue
        sub = [ind[i] for i in idx]
        if select:
            tools.mutUniformInt(sub, low=[0] * len(idx), up=[int(upper[i]) for i in idx],
                                indpb=indpb)
        else:
            tools.mutPolynomialBounded(sub, eta=eta, low=0.0, up=1.0, indpb=indpb)
        for j, i in enumerate(idx):
            ind[i] = sub[j]
    return (ind,)


class GeneticSearch(GenerationalSearch):
    """A generational genetic algorithm whose operators live in a DEAP ``Toolbox``.

    Generation 0 samples ``population_size`` architectures uniformly. Each later
    generation selects parents (``tools.selTournament`` with ``tournament_size``, or, with
    ``selection="nsga2"``, ``tools.selTournamentDCD`` after ``tools.selNSGA2`` has ranked
    the population) and varies them with DEAP's ``algorithms.varAnd``: crossover
    (``tools.cxUniform``, ``tools.cxTwoPoint``, or ``"sbx"``: ``cxSimulatedBinaryBounded``
    on continuous genes) with ``crossover_prob``, then mutation with ``mut_prob`` and
    per-gene probability ``gene_prob``: ``tools.mutUniformInt`` on index genes,
    ``tools.mutPolynomialBounded`` on the continuous genes of a ``ParamSpace`` (both
    with eta 20 as DEAP's NSGA-II example). Children already suggested (by canonical form) are bred
    again, up to 100 rounds. Survivors: ``"plus"`` keeps the best ``population_size`` of
    parents and children (``tools.selBest``, or ``tools.selNSGA2`` on the signed
    objectives: NSGA-II); ``"generational"`` replaces the parents by the children and keeps
    the ``elitism`` best parents (``tools.selBest``). Constraints enter fitness as the
    base's penalty (the scalar score; ``signed - penalty * violation`` per objective for
    NSGA-II). Trials run asynchronously as in ``GenerationalSearch``.

    DEAP draws from Python's global ``random``; each breeding and survival step runs with
    it seeded from the searcher's RNG and restores it afterwards.

    Paper: F.-A. Fortin, F.-M. De Rainville, M.-A. Gardner, M. Parizeau, C. Gagné,
    "DEAP: Evolutionary Algorithms Made Easy", JMLR 13, 2012.

    Args:
        space: the search space, a Tune param-space dict, or None (taken from Tune).
        population_size: individuals kept between generations (mu).
        selection: ``"tournament"`` (scalar score) or ``"nsga2"`` (every objective).
        tournament_size: tournament size of ``selTournament`` (``tournsize`` is its
            deprecated name).
        crossover: ``"uniform"`` (``cxUniform``, each gene swapped with probability 0.5),
            ``"two_point"`` or ``"sbx"``; default ``"uniform"`` on discrete spaces and
            ``"sbx"`` when the space has continuous genes.
        crossover_prob: probability that a pair of parents is crossed (``cx_prob`` is its
            deprecated name).
        mut_prob: probability that a child is mutated.
        gene_prob: per-gene probability of ``mutUniformInt`` (default ``1 / len(dims)``).
        survivors: ``"plus"`` (mu + lambda) or ``"generational"`` (with ``elitism``).
        elitism: best parents kept by ``"generational"`` survival.
        **kwargs: ``metric``, ``mode``, ``seed``, ``max_trials``, ``constraints``, ...

    Example:
        >>> from spaces import create_space
        >>> s = GeneticSearch(create_space("nb201"), metric="val_acc", mode="max",
        ...                   population_size=8, seed=0)
        >>> config = s.suggest("t1")
        >>> s.on_trial_complete("t1", {"val_acc": 90.0})
    """

    _transient = ("_toolbox",)

    def __init__(
        self,
        space: SearchSpace | Mapping[str, Any] | None = None,
        *,
        population_size: int = 20,
        selection: str = "tournament",
        tournament_size: int = 3,
        crossover: str | None = None,
        crossover_prob: float = 0.5,
        mut_prob: float = 0.5,
        gene_prob: float | None = None,
        survivors: str = "plus",
        elitism: int = 1,
        **kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        tournament_size = renamed_option(
            kwargs, "tournsize", "tournament_size", tournament_size, owner
        )
        crossover_prob = renamed_option(kwargs, "cx_prob", "crossover_prob", crossover_prob,
                                        owner)
        self._options = _check_options(
            population_size=population_size,
            selection=selection,
            tournament_size=tournament_size,
            crossover=crossover,
            crossover_prob=crossover_prob,
            mut_prob=mut_prob,
            gene_prob=gene_prob,
            survivors=survivors,
            elitism=elitism,
        )
        self._population: list[list[Any]] = []
        self._toolbox: Any = None
        super().__init__(space, **kwargs)

    # ----------------------------------------------------------------- GA steps
    def _batch_size(self) -> int:
        mu = int(self._options["population_size"])
        if not self._population or self._options["survivors"] == "plus":
            return mu
        return max(1, mu - int(self._options["elitism"]))

    def _breed(self, seed: int) -> list[list[Any]]:
        if not self._population:
            return []  # generation 0: uniform immigrants
        from deap import algorithms

        toolbox = self._get_toolbox()
        parents = self._individuals(
            [(x, self._archive[self.vector_key(x)]) for x in self._population]
        )
        n = self._batch_size()
        rows: list[list[Any]] = []
        taken: set[str] = set()
        with seeded_global_random(seed):
            if self._options["selection"] == "nsga2":
                toolbox.survive(parents, len(parents))  # assigns crowding distances
            for _ in range(_BREED_TRIES):
                chosen = toolbox.select(parents, n)
                offspring = algorithms.varAnd(
                    chosen, toolbox, self._options["crossover_prob"], self._options["mut_prob"]
                )
                for child in offspring:
                    key = self.vector_key(child)
                    if key not in self._seen and key not in taken and len(rows) < n:
                        taken.add(key)
                        rows.append(self.genes(child))
                if len(rows) >= n:
                    break
        return rows

    def _survive(self, seed: int, rows: list[tuple[list[Any], Evaluated]]) -> None:
        toolbox = self._get_toolbox()
        mu = int(self._options["population_size"])
        parents = self._individuals(
            [(x, self._archive[self.vector_key(x)]) for x in self._population]
        )
        children = self._individuals(rows)
        with seeded_global_random(seed + 1):
            if self._options["survivors"] == "plus":
                survivors = toolbox.survive(_unique(self, parents + children), mu)
            else:
                elite = toolbox.survive(parents, int(self._options["elitism"]))
                rest = _unique(self, children, exclude=elite)
                survivors = elite + toolbox.survive(rest, mu - len(elite))
        self._population = [self.genes(ind) for ind in survivors]

    def _individuals(self, rows: Sequence[tuple[Sequence[Any], Evaluated]]) -> list[Any]:
        nsga2 = self._options["selection"] == "nsga2"
        fitness = _fitness_class(len(self.objectives.metrics) if nsga2 else 1)
        penalty = self.objectives.penalty
        out = []
        for x, entry in rows:
            ind = _Individual(self.genes(x))
            if nsga2:
                values = tuple(s - penalty * entry.violation for s in entry.signed or [])
            else:
                values = (entry.scalar,)
            ind.fitness = fitness(values)
            out.append(ind)
        return out

    def _get_toolbox(self) -> Any:
        if self._toolbox is not None:
            return self._toolbox
        from deap import base, tools

        opts = self._options
        integral = [bool(f) for f in self.space.gene_integral]
        upper = [float(u) for u in self.space.gene_upper]
        n = len(integral)
        indpb = opts["gene_prob"] if opts["gene_prob"] is not None else 1.0 / n
        crossover = opts["crossover"] or ("uniform" if all(integral) else "sbx")
        toolbox = base.Toolbox()
        if all(integral) and crossover != "sbx":  # the discrete GA, as it always was
            if crossover == "two_point" and n >= 2:
                toolbox.register("mate", tools.cxTwoPoint)
            else:
                toolbox.register("mate", tools.cxUniform, indpb=0.5)
            toolbox.register("mutate", tools.mutUniformInt, low=[0] * n,
                             up=[int(u) for u in upper], indpb=indpb)
        else:
            toolbox.register("mate", mate_mixed, integral=integral, crossover=crossover,
                             eta=REAL_ETA)
            toolbox.register("mutate", mutate_mixed, integral=integral, upper=upper,
                             indpb=indpb, eta=REAL_ETA)
        if opts["selection"] == "nsga2":
            toolbox.register("select", select_dcd)
            toolbox.register("survive", tools.selNSGA2)
        else:
            toolbox.register("select", tools.selTournament, tournsize=opts["tournament_size"])
            toolbox.register("survive", tools.selBest)
        self._toolbox = toolbox
        return toolbox

    @property
    def population(self) -> list[tuple[Arch, dict[str, float]]]:
        """Current parents with their metric values."""
        out = []
        for x in self._population:
            entry = self._archive[self.vector_key(x)]
            values = dict(zip(self.objectives.metrics, entry.values or []))
            out.append((self.space.decode(x), values))
        return out

    def _get_state(self) -> dict[str, Any]:
        state = super()._get_state()
        state["options"] = dict(self._options)
        state["population"] = [list(x) for x in self._population]
        return state

    def _set_state(self, state: dict[str, Any]) -> None:
        super()._set_state(state)
        options = dict(state["options"])
        for old, new in (("tournsize", "tournament_size"), ("cx_prob", "crossover_prob")):
            if old in options:  # states saved before the options were renamed
                options[new] = options.pop(old)
        self._options = _check_options(**options)
        self._population = [self.genes(x) for x in state["population"]]
        self._toolbox = None


def select_dcd(individuals: Sequence[Any], k: int) -> list[Any]:
    """DEAP's ``selTournamentDCD`` for any ``k`` and population size.

    DEAP draws tournaments in blocks of four; this repeats blocks over the largest
    multiple of four in the population (random picks below four individuals).
    """
    from deap import tools

    if len(individuals) < 4:
        return list(tools.selRandom(individuals, k))
    block = len(individuals) // 4 * 4
    chosen: list[Any] = []
    while len(chosen) < k:
        chosen += tools.selTournamentDCD(individuals, block)
    return chosen[:k]


def _unique(
    searcher: GenerationalSearch, individuals: list[Any], exclude: Sequence[Any] = ()
) -> list[Any]:
    """``individuals`` without repeats of one computation (first kept)."""
    seen = {searcher.vector_key(ind) for ind in exclude}
    out = []
    for ind in individuals:
        key = searcher.vector_key(ind)
        if key not in seen:
            seen.add(key)
            out.append(ind)
    return out


def _check_options(
    *,
    population_size: int,
    selection: str,
    tournament_size: int,
    crossover: str | None,
    crossover_prob: float,
    mut_prob: float,
    gene_prob: float | None,
    survivors: str,
    elitism: int,
) -> dict[str, Any]:
    def integer(name: str, value: Any, low: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        return value

    integer("population_size", population_size, 2)
    integer("tournament_size", tournament_size, 1)
    integer("elitism", elitism, 0)
    if elitism >= population_size:
        raise ValueError(f"elitism must be < population_size={population_size}, got {elitism}")
    for name, value, allowed in (
        ("selection", selection, SELECTIONS),
        ("crossover", crossover, (*CROSSOVERS, None)),
        ("survivors", survivors, SURVIVORS),
    ):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    if selection == "nsga2" and survivors != "plus":
        raise ValueError(
            "selection='nsga2' selects survivors from parents and children: use survivors='plus'"
        )
    for name, prob in (("crossover_prob", crossover_prob), ("mut_prob", mut_prob)):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {prob!r}")
    if gene_prob is not None and not 0.0 < gene_prob <= 1.0:
        raise ValueError(f"gene_prob must be in (0, 1] or None, got {gene_prob!r}")
    return {
        "population_size": population_size,
        "selection": selection,
        "tournament_size": tournament_size,
        "crossover": crossover,
        "crossover_prob": float(crossover_prob),
        "mut_prob": float(mut_prob),
        "gene_prob": None if gene_prob is None else float(gene_prob),
        "survivors": survivors,
        "elitism": elitism,
    }
