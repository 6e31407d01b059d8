"""raynas searchers on plain Ray Tune param spaces: NB201 as a Tune dict, ZDT1-3, overhead.

Every searcher here gets a plain Tune param-space dict, never a raynas ``SearchSpace``.

Part 1, NAS-Bench-201 as a Tune dict (data: ``cifar10.csv`` of ``--data-dir``, the real
NAS-Bench-201 CIFAR-10 table). Six ``tune.choice`` over the 5 NB201 operations, keys
``op0`` .. ``op5`` in the edge order of the NB201 string; the benchmark builds the string
from a config (the searchers know nothing of isomorphism: the 15,625 configurations are
15,625 distinct points to them). A searcher sees ``val_acc_200ep``; the architecture it
returns after ``q`` queries is the best by ``val_acc_200ep`` among its first ``q`` (first
on ties), reported by its ``test_acc_200ep``. Test accuracy selects nothing. ``seeds``
runs (seeds 0..n-1) of ``regularized_evolution``, ``reinforce``, ``genetic`` (raynas,
default options, the Tune dict as ``space``) and of Ray's ``OptunaSearch`` (TPE, its
defaults, ``seed=s``, the same dict through ``set_search_properties``), all driven in
process (``suggest`` / ``on_trial_complete``), 300 queries each; figures at 100 and 300.
A query is a distinct configuration for every method alike: a configuration suggested
again is answered from a cache (the searcher is told the known value) and is not counted
(Optuna repeats configurations; raynas searchers never do). The first 100 queries of a
300-query run are the 100-query run (no searcher is told the budget). Context from the
same table: its best test accuracy and the test accuracy of its best-validation
architecture (the best any method can return under this protocol).

Part 2, ZDT1/2/3 (data: pymoo's ``get_problem("zdt1")`` etc., 30 variables on the
problem's bounds [0, 1], and ``problem.pareto_front()``; no table). The space is the
YAML-form dict ``{"x0": {"uniform": [0.0, 1.0]}, ...}``. ``nsga2`` (population 100, other
options default) for 100 generations = 10,000 evaluations, driven in process, against
pymoo's ``minimize(problem, NSGA2(pop_size=100), ("n_gen", 100), seed=seed)`` (10,000
evaluations), ``zdt_seeds`` seeds each. IGD (pymoo's indicator, against
``problem.pareto_front()``) of the non-dominated set of the final population, the same
way on both sides (raynas: ``searcher.population``; pymoo: ``res.pop``), and of the
non-dominated set of every evaluated point ("archive"; pymoo's evaluated points are
collected by a ``callback``, and the final population is checked to equal that of a run
without it). The DEAP ``genetic`` searcher with ``selection="nsga2"``, population 100,
same budget, is reported for information. Then, once per
problem, one real ``tune.Tuner`` run (local Ray, 2 CPUs, one trial at a time, reused
actors) of ``nsga2`` built with no space, the 30 ``tune.uniform(0, 1)`` given as
``param_space``, over ``TUNE_GENERATIONS`` generations, must hand Tune exactly the
configurations (and get exactly the results) of the in-process run with the same seed.

Part 3, overhead (data: none; a no-op trainable). Trials/s of each raynas searcher, built
with no space and given a mixed ``param_space`` (``tune.choice``, ``tune.randint``,
``tune.loguniform``, constants, a nested dict) by ``tune.Tuner``, against Tune's
``BasicVariantGenerator`` (no ``search_alg``) on the same space: the same ``num_samples``,
``max_concurrent_trials=2``, ``reuse_actors=True``, one Ray session; ``repeats`` rounds,
each in a rotated order so drifting machine load hits all alike; medians. Also each
searcher's own cost, in process: ``suggest`` + ``on_trial_complete`` in ms per trial on the
same space (less sensitive to machine load than the trials/s of a whole Tune run).

Usage:
    python benchmarks/tune_spaces.py [--data-dir DIR] [--seeds 100] [--zdt-seeds 10]
        [--parts 1 2 3] [--repeats 5] [--out FILE] [--quick]
A full run (all parts) writes benchmarks/results/tune_spaces.json; a run of some parts
merges its figures into that file; ``--quick`` (smoke run) writes only with ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the new console output ignores verbose=0

import numpy as np  # noqa: E402
from _common import (  # noqa: E402
    RESULTS_DIR,
    add_data_dir_argument,
    machine_description,
    merge_results,
    print_table,
    require_file,
    write_results,
)
from ray import tune  # noqa: E402

from searchers import NASSearch, create_searcher  # noqa: E402

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------- part 1 constants
METRIC = "val_acc_200ep"
NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))  # (from, to), NB201 string order
OP_KEYS = tuple(f"op{i}" for i in range(len(EDGES)))
QUERY_POINTS = (100, 300)
NB201_SEARCHERS = ("regularized_evolution", "reinforce", "genetic")
SUGGEST_CAP = 50  # suggestions per query at most (repeats included) before a run is an error
# ---------------------------------------------------------------- part 2 constants
ZDT_PROBLEMS = ("zdt1", "zdt2", "zdt3")
OBJECTIVES = ["f1", "f2"]
POP = 100
GENERATIONS = 100
TUNE_GENERATIONS = 5  # Tune check: 500 trials per problem
TARGET_IGD_RATIO = 1.1
# ---------------------------------------------------------------- part 3 constants
OVERHEAD_SEARCHERS = (
    "random", "regularized_evolution", "reinforce", "greedynas", "nsga2", "genetic",
)
CONCURRENCY = 2
TARGET_OVERHEAD = 0.9

Table = dict[str, tuple[float, float]]  # NB201 string -> (val_acc_200ep, test_acc_200ep)


def se(values: Sequence[float]) -> float:
    """Standard error of the mean (sample standard deviation / sqrt(n)); 0 for one value."""
    return float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0


def ray_init() -> Any:
    """Local Ray on 2 CPUs, quiet; returns the ``ray`` module."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    return ray


# ===================================================================== part 1: NB201
def load_table(data_dir: Path) -> Table:
    """``cifar10.csv``: NB201 string -> (val_acc_200ep, test_acc_200ep)."""
    with open(require_file(data_dir / "cifar10.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    return {r["arch_str"]: (float(r[METRIC]), float(r["test_acc_200ep"])) for r in rows}


def nb201_tune_dict() -> dict[str, Any]:
    """The NB201 cell as a plain Tune param space: one ``tune.choice`` per edge."""
    return {key: tune.choice(list(NB201_OPS)) for key in OP_KEYS}


def arch_string(config: dict[str, Any]) -> str:
    """The NB201 string of a config of the Tune dict (``|op~src|`` per edge, by node)."""
    ops = [config[key] for key in OP_KEYS]
    return "+".join(
        "|" + "|".join(f"{ops[k]}~{src}" for k, (src, dst) in enumerate(EDGES) if dst == node)
        + "|"
        for node in (1, 2, 3)
    )


def check_table(table: Table) -> dict[str, float]:
    """Every configuration of the dict names a row (and vice versa); the table's optima."""
    import itertools

    built = {arch_string(dict(zip(OP_KEYS, ops)))
             for ops in itertools.product(NB201_OPS, repeat=len(OP_KEYS))}
    if built != set(table):
        raise SystemExit(f"error: the Tune dict's {len(built)} configurations do not match "
                         f"the table's {len(table)} architectures")
    vals = np.array([v for v, _ in table.values()])
    tests = np.array([t for _, t in table.values()])
    best_val = vals.max()
    at_best_val = tests[vals == best_val]
    return {
        "nb201_table_best_test": float(tests.max()),
        "nb201_table_best_val": float(best_val),
        # the first row with the best validation accuracy, as the runs break ties
        "nb201_table_best_val_arch_test": float(at_best_val[0]),
        "nb201_table_best_val_ties": int(at_best_val.size),
    }


@dataclass
class Trace:
    """One run: the returned architecture's test accuracy after each query, and costs."""

    incumbent_test: list[float]
    suggestions: int  # suggest calls, repeats included
    best_val: float
    wall_s: float


def drive_nb201(searcher: Any, table: Table, queries: int) -> Trace:
    """Query ``searcher`` until it has proposed ``queries`` distinct configurations."""
    start = time.perf_counter()
    known: dict[str, float] = {}  # the cache answering repeated configurations
    best_val, best_test = -math.inf, math.nan
    incumbent: list[float] = []
    calls = 0
    while len(incumbent) < queries:
        if calls >= SUGGEST_CAP * queries:
            raise RuntimeError(f"{searcher}: {calls} suggestions for {len(incumbent)} queries")
        trial_id = f"t{calls}"
        calls += 1
        config = searcher.suggest(trial_id)
        if not isinstance(config, dict):
            raise RuntimeError(f"{searcher} returned {config!r} at suggestion {calls}")
        arch = arch_string(config)
        if arch in known:  # a repeat: answered from the cache, not a query
            searcher.on_trial_complete(trial_id, {METRIC: known[arch]})
            continue
        val, test = table[arch]
        known[arch] = val
        searcher.on_trial_complete(trial_id, {METRIC: val})
        if val > best_val:  # strict: the first of equal values stays
            best_val, best_test = val, test
        incumbent.append(best_test)
    return Trace(incumbent, calls, best_val, time.perf_counter() - start)


def make_nb201_searcher(name: str, seed: int) -> Any:
    """A raynas searcher (defaults, the Tune dict as space) or Ray's OptunaSearch (TPE)."""
    if name == "optuna_tpe":
        from ray.tune.search.optuna import OptunaSearch

        searcher = OptunaSearch(metric=METRIC, mode="max", seed=seed)
        searcher.set_search_properties(METRIC, "max", nb201_tune_dict())
        return searcher
    return create_searcher(name, nb201_tune_dict(), metric=METRIC, mode="max", seed=seed)


def part_nb201(table: Table, seeds: int) -> dict[str, float]:
    """Part 1: test accuracy of the returned architecture at 100 and 300 queries."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    figures: dict[str, float] = {"nb201_seeds": seeds, **check_table(table)}
    horizon = max(QUERY_POINTS)
    rows: list[list[Any]] = []
    for name in (*NB201_SEARCHERS, "optuna_tpe"):
        traces = []
        for seed in range(seeds):
            searcher = make_nb201_searcher(name, seed)
            trace = drive_nb201(searcher, table, horizon)
            if isinstance(searcher, NASSearch):
                best = searcher.best
                if best is None or best[1] != trace.best_val:
                    raise RuntimeError(f"{searcher}.best {best} != incumbent {trace.best_val}")
            traces.append(trace)
        repeats = [t.suggestions - horizon for t in traces]
        wall = sum(t.wall_s for t in traces)
        figures[f"{name}_tunedict_repeats_mean"] = float(np.mean(repeats))
        figures[f"{name}_tunedict_wall_s"] = wall
        for q in QUERY_POINTS:
            tests = [t.incumbent_test[q - 1] for t in traces]
            prefix = f"{name}_tunedict_{q}"
            figures[f"{prefix}_test_mean"] = float(np.mean(tests))
            figures[f"{prefix}_test_se"] = se(tests)
            figures[f"{prefix}_test_std"] = float(np.std(tests, ddof=1)) if seeds > 1 else 0.0
            rows.append([name, q, f"{np.mean(tests):.4f} +- {se(tests):.4f}",
                         f"{np.std(tests, ddof=1) if seeds > 1 else 0.0:.4f}",
                         f"{np.mean(repeats):.1f}", f"{wall:.1f}"])
        logger.info("part 1: %s, %d runs in %.1f s", name, seeds, wall)
    print(f"\nPart 1. NAS-Bench-201 CIFAR-10 table ({len(table)} rows) as a Tune dict of six "
          f"tune.choice; {seeds} seeds; selection by {METRIC}, reported test_acc_200ep of the "
          "returned architecture.\nA query is a distinct configuration; repeats (Optuna) are "
          "answered from a cache and not counted ('repeats' = extra suggestions per run, "
          f"over {horizon} queries).")
    print_table(rows, ["searcher", "queries", "test mean +- SE", "std", "repeats", "wall s"])
    print(f"table: best test {figures['nb201_table_best_test']:.4f}; best val "
          f"{figures['nb201_table_best_val']:.2f} ({figures['nb201_table_best_val_ties']} "
          f"row(s)), its test {figures['nb201_table_best_val_arch_test']:.4f}")
    rows = []
    for name in NB201_SEARCHERS:
        for q in QUERY_POINTS:
            a, b = (figures[f"{m}_tunedict_{q}_test_mean"] for m in (name, "optuna_tpe"))
            sa, sb = (figures[f"{m}_tunedict_{q}_test_se"] for m in (name, "optuna_tpe"))
            two_se = 2 * math.hypot(sa, sb)
            rows.append([f"{name} vs optuna_tpe", q, f"{a - b:+.4f}", f"{two_se:.4f}",
                         "within noise" if abs(a - b) <= two_se else
                         ("raynas better" if a > b else "Optuna better")])
    print_table(rows, ["comparison", "queries", "diff (test)", "2 SE", "verdict"])
    return figures


# ====================================================================== part 2: ZDT
def zdt_space(problem: Any, *, tune_form: bool) -> dict[str, Any]:
    """One continuous decision per variable on the problem's bounds (YAML or Tune form)."""
    out: dict[str, Any] = {}
    for i, (low, high) in enumerate(zip(problem.xl, problem.xu)):
        bounds = [float(low), float(high)]
        out[f"x{i}"] = tune.uniform(*bounds) if tune_form else {"uniform": bounds}
    return out


def evaluate(problem: Any, config: dict[str, Any]) -> tuple[list[float], dict[str, float]]:
    """The variable vector of a config and the objectives of the problem there."""
    x = [float(config[f"x{i}"]) for i in range(problem.n_var)]
    F = problem.evaluate(np.array([x]), return_values_of=["F"])[0]
    return x, {k: float(v) for k, v in zip(OBJECTIVES, F)}


def drive_zdt(searcher: NASSearch, problem: Any, evaluations: int) -> tuple[list, np.ndarray]:
    """``evaluations`` configurations in process: (configs as vectors, objective matrix)."""
    xs, fs = [], []
    for i in range(evaluations):
        config = searcher.suggest(f"t{i}")
        if not isinstance(config, dict):
            raise RuntimeError(f"{searcher} returned {config!r} at evaluation {i}")
        x, result = evaluate(problem, config)
        searcher.on_trial_complete(f"t{i}", result)
        xs.append(x)
        fs.append([result[k] for k in OBJECTIVES])
    return xs, np.array(fs)


def nondominated(F: np.ndarray) -> np.ndarray:
    """The rows of ``F`` (minimised) on the first non-dominated front."""
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    return F[NonDominatedSorting().do(F, only_non_dominated_front=True)]


def raynas_zdt(name: str, problem: Any, seed: int, generations: int,
               igd: Callable[[np.ndarray], float]) -> tuple[float, float]:
    """IGD of the final population's front and of the archive's front of one raynas run."""
    options = {"population_size": POP}
    if name == "genetic":
        options["selection"] = "nsga2"
    searcher = create_searcher(name, zdt_space(problem, tune_form=False), metric=OBJECTIVES,
                               mode=["min", "min"], seed=seed, **options)
    _, F = drive_zdt(searcher, problem, POP * generations)
    population = searcher.population  # type: ignore[attr-defined]
    if len(population) != POP:
        raise RuntimeError(f"{searcher}: population of {len(population)}, expected {POP}")
    if name == "nsga2" and searcher.generation != generations:  # type: ignore[attr-defined]
        raise RuntimeError(f"{searcher}: {searcher.generation} generations told")
    P = np.array([[v[k] for k in OBJECTIVES] for _, v in population])
    return igd(nondominated(P)), igd(nondominated(F))


def pymoo_zdt(problem: Any, seed: int, generations: int,
              igd: Callable[[np.ndarray], float]) -> tuple[float, float]:
    """The same two IGDs for pymoo's own ``minimize`` with ``NSGA2(pop_size=POP)``."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.callback import Callback
    from pymoo.optimize import minimize

    class Archive(Callback):  # type: ignore[misc]
        """Every evaluated point: the infills of each generation (algorithm.off)."""

        def __init__(self) -> None:
            super().__init__()
            self.F: list[np.ndarray] = []

        def notify(self, algorithm: Any) -> None:
            self.F.append(algorithm.off.get("F"))

    archive = Archive()
    res = minimize(problem, NSGA2(pop_size=POP), ("n_gen", generations), seed=seed,
                   callback=archive)
    plain = minimize(problem, NSGA2(pop_size=POP), ("n_gen", generations), seed=seed)
    if not np.array_equal(res.pop.get("X"), plain.pop.get("X")):
        raise RuntimeError(f"pymoo seed {seed}: the archive callback changed the run")
    F = np.vstack(archive.F)
    if len(F) != res.algorithm.evaluator.n_eval:
        raise RuntimeError(f"pymoo seed {seed}: {len(F)} archived, "
                           f"{res.algorithm.evaluator.n_eval} evaluated")
    return igd(nondominated(plain.pop.get("F"))), igd(nondominated(F))


def _zdt_trainable(config: dict[str, Any], problem_name: str) -> None:
    from pymoo.problems import get_problem
    from ray import tune

    _, result = evaluate(get_problem(problem_name), config)
    tune.report(result)


def tune_zdt(problem_name: str, seed: int, generations: int, storage: str) -> tuple[bool, float]:
    """One ``tune.Tuner`` run of a bare ``nsga2`` against the in-process run: same configs?"""
    from pymoo.problems import get_problem

    problem = get_problem(problem_name)
    trials = POP * generations
    searcher = create_searcher("nsga2", None, metric=OBJECTIVES, mode=["min", "min"],
                               seed=seed, population_size=POP)  # no space: Tune's param_space
    tuner = tune.Tuner(
        tune.with_parameters(_zdt_trainable, problem_name=problem_name),
        param_space=zdt_space(problem, tune_form=True),
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=trials,
                                    max_concurrent_trials=1, reuse_actors=True),
        run_config=tune.RunConfig(name=f"{problem_name}_seed{seed}", storage_path=storage,
                                  verbose=0),
    )
    start = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - start
    if grid.errors:
        print(f"tune {problem_name}: {len(grid.errors)} trials errored: {grid.errors[0]!r}")
        return False, wall
    # trial ids are random in ray 2.60; the experiment tag starts with the creation counter
    results = sorted(grid, key=lambda r: int(r.metrics["experiment_tag"].split("_", 1)[0]))
    tune_x = [evaluate(problem, r.config)[0] for r in results]
    tune_f = [[r.metrics[k] for k in OBJECTIVES] for r in results]
    reference = create_searcher("nsga2", zdt_space(problem, tune_form=False), metric=OBJECTIVES,
                                mode=["min", "min"], seed=seed, population_size=POP)
    ref_x, ref_f = drive_zdt(reference, problem, trials)
    same = tune_x == ref_x and np.array_equal(np.array(tune_f), ref_f)
    first = next((i for i, (a, b) in enumerate(zip(tune_x, ref_x)) if a != b), None)
    print(f"tune {problem_name} seed {seed}: {len(results)} trials in {wall:.1f} s, identical "
          f"to in process: {same} (first difference at {first}; searcher told "
          f"{searcher.generation} generations, in process {reference.generation})")
    return same and len(results) == trials, wall


def ratio_se(figures: dict[str, float], problem_name: str) -> float:
    """Standard error of mean IGD raynas / mean IGD pymoo (delta method, independent runs)."""
    a, b = (figures[f"{problem_name}_{m}_igd_mean"] for m in ("nsga2", "pymoo"))
    sa, sb = (figures[f"{problem_name}_{m}_igd_se"] for m in ("nsga2", "pymoo"))
    return a / b * math.hypot(sa / a, sb / b)


def part_zdt(seeds: int, generations: int, tune_generations: int) -> dict[str, float]:
    """Part 2: IGD of raynas NSGA-II (and DEAP genetic) vs pymoo's NSGA2; the Tune check."""
    from pymoo.indicators.igd import IGD
    from pymoo.problems import get_problem

    figures: dict[str, float] = {"zdt_seeds": seeds, "zdt_population": POP,
                                 "zdt_generations": generations,
                                 "zdt_evaluations": POP * generations}
    rows: list[list[Any]] = []
    for problem_name in ZDT_PROBLEMS:
        problem = get_problem(problem_name)
        igd = IGD(problem.pareto_front())
        runs: dict[str, list[tuple[float, float]]] = {"nsga2": [], "genetic": [], "pymoo": []}
        walls = dict.fromkeys(runs, 0.0)
        for seed in range(seeds):
            for method in runs:
                start = time.perf_counter()
                if method == "pymoo":
                    runs[method].append(pymoo_zdt(problem, seed, generations, igd))
                else:
                    runs[method].append(raynas_zdt(method, problem, seed, generations, igd))
                walls[method] += time.perf_counter() - start
        for method, values in runs.items():
            pop_igd, arc_igd = [v[0] for v in values], [v[1] for v in values]
            figures[f"{problem_name}_{method}_igd_mean"] = float(np.mean(pop_igd))
            figures[f"{problem_name}_{method}_igd_se"] = se(pop_igd)
            figures[f"{problem_name}_{method}_archive_igd_mean"] = float(np.mean(arc_igd))
            figures[f"{problem_name}_{method}_archive_igd_se"] = se(arc_igd)
            figures[f"{problem_name}_{method}_wall_s"] = walls[method]
        base = figures[f"{problem_name}_pymoo_igd_mean"]
        base_arc = figures[f"{problem_name}_pymoo_archive_igd_mean"]
        figures[f"{problem_name}_igd_ratio_vs_pymoo"] = (
            figures[f"{problem_name}_nsga2_igd_mean"] / base)
        figures[f"{problem_name}_igd_ratio_vs_pymoo_se"] = ratio_se(figures, problem_name)
        figures[f"{problem_name}_archive_igd_ratio_vs_pymoo"] = (
            figures[f"{problem_name}_nsga2_archive_igd_mean"] / base_arc)
        figures[f"{problem_name}_genetic_igd_ratio_vs_pymoo"] = (
            figures[f"{problem_name}_genetic_igd_mean"] / base)
        figures[f"{problem_name}_genetic_archive_igd_ratio_vs_pymoo"] = (
            figures[f"{problem_name}_genetic_archive_igd_mean"] / base_arc)
        for method in runs:
            ratio = "" if method == "pymoo" else (
                f"{figures[f'{problem_name}_{method}_igd_mean'] / base:.3f}")
            arc_ratio = "" if method == "pymoo" else (
                f"{figures[f'{problem_name}_{method}_archive_igd_mean'] / base_arc:.3f}")
            rows.append([
                problem_name, "raynas nsga2" if method == "nsga2" else (
                    "raynas genetic (DEAP, nsga2 selection)" if method == "genetic"
                    else "pymoo minimize NSGA2"),
                f"{figures[f'{problem_name}_{method}_igd_mean']:.5f} +- "
                f"{figures[f'{problem_name}_{method}_igd_se']:.5f}", ratio,
                f"{figures[f'{problem_name}_{method}_archive_igd_mean']:.5f} +- "
                f"{figures[f'{problem_name}_{method}_archive_igd_se']:.5f}", arc_ratio,
                f"{walls[method]:.1f}",
            ])
        logger.info("part 2: %s done", problem_name)
    print(f"\nPart 2. ZDT1-3 (pymoo problems, 30 variables in [0, 1], as a YAML-form dict of "
          f"30 uniform); population {POP}, {generations} generations = {POP * generations} "
          f"evaluations, {seeds} seeds; IGD (pymoo) vs problem.pareto_front(), mean +- SE.\n"
          "'population': non-dominated set of the final population; 'archive': of every "
          "evaluated point. ratio = mean IGD / mean IGD of pymoo.")
    print_table(rows, ["problem", "method", "IGD population", "ratio", "IGD archive",
                       "ratio", "wall s"])
    equal, walls = [], []
    ray = ray_init()
    try:
        with tempfile.TemporaryDirectory(prefix="raynas-tune-spaces-") as storage:
            for problem_name in ZDT_PROBLEMS:
                same, wall = tune_zdt(problem_name, 0, tune_generations, os.path.abspath(storage))
                equal.append(same)
                walls.append(wall)
    finally:
        ray.shutdown()
    figures["zdt_tune_sequence_equal"] = int(all(equal))
    figures["zdt_tune_trials"] = POP * tune_generations
    figures["zdt_tune_wall_s_total"] = float(sum(walls))
    return figures


# ================================================================= part 3: overhead
def mixed_param_space() -> dict[str, Any]:
    """choice, randint, loguniform, constants and a nested dict."""
    return {
        "model": {"width": tune.choice([16, 32, 64, 128]), "depth": tune.randint(2, 9),
                  "activation": "relu"},
        "lr": tune.loguniform(1e-4, 1e-1),
        "optimizer": tune.choice(["sgd", "adam"]),
        "epochs": 3,
    }


def toy_score(config: dict[str, Any]) -> float:
    """A cheap score of a mixed-space config, so that searchers have something to follow."""
    model = config["model"]
    return (model["width"] / 128 - abs(math.log10(config["lr"]) + 2.5)
            - 0.1 * abs(model["depth"] - 5) + (config["optimizer"] == "adam") * 0.1)


def _noop(config: dict[str, Any]) -> None:
    from ray import tune

    tune.report({"score": toy_score(config)})


def suggest_ms(name: str, trials: int, seed: int) -> float:
    """In process: mean ms of one ``suggest`` + ``on_trial_complete`` on the mixed space."""
    searcher = create_searcher(name, None, seed=seed)
    searcher.set_search_properties("score", "max", mixed_param_space())
    start = time.perf_counter()
    for i in range(trials):
        config = searcher.suggest(f"t{i}")
        if not isinstance(config, dict):
            raise RuntimeError(f"{searcher} returned {config!r} at trial {i}")
        searcher.on_trial_complete(f"t{i}", {"score": toy_score(config)})
    return (time.perf_counter() - start) / trials * 1e3


def _tune_rate(search_alg: Any, trials: int, storage: str) -> float:
    """Trials per second of ``trials`` no-op trials over the mixed param space."""
    start = time.perf_counter()
    grid = tune.Tuner(
        _noop,
        param_space=mixed_param_space(),
        tune_config=tune.TuneConfig(search_alg=search_alg, metric="score", mode="max",
                                    num_samples=trials, max_concurrent_trials=CONCURRENCY,
                                    reuse_actors=True),
        run_config=tune.RunConfig(storage_path=storage, verbose=0),
    ).fit()
    rate = trials / (time.perf_counter() - start)
    if grid.errors or len(grid) != trials:
        raise RuntimeError(f"{search_alg}: {len(grid)} trials, {len(grid.errors)} errors")
    return rate


def part_overhead(trials: int, repeats: int) -> dict[str, float]:
    """Part 3: median trials/s of each searcher and of Tune's BasicVariantGenerator."""
    names = ["basic", *OVERHEAD_SEARCHERS]
    rates: dict[str, list[float]] = {n: [] for n in names}
    ray = ray_init()
    try:
        with tempfile.TemporaryDirectory(prefix="raynas-tune-spaces-") as tmp:
            storage = os.path.abspath(tmp)
            _tune_rate(None, 10, storage)  # warm-up: workers, imports
            for r in range(repeats):
                shift = r % len(names)  # rotate so drifting load hits all alike
                for name in names[shift:] + names[:shift]:
                    searcher = None if name == "basic" else create_searcher(name, None, seed=r)
                    rates[name].append(_tune_rate(searcher, trials, storage))
                print(f"  overhead round {r + 1}/{repeats}: " + ", ".join(
                    f"{n} {v[-1]:.1f}/s" for n, v in rates.items()), flush=True)
    finally:
        ray.shutdown()
    for name in OVERHEAD_SEARCHERS:
        suggest_ms(name, 20, 0)  # warm-up: imports
    cost = {n: statistics.median(suggest_ms(n, trials, r) for r in range(repeats))
            for n in OVERHEAD_SEARCHERS}
    med = {n: statistics.median(v) for n, v in rates.items()}
    figures: dict[str, float] = {"overhead_trials": trials, "overhead_repeats": repeats,
                                 "overhead_concurrency": CONCURRENCY,
                                 "basic_trials_per_s": med["basic"]}
    rows = [["basic (BasicVariantGenerator)", med["basic"], 1.0,
             f"{min(rates['basic']):.1f}-{max(rates['basic']):.1f}", ""]]
    for name in OVERHEAD_SEARCHERS:
        figures[f"{name}_trials_per_s"] = med[name]
        figures[f"{name}_ratio_vs_basic"] = med[name] / med["basic"]
        figures[f"{name}_suggest_complete_ms"] = cost[name]
        rows.append([name, med[name], med[name] / med["basic"],
                     f"{min(rates[name]):.1f}-{max(rates[name]):.1f}", cost[name]])
    figures["overhead_ratio_min"] = min(figures[f"{n}_ratio_vs_basic"] for n in OVERHEAD_SEARCHERS)
    print(f"\nPart 3. Overhead: no-op trainable, mixed param space (choice, randint, "
          f"loguniform, constants, nested dict), {trials} trials, max_concurrent_trials="
          f"{CONCURRENCY}, reuse_actors=True, {repeats} rotated rounds; medians (range). "
          "raynas searchers built with no space (taken from param_space). 'ms/trial': "
          "the searcher's own suggest + on_trial_complete in process, same space and count "
          "(median of the rounds).")
    print_table(rows, ["searcher", "trials/s", "ratio vs basic", "range", "ms/trial"])
    return figures


# ============================================================================== main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_data_dir_argument(parser)
    parser.add_argument("--seeds", type=int, default=None,
                        help="part 1 runs per method (default 100; --quick 10)")
    parser.add_argument("--zdt-seeds", type=int, default=None,
                        help="part 2 runs per method and problem (default 10; --quick 2)")
    parser.add_argument("--parts", type=int, nargs="+", choices=(1, 2, 3), default=[1, 2, 3],
                        help="parts to run (default all)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="part 3 rounds (default 5; --quick 1)")
    parser.add_argument("--overhead-trials", type=int, default=None,
                        help="part 3 trials per Tune run (default 200; --quick 40)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"results JSON (default {RESULTS_DIR / 'tune_spaces.json'}; "
                        "--quick writes only when --out is given)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 10 NB201 seeds, 2 ZDT seeds of 10 generations, a Tune "
                        "check of 2 generations, 1 overhead round of 40 trials")
    args = parser.parse_args(argv)
    q = args.quick
    args.seeds = args.seeds or (10 if q else 100)
    args.zdt_seeds = args.zdt_seeds or (2 if q else 10)
    args.repeats = args.repeats or (1 if q else 5)
    args.overhead_trials = args.overhead_trials or (40 if q else 200)
    args.generations = 10 if q else GENERATIONS
    args.tune_generations = 2 if q else TUNE_GENERATIONS
    if not q and (args.seeds < 100 or args.zdt_seeds < 10):
        parser.error("a full run needs --seeds >= 100 and --zdt-seeds >= 10; use --quick")
    if args.out is None and not q:
        args.out = RESULTS_DIR / "tune_spaces.json"
    args.parts = sorted(set(args.parts))
    return args


def single_thread_torch() -> int | None:
    """One intra-op thread for REINFORCE's tiny tensors (speed only); the previous count."""
    try:
        import torch
    except ImportError:
        return None
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    return int(previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen parts, print their tables and write the results JSON."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("searchers").setLevel(logging.WARNING)
    machine = machine_description()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else -1.0
    print(f"{machine}; 1-min load average at start {load:.2f}; parts {args.parts}", flush=True)
    figures: dict[str, float] = {"load_avg_1min_at_start": load}
    start = time.perf_counter()
    if 1 in args.parts:
        table = load_table(args.data_dir)
        t0 = time.perf_counter()
        previous = single_thread_torch()
        try:
            figures.update(part_nb201(table, args.seeds))
        finally:
            if previous is not None:
                import torch

                torch.set_num_threads(previous)  # part 3 measures with torch's default
        figures["part1_wall_s"] = time.perf_counter() - t0
    if 2 in args.parts:
        t0 = time.perf_counter()
        figures.update(part_zdt(args.zdt_seeds, args.generations, args.tune_generations))
        figures["part2_wall_s"] = time.perf_counter() - t0
    if 3 in args.parts:
        t0 = time.perf_counter()
        figures.update(part_overhead(args.overhead_trials, args.repeats))
        figures["part3_wall_s"] = time.perf_counter() - t0
    figures["benchmark_wall_s"] = time.perf_counter() - start
    figures["load_avg_1min_at_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else -1.0
    print_targets(figures)
    print(f"total {figures['benchmark_wall_s']:.1f} s; 1-min load average at end "
          f"{figures['load_avg_1min_at_end']:.2f} (" + ", ".join(
        f"part {p} {figures[f'part{p}_wall_s']:.1f} s" for p in args.parts) + ")")
    if args.out is not None:
        if args.parts == [1, 2, 3]:
            write_results(args.out, figures, machine=machine)
        else:
            merge_results(args.out, figures, machine=machine)
        print(f"wrote {args.out}")
    return 0


def print_targets(figures: dict[str, float]) -> None:
    """The brief's targets that the parts run have figures for."""
    rows: list[list[Any]] = []
    for name in ZDT_PROBLEMS:
        key = f"{name}_igd_ratio_vs_pymoo"
        if key in figures:
            rows.append([key, f"{figures[key]:.4f} +- {figures[key + '_se']:.4f} (SE)",
                         f"<= {TARGET_IGD_RATIO}",
                         "met" if figures[key] <= TARGET_IGD_RATIO else "NOT met"])
    if "zdt_tune_sequence_equal" in figures:
        value = figures["zdt_tune_sequence_equal"]
        rows.append(["zdt_tune_sequence_equal", value, "1", "met" if value == 1 else "NOT met"])
    if "overhead_ratio_min" in figures:
        value = figures["overhead_ratio_min"]
        rows.append(["overhead_ratio_min", f"{value:.4f}", f">= {TARGET_OVERHEAD}",
                     "met" if value >= TARGET_OVERHEAD else "NOT met"])
    if rows:
        print()
        print_table(rows, ["target", "value", "wanted", "verdict"])


if __name__ == "__main__":
    sys.exit(main())
