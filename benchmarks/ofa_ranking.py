"""Supernet ranking quality on digits: Once-for-All progressive shrinking against SPOS.

One MobileNet supernet (``SPACE``: 3 stages of widths 16/24/32, depths 2-4, kernels 3/5/7,
expansions 3/4/6) is trained from the same seed with SPOS (one uniform path a step; Guo et al.,
ECCV 2020) and with OFA progressive shrinking (largest network, then elastic kernel, depth and
expansion, ``ofa_subnets`` sub-networks a step distilled in place from the largest; Cai et al.,
ICLR 2020) for the same number of optimizer steps and the same cosine schedule. An OFA step runs
up to ``1 + ofa_subnets`` forward and backward passes, a SPOS step one: both wall times are
reported, so equal steps is not equal compute.

``subnets`` distinct sub-networks (distinct canonical forms, drawn uniformly with
``default_rng(seed)``) are scored by each supernet without retraining (``trainer.evaluate``:
inherited weights, batch norms recalibrated, ``use_cache=False``) and trained stand-alone from
scratch with the ``training`` evaluator for ``train_epochs`` epochs (one seed). Reported:
Kendall tau (tau-b) and Spearman rho between each supernet's and the stand-alone validation
accuracies, and a paired bootstrap 95% interval of tau(OFA) - tau(SPOS) over the sub-networks.

The stand-alone budget is short on purpose: on digits, 4 or more epochs put nearly every
sub-network at 97-99% (differences of one or two validation images); 3 epochs spread them
over about 80-98%. Short training is itself noisy, which caps every tau measured here.

All work runs in ``threads`` worker processes on one torch thread each (the supernets first,
the stand-alone runs beside and after them), so wall times are those of one thread sharing the
machine with the other workers. About 10-15 minutes with the defaults on 2 cores.

    python benchmarks/ofa_ranking.py [--steps 1500] [--subnets 40] [--seed 0]
        [--train-epochs 3] [--threads 2] [--out benchmarks/results/ofa_ranking.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS_DIR, machine_description, print_table, write_results
from supernet_ranking import (
    bootstrap_tau_diff,
    kendall_spearman,
    train_standalone,
    train_supernet,
)

from spaces import create_space

logger = logging.getLogger(__name__)

SPACE: dict[str, Any] = {"name": "mobilenet", "resolution": 8, "stem_width": 16,
                         "widths": [16, 24, 32], "strides": [1, 2, 2], "head_width": 64}
DATASET = "digits"
OFA_SUBNETS = 2


# --------------------------------------------------------------------------- sub-networks
def draw_subnets(n: int, seed: int) -> list[str]:
    """``n`` uniformly drawn sub-networks of distinct canonical form, as strings."""
    space = create_space(**SPACE)
    rng = np.random.default_rng([seed, 3])
    seen: dict[str, str] = {}
    while len(seen) < n:
        arch = space.sample(rng)
        seen.setdefault(space.canonical(arch), space.to_string(arch))
    return list(seen.values())


# --------------------------------------------------------------------------- benchmark
def ofa_vs_spos(
    *, steps: int, subnets: int, seed: int, train_epochs: int, threads: int
) -> dict[str, float]:
    """Kendall tau of OFA and SPOS supernet accuracy against stand-alone accuracy, and costs.

    Trains both supernets for ``steps`` optimizer steps, ranks ``subnets`` distinct uniform
    sub-networks with each and against ``train_epochs`` epochs of stand-alone training, in
    ``threads`` worker processes of one torch thread each. Returns flat numeric figures:
    ``kendall_tau_ofa``, ``kendall_tau_spos``, their p-values, Spearman rho, the paired
    bootstrap interval of the difference, ``subnets``, ``steps``, wall and CPU seconds.
    """
    for label, value in (("steps", steps), ("train_epochs", train_epochs),
                         ("threads", threads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{label} must be a positive integer, got {value!r}")
    if isinstance(subnets, bool) or not isinstance(subnets, int) or subnets < 3:
        raise ValueError(f"subnets must be an integer >= 3, got {subnets!r}")
    start = time.perf_counter()
    archs = draw_subnets(subnets, seed)
    context = multiprocessing.get_context("spawn")  # fresh workers: no forked torch threads
    with ProcessPoolExecutor(max_workers=threads, mp_context=context) as pool:
        # The longest job first: the other workers go through everything else meanwhile.
        sn_futures = {m: pool.submit(train_supernet, m, steps, seed, archs,
                                     {"ofa_subnets": OFA_SUBNETS} if m == "ofa" else {}, SPACE)
                      for m in ("ofa", "spos")}
        sa_futures = [pool.submit(train_standalone, a, seed, train_epochs, SPACE)
                      for a in archs]
        standalone = [f.result() for f in sa_futures]
        supernets = {m: f.result() for m, f in sn_futures.items()}
    sa_acc = np.array([r["val_acc"] for r in standalone])
    figures: dict[str, float] = {
        "subnets": subnets, "steps": steps, "seed": seed, "train_epochs": train_epochs,
        "threads": threads, "ofa_subnets": OFA_SUBNETS,
        "standalone_val_acc_min": float(sa_acc.min()),
        "standalone_val_acc_max": float(sa_acc.max()),
        "standalone_val_acc_median": float(np.median(sa_acc)),
        "standalone_train_s_per_run": float(np.mean([r["train_time_s"] for r in standalone])),
    }
    for method, res in supernets.items():
        tau, p, rho = kendall_spearman(res["val_acc"], sa_acc)
        figures.update({
            f"kendall_tau_{method}": tau, f"kendall_tau_pvalue_{method}": p,
            f"spearman_{method}": rho, f"wall_s_train_{method}": res["train_s"],
            f"cpu_s_train_{method}": res["train_cpu_s"],
            f"ms_per_step_{method}": 1e3 * res["train_s"] / steps,
            f"eval_ms_per_subnet_{method}": 1e3 * res["eval_s"] / subnets,
            f"final_train_loss_{method}": res["final_loss"],
            f"supernet_val_acc_min_{method}": float(min(res["val_acc"])),
            f"supernet_val_acc_max_{method}": float(max(res["val_acc"])),
        })
    try:
        low, high = bootstrap_tau_diff(supernets["spos"]["val_acc"],
                                       supernets["ofa"]["val_acc"], sa_acc, seed)
    except IndexError:  # no resample had a defined tau (e.g. all accuracies tied)
        low = high = math.nan
    figures.update(kendall_tau_diff_ofa_minus_spos=figures["kendall_tau_ofa"]
                   - figures["kendall_tau_spos"],
                   kendall_tau_diff_ci95_low=low, kendall_tau_diff_ci95_high=high,
                   seconds=time.perf_counter() - start)
    return {k: float(v) for k, v in figures.items()}


# --------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", type=int, default=1500,
                        help="optimizer steps of each supernet (OFA and SPOS alike)")
    parser.add_argument("--subnets", type=int, default=40,
                        help="distinct sub-networks to rank (30 or more for a real run)")
    parser.add_argument("--seed", type=int, default=0,
                        help="supernet, stand-alone and sub-network sampling seed")
    parser.add_argument("--train-epochs", type=int, default=3,
                        help="stand-alone training epochs of each sub-network")
    parser.add_argument("--threads", type=int, default=2,
                        help="worker processes, one torch thread each")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "ofa_ranking.json",
                        help="results JSON (default %(default)s)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print a table and write the figures to the results JSON."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    load = os.getloadavg()[0]
    try:
        figures = ofa_vs_spos(steps=args.steps, subnets=args.subnets, seed=args.seed,
                              train_epochs=args.train_epochs, threads=args.threads)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    figures["load_avg_1min_at_start"] = load
    figures["load_avg_1min_at_end"] = os.getloadavg()[0]
    machine = machine_description()
    print(f"\nMobileNet supernet ranking on digits ({json.dumps(SPACE)}): "
          f"{args.subnets} sub-networks, stand-alone {args.train_epochs} epochs (seed "
          f"{args.seed}), val acc {figures['standalone_val_acc_min']:.1f}-"
          f"{figures['standalone_val_acc_max']:.1f}.\n{machine}; 1-min load average at start "
          f"{load:.2f}, at the end {figures['load_avg_1min_at_end']:.2f}\n")
    rows = [[m, args.steps, f"{figures[f'wall_s_train_{m}']:.1f}",
             f"{figures[f'ms_per_step_{m}']:.1f}",
             f"{figures[f'kendall_tau_{m}']:.3f} (p={figures[f'kendall_tau_pvalue_{m}']:.2g})",
             f"{figures[f'spearman_{m}']:.3f}",
             f"{figures[f'supernet_val_acc_min_{m}']:.1f}-"
             f"{figures[f'supernet_val_acc_max_{m}']:.1f}"] for m in ("ofa", "spos")]
    print_table(rows, ["supernet", "steps", "train wall s", "ms/step", "kendall tau",
                       "spearman", "supernet val acc"])
    print(f"\ntau(OFA) - tau(SPOS) = {figures['kendall_tau_diff_ofa_minus_spos']:+.3f}, paired "
          f"bootstrap 95% interval [{figures['kendall_tau_diff_ci95_low']:+.3f}, "
          f"{figures['kendall_tau_diff_ci95_high']:+.3f}] over sub-networks")
    print(f"total {figures['seconds']:.1f} s")
    undefined = sorted(k for k, v in figures.items() if not math.isfinite(v))
    if undefined:  # e.g. tau of tied accuracies; the JSON holds finite numbers only
        print(f"not written (undefined): {', '.join(undefined)}")
    figures = {k: v for k, v in figures.items() if math.isfinite(v)}
    write_results(args.out, figures, machine=machine, labels={"space": json.dumps(SPACE)})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
