"""Supernet ranking quality on digits: SPOS and GreedyNAS against stand-alone training.

One NAS-Bench-201 supernet is trained from the same seed with SPOS and with GreedyNAS for the
same number of optimizer steps, plus SPOS with ``greedy_k`` times the steps (as many path
updates as GreedyNAS, which back-propagates ``greedy_k`` of its ``greedy_m`` scored paths a
step). GreedyNAS scores its candidates on batches of the validation split (as the trainer
implements the paper), the split on which all accuracies here are measured.

A stratified set of architectures (distinct canonical forms, connected, spread over the
number of live parametric operations) is scored by each supernet (inherited weights, BN
recalibrated, ``use_cache=False``) and trained stand-alone with ``TrainingEvaluator`` for a
fixed budget, averaged over seeds. Reported: Kendall tau (tau-b) and Spearman rho between
supernet and stand-alone validation accuracy, top-5 overlap, a paired bootstrap interval for
the GreedyNAS - SPOS difference in tau, and the stand-alone seed-to-seed tau as the noise
ceiling.

The stand-alone budget is short on purpose: on digits, longer training (4 epochs, 1-2 cells
per stage) puts nearly every cell at 96-100% and two seeds of the same arch then rank archs
with a Kendall tau of only 0.2-0.3; 3 cells per stage and 2 epochs spread them (about 60-98%)
with a seed-to-seed tau near 0.7-0.85.

Work runs as 1-CPU, 1-thread Ray tasks on ``ray.init(num_cpus=2)``: the supernets train beside
the stand-alone runs, so training wall times are those of one thread sharing the machine with
one other busy thread (CPU seconds are reported too).

    python benchmarks/supernet_ranking.py [--steps 400] [--archs 35] [--seed 0] [--out ...]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS_DIR, machine_description, merge_results, print_table

from spaces import create_space

logger = logging.getLogger(__name__)

SPACE = {"name": "nb201", "channels": 16, "cells_per_stage": 3, "resolution": 8}
DATASET = "digits"
TOP_K = 5
GREEDY_M = 10
BOOTSTRAP = 2000
PARAMETRIC = ("nor_conv_1x1", "nor_conv_3x3")


# --------------------------------------------------------------------------- architectures
def live_parametric_ops(space: Any, arch: str) -> int:
    """Convolutions on edges that reach the cell output (dead edges change nothing)."""
    ops = space.ops(arch)
    needed = {3}
    edges = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
    for node in (2, 1):
        if any(ops[k] != "none" and s == node and d in needed for k, (s, d) in enumerate(edges)):
            needed.add(node)
    return sum(op in PARAMETRIC and d in needed for op, (_, d) in zip(ops, edges))


def select_archs(space: Any, n: int, seed: int) -> list[str]:
    """``n`` connected archs of distinct canonical form, spread evenly over 0..6 live convs.

    Every string of the space is enumerated; per stratum the archs are drawn with
    ``default_rng(seed)``. Strata with 0 or 1 convolutions are the poor ones (mostly
    ``none``, ``skip_connect`` and ``avg_pool_3x3``).
    """
    strata: dict[int, dict[str, str]] = {k: {} for k in range(7)}
    for vec in itertools.product(range(5), repeat=6):
        arch = space.decode(vec)
        if not space.is_connected(arch):
            continue
        strata[live_parametric_ops(space, arch)].setdefault(space.canonical(arch), arch)
    rng = np.random.default_rng(seed)
    counts = np.full(7, n // 7)
    counts[rng.permutation(7)[: n % 7]] += 1
    chosen: list[str] = []
    for k, count in enumerate(counts):
        pool = sorted(strata[k].values())
        if count > len(pool):
            raise ValueError(f"stratum {k} has {len(pool)} distinct archs, {count} requested")
        chosen += [pool[i] for i in rng.choice(len(pool), size=count, replace=False)]
    return chosen


# --------------------------------------------------------------------------- Ray tasks
def train_supernet(
    method: str, steps: int, seed: int, archs: Sequence[str], options: dict[str, Any],
    space: dict[str, Any] = SPACE,
) -> dict[str, Any]:
    """Train one supernet of ``space`` on one thread; evaluate ``archs`` without the cache."""
    import torch

    from raynas.supernet.trainer import SupernetTrainer

    torch.set_num_threads(1)
    trainer = SupernetTrainer(
        space, dataset=DATASET, method=method, seed=seed, total_steps=steps, num_threads=1,
        **options,
    )
    start, cpu = time.perf_counter(), time.process_time()
    records = trainer.train(steps)
    train_s, train_cpu_s = time.perf_counter() - start, time.process_time() - cpu
    start = time.perf_counter()
    results = [trainer.evaluate(a, use_cache=False) for a in archs]
    return {
        "train_s": train_s, "train_cpu_s": train_cpu_s, "eval_s": time.perf_counter() - start,
        "final_loss": float(np.nanmean([r["loss"] for r in records[-50:]])),
        "val_acc": [r["val_acc"] for r in results], "val_loss": [r["val_loss"] for r in results],
        "pool_size": trainer.stats()["pool_size"],
    }


def train_standalone(arch: str, seed: int, epochs: int,
                     space: dict[str, Any] = SPACE) -> dict[str, float]:
    """One stand-alone training run of ``arch`` of ``space`` from scratch (one thread, CPU)."""
    import torch

    from raynas.evaluators.base import TrainingEvaluator

    torch.set_num_threads(1)
    ev = TrainingEvaluator(create_space(**space), dataset=DATASET, epochs=epochs, seed=seed,
                           num_threads=1, device="cpu")
    return ev.evaluate(arch)


# --------------------------------------------------------------------------- statistics
def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (1-based), ties sharing the mean rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    for value in np.unique(x):
        tie = x == value
        ranks[tie] = ranks[tie].mean()
    return ranks


def kendall_spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float]:
    """Kendall tau-b, its p-value (NaN without scipy) and Spearman rho of two score lists."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    try:
        from scipy import stats
    except ImportError:
        sa, sb = np.sign(a[:, None] - a[None]), np.sign(b[:, None] - b[None])
        iu = np.triu_indices(len(a), 1)
        num = float((sa * sb)[iu].sum())
        den = np.sqrt(float((sa[iu] != 0).sum()) * float((sb[iu] != 0).sum()))
        rho = float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])
        return float(num / den), float("nan"), rho
    tau = stats.kendalltau(a, b)
    return float(tau.statistic), float(tau.pvalue), float(stats.spearmanr(a, b).statistic)


def top_k(acc: Sequence[float], loss: Sequence[float], k: int) -> set[int]:
    """Indices of the ``k`` best by accuracy, ties broken by lower loss, then index."""
    return set(sorted(range(len(acc)), key=lambda i: (-acc[i], loss[i], i))[:k])


def bootstrap_tau_diff(
    x1: Sequence[float], x2: Sequence[float], y: Sequence[float], seed: int
) -> tuple[float, float]:
    """95% paired bootstrap interval (over archs) of tau(x2, y) - tau(x1, y)."""
    a1, a2, b = (np.asarray(v, dtype=float) for v in (x1, x2, y))
    rng = np.random.default_rng([seed, 7])
    diffs = []
    for _ in range(BOOTSTRAP):
        i = rng.integers(len(b), size=len(b))
        d = kendall_spearman(a2[i], b[i])[0] - kendall_spearman(a1[i], b[i])[0]
        if np.isfinite(d):
            diffs.append(d)
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(low), float(high)


# --------------------------------------------------------------------------- main
def train_all(
    args: argparse.Namespace, archs: list[str], seeds: list[int], runs: dict[str, Any]
) -> tuple[dict[str, dict[str, Any]], list[list[dict[str, float]]]]:
    """Supernet runs and stand-alone runs as 1-CPU Ray tasks on a 2-CPU local Ray."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    try:
        sn_task = ray.remote(num_cpus=1)(train_supernet)
        sa_task = ray.remote(num_cpus=1)(train_standalone)
        # GreedyNAS (the longest job) first: the other CPU works through everything else.
        sn_refs = {label: sn_task.remote(m, s, args.seed, archs, o)
                   for label, (m, s, o) in runs.items()}
        sa_refs = [[sa_task.remote(a, s, args.epochs) for s in seeds] for a in archs]
        supernets = {label: ray.get(ref) for label, ref in sn_refs.items()}
        standalone = [ray.get(refs) for refs in sa_refs]
    finally:
        ray.shutdown()
    return supernets, standalone


def run(args: argparse.Namespace) -> tuple[dict[str, float], list[list[Any]], str]:
    """Train, evaluate and compare; figures, table rows and a one-line summary."""
    archs = select_archs(create_space(**SPACE), args.archs, args.seed)
    seeds = [args.seed + i for i in range(args.standalone_seeds)]
    greedy = {"greedy_m": GREEDY_M, "greedy_k": args.greedy_k,
              "greedy_eps_steps": args.steps}  # epsilon 0 -> 0.8 over the whole run
    runs = {"greedynas": ("greedynas", args.steps, greedy), "spos": ("spos", args.steps, {})}
    if args.equal_paths:
        runs["spos_equal_paths"] = ("spos", args.steps * args.greedy_k, {})
    supernets, standalone = train_all(args, archs, seeds, runs)
    sa_acc = np.array([[r["val_acc"] for r in rs] for rs in standalone])  # archs x seeds
    sa_mean = sa_acc.mean(1)
    sa_loss_mean = np.array([[r["val_loss"] for r in rs] for rs in standalone]).mean(1)
    figures: dict[str, float] = {
        "standalone_archs": len(archs), "standalone_seeds": len(seeds),
        "standalone_seed_first": seeds[0], "standalone_epochs": args.epochs,
        "supernet_seed": args.seed, "arch_seed": args.seed, "supernet_steps": args.steps,
        "greedynas_m": GREEDY_M, "greedynas_k": args.greedy_k, "greedynas_eps_steps": args.steps,
        "ranking_channels": SPACE["channels"], "ranking_cells_per_stage": SPACE["cells_per_stage"],
        "standalone_val_acc_min": float(sa_mean.min()),
        "standalone_val_acc_max": float(sa_mean.max()),
        "standalone_val_acc_median": float(np.median(sa_mean)),
        "standalone_train_s_per_run": float(np.mean(
            [r["train_time_s"] for rs in standalone for r in rs])),
    }
    if len(seeds) > 1:
        tau, _, rho = kendall_spearman(sa_acc[:, 0], sa_acc[:, 1])
        figures["standalone_seed_to_seed_kendall_tau"] = tau
        figures["standalone_seed_to_seed_spearman"] = rho
    best_sa = top_k(list(sa_mean), list(sa_loss_mean), TOP_K)
    rows = [compare(label, res, runs[label][1], sa_mean, best_sa, figures)
            for label, res in supernets.items()]
    low, high = bootstrap_tau_diff(supernets["spos"]["val_acc"],
                                   supernets["greedynas"]["val_acc"], sa_mean, args.seed)
    diff = figures["kendall_tau_greedynas"] - figures["kendall_tau_spos"]
    figures.update(kendall_tau_diff_greedynas_minus_spos=diff,
                   kendall_tau_diff_ci95_low=low, kendall_tau_diff_ci95_high=high)
    if low > 0:
        verdict = "GreedyNAS ranks better than SPOS (95% interval above 0)"
    elif high < 0:
        verdict = "GreedyNAS ranks WORSE than SPOS (95% interval below 0)"
    else:
        verdict = "GreedyNAS is NOT measurably better than SPOS (95% interval spans 0)"
    summary = (f"tau(GreedyNAS) - tau(SPOS) = {diff:+.3f}, paired bootstrap 95% interval "
               f"[{low:+.3f}, {high:+.3f}] over archs: {verdict}")
    return figures, rows, summary


def compare(label: str, res: dict[str, Any], steps: int, sa_mean: np.ndarray,
            best_sa: set[int], figures: dict[str, float]) -> list[Any]:
    """Add one supernet's figures against the stand-alone means; its table row."""
    tau, p, rho = kendall_spearman(res["val_acc"], sa_mean)
    overlap = len(top_k(res["val_acc"], res["val_loss"], TOP_K) & best_sa)
    figures.update({
        f"kendall_tau_{label}": tau, f"kendall_tau_pvalue_{label}": p, f"spearman_{label}": rho,
        f"top{TOP_K}_overlap_{label}": overlap, f"steps_{label}": steps,
        f"wall_s_train_{label}": res["train_s"], f"cpu_s_train_{label}": res["train_cpu_s"],
        f"ms_per_step_{label}": 1e3 * res["train_s"] / steps,
        f"cpu_ms_per_step_{label}": 1e3 * res["train_cpu_s"] / steps,
        f"eval_ms_per_arch_{label}": 1e3 * res["eval_s"] / len(sa_mean),
        f"final_train_loss_{label}": res["final_loss"],
        f"supernet_val_acc_min_{label}": float(min(res["val_acc"])),
        f"supernet_val_acc_max_{label}": float(max(res["val_acc"])),
    })
    return [label, steps, f"{res['train_s']:.1f} ({res['train_cpu_s']:.1f})",
            f"{tau:.3f} (p={p:.2g})", f"{rho:.3f}", f"{overlap}/{TOP_K}",
            f"{min(res['val_acc']):.1f}-{max(res['val_acc']):.1f}"]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", type=int, default=400,
                        help="optimizer steps of each supernet (SPOS and GreedyNAS alike)")
    parser.add_argument("--archs", type=int, default=35, help="architectures to rank (>= 10)")
    parser.add_argument("--seed", type=int, default=0,
                        help="supernet init / sampling seed (both methods) and arch choice")
    parser.add_argument("--epochs", type=int, default=2, help="stand-alone training epochs")
    parser.add_argument("--standalone-seeds", type=int, default=2,
                        help="stand-alone runs per arch (seeds seed, seed+1, ...), averaged")
    parser.add_argument("--greedy-k", type=int, default=5,
                        help=f"GreedyNAS paths kept a step, of {GREEDY_M} scored")
    parser.add_argument("--no-equal-paths", dest="equal_paths", action="store_false",
                        help="skip the SPOS run with greedy_k x steps")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "supernet.json",
                        help="results JSON, merged with what is there (default %(default)s)")
    args = parser.parse_args(argv)
    for name in ("steps", "epochs", "standalone_seeds", "greedy_k"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.greedy_k > GREEDY_M:
        parser.error(f"--greedy-k must be <= {GREEDY_M}, got {args.greedy_k}")
    if args.archs < 10:
        parser.error(f"--archs must be >= 10, got {args.archs}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print a table and merge the figures into the results JSON."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    load = os.getloadavg()[0]
    figures, rows, summary = run(args)
    figures["ranking_benchmark_wall_s"] = time.perf_counter() - start
    figures["ranking_load_avg_1min_at_start"] = load
    figures["ranking_load_avg_1min_at_end"] = os.getloadavg()[0]
    machine = machine_description()
    print(
        f"\nNB201 supernet ranking on digits ({SPACE['channels']} channels, "
        f"{SPACE['cells_per_stage']} cell(s) per stage): {figures['standalone_archs']} archs, "
        f"stand-alone {args.epochs} epochs x {args.standalone_seeds} seeds "
        f"(seeds {args.seed}..{args.seed + args.standalone_seeds - 1}); supernet seed "
        f"{args.seed}; stand-alone val acc "
        f"{figures['standalone_val_acc_min']:.1f}-{figures['standalone_val_acc_max']:.1f} "
        f"(median {figures['standalone_val_acc_median']:.1f}).\n{machine}; 1-min load "
        f"average at start {load:.2f}, at the end "
        f"{figures['ranking_load_avg_1min_at_end']:.2f}\n"
    )
    print_table(rows, ["supernet", "steps", "train wall (cpu) s", "kendall tau", "spearman",
                       f"top-{TOP_K}", "supernet val acc"])
    if "standalone_seed_to_seed_kendall_tau" in figures:
        print(f"\nstand-alone seed {args.seed} vs seed {args.seed + 1}: Kendall tau "
              f"{figures['standalone_seed_to_seed_kendall_tau']:.3f} (the noise ceiling)")
    print(summary)
    print(f"total {figures['ranking_benchmark_wall_s']:.1f} s")
    merge_results(args.out, figures, machine=machine)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
