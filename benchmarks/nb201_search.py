"""Every raynas searcher on the NAS-Bench-201 CIFAR-10 table, side by side with Optuna's.

Single-objective protocol (NAS-Bench-201 paper, Dong & Yang 2020): a searcher sees only
``val_acc_200ep``; the architecture it returns after ``q`` queries is the best by
``val_acc_200ep`` among its first ``q`` (first one on ties, as ``NASSearch.best``),
reported by ``test_acc_200ep``. Test accuracy is never used to select anything.

Multi-objective protocol (issue 4): maximise ``val_acc_200ep``, minimise the Pixel 3
latency (``latency_ms.csv``, column ``pixel3``, joined on the NB201 index). A run's front
is the non-dominated set of its first ``q`` queries; its quality is pymoo's hypervolume in
the minimisation space (-val_acc, latency) with the reference point (-86.93, 36.767) =
(-median val_acc_200ep, max pixel3 latency of the table, as the issue rounds them), as a
fraction of the hypervolume of the true front computed over all 15,625 architectures.

Parts:
  1. single-objective, in-process (``suggest``/``on_trial_complete``): ``seeds`` runs of
     each raynas searcher (random, regularized evolution, REINFORCE, GreedyNAS seeded from
     a candidate pool, DEAP genetic) and ``optuna_seeds`` runs of Optuna's ``TPESampler``,
     300 queries each; test accuracy at 100 and 300. For random and REA also the queries
     until the returned architecture is in the top 1% by test (runs that have not got there
     by 300 queries go on, up to a cap, and count as the cap if they never do);
  2. multi-objective, in-process: ``mo_seeds`` runs of ``NSGA2Search``, of random search
     and of Optuna's ``NSGAIISampler`` (same population size), 1,000 queries each;
     hypervolume fraction of the front of the first 300 and 1,000 queries;
  3. the cost of one regularized-evolution ``suggest`` as the history grows (the
     ``mobilenet`` space with a synthetic score to 10,000 trials; NB201 to 6,000);
  4. the same search through Ray Tune (one trial at a time) must propose the same
     architectures and return the same one as the in-process run for the same seed.

GreedyNAS candidate pool ("greedypool"): GreedyNAS ranks paths by a supernet's validation
loss before it searches. Here each run first draws 300 architectures uniformly (its own
random stream, independent of the searcher's), ranks them by ``val_acc_12ep`` (the table's
12-epoch accuracy: a cheap low-fidelity signal a real search would have, no test data) and
hands them best first as ``candidates``; the searcher keeps the first 20 distinct ones
(``pool_k`` = population size) as its first population. Those 300 low-fidelity
evaluations are NOT charged to the query budget (in a real search they would cost about
300 x 12 = 3,600 epochs, i.e. 18 full 200-epoch trainings); the 20 pool members are
suggested and each counts as a query.

Optuna peers: ``TPESampler(seed=s)`` on six categorical parameters ``op/0`` .. ``op/5``
(one per NB201 edge, the raynas config keys), and ``NSGAIISampler(seed=s,
population_size=20)`` with ``directions=["maximize", "minimize"]``, both with their other
settings at the defaults, driven through ``study.ask``/``study.tell``. Optuna may suggest
the same (or an isomorphic) architecture again: every Optuna trial counts as one query,
duplicates included (that is Optuna's own protocol); raynas searchers never repeat an
architecture by canonical form. The number of distinct architectures is reported too.

Usage:
    python benchmarks/nb201_search.py [--data-dir DIR] [--seeds 100] [--mo-seeds N]
        [--optuna-seeds N] [--out FILE] [--quick] [--no-tune] [--no-optuna]
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
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    RESULTS_DIR,
    add_data_dir_argument,
    machine_description,
    print_table,
    require_file,
    write_results,
)

from searchers import NASSearch, create_searcher
from searchers.pareto import hypervolume, pareto_mask, trials_hypervolume
from spaces import SearchSpace, create_space

logger = logging.getLogger(__name__)

METRIC = "val_acc_200ep"
LATENCY = "latency_pixel3"  # the result key the multi-objective searchers see
LATENCY_COLUMN = "pixel3"  # its column in latency_ms.csv
PROXY = "val_acc_12ep"  # the low-fidelity signal that ranks the GreedyNAS candidate pool
TOP1PCT_TEST = 93.775  # test_acc_200ep at which the top 1% of the 15,625 strings starts
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
TOP1PCT_SEARCHERS = ("random", "rea")  # searchers whose runs go on to the top-1% cap
MO_QUERY_POINTS = (300, 1000)
NSGA2_POP = 20  # NSGA2Search's population_size and Optuna NSGAIISampler's population_size
HV_REF = (-86.93, 36.767)  # (-median val_acc_200ep, max pixel3 ms), issue 4
TARGET_REA_300 = 94.15
TARGET_HV = {300: 0.93, 1000: 0.98}
TARGET_SUGGEST_MS = 1.0
WINDOW = 100

Table = dict[str, tuple[float, float]]  # arch string -> (val_acc_200ep, test_acc_200ep)


@dataclass(frozen=True)
class Data:
    """The NB201 columns the benchmark reads, keyed by architecture string."""

    table: Table  # (val_acc_200ep, test_acc_200ep)
    proxy: dict[str, float]  # val_acc_12ep
    latency: dict[str, float]  # pixel3 latency in ms
    archs: tuple[str, ...]  # every string, in file (= NB201 index) order


# ---------------------------------------------------------------------------- data
def load_data(data_dir: Path) -> Data:
    """``cifar10.csv`` and ``latency_ms.csv`` joined on the NB201 index."""
    with open(require_file(data_dir / "cifar10.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    with open(require_file(data_dir / "latency_ms.csv"), newline="") as f:
        latency_by_index = {r["index"]: r for r in csv.DictReader(f)}
    latency: dict[str, float] = {}
    for row in rows:
        other = latency_by_index.get(row["index"])
        if other is None or other["arch_str"] != row["arch_str"]:
            raise SystemExit(f"error: latency_ms.csv does not match cifar10.csv at {row['index']}")
        latency[row["arch_str"]] = float(other[LATENCY_COLUMN])
    return Data(
        table={r["arch_str"]: (float(r[METRIC]), float(r["test_acc_200ep"])) for r in rows},
        proxy={r["arch_str"]: float(r[PROXY]) for r in rows},
        latency=latency,
        archs=tuple(r["arch_str"] for r in rows),
    )


# ------------------------------------------------------------------ single objective
def make_searcher(short: str, space: SearchSpace, seed: int, **kw: Any) -> NASSearch:
    """A searcher as the benchmark uses it (``SEARCHERS``; REA: population 20, tournament 5)."""
    name, options = SEARCHERS[short]
    return create_searcher(name, space, seed=seed, **{**options, **kw})


def greedy_pool(data: Data, seed: int) -> list[str]:
    """GreedyNAS candidates of run ``seed``: ``POOL_SUBSET`` uniform archs, best ``PROXY`` first.

    Only the low-fidelity ``val_acc_12ep`` is read; the searcher keeps the first
    ``POOL_K`` distinct (non-isomorphic) ones.
    """
    rng = np.random.default_rng([seed, 12])  # not the searcher's stream
    subset = [data.archs[i] for i in rng.choice(len(data.archs), POOL_SUBSET, replace=False)]
    return sorted(subset, key=lambda a: -data.proxy[a])  # stable: ties keep draw order


class Run:
    """One seeded search driven in-process; ``extend`` continues the same run."""

    def __init__(
        self, short: str, space: SearchSpace, table: Table, seed: int, **options: Any
    ) -> None:
        self.space, self.table = space, table
        self.searcher = make_searcher(short, space, seed, metric=METRIC, mode="max", **options)
        self.archs: list[str] = []
        self.incumbent_test: list[float] = []  # test of the returned arch after q = i + 1
        self._best_val = -np.inf
        self._best_test = np.nan

    def extend(self, queries: int) -> None:
        """Query until ``queries`` architectures have been evaluated."""
        while len(self.archs) < queries:
            trial_id = f"t{len(self.archs)}"
            config = self.searcher.suggest(trial_id)
            if not isinstance(config, dict):
                raise RuntimeError(f"{self.searcher} returned {config!r} at query {trial_id}")
            arch = self.space.from_config(config)
            val, test = self.table[arch]
            self.searcher.on_trial_complete(trial_id, {METRIC: val})
            if val > self._best_val:  # strict: the first of equal values stays, as in NASSearch
                self._best_val, self._best_test = val, test
            self.archs.append(arch)
            self.incumbent_test.append(self._best_test)
        best = self.searcher.best
        if best is None or best[1] != self._best_val:
            raise RuntimeError(f"searcher best {best} disagrees with the benchmark's incumbent")

    def first_query_in_top1pct(self) -> int | None:
        """Smallest q whose returned architecture has test >= the top-1% threshold."""
        hits = np.flatnonzero(np.asarray(self.incumbent_test) >= TOP1PCT_TEST)
        return int(hits[0]) + 1 if hits.size else None


def optuna_tpe_run(
    optuna: Any, space: SearchSpace, table: Table, seed: int, queries: int
) -> tuple[list[float], int]:
    """Optuna TPE, one categorical per edge: incumbent test after each trial, distinct archs.

    Every trial is a query, repeated architectures included; the incumbent is the first
    trial with the highest ``val_acc_200ep`` so far.
    """
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    best_val, best_test = -np.inf, np.nan
    incumbent: list[float] = []
    distinct: set[str] = set()
    for _ in range(queries):
        trial = study.ask()
        config = {d.name: trial.suggest_categorical(d.name, d.choices) for d in space.decisions}
        arch = space.from_config(config)
        val, test = table[arch]
        study.tell(trial, val)
        if val > best_val:
            best_val, best_test = val, test
        incumbent.append(best_test)
        distinct.add(space.canonical(arch))
    if study.best_value != best_val:
        raise RuntimeError(f"optuna best {study.best_value} disagrees with {best_val}")
    return incumbent, len(distinct)


def summarise_tests(
    prefix: str, incumbents: Sequence[Sequence[float]], rows: list[list[Any]]
) -> dict[str, float]:
    """``{prefix}_{q}_test_mean/std`` and ``_top1pct_frac`` over runs; table rows appended."""
    figures: dict[str, float] = {}
    for q in QUERY_POINTS:
        tests = np.array([inc[q - 1] for inc in incumbents])
        figures[f"{prefix}_{q}_test_mean"] = float(tests.mean())
        figures[f"{prefix}_{q}_test_std"] = float(tests.std())
        figures[f"{prefix}_{q}_top1pct_frac"] = float(np.mean(tests >= TOP1PCT_TEST))
        target = f">= {TARGET_REA_300}" if (prefix, q) == ("rea", 300) else ""
        met = _verdict(float(tests.mean()) >= TARGET_REA_300) if target else ""
        rows.append([f"{prefix}_{q}_test", f"{tests.mean():.3f} +- {tests.std():.3f}", target, met])
    return figures


def protocol(
    data: Data, seeds: int, optuna: Any, optuna_seeds: int
) -> tuple[dict[str, float], list[list[Any]]]:
    """Part 1: test accuracy at each query point per searcher (and Optuna TPE)."""
    space = create_space("nb201")
    table = data.table
    figures: dict[str, float] = {}
    rows: list[list[Any]] = []
    horizon = max(QUERY_POINTS)
    for short in SEARCHERS:
        t0 = time.perf_counter()
        runs = [
            Run(short, space, table, seed, **_run_options(short, data, seed))
            for seed in range(seeds)
        ]
        for run in runs:
            run.extend(horizon)
        figures.update(summarise_tests(short, [run.incumbent_test for run in runs], rows))
        if short in TOP1PCT_SEARCHERS:
            figures.update(_top1pct(short, runs, seeds, rows))
        figures[f"{short}_wall_s"] = time.perf_counter() - t0
        logger.info("%s: %d runs in %.1f s", short, seeds, figures[f"{short}_wall_s"])
    if optuna is not None:
        t0 = time.perf_counter()
        results = [optuna_tpe_run(optuna, space, table, s, horizon) for s in range(optuna_seeds)]
        figures.update(summarise_tests("optuna_tpe", [inc for inc, _ in results], rows))
        distinct = float(np.mean([n for _, n in results]))
        figures[f"optuna_tpe_{horizon}_distinct_mean"] = distinct
        rows.append(
            [
                f"optuna_tpe_{horizon}_distinct_mean",
                f"{distinct:.1f}",
                "",
                f"distinct archs (canonical) in {horizon} trials",
            ]
        )
        figures["optuna_tpe_wall_s"] = time.perf_counter() - t0
        logger.info("optuna_tpe: %d runs in %.1f s", optuna_seeds, figures["optuna_tpe_wall_s"])
    return figures, rows


def _run_options(short: str, data: Data, seed: int) -> dict[str, Any]:
    return {"candidates": greedy_pool(data, seed)} if short == "greedypool" else {}


def _top1pct(
    short: str, runs: Sequence[Run], seeds: int, rows: list[list[Any]]
) -> dict[str, float]:
    """Queries until the returned arch is in the top 1%; runs not there go on to the cap."""
    hits = []
    for run in runs:
        if run.first_query_in_top1pct() is None:
            run.extend(TOP1PCT_CAP)
        hits.append(run.first_query_in_top1pct())
    censored = sum(h is None for h in hits)
    counts = np.array([TOP1PCT_CAP if h is None else h for h in hits])
    rows.append(
        [
            f"{short}_queries_to_top1pct_median",
            f"{np.median(counts):g}",
            "",
            f"{censored} of {seeds} runs never got there by {TOP1PCT_CAP}",
        ]
    )
    return {
        f"{short}_queries_to_top1pct_median": float(np.median(counts)),
        f"{short}_queries_to_top1pct_censored": censored,
        f"{short}_top1pct_by_300_frac": float(np.mean(counts <= max(QUERY_POINTS))),
    }


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


# ------------------------------------------------------------------- multi-objective
def true_front(data: Data) -> tuple[float, int]:
    """Hypervolume and size of the true front (inside the reference box), all archs."""
    F = objective_matrix(data, data.archs)
    inside = F[np.all(F < np.asarray(HV_REF), axis=1)]
    return hypervolume(F, HV_REF), int(pareto_mask(inside).sum())


def objective_matrix(data: Data, archs: Sequence[str]) -> np.ndarray:
    """Minimisation rows (-val_acc_200ep, pixel3 ms) of ``archs``."""
    return np.array([(-data.table[a][0], data.latency[a]) for a in archs], dtype=float)


def mo_raynas_run(
    name: str, space: SearchSpace, data: Data, seed: int, queries: int, **options: Any
) -> list[str]:
    """Architectures a raynas searcher proposes on (max val_acc, min latency), in order."""
    searcher = create_searcher(
        name, space, metric=[METRIC, LATENCY], mode=["max", "min"], seed=seed, **options
    )
    archs: list[str] = []
    for i in range(queries):
        config = searcher.suggest(f"t{i}")
        if not isinstance(config, dict):
            raise RuntimeError(f"{searcher} returned {config!r} at query {i}")
        arch = space.from_config(config)
        result = {METRIC: data.table[arch][0], LATENCY: data.latency[arch]}
        searcher.on_trial_complete(f"t{i}", result)
        archs.append(arch)
    if hasattr(searcher, "pareto_front"):  # the searcher's own front must give the same HV
        front = [values for _, values in searcher.pareto_front()]
        own = trials_hypervolume(front, [METRIC, LATENCY], ["max", "min"], (-HV_REF[0], HV_REF[1]))
        ours = hypervolume(objective_matrix(data, archs), HV_REF)
        if not math.isclose(own, ours, rel_tol=1e-12, abs_tol=1e-9):
            raise RuntimeError(f"{searcher}.pareto_front() HV {own} != benchmark's {ours}")
    return archs


def mo_optuna_run(
    optuna: Any, space: SearchSpace, data: Data, seed: int, queries: int
) -> list[str]:
    """Architectures Optuna's NSGAIISampler proposes (every trial, repeats included)."""
    study = optuna.create_study(
        directions=["maximize", "minimize"],
        sampler=optuna.samplers.NSGAIISampler(seed=seed, population_size=NSGA2_POP),
    )
    archs: list[str] = []
    for _ in range(queries):
        trial = study.ask()
        config = {d.name: trial.suggest_categorical(d.name, d.choices) for d in space.decisions}
        arch = space.from_config(config)
        study.tell(trial, [data.table[arch][0], data.latency[arch]])
        archs.append(arch)
    return archs


def multi_objective(
    data: Data, seeds: int, optuna: Any
) -> tuple[dict[str, float], list[list[Any]]]:
    """Part 2: hypervolume fractions of NSGA2Search, random search and Optuna NSGA-II."""
    space = create_space("nb201")
    horizon = max(MO_QUERY_POINTS)
    hv_true, front_size = true_front(data)
    figures: dict[str, float] = {
        "mo_seeds": seeds,
        "hv_true": hv_true,
        "hv_true_front_size": front_size,
        "hv_ref_neg_val_acc": HV_REF[0],
        "hv_ref_latency_ms": HV_REF[1],
        "nsga2_pop_size": NSGA2_POP,
    }
    rows: list[list[Any]] = [
        ["hv_true", f"{hv_true:.4f}", f"ref {HV_REF}", f"{front_size} archs on the true front"]
    ]
    methods: dict[str, Callable[[int], list[str]]] = {
        "nsga2": lambda s: mo_raynas_run("nsga2", space, data, s, horizon,
                                         population_size=NSGA2_POP),
        "random": lambda s: mo_raynas_run("random", space, data, s, horizon),
    }
    if optuna is not None:
        methods["optuna_nsga2"] = lambda s: mo_optuna_run(optuna, space, data, s, horizon)
    for prefix, run in methods.items():
        t0 = time.perf_counter()
        fractions = {q: [] for q in MO_QUERY_POINTS}
        distinct = []
        for seed in range(seeds):
            archs = run(seed)
            F = objective_matrix(data, archs)
            for q in MO_QUERY_POINTS:
                fractions[q].append(hypervolume(F[:q], HV_REF) / hv_true)
            distinct.append(len({space.canonical(a) for a in archs}))
        for q in MO_QUERY_POINTS:
            values = np.array(fractions[q])
            figures[f"{prefix}_hv_fraction_{q}"] = float(values.mean())
            figures[f"{prefix}_hv_fraction_{q}_std"] = float(values.std())
            target = f">= {TARGET_HV[q]}" if prefix == "nsga2" else ""
            rows.append(
                [
                    f"{prefix}_hv_fraction_{q}",
                    f"{values.mean():.4f} +- {values.std():.4f}",
                    target,
                    _verdict(values.mean() >= TARGET_HV[q]) if target else "",
                ]
            )
        figures[f"{prefix}_{horizon}_distinct_mean"] = float(np.mean(distinct))
        figures[f"{prefix}_mo_wall_s"] = time.perf_counter() - t0
        logger.info(
            "%s (multi-objective): %d runs in %.1f s", prefix, seeds, figures[f"{prefix}_mo_wall_s"]
        )
    if optuna is not None:
        key = f"optuna_nsga2_{horizon}_distinct_mean"
        rows.append([key, f"{figures[key]:.1f}", "", f"distinct archs in {horizon} trials"])
    return figures, rows


# ------------------------------------------------------------------------- targets
def target_rows(figures: dict[str, float], seeds: int, optuna_seeds: int) -> list[list[Any]]:
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

    if "reinforce_300_test_mean" in figures:
        a, b = figures["reinforce_300_test_mean"], figures["random_300_test_mean"]
        se = math.hypot(figures["reinforce_300_test_std"], figures["random_300_test_std"])
        se /= math.sqrt(seeds)
        rows.append(
            [
                "REINFORCE 300 > random 300 (test)",
                f"{a:.4f} vs {b:.4f}",
                _verdict(a > b),
                f"diff {a - b:+.4f}, 2 SE {2 * se:.4f}; published 93.85 vs 93.70",
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


def suggest_cost(table: Table, quick: bool) -> tuple[dict[str, float], list[list[Any]]]:
    """Part 3: REA suggest time as the history grows, mobilenet (synthetic score) and NB201."""
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
    figures.update(time_suggest(nb201, lambda a: table[a][0], nb_windows))
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


def tune_check(table: Table, seeds: Sequence[int], queries: int) -> dict[str, float]:
    """Part 4: REA through Ray Tune with one trial at a time against the in-process run."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the new console output ignores verbose=0
    import ray
    from ray import tune

    space = create_space("nb201")
    val = {arch: v for arch, (v, _) in table.items()}
    trainable = tune.with_parameters(_nb201_trainable, val=val)
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
                matches.append(_same_as_inprocess(grid, searcher, space, table, seed, queries))
    finally:
        ray.shutdown()
    return {
        "tune_matches_inprocess": float(all(matches)),
        "tune_wall_s_per_run": float(np.mean(walls)),
        "tune_seeds": len(seeds),
        "tune_queries": queries,
    }


def _same_as_inprocess(
    grid: Any, searcher: NASSearch, space: SearchSpace, table: Table, seed: int, q: int
) -> bool:
    if grid.errors:
        print(f"tune seed {seed}: {len(grid.errors)} trials errored: {grid.errors[0]!r}")
        return False
    # Trial ids are random in ray 2.60; the experiment tag starts with the creation counter.
    results = sorted(grid, key=lambda r: int(r.metrics["experiment_tag"].split("_", 1)[0]))
    tune_archs = [space.from_config(r.config) for r in results]
    tune_vals = [r.metrics[METRIC] for r in results]
    tune_best = tune_archs[int(np.argmax(tune_vals))]  # argmax keeps the first of ties
    run = Run("rea", space, table, seed)
    run.extend(q)
    ref_best = run.searcher.best
    same = (
        tune_archs == run.archs
        and tune_vals == [table[a][0] for a in run.archs]
        and ref_best is not None
        and tune_best == ref_best[0]
        and searcher.best == ref_best  # Tune drove this very object (it is not copied)
    )
    first_diff = next((i for i, (a, b) in enumerate(zip(tune_archs, run.archs)) if a != b), None)
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


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_data_dir_argument(parser)
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
        help=f"results JSON (default {RESULTS_DIR / 'nb201_search.json'}; "
        "--quick writes only when --out is given)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="10 seeds (3 multi-objective), shorter suggest timing and Tune check (smoke test)",
    )
    parser.add_argument("--no-tune", action="store_true", help="skip the Ray Tune check")
    parser.add_argument("--no-optuna", action="store_true", help="skip the Optuna peers")
    args = parser.parse_args(argv)
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
        args.out = RESULTS_DIR / "nb201_search.json"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the tables and write the results JSON."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    optuna = import_optuna(args.no_optuna)
    single_thread_torch()
    data = load_data(args.data_dir)
    start = time.perf_counter()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else -1.0
    figures: dict[str, float] = {
        "seeds": args.seeds,
        "queries": max(QUERY_POINTS),
        "top1pct_threshold": TOP1PCT_TEST,
        "top1pct_cap": TOP1PCT_CAP,
        "load_avg_1min_at_start": load,
        "greedypool_proxy_subset": POOL_SUBSET,
        "greedypool_pool_k": POOL_K,
    }
    if optuna is not None:
        figures["optuna_seeds"] = args.optuna_seeds
    part1, rows1 = protocol(data, args.seeds, optuna, args.optuna_seeds)
    part2, rows2 = multi_objective(data, args.mo_seeds, optuna)
    part3, rows3 = suggest_cost(data.table, args.quick)
    for part in (part1, part2, part3):
        figures.update(part)
    if not args.no_tune:
        tune_seeds, tune_q = ((0,), 20) if args.quick else ((0, 1, 2), 60)
        figures.update(tune_check(data.table, tune_seeds, tune_q))
    figures["benchmark_wall_s"] = time.perf_counter() - start
    machine = machine_description()
    optuna_note = (
        f"Optuna {optuna.__version__}: TPE {args.optuna_seeds} seeds, NSGAIISampler "
        f"population {NSGA2_POP}; every Optuna trial is a query, repeats included"
        if optuna is not None
        else "Optuna peers skipped (--no-optuna)"
    )
    print(
        f"\nNAS-Bench-201 CIFAR-10, {args.seeds} seeds, selection by {METRIC}, reported "
        f"test_acc_200ep (mean +- std over seeds, ddof=0); top 1% = test >= {TOP1PCT_TEST}; "
        f"runs not there by {max(QUERY_POINTS)} queries go on to {TOP1PCT_CAP} and count "
        f"as {TOP1PCT_CAP} if never.\n"
        f"greedypool: GreedyNAS with its first population from the top {POOL_K} distinct of "
        f"{POOL_SUBSET} uniform archs ranked by {PROXY} (low fidelity, not charged to the "
        f"budget; the pool members are queries).\n"
        f"Multi-objective: max {METRIC}, min pixel3 ms, {args.mo_seeds} seeds; HV fraction of "
        f"the true front with ref {HV_REF} in (-val_acc, latency).\n"
        f"{optuna_note}.\n{machine}; 1-min load average at start {load:.2f}\n"
    )
    print_table(rows1 + rows2 + rows3, ["figure", "value", "target / window", "note"])
    print()
    print_table(
        target_rows(figures, args.seeds, args.optuna_seeds),
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
        write_results(args.out, figures, machine=machine)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
