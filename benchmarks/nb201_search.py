"""Every raynas searcher on a NAS-Bench-201 table, side by side with Optuna's.

Data: any NB201-style table (``--table``, default ``cifar10.csv`` of ``--data-dir``: the
NAS-Bench-201 CIFAR-10 table; CIFAR-100 and ImageNet16-120 exports work unchanged) with
``arch_str``, ``val_acc_200ep``, ``test_acc_200ep`` (``benchmarks/_nb201.py``). The data
name in the JSON (``data``) and in the printed lines is the file's name. Every landmark is
computed from the table given: the test accuracy at which its top 1% and top 0.1% start
(the ceil(f * n)-th highest test accuracy), its optimum, and the hypervolume reference.

Single-objective protocol (NAS-Bench-201 paper, Dong & Yang 2020): a searcher sees only
``val_acc_200ep``; the architecture it returns after ``q`` queries is the best by
``val_acc_200ep`` among its first ``q`` (first one on ties, as ``NASSearch.best``),
reported by ``test_acc_200ep``. Test accuracy is never used to select anything.

A query is a distinct architecture (by canonical form) for every method: a proposal that
repeats one already queried is answered from the evaluation cache (the value measured the
first time) and costs nothing. raynas searchers never repeat; Optuna does, and for it both
counts are reported (distinct queries and trials including repeats). An architecture the
table lacks (a table with a subset of the 15,625 rows) is told to the searcher as a failed
trial and is not a query; the Ray Tune check is then skipped.

Multi-objective protocol (issue 4): maximise ``val_acc_200ep``, minimise the Pixel 3
latency (``--latency``, default ``latency_ms.csv`` beside the table, column ``pixel3``,
joined on ``arch_str``, and checked against ``index`` when both files have it). A run's
front is the non-dominated set of its first ``q`` queries; its quality is pymoo's
hypervolume in the minimisation space (-val_acc, latency) with the reference point
(-median val_acc_200ep, max pixel3 latency) of the joined rows, each rounded up (away from
every point) to 3 decimals, which gives issue 4's (-86.93, 36.767) on CIFAR-10; as a
fraction of the hypervolume of the true front over every joined row. The part is skipped,
with the reason printed, when the latency file is absent, lacks ``arch_str`` or ``pixel3``,
or shares no architecture with the table.

Parts:
  1. single-objective, in-process (``suggest``/``on_trial_complete``): ``seeds`` runs of
     each raynas searcher (random, regularized evolution, REINFORCE, GreedyNAS seeded from
     a candidate pool, DEAP genetic) and ``optuna_seeds`` runs of Optuna's ``TPESampler``,
     300 queries each; test accuracy at 100 and 300 and the fraction of runs whose returned
     architecture is in the top 1% / 0.1% (``_top1pct_frac``, ``_top01pct_frac``). For
     every method ``<method>_queries_to_top1pct_median``: the median number of queries until
     the returned architecture is in the top 1% by test; runs not there by 300 queries go
     on, up to ``TOP1PCT_CAP`` (2,000) queries, and a run that never gets there counts as
     ``TOP1PCT_CAP + 1`` (beyond the budget; ``_censored`` says how many);
  2. multi-objective, in-process: ``mo_seeds`` runs of ``NSGA2Search``, of random search
     and of Optuna's ``NSGAIISampler`` (same population size), 1,000 queries each;
     hypervolume fraction of the front of the first 300 and 1,000 queries;
  3. the cost of one regularized-evolution ``suggest`` as the history grows (the
     ``mobilenet`` space with a synthetic score to 10,000 trials; NB201 to 6,000);
  4. the same search through Ray Tune (one trial at a time) must propose the same
     architectures and return the same one as the in-process run for the same seed.

GreedyNAS candidate pool ("greedypool"; You et al., "GreedyNAS: Towards Fast One-Shot NAS
with Greedy Supernet", CVPR 2020): GreedyNAS ranks paths by a supernet's validation loss
before it searches. Here each run first draws 300 architectures uniformly (its own random
stream, independent of the searcher's) among the rows with a ``val_acc_12ep`` value, ranks
them by it (the table's 12-epoch accuracy: a cheap low-fidelity signal a real search would
have, no test data) and hands them best first as ``candidates``; the searcher keeps the
first 20 distinct ones (``pool_k`` = population size) as its first population. Those
low-fidelity evaluations are not queries; their number and their cost in full trainings
(12/200 each: 300 cost 18) are reported (``greedypool_lowfi_evals``,
``greedypool_lowfi_cost_in_full_trainings``). The 20 pool members are suggested and each
counts as a query. Without a ``val_acc_12ep`` column, or with fewer than half its cells
filled, greedypool is skipped with the reason printed.

Optuna peers: ``TPESampler(seed=s)`` on six categorical parameters ``op/0`` .. ``op/5``
(one per NB201 edge, the raynas config keys), and ``NSGAIISampler(seed=s,
population_size=20)`` with ``directions=["maximize", "minimize"]``, both with their other
settings at the defaults, driven through ``study.ask``/``study.tell``; a repeated
architecture is told its cached value. ``optuna_tpe_300_distinct_mean`` is the distinct
queries reached (300 unless a run stalls: at most 20 trials per query wanted),
``optuna_tpe_300_trials_mean`` the trials that took, ``optuna_tpe_repeats_mean`` the
difference (likewise ``optuna_nsga2_1000_*``).

Usage:
    python benchmarks/nb201_search.py [--table CSV] [--latency CSV] [--data-dir DIR]
        [--seeds 100] [--mo-seeds N] [--optuna-seeds N] [--out FILE] [--quick]
        [--no-tune] [--no-optuna]
The default output is benchmarks/results/nb201_search.json for cifar10.csv and
nb201_search_<name>.json for any other table.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    DEFAULT_DATA_DIR,
    RESULTS_DIR,
    machine_description,
    print_table,
    write_results,
)
from _nb201 import (
    ARCH,
    INDEX,
    LOW_FIDELITY,
    VAL,
    DistinctQueryDriver,
    NB201Table,
    OptunaProposer,
    SearcherProposer,
    Thresholds,
    check_archs,
    cost_in_full_trainings,
    driver_trace,
    first_query_reaching,
    load_table,
    median_queries_to_threshold,
    table_evaluator,
    table_thresholds,
    value_at,
)

from searchers import NASSearch, create_searcher
from searchers.pareto import hypervolume, pareto_mask, trials_hypervolume
from spaces import SearchSpace, create_space

logger = logging.getLogger(__name__)

METRIC = VAL
LATENCY = "latency_pixel3"  # the result key the multi-objective searchers see
LATENCY_COLUMN = "pixel3"  # its column in latency_ms.csv
PROXY = LOW_FIDELITY  # the low-fidelity signal that ranks the GreedyNAS candidate pool
PROXY_MIN_COVERAGE = 0.5  # greedypool is skipped when fewer rows have a PROXY value
CIFAR10 = "cifar10"  # the table the accuracy target and published figures are for
QUERY_POINTS = (100, 300)
TOP1PCT_CAP = 2000  # runs not in the top 1% after max(QUERY_POINTS) queries go on to this
REA_OPTIONS = {"population_size": 20, "tournament_size": 5}
POOL_SUBSET = 300  # architectures ranked by the proxy before a GreedyNAS run
POOL_K = 20  # pool entries GreedyNAS keeps: its population size
GREEDY_OPTIONS = {"population_size": POOL_K, "tournament_size": 5, "pool_k": POOL_K}
# short name -> (registered searcher, options); every other option at its default
SEARCHERS: dict[str, tuple[str, dict[str, Any]]] = {
    "random": ("random", {}),
    "rea": ("regularized_evolution", REA_OPTIONS),
    "reinforce": ("reinforce", {}),
    "greedypool": ("greedynas", GREEDY_OPTIONS),
    "genetic": ("genetic", {}),
}
MO_QUERY_POINTS = (300, 1000)
NSGA2_POP = 20  # NSGA2Search's population_size and Optuna NSGAIISampler's population_size
HV_DECIMALS = 3  # the reference point is rounded up to this many decimals
TARGET_REA_300 = 94.15  # CIFAR-10 only
TARGET_HV = {300: 0.93, 1000: 0.98}
TARGET_SUGGEST_MS = 1.0
WINDOW = 100


@dataclass(frozen=True)
class Data:
    """The table, its landmarks and the latency joined to it."""

    table: NB201Table
    thresholds: Thresholds
    complete: bool  # the table has a row for every string of the NB201 space
    latency: dict[str, float] | None  # pixel3 ms per arch of the table; None: no MO part
    latency_note: str  # what was joined, or why the multi-objective part is skipped


# ---------------------------------------------------------------------------- data
def load_data(table_path: Path, latency_path: Path) -> Data:
    """The table (checked against the NB201 space), its landmarks and the latency joined."""
    table = load_table(table_path)
    space = create_space("nb201")
    check_archs(table, space)
    latency, note = load_latency(latency_path, table)
    return Data(
        table=table,
        thresholds=table_thresholds(table),
        complete=len(table.archs) == space.size,
        latency=latency,
        latency_note=note,
    )


def load_latency(path: Path, table: NB201Table) -> tuple[dict[str, float] | None, str]:
    """``pixel3`` ms per architecture of ``table`` (on ``arch_str``), or None and why not."""
    if not path.is_file():
        return None, f"{path} not found"
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        for column in (ARCH, LATENCY_COLUMN):
            if column not in header:
                return None, f"{path.name} has no column {column!r}"
        latency: dict[str, float] = {}
        for line, row in enumerate(reader, start=2):
            arch = row[ARCH]
            if arch not in table.val:
                continue
            ours, theirs = table.index.get(arch), row.get(INDEX)
            if ours and theirs and ours != theirs:
                raise ValueError(
                    f"{path.name} line {line}: index {theirs} of {arch[:60]!r} is {ours} in "
                    f"{table.path.name}"
                )
            cell = (row[LATENCY_COLUMN] or "").strip()
            if not cell:
                continue
            try:
                latency[arch] = float(cell)
            except ValueError:
                raise ValueError(
                    f"{path.name} line {line}: {LATENCY_COLUMN} {cell[:20]!r} is not a number"
                ) from None
    if not latency:
        return None, f"{path.name} has no {LATENCY_COLUMN} value for any row of {table.name}"
    return latency, f"{len(latency)} of {len(table.archs)} rows joined from {path.name}"


# ------------------------------------------------------------------ single objective
def make_searcher(short: str, space: SearchSpace, seed: int, **kw: Any) -> NASSearch:
    """A searcher as the benchmark uses it (``SEARCHERS``; REA: population 20, tournament 5)."""
    name, options = SEARCHERS[short]
    return create_searcher(name, space, seed=seed, **{**options, **kw})


def proxy_skip_reason(table: NB201Table) -> str | None:
    """Why the GreedyNAS pool cannot be ranked by ``PROXY`` on ``table``, or None."""
    coverage = table.coverage(PROXY)
    if not table.column(PROXY):
        return f"{table.path.name} has no {PROXY} values"
    if coverage < PROXY_MIN_COVERAGE:
        return f"only {coverage:.0%} of the {PROXY} cells of {table.path.name} are filled"
    return None


def greedy_pool(table: NB201Table, seed: int) -> list[str]:
    """GreedyNAS candidates of run ``seed``: ``POOL_SUBSET`` uniform archs, best ``PROXY`` first.

    Only the low-fidelity ``val_acc_12ep`` is read, and only rows that have it are drawn;
    the searcher keeps the first ``POOL_K`` distinct (non-isomorphic) ones.
    """
    proxy = table.column(PROXY)
    ranked = [a for a in table.archs if a in proxy]
    rng = np.random.default_rng([seed, 12])  # not the searcher's stream
    picks = rng.choice(len(ranked), min(POOL_SUBSET, len(ranked)), replace=False)
    return sorted((ranked[i] for i in picks), key=lambda a: -proxy[a])  # stable on ties


class Run:
    """One seeded single-objective search over distinct queries; ``extend`` continues it."""

    def __init__(
        self,
        driver: DistinctQueryDriver,
        table: NB201Table,
        best_value: Callable[[], float | None],
        name: str,
    ) -> None:
        self.driver, self.table, self.name = driver, table, name
        self._best_value = best_value  # the method's own best val_acc_200ep, to cross-check

    @property
    def archs(self) -> list[str]:
        """The queried architectures, in order."""
        return self.driver.archs

    @property
    def incumbent_test(self) -> list[float]:
        """Test of the returned architecture after each query."""
        return driver_trace(self.driver, self.table)

    def extend(self, queries: int) -> None:
        """Query until ``queries`` distinct architectures are measured (or the method stops)."""
        self.driver.extend(queries)
        if self.driver.results:
            ours = max(r[METRIC] for r in self.driver.results)
            theirs = self._best_value()
            if theirs != ours:
                raise RuntimeError(f"{self.name} best {theirs} disagrees with the incumbent {ours}")


def raynas_run(short: str, space: SearchSpace, data: Data, seed: int) -> Run:
    """Run ``seed`` of raynas searcher ``short`` (greedypool gets its candidate pool)."""
    options = {"candidates": greedy_pool(data.table, seed)} if short == "greedypool" else {}
    searcher = make_searcher(short, space, seed, metric=METRIC, mode="max", **options)

    def best_value() -> float | None:
        best = searcher.best
        return None if best is None else best[1]

    driver = DistinctQueryDriver(SearcherProposer(searcher), space, table_evaluator(data.table))
    return Run(driver, data.table, best_value, str(searcher))


def optuna_tpe_run(optuna: Any, space: SearchSpace, data: Data, seed: int) -> Run:
    """Run ``seed`` of Optuna TPE, one categorical per edge; repeats told the cached value."""
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    proposer = OptunaProposer(study, space, [METRIC])
    driver = DistinctQueryDriver(proposer, space, table_evaluator(data.table))
    return Run(driver, data.table, lambda: study.best_value, f"optuna TPE seed {seed}")


def summarise_tests(
    prefix: str,
    incumbents: Sequence[Sequence[float]],
    rows: list[list[Any]],
    thresholds: Thresholds,
    query_points: Sequence[int],
    cifar10: bool,
) -> dict[str, float]:
    """``{prefix}_{q}_test_mean/std``, ``_top1pct_frac``, ``_top01pct_frac``; rows appended."""
    figures: dict[str, float] = {}
    for q in query_points:
        tests = np.array([value_at(inc, q) for inc in incumbents])
        figures[f"{prefix}_{q}_test_mean"] = float(tests.mean())
        figures[f"{prefix}_{q}_test_std"] = float(tests.std())
        figures[f"{prefix}_{q}_top1pct_frac"] = float(np.mean(tests >= thresholds.top1pct))
        figures[f"{prefix}_{q}_top01pct_frac"] = float(np.mean(tests >= thresholds.top01pct))
        target = f">= {TARGET_REA_300}" if cifar10 and (prefix, q) == ("rea", 300) else ""
        met = _verdict(float(tests.mean()) >= TARGET_REA_300) if target else ""
        rows.append([f"{prefix}_{q}_test", f"{tests.mean():.3f} +- {tests.std():.3f}", target, met])
    return figures


def single_objective(
    data: Data,
    seeds: int,
    optuna: Any,
    optuna_seeds: int,
    *,
    query_points: Sequence[int] = QUERY_POINTS,
    cap: int = TOP1PCT_CAP,
) -> tuple[dict[str, float], list[list[Any]]]:
    """Part 1: test accuracy at each query point and queries to the top 1%, per method."""
    space = create_space("nb201")
    cifar10 = data.table.name == CIFAR10
    figures: dict[str, float] = {}
    rows: list[list[Any]] = []
    horizon = max(query_points)
    methods: dict[str, tuple[Callable[[int], Run], int]] = {}
    for short in SEARCHERS:
        reason = proxy_skip_reason(data.table) if short == "greedypool" else None
        if reason is not None:
            print(f"greedypool skipped: {reason}")
            rows.append(["greedypool", "skipped", "", reason])
            continue
        methods[short] = (partial(raynas_run, short, space, data), seeds)
    if optuna is not None:
        methods["optuna_tpe"] = (lambda s: optuna_tpe_run(optuna, space, data, s), optuna_seeds)
    for prefix, (make, n) in methods.items():
        t0 = time.perf_counter()
        runs = [make(seed) for seed in range(n)]
        for run in runs:
            run.extend(horizon)
        incumbents = [run.incumbent_test for run in runs]
        figures.update(
            summarise_tests(prefix, incumbents, rows, data.thresholds, query_points, cifar10)
        )
        figures.update(query_counts(prefix, [run.driver for run in runs], horizon, rows))
        if prefix == "greedypool":
            figures.update(lowfi_cost(data.table, seeds, rows))
        figures.update(top1pct(prefix, runs, data.thresholds.top1pct, horizon, cap, rows))
        figures[f"{prefix}_wall_s"] = time.perf_counter() - t0
        logger.info("%s: %d runs in %.1f s", prefix, n, figures[f"{prefix}_wall_s"])
    return figures, rows


def query_counts(
    prefix: str,
    drivers: Sequence[DistinctQueryDriver],
    horizon: int,
    rows: list[list[Any]],
    tag: str = "",
) -> dict[str, float]:
    """Distinct queries, trials, repeats and failed rows at ``horizon``, where any differ.

    Optuna always gets ``{prefix}_{horizon}_distinct_mean``, ``_trials_mean`` and
    ``{prefix}{tag}_repeats_mean``; a raynas searcher only if it repeated or stopped short.
    ``{prefix}{tag}_missing_mean`` counts proposals the table lacks, if any.
    """
    distinct = float(np.mean([len(d.archs) for d in drivers]))
    trials = float(np.mean([d.suggestions for d in drivers]))
    repeats = float(np.mean([d.repeats for d in drivers]))
    missing = float(np.mean([d.missing for d in drivers]))
    figures: dict[str, float] = {}
    if prefix.startswith("optuna") or repeats or distinct < horizon:
        figures[f"{prefix}_{horizon}_distinct_mean"] = distinct
        figures[f"{prefix}_{horizon}_trials_mean"] = trials
        figures[f"{prefix}{tag}_repeats_mean"] = repeats
        rows.append(
            [
                f"{prefix}_{horizon}_trials_mean",
                f"{trials:.1f}",
                "",
                f"{distinct:g} distinct queries (canonical) + {repeats:.1f} repeats (cached)",
            ]
        )
    if missing:
        figures[f"{prefix}{tag}_missing_mean"] = missing
        note = "proposals the table lacks (failed trials, not queries)"
        rows.append([f"{prefix}{tag}_missing_mean", f"{missing:.1f}", "", note])
    return figures


def lowfi_cost(table: NB201Table, seeds: int, rows: list[list[Any]]) -> dict[str, float]:
    """The GreedyNAS pool's low-fidelity evaluations per run and their full-training cost."""
    evals = float(np.mean([len(greedy_pool(table, s)) for s in range(seeds)]))
    cost = cost_in_full_trainings(PROXY, 1) * evals
    rows.append(
        [
            "greedypool_lowfi_evals",
            f"{evals:g}",
            "",
            f"{PROXY} evaluations per run, not queries: {cost:g} full-training equivalents",
        ]
    )
    return {"greedypool_lowfi_evals": evals, "greedypool_lowfi_cost_in_full_trainings": cost}


def top1pct(
    prefix: str,
    runs: Sequence[Run],
    threshold: float,
    horizon: int,
    cap: int,
    rows: list[list[Any]],
) -> dict[str, float]:
    """Queries until the returned arch is in the top 1%; runs not there go on to ``cap``."""
    hits = []
    for run in runs:
        hit = first_query_reaching(run.incumbent_test, threshold)
        if hit is None:
            run.extend(cap)
            hit = first_query_reaching(run.incumbent_test, threshold)
        hits.append(hit)
    median, censored = median_queries_to_threshold(hits, cap)
    rows.append(
        [
            f"{prefix}_queries_to_top1pct_median",
            f"{median:g}",
            "",
            f"{censored} of {len(runs)} runs never got there by {cap} (count as {cap + 1})",
        ]
    )
    return {
        f"{prefix}_queries_to_top1pct_median": median,
        f"{prefix}_queries_to_top1pct_censored": censored,
        f"{prefix}_top1pct_by_{horizon}_frac": float(
            np.mean([h is not None and h <= horizon for h in hits])
        ),
    }


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


# ------------------------------------------------------------------- multi-objective
def hv_reference(vals: Sequence[float], latencies: Sequence[float]) -> tuple[float, float]:
    """(-median val, max latency), each rounded up to ``HV_DECIMALS`` decimals."""
    scale = 10**HV_DECIMALS
    raw = (-float(np.median(vals)), float(max(latencies)))
    # round() first so that 86.93 * 1000 = 86930.00000000001 does not round up to 86.931
    ref = tuple(math.ceil(round(x * scale, 6)) / scale for x in raw)
    return ref[0], ref[1]


def mo_archs(data: Data) -> list[str]:
    """Rows with a latency value, in file order."""
    assert data.latency is not None
    return [a for a in data.table.archs if a in data.latency]


def objective_matrix(data: Data, archs: Sequence[str]) -> np.ndarray:
    """Minimisation rows (-val_acc_200ep, pixel3 ms) of ``archs``."""
    assert data.latency is not None
    return np.array([(-data.table.val[a], data.latency[a]) for a in archs], dtype=float)


def true_front(data: Data, ref: tuple[float, float]) -> tuple[float, int]:
    """Hypervolume and size of the true front (inside the reference box), all joined rows."""
    F = objective_matrix(data, mo_archs(data))
    inside = F[np.all(F < np.asarray(ref), axis=1)]
    return hypervolume(F, ref), int(pareto_mask(inside).sum())


def mo_evaluator(data: Data) -> Callable[[str], dict[str, float] | None]:
    """``evaluate`` for a driver: both objectives, None for a row without either."""
    assert data.latency is not None
    latency, val = data.latency, data.table.val

    def evaluate(arch: str) -> dict[str, float] | None:
        if arch not in latency or arch not in val:
            return None
        return {METRIC: val[arch], LATENCY: latency[arch]}

    return evaluate


def mo_raynas_run(
    name: str,
    space: SearchSpace,
    data: Data,
    seed: int,
    queries: int,
    ref: tuple[float, float],
    **options: Any,
) -> DistinctQueryDriver:
    """``queries`` distinct architectures a raynas searcher proposes on (max val, min latency)."""
    searcher = create_searcher(
        name, space, metric=[METRIC, LATENCY], mode=["max", "min"], seed=seed, **options
    )
    driver = DistinctQueryDriver(SearcherProposer(searcher), space, mo_evaluator(data))
    driver.extend(queries)
    if hasattr(searcher, "pareto_front"):  # the searcher's own front must give the same HV
        front = [values for _, values in searcher.pareto_front()]
        own = trials_hypervolume(front, [METRIC, LATENCY], ["max", "min"], (-ref[0], ref[1]))
        ours = hypervolume(objective_matrix(data, driver.archs), ref)
        if not math.isclose(own, ours, rel_tol=1e-12, abs_tol=1e-9):
            raise RuntimeError(f"{searcher}.pareto_front() HV {own} != benchmark's {ours}")
    return driver


def mo_optuna_run(
    optuna: Any, space: SearchSpace, data: Data, seed: int, queries: int
) -> DistinctQueryDriver:
    """``queries`` distinct architectures Optuna's NSGAIISampler proposes (repeats cached)."""
    study = optuna.create_study(
        directions=["maximize", "minimize"],
        sampler=optuna.samplers.NSGAIISampler(seed=seed, population_size=NSGA2_POP),
    )
    proposer = OptunaProposer(study, space, [METRIC, LATENCY])
    driver = DistinctQueryDriver(proposer, space, mo_evaluator(data))
    driver.extend(queries)
    return driver


def multi_objective(
    data: Data, seeds: int, optuna: Any, *, query_points: Sequence[int] = MO_QUERY_POINTS
) -> tuple[dict[str, float], list[list[Any]]]:
    """Part 2: hypervolume fractions of NSGA2Search, random search and Optuna NSGA-II."""
    if data.latency is None:
        print(f"multi-objective part skipped: {data.latency_note}")
        return {}, [["multi-objective", "skipped", "", data.latency_note]]
    space = create_space("nb201")
    horizon = max(query_points)
    joined = mo_archs(data)
    ref = hv_reference([data.table.val[a] for a in joined], [data.latency[a] for a in joined])
    hv_true, front_size = true_front(data, ref)
    figures: dict[str, float] = {
        "mo_seeds": seeds,
        "hv_true": hv_true,
        "hv_true_front_size": front_size,
        "hv_ref_neg_val_acc": ref[0],
        "hv_ref_latency_ms": ref[1],
        "nsga2_pop_size": NSGA2_POP,
    }
    rows: list[list[Any]] = [
        ["hv_true", f"{hv_true:.4f}", f"ref {ref}", f"{front_size} archs on the true front"]
    ]
    methods: dict[str, Callable[[int], DistinctQueryDriver]] = {
        "nsga2": lambda s: mo_raynas_run(
            "nsga2", space, data, s, horizon, ref, population_size=NSGA2_POP
        ),
        "random": lambda s: mo_raynas_run("random", space, data, s, horizon, ref),
    }
    if optuna is not None:
        methods["optuna_nsga2"] = lambda s: mo_optuna_run(optuna, space, data, s, horizon)
    for prefix, run in methods.items():
        t0 = time.perf_counter()
        fractions: dict[int, list[float]] = {q: [] for q in query_points}
        drivers = []
        for seed in range(seeds):
            driver = run(seed)
            F = objective_matrix(data, driver.archs)
            for q in query_points:
                fractions[q].append(hypervolume(F[:q], ref) / hv_true)
            drivers.append(driver)
        for q in query_points:
            values = np.array(fractions[q])
            figures[f"{prefix}_hv_fraction_{q}"] = float(values.mean())
            figures[f"{prefix}_hv_fraction_{q}_std"] = float(values.std())
            target = f">= {TARGET_HV[q]}" if prefix == "nsga2" and q in TARGET_HV else ""
            rows.append(
                [
                    f"{prefix}_hv_fraction_{q}",
                    f"{values.mean():.4f} +- {values.std():.4f}",
                    target,
                    _verdict(values.mean() >= TARGET_HV[q]) if target else "",
                ]
            )
        distinct = float(np.mean([len(d.archs) for d in drivers]))
        figures[f"{prefix}_{horizon}_distinct_mean"] = distinct
        figures.update(query_counts(prefix, drivers, horizon, rows, tag="_mo"))
        figures[f"{prefix}_mo_wall_s"] = time.perf_counter() - t0
        logger.info(
            "%s (multi-objective): %d runs in %.1f s", prefix, seeds, figures[f"{prefix}_mo_wall_s"]
        )
    return figures, rows


# ------------------------------------------------------------------------- targets
def target_rows(
    figures: dict[str, float], seeds: int, optuna_seeds: int, cifar10: bool
) -> list[list[Any]]:
    """The issue's targets: REINFORCE vs random, NSGA-II HV, raynas vs its Optuna peer."""
    rows: list[list[Any]] = []

    def std(key: str) -> float:
        return figures[key[: -len("_mean")] + "_std" if key.endswith("_mean") else key + "_std"]

    def compare(name: str, ours: str, peer: str, n_ours: int, n_peer: int) -> None:
        """Mean figure ``ours`` >= ``peer``, with two standard errors of the difference."""
        if ours not in figures or peer not in figures:
            return
        a, b = figures[ours], figures[peer]
        se = math.hypot(std(ours) / math.sqrt(n_ours), std(peer) / math.sqrt(n_peer))
        noise = "within" if abs(a - b) <= 2 * se else "beyond"
        rows.append(
            [
                name,
                f"{a:.4f} vs {b:.4f}",
                _verdict(a >= b),
                f"diff {a - b:+.4f}, 2 SE {2 * se:.4f} ({noise} noise)",
            ]
        )

    horizon = max(QUERY_POINTS)
    if f"reinforce_{horizon}_test_mean" in figures and f"random_{horizon}_test_mean" in figures:
        a, b = figures[f"reinforce_{horizon}_test_mean"], figures[f"random_{horizon}_test_mean"]
        se = math.hypot(
            figures[f"reinforce_{horizon}_test_std"], figures[f"random_{horizon}_test_std"]
        )
        se /= math.sqrt(seeds)
        published = "; published 93.85 vs 93.70" if cifar10 else ""
        rows.append(
            [
                f"REINFORCE {horizon} > random {horizon} (test)",
                f"{a:.4f} vs {b:.4f}",
                _verdict(a > b),
                f"diff {a - b:+.4f}, 2 SE {2 * se:.4f}{published}",
            ]
        )
    mo = int(figures.get("mo_seeds", 0))
    for q in MO_QUERY_POINTS:
        key = f"nsga2_hv_fraction_{q}"
        if key in figures:
            rows.append(
                [
                    f"NSGA-II HV fraction at {q} >= {TARGET_HV[q]}",
                    f"{figures[key]:.4f}",
                    _verdict(figures[key] >= TARGET_HV[q]),
                    f"random {figures[f'random_hv_fraction_{q}']:.4f}",
                ]
            )
    for short in ("rea", "reinforce", "greedypool", "genetic"):
        for q in QUERY_POINTS:
            compare(
                f"{short} {q} >= Optuna TPE {q} (test)",
                f"{short}_{q}_test_mean",
                f"optuna_tpe_{q}_test_mean",
                seeds,
                optuna_seeds,
            )
    for q in MO_QUERY_POINTS:
        compare(
            f"NSGA2Search {q} >= Optuna NSGA-II {q} (HV)",
            f"nsga2_hv_fraction_{q}",
            f"optuna_nsga2_hv_fraction_{q}",
            mo,
            mo,
        )
    return rows


# ---------------------------------------------------------------- suggest cost, Tune
def time_suggest(
    space: SearchSpace,
    score: Callable[[Any], float],
    windows: Sequence[tuple[str, int, int]],
    *,
    seed: int = 0,
) -> dict[str, float]:
    """Mean ms per REA ``suggest`` in each window [start, end) of one sequential run."""
    searcher = make_searcher("rea", space, seed, metric="score", mode="max")
    total = max(end for _, _, end in windows)
    elapsed = np.zeros(total)
    for i in range(total):
        trial_id = f"t{i}"
        t0 = time.perf_counter()
        config = searcher.suggest(trial_id)
        elapsed[i] = time.perf_counter() - t0
        if not isinstance(config, dict):
            raise RuntimeError(f"{searcher} returned {config!r} at trial {i} of {space.name}")
        searcher.on_trial_complete(trial_id, {"score": score(space.from_config(config))})
    out = {}
    for label, start, end in windows:
        out[label] = float(elapsed[start:end].mean() * 1e3)
        out[label.replace("_ms_", "_ms_median_")] = float(np.median(elapsed[start:end]) * 1e3)
    return out


def suggest_cost(table: NB201Table, quick: bool) -> tuple[dict[str, float], list[list[Any]]]:
    """Part 3: REA suggest time as the history grows, mobilenet (synthetic score) and NB201.

    On NB201 the score is the table's ``val_acc_200ep``; a row the table lacks scores NaN
    (a failed trial).
    """
    figures: dict[str, float] = {}
    rows: list[list[Any]] = []
    marks = (0, 1000, 2000) if quick else (0, 1000, 5000, 10000)
    windows = [(f"suggest_ms_at_{m}", max(m - WINDOW, 0), max(m, WINDOW)) for m in marks]
    try:
        space = create_space("mobilenet")
    except (ValueError, ImportError) as exc:
        print(f"warning: mobilenet space unavailable ({exc}); suggest cost not measured there")
    else:
        weights = np.random.default_rng(12345).normal(size=len(space.dims))
        t0 = time.perf_counter()
        figures.update(time_suggest(space, lambda a: float(weights @ space.encode(a)), windows))
        figures["suggest_total_s_mobilenet"] = time.perf_counter() - t0
    nb201 = create_space("nb201")
    nb_marks = (1000,) if quick else (1000, 6000)
    nb_windows = [(f"nb201_suggest_ms_at_{m}", m - WINDOW, m) for m in nb_marks]
    t0 = time.perf_counter()
    figures.update(time_suggest(nb201, lambda a: table.val.get(a, math.nan), nb_windows))
    figures["suggest_total_s_nb201"] = time.perf_counter() - t0
    for label, start, end in windows + nb_windows:
        if label not in figures:
            continue
        last = label == windows[-1][0]
        median = figures[label.replace("_ms_", "_ms_median_")]
        rows.append(
            [
                label,
                f"{figures[label]:.4f} (median {median:.4f})",
                f"trials {start}-{end}",
                f"target < {TARGET_SUGGEST_MS} ms: {_verdict(figures[label] < 1)}" if last else "",
            ]
        )
    return figures, rows


def _nb201_trainable(config: dict[str, Any], val: dict[str, float]) -> None:
    from ray import tune

    from spaces import create_space

    tune.report({METRIC: val[create_space("nb201").from_config(config)]})


def tune_check(data: Data, seeds: Sequence[int], queries: int) -> dict[str, float]:
    """Part 4: REA through Ray Tune with one trial at a time against the in-process run."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the new console output ignores verbose=0
    import ray
    from ray import tune

    space = create_space("nb201")
    trainable = tune.with_parameters(_nb201_trainable, val=dict(data.table.val))
    matches, walls = [], []
    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING
    )
    try:
        with tempfile.TemporaryDirectory(prefix="raynas-bench-") as storage:
            for seed in seeds:
                # Tune calls set_search_properties only when param_space is non-empty (ray
                # 2.60 tune.py), so with none the searcher must know its metric and mode.
                searcher = make_searcher("rea", space, seed, metric=METRIC, mode="max")
                tuner = tune.Tuner(
                    trainable,
                    tune_config=tune.TuneConfig(
                        search_alg=searcher,
                        num_samples=queries,
                        max_concurrent_trials=1,
                        reuse_actors=True,
                        metric=METRIC,
                        mode="max",
                    ),
                    run_config=tune.RunConfig(
                        name=f"rea_seed{seed}", storage_path=os.path.abspath(storage), verbose=0
                    ),
                )
                t0 = time.perf_counter()
                grid = tuner.fit()
                walls.append(time.perf_counter() - t0)
                matches.append(_same_as_inprocess(grid, searcher, space, data, seed, queries))
    finally:
        ray.shutdown()
    return {
        "tune_matches_inprocess": float(all(matches)),
        "tune_wall_s_per_run": float(np.mean(walls)),
        "tune_seeds": len(seeds),
        "tune_queries": queries,
    }


def _same_as_inprocess(
    grid: Any, searcher: NASSearch, space: SearchSpace, data: Data, seed: int, q: int
) -> bool:
    if grid.errors:
        print(f"tune seed {seed}: {len(grid.errors)} trials errored: {grid.errors[0]!r}")
        return False
    # Trial ids are random in ray 2.60; the experiment tag starts with the creation counter.
    results = sorted(grid, key=lambda r: int(r.metrics["experiment_tag"].split("_", 1)[0]))
    tune_archs = [space.from_config(r.config) for r in results]
    tune_vals = [r.metrics[METRIC] for r in results]
    tune_best = tune_archs[int(np.argmax(tune_vals))]  # argmax keeps the first of ties
    reference = make_searcher("rea", space, seed, metric=METRIC, mode="max")
    driver = DistinctQueryDriver(SearcherProposer(reference), space, table_evaluator(data.table))
    driver.extend(q)
    ref_best = reference.best
    same = (
        tune_archs == driver.archs
        and tune_vals == [data.table.val[a] for a in driver.archs]
        and ref_best is not None
        and tune_best == ref_best[0]
        and searcher.best == ref_best  # Tune drove this very object (it is not copied)
    )
    first_diff = next(
        (i for i, (a, b) in enumerate(zip(tune_archs, driver.archs)) if a != b), None
    )
    print(
        f"tune seed {seed}: {len(tune_archs)} trials, identical={same}, "
        f"first difference at {first_diff}, best {tune_best} ({max(tune_vals)})"
    )
    return same


# ---------------------------------------------------------------------------- main
def import_optuna(skip: bool) -> Any:
    """The ``optuna`` module with its logging at WARNING, or ``None`` with ``--no-optuna``."""
    if skip:
        return None
    try:
        import optuna
    except ImportError:
        raise SystemExit(
            "error: optuna is not installed; pip install -e '.[bench]' (or pass --no-optuna)"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def single_thread_torch() -> None:
    """One intra-op thread for the REINFORCE controller's tiny tensors (faster on 2 cores)."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


def default_out(table_path: Path) -> Path:
    """``nb201_search.json`` for cifar10.csv, ``nb201_search_<name>.json`` for another table."""
    name = table_path.stem
    return RESULTS_DIR / ("nb201_search.json" if name == CIFAR10 else f"nb201_search_{name}.json")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"folder of the default table cifar10.csv (default: {DEFAULT_DATA_DIR})",
    )
    parser.add_argument(
        "--table",
        type=Path,
        default=None,
        help="NB201-style CSV with arch_str, val_acc_200ep, test_acc_200ep "
        "(default: DATA_DIR/cifar10.csv)",
    )
    parser.add_argument(
        "--latency",
        type=Path,
        default=None,
        help="latency CSV with arch_str and pixel3 (default: latency_ms.csv beside the table; "
        "absent: the multi-objective part is skipped)",
    )
    parser.add_argument("--seeds", type=int, default=100, help="runs per searcher (>= 100)")
    parser.add_argument(
        "--mo-seeds",
        type=int,
        default=None,
        help="multi-objective runs per method (>= 10; default 50, --quick 3)",
    )
    parser.add_argument(
        "--optuna-seeds",
        type=int,
        default=None,
        help="Optuna TPE runs (>= 30; default --seeds)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"results JSON (default {RESULTS_DIR / 'nb201_search.json'} for cifar10.csv, "
        "nb201_search_<table name>.json otherwise; --quick writes only when --out is given)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="10 seeds (3 multi-objective), shorter suggest timing and Tune check (smoke test)",
    )
    parser.add_argument("--no-tune", action="store_true", help="skip the Ray Tune check")
    parser.add_argument("--no-optuna", action="store_true", help="skip the Optuna peers")
    args = parser.parse_args(argv)
    if args.table is None:
        args.table = args.data_dir / "cifar10.csv"
    if not args.table.is_file():
        parser.error(f"--table {args.table} not found; pass --table or --data-dir")
    if args.latency is None:
        args.latency = args.table.parent / "latency_ms.csv"
    if args.quick and args.seeds == 100:
        args.seeds = 10
    if args.mo_seeds is None:
        args.mo_seeds = 3 if args.quick else 50
    if args.optuna_seeds is None:
        args.optuna_seeds = args.seeds
    if args.seeds < 1 or (args.seeds < 100 and not args.quick):
        parser.error(f"--seeds must be >= 100 for a full run (got {args.seeds}); use --quick")
    if args.mo_seeds < 1 or (args.mo_seeds < 10 and not args.quick):
        parser.error(f"--mo-seeds must be >= 10 for a full run (got {args.mo_seeds})")
    if args.optuna_seeds < 1 or (args.optuna_seeds < 30 and not args.quick):
        parser.error(f"--optuna-seeds must be >= 30 for a full run (got {args.optuna_seeds})")
    if args.out is None and not args.quick:
        args.out = default_out(args.table)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the tables and write the results JSON."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    optuna = import_optuna(args.no_optuna)
    single_thread_torch()
    try:
        data = load_data(args.table, args.latency)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    table, thr = data.table, data.thresholds
    start = time.perf_counter()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else -1.0
    figures: dict[str, float] = {
        "seeds": args.seeds,
        "queries": max(QUERY_POINTS),
        "table_rows": len(table.archs),
        "top1pct_threshold": thr.top1pct,
        "top01pct_threshold": thr.top01pct,
        "table_best_test": thr.best_test,
        "table_best_val_test": thr.best_val_test,
        "top1pct_cap": TOP1PCT_CAP,
        "load_avg_1min_at_start": load,
        "greedypool_proxy_subset": POOL_SUBSET,
        "greedypool_pool_k": POOL_K,
    }
    if optuna is not None:
        figures["optuna_seeds"] = args.optuna_seeds
    part1, rows1 = single_objective(data, args.seeds, optuna, args.optuna_seeds)
    part2, rows2 = multi_objective(data, args.mo_seeds, optuna)
    part3, rows3 = suggest_cost(table, args.quick)
    for part in (part1, part2, part3):
        figures.update(part)
    if not args.no_tune:
        if data.complete:
            tune_seeds, tune_q = ((0,), 20) if args.quick else ((0, 1, 2), 60)
            figures.update(tune_check(data, tune_seeds, tune_q))
        else:
            print(f"Ray Tune check skipped: {table.path.name} lacks rows of the NB201 space")
    figures["benchmark_wall_s"] = time.perf_counter() - start
    machine = machine_description()
    optuna_note = (
        f"Optuna {optuna.__version__}: TPE {args.optuna_seeds} seeds, NSGAIISampler "
        f"population {NSGA2_POP}; a repeated architecture is answered from the cache, "
        "trials and repeats reported"
        if optuna is not None
        else "Optuna peers skipped (--no-optuna)"
    )
    mo_note = (
        f"Multi-objective: max {METRIC}, min pixel3 ms, {args.mo_seeds} seeds; HV fraction of "
        f"the true front with ref ({figures['hv_ref_neg_val_acc']}, "
        f"{figures['hv_ref_latency_ms']}) in (-val_acc, latency); {data.latency_note}."
        if "hv_true" in figures
        else f"Multi-objective part skipped: {data.latency_note}."
    )
    lowfi = (
        f"greedypool: GreedyNAS with its first population from the top {POOL_K} distinct of "
        f"{POOL_SUBSET} uniform archs ranked by {PROXY} (low fidelity, not queries: "
        f"{figures['greedypool_lowfi_evals']:g} evaluations = "
        f"{figures['greedypool_lowfi_cost_in_full_trainings']:g} full trainings per run)."
        if "greedypool_lowfi_evals" in figures
        else "greedypool skipped (see above)."
    )
    print(
        f"\nNAS-Bench-201 {table.name} ({len(table.archs)} rows), {args.seeds} seeds, selection "
        f"by {METRIC}, reported test_acc_200ep (mean +- std over seeds, ddof=0); a query is a "
        f"distinct architecture. Top 1% = test >= {thr.top1pct:g}, top 0.1% = test >= "
        f"{thr.top01pct:g}, best {thr.best_test:g} (best by validation: {thr.best_val_test:g}); "
        f"runs not in the top 1% by {max(QUERY_POINTS)} queries go on to {TOP1PCT_CAP} and "
        f"count as {TOP1PCT_CAP + 1} if never.\n{lowfi}\n{mo_note}\n"
        f"{optuna_note}.\n{machine}; 1-min load average at start {load:.2f}\n"
    )
    print_table(rows1 + rows2 + rows3, ["figure", "value", "target / window", "note"])
    print()
    print_table(
        target_rows(figures, args.seeds, args.optuna_seeds, table.name == CIFAR10),
        ["target", "raynas vs other", "verdict", "note"],
    )
    if "tune_matches_inprocess" in figures:
        print(
            f"\ntune_matches_inprocess = {figures['tune_matches_inprocess']:.1f} "
            f"({figures['tune_seeds']} seeds x {figures['tune_queries']} trials, "
            f"{figures['tune_wall_s_per_run']:.1f} s per Tune run)"
        )
    print(f"total {figures['benchmark_wall_s']:.1f} s")
    if args.out is not None:
        write_results(args.out, figures, machine=machine, labels={"data": table.name})
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
