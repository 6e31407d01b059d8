"""Portfolio vs one-after-another, and orchestration overhead vs Tune's default searcher.

Two measurements, each a ratio taken in one run of this script:

1. Overhead per trial. A no-op trainable under plain Ray Tune (reused actors, the same
   concurrency), driven by Tune's default ``BasicVariantGenerator`` (``tune.choice`` over
   the NB201 decisions) and by raynas searchers (random, regularized evolution):
   trials per second and the ratio. Repeated ``--repeats`` times, interleaved; medians.
   Also the whole ``raynas run`` stack (MLflow trial runs, progress, checkpoints) on the
   tabular evaluator, for reference.
2. A portfolio of 3 searchers (regularized evolution, random, REINFORCE) on the NB201
   tabular evaluator as one ``raynas run``, against the same 3 searchers run with three
   ``raynas run`` commands one after another, same total budget and concurrency: wall time
   of the commands a user types, and CPU utilisation of the machine over each phase.

Run: python benchmarks/portfolio.py [--trials-per-searcher 100] [--repeats 3]
Writes benchmarks/results/portfolio.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (puts the repository root on sys.path)
import yaml
from _common import (
    RESULTS_DIR,
    add_data_dir_argument,
    machine_description,
    print_table,
    require_file,
    write_results,
)

SEARCHERS = [
    {"name": "regularized_evolution", "label": "rea", "population_size": 20, "tournament_size": 5},
    {"name": "random", "label": "random"},
    {"name": "reinforce", "label": "reinforce"},
]


def _noop(config: dict[str, Any]) -> None:
    from ray import tune

    tune.report({"score": float(len(str(config)))})


def _tune_rate(search_alg: Any, param_space: dict[str, Any] | None, trials: int,
               concurrency: int, storage: Path) -> float:
    """Trials per second of ``trials`` no-op trials under plain Tune."""
    from ray import tune

    start = time.perf_counter()
    tune.Tuner(
        _noop,
        param_space=param_space or {},
        tune_config=tune.TuneConfig(
            search_alg=search_alg, metric="score", mode="max", num_samples=trials,
            max_concurrent_trials=concurrency, reuse_actors=True,
        ),
        run_config=tune.RunConfig(storage_path=str(storage), verbose=0),
    ).fit()
    return trials / (time.perf_counter() - start)


def overhead(trials: int, repeats: int, concurrency: int) -> dict[str, float]:
    """Median trials/s of the default searcher and of raynas searchers, and their ratios."""
    import ray
    from ray import tune

    from searchers import create_searcher
    from spaces import create_space

    space = create_space("nb201")
    choice = {d.name: tune.choice(list(d.choices)) for d in space.decisions}
    rates: dict[str, list[float]] = {"basic": [], "random": [], "regularized_evolution": []}
    ray.init(num_cpus=concurrency, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            _tune_rate(None, choice, 10, concurrency, Path(tmp))  # warm-up: workers, imports
            names = list(rates)
            for r in range(repeats):
                # Rotate the order each repeat, so drifting machine load hits all alike.
                for name in names[r % 3:] + names[: r % 3]:
                    if name == "basic":
                        rate = _tune_rate(None, choice, trials, concurrency, Path(tmp))
                    else:
                        searcher = create_searcher(name, space, metric="score", mode="max",
                                                   seed=r)
                        rate = _tune_rate(searcher, None, trials, concurrency, Path(tmp))
                    rates[name].append(rate)
                print(f"  repeat {r + 1}: " + ", ".join(
                    f"{k} {v[-1]:.1f}/s" for k, v in rates.items()), flush=True)
    finally:
        ray.shutdown()
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "basic_trials_per_s": med["basic"],
        "random_trials_per_s": med["random"],
        "rea_trials_per_s": med["regularized_evolution"],
        "overhead_trials_per_s_ratio_vs_basic": min(med["random"], med["regularized_evolution"])
        / med["basic"],
        "random_ratio_vs_basic": med["random"] / med["basic"],
        "rea_ratio_vs_basic": med["regularized_evolution"] / med["basic"],
    }


def _cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [float(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def _raynas(config: dict[str, Any], folder: Path, name: str) -> tuple[float, float]:
    """Run ``raynas run`` on ``config`` as a user would; (wall seconds, CPU utilisation)."""
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    busy0, total0 = _cpu_times()
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "raynas.cli", "run", str(path)],
                          capture_output=True, text=True, cwd=folder)
    wall = time.perf_counter() - start
    busy1, total1 = _cpu_times()
    if proc.returncode != 0:
        raise SystemExit(f"raynas run {name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return wall, (busy1 - busy0) / max(total1 - total0, 1.0)


def portfolio_vs_sequential(data_dir: Path, trials: int, concurrency: int,
                            delay_s: float) -> dict[str, float]:
    """Wall time and CPU utilisation of one portfolio run vs three runs in a row."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        base = {
            "space": "nb201",
            "evaluator": {"name": "tabular", "table_path": str(data_dir), "delay_s": delay_s},
            "seed": 0,
            "tracking": {"uri": f"sqlite:///{folder / 'mlflow.db'}", "experiment": "bench"},
            "output_dir": str(folder / "out"),
        }
        sequential_wall = 0.0
        busy = []
        for i, spec in enumerate(SEARCHERS):
            options = {k: v for k, v in spec.items() if k != "label"}
            cfg = {**base, "name": spec["label"], "searcher": options,
                   "budget": {"trials": trials, "concurrency": concurrency}, "seed": i}
            wall, util = _raynas(cfg, folder, spec["label"])
            print(f"  sequential {spec['label']}: {wall:.1f} s, CPU {util:.0%}", flush=True)
            sequential_wall += wall
            busy.append((wall, util))
        members = [{**spec, "trials": trials} for spec in SEARCHERS]
        cfg = {**base, "name": "portfolio", "searchers": members,
               "budget": {"concurrency": concurrency}}
        portfolio_wall, portfolio_util = _raynas(cfg, folder, "portfolio")
        print(f"  portfolio: {portfolio_wall:.1f} s, CPU {portfolio_util:.0%}", flush=True)
    sequential_util = sum(w * u for w, u in busy) / sequential_wall
    return {
        "sequential_wall_s": sequential_wall,
        "portfolio_wall_s": portfolio_wall,
        "portfolio_wall_ratio_vs_sequential": portfolio_wall / sequential_wall,
        "sequential_cpu_utilisation": sequential_util,
        "portfolio_cpu_utilisation": portfolio_util,
    }


def main() -> None:
    """Run both measurements, print them and write the results JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_dir_argument(parser)
    parser.add_argument("--trials-per-searcher", type=int, default=100)
    parser.add_argument("--overhead-trials", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--delay-s", type=float, nargs="+", default=[0.0, 0.2],
                        help="simulated training seconds per tabular trial (one run each)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "portfolio.json")
    args = parser.parse_args()
    require_file(args.data_dir / "cifar10.csv")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

    print(f"overhead: {args.overhead_trials} no-op trials x {args.repeats} repeats", flush=True)
    figures: dict[str, float] = overhead(args.overhead_trials, args.repeats, args.concurrency)
    for delay in args.delay_s:
        print(f"portfolio vs sequential: 3 x {args.trials_per_searcher} trials, "
              f"delay {delay} s per trial", flush=True)
        part = portfolio_vs_sequential(args.data_dir, args.trials_per_searcher,
                                       args.concurrency, delay)
        suffix = "" if delay == args.delay_s[0] else f"_delay{delay:g}s"
        figures.update({f"{k}{suffix}": v for k, v in part.items()})
    figures["trials_per_searcher"] = args.trials_per_searcher
    figures["concurrency"] = args.concurrency
    print_table([(k, v) for k, v in sorted(figures.items())], ["figure", "value"])
    write_results(args.out, figures, machine=machine_description())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
