"""NSGA-II through pymoo's ask/tell interface (Deb et al., IEEE TEC 2002)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np

from searchers._base import renamed_option
from searchers._generational import Evaluated, GenerationalSearch
from spaces import Arch, SearchSpace

logger = logging.getLogger(__name__)

CROSSOVERS = ("sbx", "uniform", "two_point")
MUTATIONS = ("pm", "random")
DISCRETE_ETA = 3.0  # SBX/PM distribution index on index genes (wide jumps over indices)


def objective_vector(signed: Sequence[float]) -> list[float]:
    """pymoo's ``F`` of a trial: its signed (higher-is-better) objectives negated."""
    return [-float(v) for v in signed]


def make_problem(
    upper: Sequence[float] | np.ndarray, integral: Sequence[bool], n_obj: int, n_constr: int
) -> Any:
    """The pymoo ``Problem`` of a space's gene encoding (never evaluated by pymoo).

    Index genes are pymoo ``Integer`` variables on ``[0, upper]``; continuous genes ``Real``
    variables on ``[0, 1]``.
    """
    from pymoo.core.problem import Problem
    from pymoo.core.variable import Integer, Real

    discrete = all(integral)
    n = len(upper)
    return Problem(
        n_var=n,
        n_obj=n_obj,
        n_ieq_constr=n_constr,
        xl=np.zeros(n, dtype=int if discrete else float),
        xu=np.array([int(u) if discrete else float(u) for u in upper]),
        vtype=int if discrete else float,
        # explicit variables let ChoiceRandomMutation draw each gene from its own range
        vars={
            f"x{i}": Integer(bounds=(0, int(u))) if f else Real(bounds=(0.0, float(u)))
            for i, (u, f) in enumerate(zip(upper, integral, strict=True))
        },
    )


def _round_index_genes(integral: Sequence[bool]) -> Any:
    """pymoo repair rounding the index genes only (all of them: pymoo's ``RoundingRepair``)."""
    from pymoo.core.repair import NoRepair, Repair
    from pymoo.operators.repair.rounding import RoundingRepair

    mask = np.asarray(integral, dtype=bool)
    if mask.all():
        return RoundingRepair()
    if not mask.any():
        return NoRepair()

    class IndexRounding(Repair):  # type: ignore[misc]
        def _do(self, problem: Any, X: np.ndarray, **kwargs: Any) -> np.ndarray:
            X = np.asarray(X, dtype=float).copy()
            X[:, mask] = np.round(X[:, mask])
            return X

    return IndexRounding()


def make_algorithm(
    *,
    population_size: int,
    n_offsprings: int,
    crossover: str,
    mutation: str,
    crossover_prob: float,
    gene_prob: float | None,
    eta: float | None,
    key: Callable[[Any], str],
    known: Callable[[], Collection[str]],
    integral: Sequence[bool] = (),
) -> Any:
    """pymoo's NSGA2 with duplicate elimination by ``key``.

    Operators on index genes are rounded (pymoo's documented set-up for integer problems);
    continuous genes keep pymoo's real-valued operators. ``eta`` defaults to 3 on a purely
    discrete encoding and to pymoo's own defaults (SBX 15, PM 20) otherwise.

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
    from pymoo.operators.sampling.rnd import FloatRandomSampling, IntegerRandomSampling

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

    discrete = all(integral) if integral else True
    eta_cx = eta if eta is not None else (DISCRETE_ETA if discrete else 15.0)
    eta_mut = eta if eta is not None else (DISCRETE_ETA if discrete else 20.0)
    if crossover == "sbx":
        cx: Any = SBX(prob=crossover_prob, eta=eta_cx, vtype=float,
                      repair=_round_index_genes(integral or [True]))
    elif crossover == "uniform":
        cx = UniformCrossover(prob=crossover_prob)
    else:
        cx = TwoPointCrossover(prob=crossover_prob)
    if mutation == "pm":
        # every child mutated on discrete encodings; pymoo's own 0.9 with continuous genes
        mut: Any = PM(
            prob=1.0 if discrete else 0.9, prob_var=gene_prob, eta=eta_mut, vtype=float,
            repair=_round_index_genes(integral or [True]),
        )
    else:
        mut = ChoiceRandomMutation(prob=1.0, prob_var=gene_prob)
    return NSGA2(
        pop_size=population_size,
        n_offsprings=n_offsprings,
        sampling=IntegerRandomSampling() if discrete else FloatRandomSampling(),
        crossover=cx,
        mutation=mut,
        eliminate_duplicates=CanonicalDuplicates(),
    )


class NSGA2Search(GenerationalSearch):
    """NSGA-II (pymoo's ``NSGA2``, ask/tell) over the space's gene encoding.

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

    Continuous decisions (a ``ParamSpace`` with ``uniform`` / ``loguniform`` domains) are
    pymoo ``Real`` genes on [0, 1] (log scale for log domains) with pymoo's real-valued SBX
    and polynomial mutation; index genes are rounded after each operator.

    Args:
        space: the search space, a Tune param-space dict, or None (taken from Tune).
        population_size: NSGA-II's population size (``pop_size`` is its deprecated name).
        n_offsprings: members per generation (default ``population_size``).
        crossover: ``"sbx"`` (simulated binary; rounded on index genes, as pymoo
            documents for integer problems), ``"uniform"`` or ``"two_point"``.
        mutation: ``"pm"`` (polynomial, rounded on index genes) or ``"random"`` (a gene
            redrawn uniformly, pymoo's ``ChoiceRandomMutation``).
        crossover_prob: probability that a mating crosses over.
        gene_prob: per-gene mutation probability (default ``1 / len(genes)``;
            ``mutation_prob`` is its deprecated name).
        eta: distribution index of SBX and PM (small = wide jumps); default 3 on discrete
            encodings, pymoo's 15 (SBX) and 20 (PM) when the space has continuous genes.
        **kwargs: ``metric``, ``mode``, ``seed``, ``max_trials``, ``constraints``
            (see ``NASSearch``).

    Example:
        >>> from spaces import create_space
        >>> s = NSGA2Search(create_space("nb201"), metric=["acc", "latency"],
        ...                 mode=["max", "min"], population_size=10, seed=0)
        >>> config = s.suggest("t1")
        >>> s.on_trial_complete("t1", {"acc": 90.0, "latency": 5.0})
        >>> len(s.pareto_front())
        1
    """

    _transient = ("_algorithm",)

    def __init__(
        self,
        space: SearchSpace | Mapping[str, Any] | None = None,
        *,
        population_size: int = 20,
        n_offsprings: int | None = None,
        crossover: str = "sbx",
        mutation: str = "pm",
        crossover_prob: float = 0.9,
        gene_prob: float | None = None,
        eta: float | None = None,
        **kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        population_size = renamed_option(
            kwargs, "pop_size", "population_size", population_size, owner
        )
        gene_prob = renamed_option(kwargs, "mutation_prob", "gene_prob", gene_prob, owner)
        self._options = _check_options(
            population_size=population_size,
            n_offsprings=population_size if n_offsprings is None else n_offsprings,
            crossover=crossover,
            mutation=mutation,
            crossover_prob=crossover_prob,
            gene_prob=gene_prob,
            eta=eta,
        )
        self._algorithm: Any = None
        self._history: list[dict[str, Any]] = []  # every tell: seed, X, F, G
        super().__init__(space, **kwargs)

    # ------------------------------------------------------- generation hooks
    def _batch_size(self) -> int:
        return int(self._options["n_offsprings"])

    def _breed(self, seed: int) -> list[list[Any]]:
        algorithm = self._ensure_algorithm()
        algorithm.random_state = np.random.default_rng([seed, 0])
        pop = algorithm.ask()
        # an empty mating makes pymoo flag termination; this ask/tell loop never terminates
        algorithm.termination.force_termination = False
        if pop is None or len(pop) == 0:
            return []
        return [self.genes(x) for x in pop.get("X")]

    def _survive(self, seed: int, rows: list[tuple[list[Any], Evaluated]]) -> None:
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

        dtype = int if self.space.gene_integral.all() else float
        pop = Population.new(X=np.array(told["X"], dtype=dtype),
                             F=np.array(told["F"], dtype=float))
        if self.objectives.constraints:
            pop.set("G", np.array(told["G"], dtype=float))
        algorithm.random_state = np.random.default_rng([told["seed"], 1])
        algorithm.tell(infills=pop)

    def _ensure_algorithm(self) -> Any:
        """The pymoo algorithm, rebuilt by replaying the recorded tells when needed."""
        if self._algorithm is not None:
            return self._algorithm
        from pymoo.core.termination import NoTermination

        integral = [bool(f) for f in self.space.gene_integral]
        problem = make_problem(
            self.space.gene_upper, integral, len(self.objectives.metrics),
            len(self.objectives.constraints),
        )
        algorithm = make_algorithm(**self._options, key=self.vector_key,
                                   known=lambda: self._seen, integral=integral)
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
        options = dict(state["options"])
        for old, new in (("pop_size", "population_size"), ("mutation_prob", "gene_prob")):
            if old in options:  # states saved before the options were renamed
                options[new] = options.pop(old)
        self._options = _check_options(**options)
        self._history = [
            {"seed": int(t["seed"]), "X": t["X"], "F": t["F"], "G": t["G"]}
            for t in state["history"]
        ]
        self._algorithm = None  # rebuilt from the history on first use


def _check_options(
    *,
    population_size: int,
    n_offsprings: int,
    crossover: str,
    mutation: str,
    crossover_prob: float,
    gene_prob: float | None,
    eta: float | None,
) -> dict[str, Any]:
    for name, value in (("population_size", population_size), ("n_offsprings", n_offsprings)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise ValueError(f"{name} must be an integer >= 2, got {value!r}")
    if crossover not in CROSSOVERS:
        raise ValueError(f"crossover must be one of {CROSSOVERS}, got {crossover!r}")
    if mutation not in MUTATIONS:
        raise ValueError(f"mutation must be one of {MUTATIONS}, got {mutation!r}")
    if not 0.0 <= crossover_prob <= 1.0:
        raise ValueError(f"crossover_prob must be in [0, 1], got {crossover_prob!r}")
    if gene_prob is not None and not 0.0 < gene_prob <= 1.0:
        raise ValueError(f"gene_prob must be in (0, 1] or None, got {gene_prob!r}")
    if eta is not None and not eta > 0:
        raise ValueError(f"eta must be > 0 or None, got {eta!r}")
    return {
        "population_size": population_size,
        "n_offsprings": n_offsprings,
        "crossover": crossover,
        "mutation": mutation,
        "crossover_prob": float(crossover_prob),
        "gene_prob": None if gene_prob is None else float(gene_prob),
        "eta": None if eta is None else float(eta),
    }
