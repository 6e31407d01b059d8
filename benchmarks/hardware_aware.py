"""Hardware-aware search on the MobileNet space: ProxylessNAS, FP-NAS, NSGA-II and OFA on digits.

The space (``SPACE``: 3 stages of widths 16/24/32, depths 2-4, kernels 3/5/7, expansions
3/4/6, 8x8 inputs) and scikit-learn's digits keep every run to CPU minutes. Latency is a
layer-wise lookup table timed on this machine (``benchmarks/results/hardware_aware_lut.parquet``,
built on the first run, reused after; delete it to re-time). The three latency targets are the
25th, 50th and 75th percentiles of the table's latency over 10,000 uniformly drawn
architectures, so they come from the table given; figures are named by the target in ms.

Parts (``--parts``, all by default):

- ``targets``: ``proxyless`` and ``fpnas`` search once per target (seed 0, ``--epochs``);
  per method and target: the derived architecture's lookup-table latency and its error to the
  target (``<m>_latency_error_<t>ms``, a fraction), its supernet accuracy
  (``<m>_supernet_acc_<t>ms``), and its stand-alone validation and test accuracy after
  ``--standalone-epochs`` of training, mean of 3 seeds (``<m>_standalone_acc_<t>ms``,
  ``<m>_standalone_test_acc_<t>ms``), and the search's seconds.
- ``nsga2``: a SPOS supernet trained for as many weight steps as one ProxylessNAS search
  takes, then NSGA-II (accuracy on the supernet against lookup-table latency) for
  ``--nsga2-queries`` distinct architectures. Per target its pick (the most accurate it
  evaluated within 10% of the target) is trained stand-alone as above (``nsga2_*``). Every method's
  derived architecture is scored on the same SPOS supernet, and ``<m>_dominated_<t>ms`` says
  whether a point of NSGA-II's front dominates it there (1) or not (0).
- ``sampling``: FP-NAS against PARSEC's fixed sampling (``samples_max`` architectures every
  step), ``--seeds`` seeds, without a cost term and (keys ending ``_latency_target``) with the
  paper's hinge on cost (here latency, the middle target): the architectures drawn and the
  seconds each needs to first reach the same supernet accuracy (the lower of the two runs'
  best, per seed), their ratio ``fpnas_samples_ratio_vs_fixed`` and
  ``fpnas_time_ratio_vs_fixed`` (the paper reports 0.36 and 1/2.1), the samples per step of
  the last epoch, and the architecture parameters of FP-NAS's factorised and joint
  distributions.
- ``ofa``: Kendall tau of sub-network accuracy without retraining against stand-alone accuracy,
  OFA progressive shrinking against SPOS on the same steps (``benchmarks/ofa_ranking.py``).

Hyper-parameters: the methods' shared defaults (weights SGD 0.025 cosine, batch 32) and, for
the distributions, Adam at 0.05 with a hinge latency term of weight 5, the values the unit
tests use on a smaller space (tests/raynas/gradient/test_paths.py); none is tuned on the
figures reported. Every job runs in its own process on one torch thread.

    python benchmarks/hardware_aware.py [--parts targets,nsga2,sampling,ofa] [--workers 2]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks._common import RESULTS_DIR, machine_description, merge_results  # noqa: E402

logger = logging.getLogger("hardware_aware")

SPACE: dict[str, Any] = {"name": "mobilenet", "resolution": 8, "stem_width": 16,
                         "widths": [16, 24, 32], "strides": [1, 2, 2], "head_width": 64}
LUT = RESULTS_DIR / "hardware_aware_lut.parquet"
METHODS = ("proxyless", "fpnas")
SHARED = {"batch_size": 32, "a_lr": 0.05, "latency_weight": 5.0, "device": "cpu"}
TOLERANCE = 0.1


def _space() -> Any:
    from spaces import create_space

    return create_space(**SPACE)


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def lookup_table() -> Any:
    """The benchmark's lookup table: timed here on the first run, then read back."""
    from raynas.latency.lut import LatencyTable, build_table

    if not LUT.is_file():
        logger.info("timing the lookup table into %s", LUT)
        build_table(_space(), repeats=30, rounds=3, threads=1, in_channels=1).save(LUT)
    return LatencyTable.load(LUT)


def latency_targets(table: Any) -> list[float]:
    """The 25th, 50th and 75th percentile of the table's latency, rounded to 0.01 ms."""
    space = table.space
    rng = np.random.default_rng(0)
    lat = table.predict([space.sample(rng) for _ in range(10_000)])
    return [round(float(np.percentile(lat, q)), 2) for q in (25, 50, 75)]


def name(target: float) -> str:
    """A target's name in figure keys: ``1.25ms``."""
    return f"{target:.2f}ms"


# --------------------------------------------------------------------------- jobs
def search_job(job: dict[str, Any]) -> dict[str, Any]:
    """One single-path search in this process; its derived architecture and records."""
    _one_thread()
    from raynas.evaluators.data import load_dataset
    from raynas.gradient.methods import options_from_mapping
    from raynas.gradient.paths import SampledPathSearch

    data = load_dataset("digits", seed=0)
    options = options_from_mapping(job["options"])
    start, cpu = time.monotonic(), time.process_time()
    search = SampledPathSearch(_space(), options, num_classes=data.num_classes,
                               in_channels=data.in_channels)
    result = search.run(data)
    epochs = [{"acc": r.supernet_val_acc, "samples": r.samples, "seconds": r.seconds,
               "arch_parameters": r.arch_parameters, "latency_ms": r.latency_ms,
               "expected_latency_ms": r.expected_latency_ms,
               "samples_per_step": r.samples_per_step} for r in result.epochs]
    return {**job, "arch": result.arch, "epochs": epochs, "search_s": time.monotonic() - start,
            "search_cpu_s": time.process_time() - cpu}


def standalone_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train ``job["arch"]`` stand-alone with the training evaluator; its accuracies."""
    from supernet_ranking import train_standalone

    return {**job, **train_standalone(job["arch"], job["seed"], job["epochs"], SPACE)}


def nsga2_job(job: dict[str, Any]) -> dict[str, Any]:
    """SPOS for ``steps``, then NSGA-II on (supernet accuracy, table latency); its checkpoint."""
    _one_thread()
    from raynas.latency.lut import LatencyTable
    from raynas.supernet.trainer import SupernetTrainer
    from searchers import create_searcher

    table = LatencyTable.load(LUT)
    start = time.monotonic()
    trainer = SupernetTrainer(SPACE, dataset="digits", method="spos", seed=0, batch_size=32,
                              lr=0.025, total_steps=job["steps"], num_threads=1)
    trainer.train(job["steps"])
    train_s = time.monotonic() - start
    space = trainer.space
    nsga = create_searcher("nsga2", space, metric=["val_acc", "latency"], mode=["max", "min"],
                           population_size=20, seed=0, max_trials=job["queries"])
    points: dict[str, tuple[float, float]] = {}
    asked = 0
    while len(points) < job["queries"] and asked < 10 * job["queries"]:
        trial = f"t{asked}"
        asked += 1
        config = nsga.suggest(trial)
        if not isinstance(config, dict):
            break
        arch = space.canonical(space.from_config(config))
        if arch not in points:
            points[arch] = (trainer.evaluate(arch)["val_acc"], float(table.predict([arch])[0]))
        acc, lat = points[arch]
        nsga.on_trial_complete(trial, {"val_acc": acc, "latency": lat})
    checkpoint = trainer.save(job["checkpoint"])
    return {**job, "points": points, "train_s": train_s, "search_s": time.monotonic() - start,
            "checkpoint": checkpoint}


def spos_score_job(job: dict[str, Any]) -> dict[str, Any]:
    """Accuracy of ``job["archs"]`` on the saved SPOS supernet."""
    _one_thread()
    from raynas.supernet.trainer import SupernetTrainer

    trainer = SupernetTrainer(SPACE, dataset="digits", method="spos", seed=0, batch_size=32,
                              lr=0.025, total_steps=job["steps"], num_threads=1)
    trainer.load(job["checkpoint"])
    return {**job, "scores": {a: trainer.evaluate(a)["val_acc"] for a in job["archs"]}}


# --------------------------------------------------------------------------- figures
def pareto_front(points: dict[str, tuple[float, float]]) -> list[tuple[str, float, float]]:
    """The (arch, accuracy, latency) points no other point dominates (max acc, min latency)."""
    items = sorted(points.items(), key=lambda kv: (kv[1][1], -kv[1][0]))
    front, best = [], -math.inf
    for arch, (acc, lat) in items:
        if acc > best:
            front.append((arch, acc, lat))
            best = acc
    return front


def dominated(acc: float, lat: float, front: list[tuple[str, float, float]]) -> bool:
    """Whether a front point is at least as good on both and better on one."""
    return any(a >= acc and la <= lat and (a > acc or la < lat) for _, a, la in front)


def nsga2_pick(points: dict[str, tuple[float, float]], target: float) -> str:
    """The most accurate point NSGA-II evaluated within the tolerance of ``target`` (else the
    closest): a sub-network for that latency budget, as OFA picks one."""
    inside = [(a, acc) for a, (acc, lat) in points.items() if abs(lat / target - 1) <= TOLERANCE]
    if inside:
        return max(inside, key=lambda p: p[1])[0]
    return min(points, key=lambda a: abs(points[a][1] / target - 1))


def first_reach(epochs: list[dict[str, Any]], level: float) -> tuple[float, float]:
    """Architectures drawn and seconds until the supernet accuracy first reaches ``level``."""
    seconds = 0.0
    for e in epochs:
        seconds += e["seconds"]
        if e["acc"] >= level:
            return float(e["samples"]), seconds
    return math.nan, math.nan


def run(args: argparse.Namespace) -> dict[str, float]:
    """Every requested part, in two waves of process-pool jobs; the flat figures."""
    parts = set(args.parts.split(","))
    table = lookup_table()
    targets = latency_targets(table)
    steps_per_epoch = math.ceil((1079 // 2) / SHARED["batch_size"])  # digits' training half
    figures: dict[str, float] = {f"target_{i}_ms": t for i, t in enumerate(targets)}
    figures["epochs"] = args.epochs
    checkpoint = str(Path(tempfile.mkdtemp(prefix="hw-spos-")) / "spos.pt")
    jobs: list[tuple[Any, dict[str, Any]]] = []
    if "targets" in parts or "nsga2" in parts:
        for method in METHODS:
            for target in targets:
                jobs.append((search_job, {"kind": "target", "options": {
                    **SHARED, "method": method, "epochs": args.epochs, "seed": 0,
                    "latency_table": str(LUT), "target_ms": target,
                    "samples_max": args.samples_max}}))
    if "nsga2" in parts:
        jobs.append((nsga2_job, {"kind": "nsga2", "steps": args.epochs * steps_per_epoch,
                                 "queries": args.nsga2_queries, "checkpoint": checkpoint}))
    if "sampling" in parts:
        # Without a cost term, and with the paper's (a hinge on cost, here the middle target).
        for variant, extra in (("", {}), ("_latency_target", {
                "latency_table": str(LUT), "target_ms": targets[1]})):
            for method in ("parsec", "fpnas"):
                for seed in range(args.seeds):
                    jobs.append((search_job, {"kind": "sampling", "variant": variant,
                                              "options": {
                        **SHARED, "method": method, "epochs": args.sampling_epochs,
                        "seed": seed, "samples_max": args.samples_max, **extra}}))
    with ProcessPoolExecutor(args.workers) as pool:
        done = [f.result() for f in [pool.submit(fn, job) for fn, job in jobs]]
        results = {k: [r for r in done if r["kind"] == k]
                   for k in ("target", "nsga2", "sampling")}
        second: list[tuple[Any, dict[str, Any]]] = []
        derived = {(r["options"]["method"], r["options"]["target_ms"]): r
                   for r in results["target"]}
        front: list[tuple[str, float, float]] = []
        picks: dict[float, str] = {}
        if results["nsga2"]:
            nsga = results["nsga2"][0]
            front = pareto_front(nsga["points"])
            picks = {t: nsga2_pick(nsga["points"], t) for t in targets}
            second.append((spos_score_job, {"kind": "spos", "steps": nsga["steps"],
                                            "checkpoint": nsga["checkpoint"],
                                            "archs": sorted({r["arch"]
                                                             for r in derived.values()})}))
        if "targets" in parts or "nsga2" in parts:
            archs = {r["arch"] for r in derived.values()} | set(picks.values())
            for arch in sorted(archs):
                for seed in range(3):
                    second.append((standalone_job, {"kind": "standalone", "arch": arch,
                                                    "seed": seed,
                                                    "epochs": args.standalone_epochs}))
        done2 = [f.result() for f in [pool.submit(fn, job) for fn, job in second]]
    standalone: dict[str, list[dict[str, Any]]] = {}
    for r in done2:
        if r["kind"] == "standalone":
            standalone.setdefault(r["arch"], []).append(r)
    spos_scores = next((r["scores"] for r in done2 if r["kind"] == "spos"), {})

    def trained(prefix: str, arch: str, t: float) -> None:
        runs = standalone[arch]
        figures[f"{prefix}_standalone_acc_{name(t)}"] = float(np.mean([r["val_acc"]
                                                                       for r in runs]))
        figures[f"{prefix}_standalone_test_acc_{name(t)}"] = float(
            np.mean([r["test_acc"] for r in runs]))
        figures[f"{prefix}_standalone_acc_se_{name(t)}"] = float(
            np.std([r["val_acc"] for r in runs], ddof=1) / np.sqrt(len(runs)))

    for (method, t), r in sorted(derived.items()):
        lat = float(table.predict([r["arch"]])[0])
        figures[f"{method}_latency_ms_{name(t)}"] = lat
        figures[f"{method}_latency_error_{name(t)}"] = abs(lat / t - 1)
        figures[f"{method}_supernet_acc_{name(t)}"] = r["epochs"][-1]["acc"]
        figures[f"{method}_expected_latency_ms_{name(t)}"] = r["epochs"][-1][
            "expected_latency_ms"]
        figures[f"{method}_search_s_{name(t)}"] = r["search_s"]
        trained(method, r["arch"], t)
        if front:
            acc = spos_scores[r["arch"]]
            figures[f"{method}_spos_acc_{name(t)}"] = acc
            figures[f"{method}_dominated_{name(t)}"] = float(dominated(acc, lat, front))
    if front:
        nsga = results["nsga2"][0]
        figures.update({"nsga2_front_size": len(front), "nsga2_queries": len(nsga["points"]),
                        "nsga2_spos_steps": nsga["steps"], "nsga2_train_s": nsga["train_s"],
                        "nsga2_search_s": nsga["search_s"]})
        for t, arch in picks.items():
            lat = float(table.predict([arch])[0])
            figures[f"nsga2_latency_ms_{name(t)}"] = lat
            figures[f"nsga2_latency_error_{name(t)}"] = abs(lat / t - 1)
            figures[f"nsga2_spos_acc_{name(t)}"] = nsga["points"][arch][0]
            trained("nsga2", arch, t)
    for variant in ("", "_latency_target"):
        runs = [r for r in results["sampling"] if r["variant"] == variant]
        if runs:
            figures.update({k + variant: v
                            for k, v in sampling_figures(runs, args.seeds).items()})
    if "ofa" in parts:  # its own pool of ``workers`` processes
        from ofa_ranking import ofa_vs_spos

        ofa = ofa_vs_spos(steps=args.ofa_steps, subnets=args.ofa_subnets, seed=0,
                          train_epochs=args.ofa_train_epochs, threads=args.workers)
        named = ("kendall_tau_ofa", "kendall_tau_spos")  # the names, kept as they are
        figures.update({k if k in named else f"ofa_ranking_{k}": v for k, v in ofa.items()})
    return figures


def sampling_figures(runs: list[dict[str, Any]], seeds: int) -> dict[str, float]:
    """Samples and seconds to a common accuracy, FP-NAS over PARSEC, per seed and pooled."""
    out: dict[str, float] = {"sampling_epochs": len(runs[0]["epochs"])}
    totals = {"parsec": [0.0, 0.0], "fpnas": [0.0, 0.0]}
    for seed in range(seeds):
        pair = {r["options"]["method"]: r for r in runs if r["options"]["seed"] == seed}
        level = min(max(e["acc"] for e in pair[m]["epochs"]) for m in ("parsec", "fpnas"))
        out[f"sampling_level_acc_seed{seed}"] = level
        for method, r in pair.items():
            samples, seconds = first_reach(r["epochs"], level)
            out[f"{method}_samples_to_level_seed{seed}"] = samples
            out[f"{method}_seconds_to_level_seed{seed}"] = seconds
            out[f"{method}_final_acc_seed{seed}"] = r["epochs"][-1]["acc"]
            out[f"{method}_samples_total_seed{seed}"] = float(r["epochs"][-1]["samples"])
            out[f"{method}_samples_per_step_last_epoch_seed{seed}"] = float(
                r["epochs"][-1]["samples_per_step"])
            totals[method][0] += samples
            totals[method][1] += seconds
        fp = pair["fpnas"]["epochs"]
        out["fpnas_arch_parameters_factorised"] = float(fp[0]["arch_parameters"])
        out["fpnas_arch_parameters_joint"] = float(fp[-1]["arch_parameters"])
    out["fpnas_samples_ratio_vs_fixed"] = totals["fpnas"][0] / totals["parsec"][0]
    out["fpnas_time_ratio_vs_fixed"] = totals["fpnas"][1] / totals["parsec"][1]
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the parts, print the figures, merge them into the results file."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", default="targets,nsga2,sampling,ofa")
    p.add_argument("--epochs", type=int, default=15, help="epochs of each targeted search")
    p.add_argument("--samples-max", type=int, default=8)
    p.add_argument("--standalone-epochs", type=int, default=6)
    p.add_argument("--nsga2-queries", type=int, default=300)
    p.add_argument("--sampling-epochs", type=int, default=12)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--ofa-steps", type=int, default=1500)
    p.add_argument("--ofa-subnets", type=int, default=40)
    p.add_argument("--ofa-train-epochs", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "hardware_aware.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    start = time.monotonic()
    figures = run(args)
    figures["wall_s"] = time.monotonic() - start
    figures["load_avg_1min_at_end"] = os.getloadavg()[0]
    for key in sorted(figures):
        print(f"{key:50s} {figures[key]:.4g}" if isinstance(figures[key], float)
              else f"{key:50s} {figures[key]}")
    merge_results(args.out, figures, machine=machine_description())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
