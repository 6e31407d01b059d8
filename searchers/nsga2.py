"""NSGA-II through pymoo's ask/tell interface (Deb et al., IEEE TEC 2002)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np

from searchers._generational import Evaluated, GenerationalSearch
from spaces import Arch, SearchSpace

logger = logging.getLogger(__name__)

CROSSOVERS = ("sbx", "uniform", "two_point")
MUTATIONS = ("pm", "random")


def objective_vector(signed: Sequence[float]) -> list[float]:
    """pymoo's ``F`` of a trial: its signed (higher-is-better) objectives negated."""
    return [-float(v) for v in signed]


def make_problem(dims: Sequence[int], n_obj: int, n_constr: int) -> Any:
    """The pymoo ``Problem`` of a space's integer encoding (never evaluated by pymoo)."""
    from pymoo.core.problem import Problem
    from pymoo.core.variable import Integer

    upper = [int(d) - 1 for d in dims]
    return Problem(
        n_var=len(dims),
        n_obj=n_obj,
        n_ieq_constr=n_constr,
        xl=np.zeros(len(dims), dtype=int),
        xu=np.array(upper, dtype=int),
        vtype=int,
        # explicit variables let ChoiceRandomMutation draw each gene from its own range
        vars={f"x{i}": Integer(bounds=(0, u)) for i, u in enumerate(upper)},
    )


def make_algorithm(
    *,
    pop_size: int,
    n_offsprings: int,
    crossover: str,
    mutation: str,
    crossover_prob: float,
    mutation_prob: float | None,
    eta: float,
    key: Callable[[Any], str],
    known: Callable[[], Collection[str]],
) -> Any:
    """pymoo's NSGA2 with integer operators and duplicate elimination by ``key``.

    Duplicates are architectures with the same ``key`` (canonical form) within a batch,
    in the population, or in ``known()`` (everything already suggested), so each ask only
    proposes networks never evaluated before.
    """
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.duplicate import DuplicateElimination
    from pymoo.operators.crossover.pntx import TwoPointCrossover
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.crossover.ux import UniformCrossover
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.mutation.rm import ChoiceRandomMutation
    from pymoo.operators.repair.rounding import RoundingRepair
    from pymoo.operators.sampling.rnd import IntegerRandomSampling

    class CanonicalDuplicates(DuplicateElimination):  # type: ignore[misc]
        def _do(self, pop: Any, other: Any, is_duplicate: np.ndarray) -> np.ndarray:
            seen = known() if other is None else {key(x) for x in other.get("X")}
            batch: set[str] = set()
            for i, x in enumerate(pop.get("X")):
                k = key(x)
                if k in seen or k in batch:
                    is_duplicate[i] = True
                batch.add(k)
            return is_duplicate

    if crossover == "sbx":
        cx: Any = SBX(prob=crossover_prob, eta=eta, vtype=float, repair=RoundingRepair())
    elif crossover == "uniform":
        cx = UniformCrossover(prob=crossover_prob)
    else:
        cx = TwoPointCrossover(prob=crossover_prob)
    if mutation == "pm":
        mut: Any = PM(
            prob=1.0, prob_var=mutation_prob, eta=eta, vtype=float, repair=RoundingRepair()
        )
    else:
        mut = ChoiceRandomMutation(prob=1.0, prob_var=mutation_prob)
    return NSGA2(
        pop_size=pop_size,
        n_offsprings=n_offsprings,
        sampling=IntegerRandomSampling(),
        crossover=cx,
        mutation=mut,
        eliminate_duplicates=CanonicalDuplicates(),
    )


class NSGA2Search(GenerationalSearch):
    """NSGA-II (pymoo's ``NSGA2``, ask/tell) over the space's integer encoding.

    Each ``ask()`` of pymoo is one generation; its members are handed out one per
    ``suggest``. ``suggest`` returns ``None`` (wait) once every member is out and some
    have not reported; the generation is told to pymoo (``tell``) when all have reported,
    in any order. Members whose trial failed (error, NaN, missing metric) are left out of
    the ``tell``, so they never enter the population. pymoo minimises: ``F`` is each
    objective turned into "lower is better"; constraints are ``G <= 0`` relative to their
    bounds (``searchers._generational.constraint_vector``), handled by NSGA-II's
    constraint domination.

    Duplicates: pymoo's duplicate elimination compares canonical forms, against the batch,
    the population and every architecture already suggested, so an ask proposes only new
    networks. A member that repeats an architecture suggested after the ask takes the
    known result (or waits for that trial). Results from outside the generation
    (``add_evaluated_point``, warm starts) join the next ``tell`` as extra infills, so they
    compete for the population. When an ask brings nothing new (tiny or exhausted
    spaces), uniformly sampled unseen architectures form the generation.

    State: every ``tell`` is recorded (seed, ``X``, ``F``, ``G``) and the pymoo algorithm
    is rebuilt on restore by replaying those tells. Each ask and each tell runs on a fresh
    ``numpy`` generator seeded from the searcher's RNG (pymoo 0.6 draws all randomness
    from ``algorithm.random_state``), so runs are reproducible, restorable, and no global
    RNG is touched.

    With one metric NSGA-II is a (mu + lambda) GA with binary tournaments. ``best`` is by
    the scalarised score; ``pareto_front()`` gives the non-dominated evaluated archs.

    Paper: K. Deb, A. Pratap, S. Agarwal, T. Meyarivan, "A fast and elitist multiobjective
    genetic algorithm: NSGA-II", IEEE Transactions on Evolutionary Computation 6(2), 2002.

    Args:
        space: the search space.
        pop_size: NSGA-II's population size.
        n_offsprings: members per generation (default ``pop_size``).
        crossover: ``"sbx"`` (simulated binary on the integer vector, rounded, as pymoo
            documents for integer problems), ``"uniform"`` or ``"two_point"``.
        mutation: ``"pm"`` (polynomial, rounded) or ``"random"`` (a gene redrawn
            uniformly, pymoo's ``ChoiceRandomMutation``).
        crossover_prob: probability that a mating crosses over.
        mutation_prob: per-gene mutation probability (default ``1 / len(space.dims)``).
        eta: distribution index of SBX and PM (small = wide jumps over the indices).
        **kwargs: ``metric``, ``mode``, ``seed``, ``max_trials``, ``constraints``
            (see ``NASSearch``).

    Example:
        >>> from spaces import create_space
        >>> s = NSGA2Search(create_space("nb201"), metric=["acc", "latency"],
        ...                 mode=["max", "min"], pop_size=10, seed=0)
        >>> config = s.suggest("t1")
        >>> s.on_trial_complete("t1", {"acc": 90.0, "latency": 5.0})
        >>> len(s.pareto_front())
        1
    """

    def __init__(
        self,
        space: SearchSpace,
        *,
        pop_size: int = 20,
        n_offsprings: int | None = None,
        crossover: str = "sbx",
        mutation: str = "pm",
        crossover_prob: float = 0.9,
        mutation_prob: float | None = None,
        eta: float = 3.0,
        **kwargs: Any,
    ) -> None:
        self._options = _check_options(
            pop_size=pop_size,
            n_offsprings=pop_size if n_offsprings is None else n_offsprings,
            crossover=crossover,
            mutation=mutation,
            crossover_prob=crossover_prob,
            mutation_prob=mutation_prob,
            eta=eta,
        )
        super().__init__(space, **kwargs)
        self._algorithm: Any = None
        self._history: list[dict[str, Any]] = []  # every tell: seed, X, F, G

    # ------------------------------------------------------- generation hooks
    def _batch_size(self) -> int:
        return int(self._options["n_offsprings"])

    def _breed(self, seed: int) -> list[list[int]]:
        algorithm = self._ensure_algorithm()
        algorithm.random_state = np.random.default_rng([seed, 0])
        pop = algorithm.ask()
        # an empty mating makes pymoo flag termination; this ask/tell loop never terminates
        algorithm.termination.force_termination = False
        if pop is None or len(pop) == 0:
            return []
        return [[int(v) for v in x] for x in pop.get("X")]

    def _survive(self, seed: int, rows: list[tuple[list[int], Evaluated]]) -> None:
        told = {
            "seed": seed,
            "X": [x for x, _ in rows],
            "F": [objective_vector(e.signed or []) for _, e in rows],
            "G": [list(e.G or []) for _, e in rows],
        }
        self._tell(self._ensure_algorithm(), told)
        self._history.append(told)

    # ------------------------------------------------------------------ pymoo
    def _tell(self, algorithm: Any, told: Mapping[str, Any]) -> None:
        from pymoo.core.population import Population

        pop = Population.new(X=np.array(told["X"], dtype=int), F=np.array(told["F"], dtype=float))
        if self.objectives.constraints:
            pop.set("G", np.array(told["G"], dtype=float))
        algorithm.random_state = np.random.default_rng([told["seed"], 1])
        algorithm.tell(infills=pop)

    def _ensure_algorithm(self) -> Any:
        """The pymoo algorithm, rebuilt by replaying the recorded tells when needed."""
        if self._algorithm is not None:
            return self._algorithm
        from pymoo.core.termination import NoTermination

        problem = make_problem(
            self.space.dims, len(self.objectives.metrics), len(self.objectives.constraints)
        )
        algorithm = make_algorithm(**self._options, key=self.vector_key, known=lambda: self._seen)
        algorithm.setup(problem, termination=NoTermination(), seed=0)
        for told in self._history:
            self._tell(algorithm, told)
        self._algorithm = algorithm
        return algorithm

    @property
    def population(self) -> list[tuple[Arch, dict[str, float]]]:
        """NSGA-II's population after the last ``tell``, with metric values."""
        if not self._history:
            return []
        out = []
        for x in self._ensure_algorithm().pop.get("X"):
            entry = self._archive[self.vector_key(x)]
            values = dict(zip(self.objectives.metrics, entry.values or []))
            out.append((self.space.decode(x), values))
        return out

    @property
    def generation(self) -> int:
        """Number of generations told to pymoo so far."""
        return len(self._history)

    # -------------------------------------------------------------------- state
    def _get_state(self) -> dict[str, Any]:
        state = super()._get_state()
        state["options"] = dict(self._options)
        state["history"] = list(self._history)  # tells are never changed once made
        return state

    def _set_state(self, state: dict[str, Any]) -> None:
        super()._set_state(state)
        self._options = _check_options(**state["options"])
        self._history = [
            {"seed": int(t["seed"]), "X": t["X"], "F": t["F"], "G": t["G"]}
            for t in state["history"]
        ]
        self._algorithm = None  # rebuilt from the history on first use


def _check_options(
    *,
    pop_size: int,
    n_offsprings: int,
    crossover: str,
    mutation: str,
    crossover_prob: float,
    mutation_prob: float | None,
    eta: float,
) -> dict[str, Any]:
    for name, value in (("pop_size", pop_size), ("n_offsprings", n_offsprings)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise ValueError(f"{name} must be an integer >= 2, got {value!r}")
    if crossover not in CROSSOVERS:
        raise ValueError(f"crossover must be one of {CROSSOVERS}, got {crossover!r}")
    if mutation not in MUTATIONS:
        raise ValueError(f"mutation must be one of {MUTATIONS}, got {mutation!r}")
    if not 0.0 <= crossover_prob <= 1.0:
        raise ValueError(f"crossover_prob must be in [0, 1], got {crossover_prob!r}")
    if mutation_prob is not None and not 0.0 < mutation_prob <= 1.0:
        raise ValueError(f"mutation_prob must be in (0, 1] or None, got {mutation_prob!r}")
    if not eta > 0:
        raise ValueError(f"eta must be > 0, got {eta!r}")
    return {
        "pop_size": pop_size,
        "n_offsprings": n_offsprings,
        "crossover": crossover,
        "mutation": mutation,
        "crossover_prob": float(crossover_prob),
        "mutation_prob": None if mutation_prob is None else float(mutation_prob),
        "eta": float(eta),
    }
