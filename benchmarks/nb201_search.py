"""Random search and regularized evolution on the NAS-Bench-201 CIFAR-10 table.

Protocol (NAS-Bench-201 paper, Dong & Yang 2020): a searcher sees only ``val_acc_200ep``;
the architecture it returns after ``q`` queries is the best by ``val_acc_200ep`` among its
first ``q`` (first one on ties, as ``NASSearch.best``), reported by ``test_acc_200ep``.

Parts:
  1. in-process: ``seeds`` runs of each searcher, 300 queries, test accuracy at 100 and 300,
     queries until the returned architecture is in the top 1% by test (runs that have not
     got there by 300 queries go on, up to a cap, and count as the cap if they never do);
  2. the cost of one regularized-evolution ``suggest`` as the history grows (the
     ``mobilenet`` space with a synthetic score to 10,000 trials; NB201 to 6,000);
  3. the same search through Ray Tune (one trial at a time) must propose the same
     architectures and return the same one as the in-process run for the same seed.

Usage:
    python benchmarks/nb201_search.py [--data-dir DIR] [--seeds 100] [--out FILE] [--quick]
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
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
from spaces import SearchSpace, create_space

logger = logging.getLogger(__name__)

METRIC = "val_acc_200ep"
TOP1PCT_TEST = 93.775  # test_acc_200ep at which the top 1% of the 15,625 strings starts
QUERY_POINTS = (100, 300)
TOP1PCT_CAP = 2000  # runs not in the top 1% after max(QUERY_POINTS) queries go on to this
REA_OPTIONS = {"population_size": 20, "sample_size": 5}
SEARCHERS = {"random": "random", "rea": "regularized_evolution"}
TARGET_REA_300 = 94.15
TARGET_SUGGEST_MS = 1.0
WINDOW = 100

Table = dict[str, tuple[float, float]]  # arch string -> (val_acc_200ep, test_acc_200ep)


def load_table(path: Path) -> Table:
    """Arch string -> (val_acc_200ep, test_acc_200ep) from the NAS-Bench-201 CSV."""
    with open(path, newline="") as f:
        return {
            row["arch_str"]: (float(row["val_acc_200ep"]), float(row["test_acc_200ep"]))
            for row in csv.DictReader(f)
        }


def make_searcher(short: str, space: SearchSpace, seed: int, **kw: Any) -> NASSearch:
    """A searcher as the benchmark uses it (REA with population 20, tournament 5)."""
    options = dict(REA_OPTIONS) if short == "rea" else {}
    return create_searcher(SEARCHERS[short], space, seed=seed, **options, **kw)


class Run:
    """One seeded search driven in-process; ``extend`` continues the same run."""

    def __init__(self, short: str, space: SearchSpace, table: Table, seed: int) -> None:
        self.space, self.table = space, table
        self.searcher = make_searcher(short, space, seed, metric=METRIC, mode="max")
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


def protocol(table: Table, seeds: int) -> tuple[dict[str, float], list[list[Any]]]:
    """Part 1: test accuracy at each query point and queries to the top 1%, per searcher."""
    space = create_space("nb201")
    figures: dict[str, float] = {}
    rows: list[list[Any]] = []
    horizon = max(QUERY_POINTS)
    for short in SEARCHERS:
        t0 = time.perf_counter()
        runs = [Run(short, space, table, seed) for seed in range(seeds)]
        hits = []
        for run in runs:
            run.extend(horizon)
            if run.first_query_in_top1pct() is None:
                run.extend(TOP1PCT_CAP)
            hits.append(run.first_query_in_top1pct())
        for q in QUERY_POINTS:
            tests = np.array([run.incumbent_test[q - 1] for run in runs])
            figures[f"{short}_{q}_test_mean"] = float(tests.mean())
            figures[f"{short}_{q}_test_std"] = float(tests.std())
            figures[f"{short}_{q}_top1pct_frac"] = float(np.mean(tests >= TOP1PCT_TEST))
            target = f">= {TARGET_REA_300}" if (short, q) == ("rea", 300) else ""
            met = _verdict(float(tests.mean()) >= TARGET_REA_300) if target else ""
            rows.append(
                [f"{short}_{q}_test", f"{tests.mean():.3f} +- {tests.std():.3f}", target, met]
            )
        censored = sum(h is None for h in hits)
        counts = np.array([TOP1PCT_CAP if h is None else h for h in hits])
        figures[f"{short}_queries_to_top1pct_median"] = float(np.median(counts))
        figures[f"{short}_queries_to_top1pct_censored"] = censored
        figures[f"{short}_top1pct_by_300_frac"] = float(np.mean(counts <= horizon))
        rows.append(
            [
                f"{short}_queries_to_top1pct_median",
                f"{np.median(counts):g}",
                "",
                f"{censored} of {seeds} runs never got there by {TOP1PCT_CAP}",
            ]
        )
        logger.info("%s: %d runs in %.1f s", short, seeds, time.perf_counter() - t0)
    return figures, rows


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


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
    """Part 2: REA suggest time as the history grows, mobilenet (synthetic score) and NB201."""
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
    """Part 3: REA through Ray Tune with one trial at a time against the in-process run."""
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


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_data_dir_argument(parser)
    parser.add_argument("--seeds", type=int, default=100, help="runs per searcher (>= 100)")
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
        help="10 seeds, shorter suggest timing and Tune check (smoke test)",
    )
    parser.add_argument("--no-tune", action="store_true", help="skip the Ray Tune check")
    args = parser.parse_args(argv)
    if args.quick and args.seeds == 100:
        args.seeds = 10
    if args.seeds < 1 or (args.seeds < 100 and not args.quick):
        parser.error(f"--seeds must be >= 100 for a full run (got {args.seeds}); use --quick")
    if args.out is None and not args.quick:
        args.out = RESULTS_DIR / "nb201_search.json"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print a table and write the results JSON."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    table = load_table(require_file(args.data_dir / "cifar10.csv"))
    start = time.perf_counter()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else -1.0
    figures: dict[str, float] = {
        "seeds": args.seeds,
        "queries": max(QUERY_POINTS),
        "top1pct_threshold": TOP1PCT_TEST,
        "top1pct_cap": TOP1PCT_CAP,
        "load_avg_1min_at_start": load,
    }
    part1, rows1 = protocol(table, args.seeds)
    part2, rows2 = suggest_cost(table, args.quick)
    figures.update(part1)
    figures.update(part2)
    if not args.no_tune:
        tune_seeds, tune_q = ((0,), 20) if args.quick else ((0, 1, 2), 60)
        figures.update(tune_check(table, tune_seeds, tune_q))
    figures["benchmark_wall_s"] = time.perf_counter() - start
    machine = machine_description()
    print(
        f"\nNAS-Bench-201 CIFAR-10, {args.seeds} seeds, selection by {METRIC}, reported "
        f"test_acc_200ep (mean +- std over seeds, ddof=0); top 1% = test >= {TOP1PCT_TEST}; "
        f"runs not there by {max(QUERY_POINTS)} queries go on to {TOP1PCT_CAP} and count "
        f"as {TOP1PCT_CAP} if never.\n{machine}; 1-min load average at start {load:.2f}\n"
    )
    print_table(rows1 + rows2, ["figure", "value", "target / window", "note"])
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
