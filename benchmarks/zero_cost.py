"""Zero-cost proxies on NAS-Bench-201: checks against published figures, and searches they speed up.

Parts (``--parts proxies,predictor,search``):

* ``proxies``: raynas's proxies of ``--archs`` architectures (distinct rows of the table drawn
  uniformly with seed 0, as NAS-Bench-Suite-Zero samples) at NAS-Bench-201's CIFAR shape
  (C=16, N=5, 32x32x3 input, 10 classes), computed in
  parallel Ray tasks by the same code as ``raynas zero-cost score``. Data-free proxies (synflow,
  zen, params, flops) on all of them; data-dependent ones (naswot, jacov, snip, grad_norm,
  fisher, grasp, gradsign) on the first ``--data-archs``, with one batch of ``--data-batch``
  (32) scikit-learn digits images resized to 32x32x3 (CIFAR-10 is not available offline). Figures:
  ``spearman_<proxy>`` with the table's ``val_acc_200ep``, ``ms_<proxy>`` (median CPU ms per
  architecture, one torch thread), ``zen_vs_naslib_spearman`` (our Zen-score against the
  table's ``zen_score`` column, NASLib's), and ``n_<proxy>`` (architectures each figure is on).
  Published (NAS-Bench-Suite-Zero, Krishnakumar et al. 2022, CIFAR-10, 1,000 architectures):
  nwot .77, jacov .75, synflow .73, params .72, flops .69, grad_norm / snip .58, grasp .51,
  fisher .50, zen .35.
* ``predictor``: the ``PredictorSearch`` ensemble trained on 100 architectures of that sample,
  Spearman of its predictions with ``val_acc_200ep`` on the others, with all 11 proxies as
  features (``ensemble_spearman_100``; the data-dependent ones on digits, as above), the 4
  data-free ones (``_free``) or none (``_plain``), over ``--predictor-seeds`` draws of the 100.
* ``search``: searches of the table at 100 distinct queries (a repeat is a free cache hit for
  every method), ``--seeds`` seeds: validation accuracy chooses, test accuracy reports. The
  proxies come from a table of every architecture (``--proxy-table``, built once by
  ``raynas zero-cost score --space nb201 --all --proxies synflow,params,flops --in-channels 3``)
  and each architecture a method screens or scores is charged the milliseconds recorded for it
  (``<method>_proxy_seconds_mean``, ``<method>_scored_mean``). Figures:
  ``<method>_100_test_mean``, ``<method>_queries_to_top1pct_median`` (queries until the
  best-by-validation architecture so far is in the table's top 1% by test accuracy; runs that
  never get there count as 101), thresholds computed from the table given. Options are the
  papers' defaults (BANANAS: 10 initial, batches of 10, 5 MLPs; the warm start: screen 1,000,
  try the best 10), not tuned on this table.

Usage::

    python benchmarks/zero_cost.py [--data-dir DIR] [--parts proxies,predictor,search]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (  # noqa: E402
    RESULTS_DIR,
    add_data_dir_argument,
    machine_description,
    merge_results,
    require_file,
)
from benchmarks._nb201 import (  # noqa: E402
    DistinctQueryDriver,
    NB201Table,
    SearcherProposer,
    driver_trace,
    first_query_reaching,
    load_table,
    median_queries_to_threshold,
    table_evaluator,
    table_thresholds,
    value_at,
)

logger = logging.getLogger("zero_cost")

DATA_FREE = ["synflow", "zen", "params", "flops"]
DATA_DEPENDENT = ["naswot", "jacov", "snip", "grad_norm", "fisher", "grasp", "gradsign"]
PUBLISHED = {"naswot": 0.77, "jacov": 0.75, "synflow": 0.73, "params": 0.72, "flops": 0.69,
             "grad_norm": 0.58, "snip": 0.58, "grasp": 0.51, "fisher": 0.50, "zen": 0.35}
SEARCH_PROXIES = ["synflow", "params"]  # flops ranks NB201 cells exactly as params does
QUERIES = 100


def spearman(a: Any, b: Any) -> float:
    """Spearman's rank correlation of two sequences, NaN pairs left out."""
    from scipy.stats import spearmanr

    x, y = np.asarray(a, float), np.asarray(b, float)
    keep = np.isfinite(x) & np.isfinite(y)
    return float(spearmanr(x[keep], y[keep]).statistic)


def scored(path: Path, proxies: list[str], archs: list[str], dataset: str | None,
           block: int = 50, batch_size: int = 64) -> dict:
    """Rows of ``proxies`` for ``archs`` from ``path``, scoring (in Ray tasks) what is missing.

    The table is written after every ``block`` architectures, so an interrupted run keeps
    what it scored and a rerun scores only the rest.
    """
    import ray

    from raynas.run.runner import ensure_ray
    from raynas.zero_cost.scorer import ProxyScorer
    from raynas.zero_cost.table import progress_bar, read_table, score_archs, write_table
    from spaces import create_space

    space = create_space("nb201")
    rows: dict[str, dict[str, float]] = {}
    if path.is_file():
        rows, settings = read_table(path)
        if settings.get("proxies") != proxies or settings.get("batch_size") != batch_size:
            rows = {}
    todo = [a for a in archs if a not in rows]
    if todo:
        scorer = ProxyScorer(space, proxies, dataset=dataset, batch_size=batch_size, seed=0,
                             device="cpu", in_channels=3)
        started = ensure_ray(None)
        try:
            t0 = time.monotonic()
            for i in range(0, len(todo), block):
                new = score_archs(scorer, [space.from_string(a) for a in todo[i:i + block]],
                                  chunk=5, progress=progress_bar())
                for row in new:
                    rows[row.pop("arch_str")] = row
                keep = [{"arch_str": a, **rows[a]} for a in rows]
                write_table(keep, path, {"space": space.spec(), "proxies": proxies, "seed": 0,
                                         "dataset": dataset, "batch_size": batch_size,
                                         "in_channels": 3, "archs": len(keep)})
                logger.info("%d of %d architectures scored in %.0f s", min(i + block, len(todo)),
                            len(todo), time.monotonic() - t0)
        finally:
            if started:
                ray.shutdown()
    return {a: rows[a] for a in archs}


def sample_strings(table: NB201Table, count: int) -> list[str]:
    """``count`` distinct rows of the table drawn uniformly with seed 0, as table strings.

    Uniform over the table's rows, as NAS-Bench-Suite-Zero samples, so isomorphic and
    degenerate cells appear as often as they do in the space.
    """
    order = np.random.default_rng(0).permutation(len(table.archs))
    return [table.archs[i] for i in order[:count]]


def part_proxies(table: NB201Table, args: argparse.Namespace) -> dict[str, float]:
    """Spearman of each proxy with validation accuracy, its cost, and Zen against NASLib's."""
    archs = sample_strings(table, args.archs)
    free = scored(RESULTS_DIR / f"zero_cost_{table.name}_free.parquet", DATA_FREE, archs, None)
    data_archs = archs[: args.data_archs]
    dep = scored(RESULTS_DIR / f"zero_cost_{table.name}_data.parquet", DATA_DEPENDENT,
                 data_archs, "digits", batch_size=args.data_batch)
    figures: dict[str, float] = {"data_batch": args.data_batch}
    val = [table.val[a] for a in archs]
    for proxy in DATA_FREE + DATA_DEPENDENT:
        rows, on = (free, archs) if proxy in DATA_FREE else (dep, data_archs)
        values = [rows[a][proxy] for a in on]
        figures[f"spearman_{proxy}"] = spearman(values, [table.val[a] for a in on])
        figures[f"ms_{proxy}"] = float(np.median([rows[a][f"ms_{proxy}"] for a in on]))
        figures[f"n_{proxy}"] = len(on)
        published = PUBLISHED.get(proxy)
        print(f"{proxy:>10}: Spearman {figures[f'spearman_{proxy}']:+.3f} on {len(on)} "
              f"architectures (published {published if published is not None else 'n/a'}), "
              f"{figures[f'ms_{proxy}']:.0f} ms per architecture")
    naslib = table.column("zen_score")
    if naslib:
        on = [a for a in archs if a in naslib]
        figures["zen_vs_naslib_spearman"] = spearman([free[a]["zen"] for a in on],
                                                     [naslib[a] for a in on])
        figures["zen_vs_naslib_n"] = len(on)
        print(f"zen vs the table's zen_score (NASLib): Spearman "
              f"{figures['zen_vs_naslib_spearman']:.3f} on {len(on)} architectures")
    del val
    return figures


def part_predictor(table: NB201Table, args: argparse.Namespace) -> dict[str, float]:
    """Predictor trained on 100 architectures: every proxy, the data-free ones, or none."""
    from searchers.predictor import PredictorSearch
    from spaces import create_space

    space = create_space("nb201")
    archs = sample_strings(table, args.archs)
    rows = scored(RESULTS_DIR / f"zero_cost_{table.name}_free.parquet", DATA_FREE, archs, None)
    dep = scored(RESULTS_DIR / f"zero_cost_{table.name}_data.parquet", DATA_DEPENDENT,
                 archs[: args.data_archs], "digits", batch_size=args.data_batch)
    on = [a for a in archs if a in dep]  # the architectures every proxy was computed on

    class Lookup:
        seconds = 0.0

        def __init__(self, names: list[str]) -> None:
            self.names = names

        def __call__(self, batch: Any) -> np.ndarray:
            out = []
            for arch in batch:
                text = space.to_string(arch)
                out.append([(rows[text] if p in DATA_FREE else dep[text])[p] for p in self.names])
            return np.array(out, dtype=float)

    figures: dict[str, float] = {"ensemble_n": len(on)}
    variants = (("", Lookup(DATA_FREE + DATA_DEPENDENT)), ("_free", Lookup(DATA_FREE)),
                ("_plain", None))
    for label, scorer in variants:
        rhos = []
        for seed in range(args.predictor_seeds):
            order = np.random.default_rng(seed).permutation(len(on))
            train = [on[i] for i in order[:100]]
            test = [on[i] for i in order[100:]]
            s = PredictorSearch(space, scorer=scorer, metric="val", mode="max", seed=seed)
            for a in train:
                s.add_evaluated_point(space.to_config(space.from_string(a)), table.val[a])
            mean, _ = s.predict([space.from_string(a) for a in test])
            rhos.append(spearman(mean, [table.val[a] for a in test]))
        figures[f"ensemble_spearman_100{label}"] = float(np.mean(rhos))
        figures[f"ensemble_spearman_100{label}_se"] = float(np.std(rhos, ddof=1)
                                                            / math.sqrt(len(rhos)))
        names = ",".join(scorer.names) if scorer is not None else "no proxies"
        print(f"predictor on 100 architectures + {names}: Spearman {np.mean(rhos):.3f} on "
              f"{len(on) - 100} others ({args.predictor_seeds} draws)")
    return figures


def _make(method: str, seed: int, scorer: Any) -> Any:
    from searchers import create_searcher
    from spaces import create_space

    space = create_space("nb201")
    common = {"metric": "val_acc_200ep", "mode": "max", "seed": seed}
    if method == "random":
        return create_searcher("random", space, **common)
    if method == "regularized_evolution":
        return create_searcher("regularized_evolution", space, **common)
    if method == "regularized_evolution_zc":
        return create_searcher("zero_cost_warm_start", space, searcher="regularized_evolution",
                               scorer=scorer, screen=1000, top=10, **common)
    if method == "predictor":
        return create_searcher("predictor", space, **common)
    if method == "predictor_zc":
        return create_searcher("predictor", space, scorer=scorer, **common)
    raise ValueError(method)


def _search_run(job: tuple[str, int, str, str]) -> dict[str, Any]:
    method, seed, table_path, proxy_path = job
    import torch

    from raynas.zero_cost.table import TableScorer
    from spaces import create_space

    torch.set_num_threads(1)
    table = load_table(Path(table_path))
    scorer = TableScorer(create_space("nb201"), proxy_path, SEARCH_PROXIES)
    searcher = _make(method, seed, scorer)
    driver = DistinctQueryDriver(SearcherProposer(searcher), searcher.space,
                                 table_evaluator(table))
    driver.extend(QUERIES)
    trace = driver_trace(driver, table)
    return {"trace": trace, "seconds": scorer.seconds, "scored": len(scorer._charged),
            "repeats": driver.repeats}


def part_search(table: NB201Table, args: argparse.Namespace) -> dict[str, float]:
    """Searches at 100 distinct queries, with and without proxies."""
    from concurrent.futures import ProcessPoolExecutor

    proxy_path = require_file(Path(args.proxy_table))
    thresholds = table_thresholds(table)
    methods = ["random", "regularized_evolution", "regularized_evolution_zc", "predictor",
               "predictor_zc"]
    jobs = [(m, s, str(table.path), str(proxy_path)) for m in methods for s in range(args.seeds)]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        results = list(pool.map(_search_run, jobs, chunksize=4))
    figures: dict[str, float] = {"search_seeds": args.seeds,
                                 "table_top1pct_test": thresholds.top1pct}
    for method in methods:
        runs = [r for (m, _, _, _), r in zip(jobs, results) if m == method]
        tests = [value_at(r["trace"], QUERIES) for r in runs]
        hits = [first_query_reaching(r["trace"], thresholds.top1pct) for r in runs]
        median, never = median_queries_to_threshold(hits, QUERIES)
        figures[f"{method}_100_test_mean"] = float(np.mean(tests))
        figures[f"{method}_100_test_se"] = float(np.std(tests, ddof=1) / math.sqrt(len(tests)))
        figures[f"{method}_queries_to_top1pct_median"] = median
        figures[f"{method}_top1pct_never"] = never
        figures[f"{method}_proxy_seconds_mean"] = float(np.mean([r["seconds"] for r in runs]))
        figures[f"{method}_scored_mean"] = float(np.mean([r["scored"] for r in runs]))
        print(f"{method:>26}: test {np.mean(tests):.3f} at {QUERIES} queries, median "
              f"{median:g} queries to the top 1% ({never} of {len(runs)} never), proxies "
              f"{figures[f'{method}_proxy_seconds_mean']:.1f} s on "
              f"{figures[f'{method}_scored_mean']:.0f} architectures")
    return figures


def main(argv: list[str] | None = None) -> int:
    """Run the chosen parts and merge their figures into ``benchmarks/results/zero_cost.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_dir_argument(parser)
    parser.add_argument("--parts", default="proxies,predictor,search")
    parser.add_argument("--archs", type=int, default=1000)
    parser.add_argument("--data-archs", type=int, default=1000,
                        help="architectures the data-dependent proxies are computed on")
    parser.add_argument("--data-batch", type=int, default=32,
                        help="images in the data-dependent proxies' batch")
    parser.add_argument("--predictor-seeds", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--proxy-table", default=str(RESULTS_DIR / "nb201_proxies.parquet"))
    parser.add_argument("--out", default=str(RESULTS_DIR / "zero_cost.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    table = load_table(require_file(Path(args.data_dir) / "cifar10.csv"))
    parts = {"proxies": part_proxies, "predictor": part_predictor, "search": part_search}
    figures: dict[str, float] = {}
    for name in args.parts.split(","):
        t0 = time.monotonic()
        figures.update(parts[name](table, args))
        figures[f"{name}_wall_s"] = time.monotonic() - t0
    merge_results(Path(args.out), figures, machine=machine_description())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
