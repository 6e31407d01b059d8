"""The collapse study: DARTS and its fixes side by side on digits, against SPOS + REA.

Every method (``darts``, ``darts2``, ``gdas``, ``fairdarts``, ``dartsplus``, ``dartsminus``,
``pcdarts``, ``cdarts``) searches the NAS-Bench-201 cell space (C=8, N=1, as the bundled demo)
on scikit-learn's digits (8x8, 1,079 training images: weights learn on the first half, alpha on
the second; the validation split measures) for the same number of epochs, with 3 seeds, each
search in its own process on one thread. The derived cell of each is then trained stand-alone
by the ``training`` evaluator (``--standalone-epochs``) and its test accuracy reported
(validation chooses nowhere here: every method returns one cell).

The baseline ``spos_rea``: a SPOS supernet (uniform single paths) trained for half of the
budget, then regularized evolution querying the supernet for the other half, the budget being
the mean CPU time of that seed's gradient searches (one thread each, so CPU time is wall time
on an idle core and does not depend on the machine's load); its best cell by supernet
validation accuracy is trained stand-alone the same way.

Hyper-parameters are the papers' (DARTS: weights SGD 0.025, momentum 0.9, weight decay 3e-4,
cosine to 0.001; alpha Adam, betas (0.5, 0.999), weight decay 1e-3, initialised at zero),
scaled to the data by one rule fixed before any run: alpha's learning rate keeps the papers'
budget of alpha movement, 3e-4 x (50 epochs x 391 steps of CIFAR-10's half split), over this
run's steps. Nothing is tuned on the figures reported.

Figures (``benchmarks/results/gradient.json``), per method: ``<m>_derived_standalone_acc_mean``
(test accuracy, percent, mean of seeds) and ``_se``, ``<m>_param_free_fraction`` (the derived
cell's share of none / skip / pooling at the end) and ``<m>_param_free_fraction_q1..q4`` (after
each quarter of the epochs), ``<m>_search_s`` (mean seconds, one thread), ``<m>_peak_rss_mb``
(the search process's peak resident memory), ``<m>_supernet_val_acc``, ``<m>_stopped_early``.

Usage::

    python benchmarks/gradient_search.py [--epochs 20] [--seeds 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import RESULTS_DIR, machine_description, merge_results  # noqa: E402

logger = logging.getLogger("gradient_search")

METHODS = ["darts", "darts2", "gdas", "fairdarts", "dartsplus", "dartsminus", "pcdarts",
           "cdarts"]
SPACE = {"name": "nb201", "channels": 8, "cells_per_stage": 1, "resolution": 8}
PAPER_ALPHA_BUDGET = 3e-4 * 50 * 391  # DARTS: lr x epochs x steps per epoch on CIFAR-10


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _space() -> Any:
    """The benchmark's space (``SPACE``)."""
    from spaces import create_space

    return create_space(**SPACE)


def alpha_lr(epochs: int, batch_size: int, train_size: int) -> float:
    """Alpha's learning rate that keeps the papers' lr x steps over this run's steps."""
    steps = epochs * math.ceil((train_size // 2) / batch_size)
    return PAPER_ALPHA_BUDGET / steps


def standalone(arch: str, seed: int, epochs: int) -> dict[str, float]:
    """Train ``arch`` stand-alone with the training evaluator; its metrics."""
    import torch

    from raynas.evaluators.base import TrainingEvaluator

    torch.set_num_threads(1)
    ev = TrainingEvaluator(_space(), dataset="digits", epochs=epochs, seed=seed, num_threads=1,
                           device="cpu")
    return ev.evaluate(arch)


def gradient_job(job: dict[str, Any]) -> dict[str, Any]:
    """One gradient search in this (fresh) process, then its cell trained stand-alone."""
    import torch

    from raynas.evaluators.data import load_dataset
    from raynas.gradient import GradientSearch, options_from_mapping

    torch.set_num_threads(1)
    space = _space()
    data = load_dataset("digits", seed=0)
    options = options_from_mapping({**job["options"], "device": "cpu"})
    before = _rss_mb()
    cpu = time.process_time()
    search = GradientSearch(space, options, num_classes=data.num_classes,
                            in_channels=data.in_channels)
    result = search.run(data)
    search_cpu = time.process_time() - cpu
    out = {
        "method": options.method, "seed": options.seed, "arch": result.arch,
        "search_s": result.seconds, "search_cpu_s": search_cpu,
        "peak_rss_mb": _rss_mb(), "rss_before_mb": before,
        "stopped_at": result.stopped_at, "epochs_run": len(result.epochs),
        "supernet_val_acc": result.epochs[result.chosen_epoch - 1].supernet_val_acc,
        "param_free_by_epoch": [space.parameter_free_fraction(r.arch) for r in result.epochs],
        "param_free_fraction": space.parameter_free_fraction(result.arch),
    }
    out["standalone"] = standalone(result.arch, options.seed, job["standalone_epochs"])
    return out


def spos_rea_job(job: dict[str, Any]) -> dict[str, Any]:
    """SPOS for half the CPU budget, REA on the supernet for the other half, best trained."""
    import torch

    from raynas.supernet.trainer import SupernetTrainer
    from searchers import create_searcher

    torch.set_num_threads(1)
    budget, seed = float(job["budget_s"]), int(job["seed"])
    before = _rss_mb()
    start = time.process_time()
    trainer = SupernetTrainer(SPACE, dataset="digits", method="spos", seed=seed,
                              num_threads=1)
    steps = 0
    while steps == 0 or time.process_time() - start < budget / 2:
        trainer.train(20)
        steps += 20
    space = trainer.space
    rea = create_searcher("regularized_evolution", space, metric="val_acc", mode="max",
                          seed=seed)
    best: tuple[float, str] | None = None
    queries = 0
    while queries == 0 or time.process_time() - start < budget:
        trial = f"t{queries}"
        config = rea.suggest(trial)
        if not isinstance(config, dict):
            break
        arch = space.to_string(space.from_config(config))
        value = trainer.evaluate(arch)["val_acc"]
        rea.on_trial_complete(trial, {"val_acc": value})
        queries += 1
        if best is None or value > best[0]:
            best = (value, arch)
    assert best is not None  # REA queries at least once
    out = {"method": "spos_rea", "seed": seed, "arch": best[1], "supernet_val_acc": best[0],
           "search_s": time.process_time() - start, "search_cpu_s": time.process_time() - start,
           "peak_rss_mb": _rss_mb(), "rss_before_mb": before, "supernet_steps": steps,
           "queries": queries,
           "param_free_fraction": space.parameter_free_fraction(best[1])}
    out["standalone"] = standalone(best[1], seed, job["standalone_epochs"])
    return out


def _quarters(values: list[float], epochs: int) -> list[float]:
    """The value after each quarter of ``epochs`` (the last one for a search stopped early)."""
    return [values[min(len(values), max(1, round(epochs * q / 4))) - 1] for q in (1, 2, 3, 4)]


def summarise(results: list[dict[str, Any]], epochs: int) -> dict[str, float]:
    """Per-method means (and standard errors) of the runs' figures."""
    figures: dict[str, float] = {}
    for method in [*METHODS, "spos_rea"]:
        runs = [r for r in results if r["method"] == method]
        if not runs:
            continue
        acc = [r["standalone"]["test_acc"] for r in runs]
        figures[f"{method}_derived_standalone_acc_mean"] = float(np.mean(acc))
        figures[f"{method}_derived_standalone_acc_se"] = (
            float(np.std(acc, ddof=1) / math.sqrt(len(acc))) if len(acc) > 1 else 0.0)
        figures[f"{method}_derived_standalone_val_acc_mean"] = float(
            np.mean([r["standalone"]["val_acc"] for r in runs]))
        figures[f"{method}_param_free_fraction"] = float(
            np.mean([r["param_free_fraction"] for r in runs]))
        figures[f"{method}_search_s"] = float(np.mean([r["search_s"] for r in runs]))
        figures[f"{method}_search_cpu_s"] = float(np.mean([r["search_cpu_s"] for r in runs]))
        figures[f"{method}_peak_rss_mb"] = float(np.max([r["peak_rss_mb"] for r in runs]))
        figures[f"{method}_supernet_val_acc"] = float(
            np.mean([r["supernet_val_acc"] for r in runs]))
        if method == "spos_rea":
            figures["spos_rea_queries_mean"] = float(np.mean([r["queries"] for r in runs]))
            figures["spos_rea_supernet_steps_mean"] = float(
                np.mean([r["supernet_steps"] for r in runs]))
            continue
        quarters = np.array([_quarters(r["param_free_by_epoch"], epochs) for r in runs])
        for q in range(4):
            figures[f"{method}_param_free_fraction_q{q + 1}"] = float(quarters[:, q].mean())
        figures[f"{method}_stopped_early"] = float(
            np.mean([r["stopped_at"] is not None for r in runs]))
    return figures


def main(argv: list[str] | None = None) -> int:
    """Run every method and the baseline; merge the figures into the results JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--standalone-epochs", type=int, default=10)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default=str(RESULTS_DIR / "gradient.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from raynas.evaluators.data import load_dataset

    train_size = load_dataset("digits", seed=0).sizes()["train"]
    a_lr = alpha_lr(args.epochs, args.batch_size, train_size)
    common = {"epochs": args.epochs, "batch_size": args.batch_size, "a_lr": a_lr,
              "channels": SPACE["channels"], "cells_per_stage": SPACE["cells_per_stage"]}
    methods = args.methods.split(",")
    jobs = [{"options": {**common, "method": m, "seed": s},
             "standalone_epochs": args.standalone_epochs}
            for s in range(args.seeds) for m in methods]
    started = time.monotonic()
    results: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=args.workers, max_tasks_per_child=1) as pool:
        for r in pool.map(gradient_job, jobs):
            results.append(r)
            print(f"{r['method']:>10} seed {r['seed']}: {r['arch']} param-free "
                  f"{r['param_free_fraction']:.2f}, stand-alone test "
                  f"{r['standalone']['test_acc']:.2f}, {r['search_s']:.0f} s", flush=True)
        budgets = {s: float(np.mean([r["search_cpu_s"] for r in results if r["seed"] == s]))
                   for s in range(args.seeds)}
        base = [{"seed": s, "budget_s": budgets[s], "standalone_epochs": args.standalone_epochs}
                for s in range(args.seeds)]
        for r in pool.map(spos_rea_job, base):
            results.append(r)
            print(f"  spos_rea seed {r['seed']}: {r['arch']} ({r['queries']} queries, "
                  f"{r['supernet_steps']} steps), stand-alone test "
                  f"{r['standalone']['test_acc']:.2f}", flush=True)
    figures = summarise(results, args.epochs)
    figures.update({"epochs": args.epochs, "batch_size": args.batch_size, "seeds": args.seeds,
                    "alpha_lr": a_lr, "standalone_epochs": args.standalone_epochs,
                    "wall_s": time.monotonic() - started})
    fixes = [m for m in methods if m != "darts"]
    if fixes:
        best_fix = max(fixes, key=lambda m: figures[f"{m}_derived_standalone_acc_mean"])
        print(f"best fix by stand-alone test accuracy: {best_fix}")
        figures["best_fix_minus_spos_rea"] = (
            figures[f"{best_fix}_derived_standalone_acc_mean"]
            - figures["spos_rea_derived_standalone_acc_mean"])
    for method in [*methods, "spos_rea"]:
        q = [figures.get(f"{method}_param_free_fraction_q{i}") for i in range(1, 5)]
        quarters = " ".join("-" if v is None else f"{v:.2f}" for v in q)
        acc = figures[f"{method}_derived_standalone_acc_mean"]
        print(f"{method:>10}: stand-alone test {acc:.2f}"
              f" (SE {figures[f'{method}_derived_standalone_acc_se']:.2f}), param-free by quarter "
              f"{quarters}, search {figures[f'{method}_search_s']:.0f} s, peak RSS "
              f"{figures[f'{method}_peak_rss_mb']:.0f} MB")
    merge_results(Path(args.out), figures, machine=machine_description())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
