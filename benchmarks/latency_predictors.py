"""Latency predictors: learned MLP on the NB201 device table, CPU lookup tables, the service.

Parts:
  1. learned: for each device column of ``latency_ms.csv``, train ``LatencyMLP`` on 100,
     500 and 1,000 random architectures and test on all the rest (RMSE in ms, Spearman,
     share within +-10% of the measured value); the same for scikit-learn's
     GradientBoostingRegressor on the same one-hot features and log target, at 100 and
     1,000, as the documented comparison behind the choice of the MLP;
  2. lut: for NB201 (C=16, N=5, 32x32) and MobileNet (OFA widths, 128x128), build the
     layer-wise table on this CPU, then time 100 random real networks of the space (plus
     10 for the table's scale calibration) and compare; each network is timed twice
     (``retest``) to show how repeatable the measurements themselves are on this machine;
  3. ceiling: how close to the measurements any predictor can get on each device: the
     MLP and a histogram gradient-boosting model trained on 12,000 of the 15,625
     architectures (12x the target's budget), within +-10% on the other 3,625 and on their
     own training set; a device whose ceiling is below 90% has measurement noise no
     predictor trained on its table can remove;
  4. service: predictions per second through the ``LatencyService`` actor: the NB201 model
     (the service predicts all 15,625 architectures when it starts, so a call is a lookup);
     the MobileNet lookup table, new and repeated architectures; and the learned path, a
     MobileNet ``LatencyMLP`` fitted on the lookup-table latencies of a few hundred
     architectures and served architectures it has not seen (nothing precomputed: each
     call encodes them and runs the MLP), at batch 1, 64, 1,024;
  5. fewshot: latency for a new device from 20 measured architectures
     (``raynas.latency.fewshot``, a ridge on the other devices' log latencies): each of the
     table's devices left out in turn, 20 of its architectures drawn (5 seeded draws), Spearman
     and the share within +-10% on all its other architectures (``fewshot_spearman_20_<device>``,
     ``fewshot_within10pct_20_<device>``, means over devices). HELP (Lee et al. 2021) reports
     Spearman .93 on average with 10 samples;
  6. sample: sample efficiency on noisy measurements: ``raynas.latency.additive``
     (an additive per-operation model fitted by least absolute relative error, times a boosted
     residual whose loss is chosen by 5-fold cross-validation inside the training set) on the
     same 1,000 training architectures and held-out rest as part 1 (``sample_within10pct_1000_
     <device>``, ``sample_spearman_1000_<device>``), and ``within10pct_1000_gap_<device>``:
     the 12,000-architecture MLP's ceiling (part 3, this run or the results file) minus it.

Usage:
    python benchmarks/latency_predictors.py [--data-dir DIR] [--out FILE] [--parts ...]
        [--quick]
    python benchmarks/latency_predictors.py --data-dir ../shared/data/nb201 --parts sample
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    RESULTS_DIR,
    add_data_dir_argument,
    machine_description,
    merge_results,
    print_table,
    require_file,
)

from raynas.latency.lut import build_table
from raynas.latency.measure import (
    latency_stats,
    measure_arch_samples,
    read_latency_table,
    summarize,
)
from raynas.latency.predictor import ArchEncoder, LatencyMLP, one_hot
from spaces import create_space

logger = logging.getLogger(__name__)

SIZES = (100, 500, 1000)
GBM_SIZES = (100, 1000)
LUT_SPACES = {"nb201": {}, "mobilenet": {"resolution": 128}}
CALIBRATION_ARCHS = 10
BATCHES = (1, 64, 1024)
CEILING_TRAIN = 12_000
MLP_TRAIN_ARCHS = 300  # MobileNet architectures whose lookup-table latencies fit the MLP
# Calls of new architectures available per batch size (about 2 s of each on 2 CPUs).
MLP_COLD_CALLS = {1: 4096, 64: 1024, 1024: 128}
SAMPLE_TRAIN = 1000
PARTS = ("learned", "ceiling", "lut", "service", "fewshot", "sample")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_dir_argument(p)
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "latency.json")
    p.add_argument("--parts", default=",".join(PARTS),
                   help="comma-separated subset of " + ", ".join(PARTS))
    p.add_argument("--shots", type=int, default=20, help="fewshot: measured architectures")
    p.add_argument("--draws", type=int, default=5, help="fewshot: seeded draws per device")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ensemble", type=int, default=3, help="MLPs averaged per predictor")
    p.add_argument("--lut-archs", type=int, default=100, help="networks timed per space")
    p.add_argument("--repeats", type=int, default=40, help="timed passes per network")
    p.add_argument("--no-gbm", action="store_true", help="skip the gradient-boosting peer")
    p.add_argument("--quick", action="store_true", help="two devices, 20 networks, short")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- 1. learned
def gbm_predict(space: Any, train: list[str], y: np.ndarray, test: list[str], seed: int):
    """GradientBoostingRegressor on the same one-hot features and log target."""
    from sklearn.ensemble import GradientBoostingRegressor

    enc = ArchEncoder(space)
    model = GradientBoostingRegressor(n_estimators=500, max_depth=4, learning_rate=0.05,
                                      subsample=0.8, random_state=seed)
    model.fit(one_hot(space, enc.encode(train)), np.log(y))
    return np.exp(model.predict(one_hot(space, enc.encode(test))))


def learned(table: Path, args: argparse.Namespace, model_dir: Path):
    """Part 1: train on n, test on the rest, per device; the pixel3 n=1000 model is kept."""
    space = create_space("nb201")
    devices = table_devices(table, args.quick)
    figures: dict[str, float] = {}
    rows = []
    for device in devices:
        archs, y = read_latency_table(table, device)
        perm = np.random.default_rng(args.seed).permutation(len(archs))
        for n in SIZES:
            train, test = perm[:n], perm[n:]
            tr_archs, te_archs = [archs[i] for i in train], [archs[i] for i in test]
            start = time.perf_counter()
            model = LatencyMLP(space, device=device, ensemble=args.ensemble, seed=args.seed)
            model.fit(tr_archs, y[train], epochs=60 if args.quick else 300)
            seconds = time.perf_counter() - start
            stats = latency_stats(model.predict(te_archs), y[test])
            for key in ("rmse", "spearman", "within10pct"):
                figures[f"{key}_{n}_{device}"] = stats[key]
            figures[f"train_s_{n}_{device}"] = seconds
            row = [device, n, "mlp", stats["rmse"], stats["spearman"], stats["within10pct"],
                   seconds]
            rows.append(row)
            if n == 1000 and device == "pixel3":
                model.save(model_dir / "pixel3.pt")
            if n in GBM_SIZES and not args.no_gbm:
                start = time.perf_counter()
                pred = gbm_predict(space, tr_archs, y[train], te_archs, args.seed)
                gbm = latency_stats(pred, y[test])
                figures[f"gbm_spearman_{n}_{device}"] = gbm["spearman"]
                figures[f"gbm_within10pct_{n}_{device}"] = gbm["within10pct"]
                rows.append([device, n, "gbm", gbm["rmse"], gbm["spearman"],
                             gbm["within10pct"], time.perf_counter() - start])
            logger.info("%s n=%d: %s", device, n, row)
    return figures, rows


def table_devices(table: Path, quick: bool) -> list[str]:
    """The device columns of a latency table (the first two with ``--quick``)."""
    header = table.read_text().split("\n", 1)[0].split(",")
    devices = [c for c in header if c not in ("index", "arch_str")]
    return devices[:2] if quick else devices


# --------------------------------------------------------------------------- 3. ceiling
def ceiling(table: Path, args: argparse.Namespace):
    """Part 3: within +-10% of predictors trained on 12,000 architectures, per device."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    space = create_space("nb201")
    devices = table_devices(table, args.quick)
    figures: dict[str, float] = {"ceiling_train_archs": CEILING_TRAIN}
    rows = []
    for device in devices:
        archs, y = read_latency_table(table, device)
        perm = np.random.default_rng(args.seed).permutation(len(archs))
        train, test = perm[:CEILING_TRAIN], perm[CEILING_TRAIN:]
        tr_archs, te_archs = [archs[i] for i in train], [archs[i] for i in test]
        enc = ArchEncoder(space)
        x_tr, x_te = one_hot(space, enc.encode(tr_archs)), one_hot(space, enc.encode(te_archs))
        gbm = HistGradientBoostingRegressor(max_iter=1000, learning_rate=0.05,
                                            max_leaf_nodes=63, random_state=args.seed)
        gbm.fit(x_tr, np.log(y[train]))
        fits = {"gbm": (np.exp(gbm.predict(x_te)), np.exp(gbm.predict(x_tr)))}
        mlp = LatencyMLP(space, device=device, ensemble=args.ensemble, seed=args.seed)
        mlp.fit(tr_archs, y[train], epochs=30 if args.quick else 100)
        fits["mlp"] = (mlp.predict(te_archs), mlp.predict(tr_archs))
        for name, (held_out, in_sample) in fits.items():
            held = latency_stats(held_out, y[test])["within10pct"]
            fit = latency_stats(in_sample, y[train])["within10pct"]
            figures[f"ceiling_{name}_within10pct_{device}"] = held
            figures[f"ceiling_{name}_train_within10pct_{device}"] = fit
            rows.append([device, name, held, fit])
        logger.info("%s ceiling: %s", device, rows[-2:])
    return figures, rows


# --------------------------------------------------------------------------- 2. lut
def lut(args: argparse.Namespace):
    """Part 2: layer-wise tables vs timed real networks on this CPU."""
    figures: dict[str, float] = {}
    rows = []
    n = 20 if args.quick else args.lut_archs
    repeats = 10 if args.quick else args.repeats
    timing = {"warmup": 3, "repeats": repeats, "rounds": max(1, repeats // 5)}
    for name, options in LUT_SPACES.items():
        space = create_space(name, **options)
        rng = np.random.default_rng(args.seed + 1)
        archs = [space.sample(rng) for _ in range(n + CALIBRATION_ARCHS)]
        chunk = 55 if name == "mobilenet" else len(archs)  # bounded memory for MobileNet
        start = time.perf_counter()
        first = measure_arch_samples(space, archs, chunk=chunk, **timing)
        second = measure_arch_samples(space, archs, chunk=chunk, **timing)
        measure_s = time.perf_counter() - start
        for stat in ("p10", "median"):
            start = time.perf_counter()
            table = build_table(space, device="cpu", statistic=stat, warmup=5,
                                repeats=3 * repeats, rounds=max(1, repeats // 5))
            build_s = time.perf_counter() - start
            measured = summarize(first, stat)
            retest = latency_stats(summarize(second, stat)[CALIBRATION_ARCHS:],
                                   measured[CALIBRATION_ARCHS:])
            pred = table.predict(archs)
            scale = float(np.median(measured[:CALIBRATION_ARCHS] / pred[:CALIBRATION_ARCHS]))
            test_m, test_p = measured[CALIBRATION_ARCHS:], pred[CALIBRATION_ARCHS:]
            raw = latency_stats(test_p, test_m)
            calibrated = latency_stats(scale * test_p, test_m)
            suffix = name if stat == "p10" else f"{stat}_{name}"
            figures.update({
                f"lut_cpu_spearman_{suffix}": raw["spearman"],
                f"lut_cpu_rmse_ms_{suffix}": raw["rmse"],
                f"lut_cpu_within10pct_{suffix}": raw["within10pct"],
                f"lut_cpu_within10pct_calibrated_{suffix}": calibrated["within10pct"],
                f"lut_cpu_rmse_ms_calibrated_{suffix}": calibrated["rmse"],
                f"lut_cpu_scale_{suffix}": scale,
                f"lut_cpu_retest_spearman_{suffix}": retest["spearman"],
                f"lut_cpu_retest_within10pct_{suffix}": retest["within10pct"],
                f"lut_cpu_measured_median_ms_{suffix}": float(np.median(test_m)),
                f"lut_build_s_{suffix}": build_s,
            })
            rows.append([name, stat, len(table.entries), raw["spearman"], raw["within10pct"],
                         calibrated["within10pct"], scale, retest["spearman"],
                         float(np.median(test_m)), build_s])
        figures[f"lut_entries_{name}"] = len(table.entries)
        figures[f"lut_measure_s_{name}"] = measure_s
        figures[f"lut_archs_{name}"] = n
    return figures, rows


# --------------------------------------------------------------------------- 3. service
def throughput(handle: Any, batches: list[list[str]], budget_s: float, *,
               cycle: bool = True) -> tuple[float, int]:
    """Predictions per second over consecutive calls (at least 3, about ``budget_s``).

    Without ``cycle`` no batch is sent twice (architectures stay new to the service).
    """
    import ray

    done, calls, start = 0, 0, time.perf_counter()
    while calls < 3 or (time.perf_counter() - start < budget_s
                        and (cycle or calls < len(batches))):
        batch = batches[calls % len(batches)]
        done += len(ray.get(handle.predict.remote(batch)))
        calls += 1
    return done / (time.perf_counter() - start), calls


def service(args: argparse.Namespace, model_dir: Path):
    """Part 4: throughput of the actor at batch 1, 64, 1,024 (precomputed, LUT, learned MLP)."""
    import ray

    from raynas.latency.service import start_latency_service, stop_latency_service

    figures: dict[str, float] = {}
    rows = []
    nb201 = create_space("nb201")
    model = model_dir / "pixel3.pt"
    if not model.is_file():  # part 1 was skipped: a quick model is enough for throughput
        archs, y = read_latency_table(args.data_dir / "latency_ms.csv", "pixel3")
        LatencyMLP(nb201, ensemble=args.ensemble).fit(archs[:1000], y[:1000], epochs=30) \
            .save(model)
    budget = 1.0 if args.quick else 3.0
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        strings = [nb201.to_string(a) for a in nb201.enumerate()]
        np.random.default_rng(args.seed).shuffle(strings)
        handle = start_latency_service("pixel3", str(model), prefix="bench")
        for b in BATCHES:
            batches = [strings[i:i + b] for i in range(0, len(strings) - b + 1, b)]
            rate, calls = throughput(handle, batches, budget)  # precomputed: new or not alike
            figures[f"service_preds_per_s_batch{b}"] = rate
            rows.append(["nb201 MLP (precomputed)", b, rate, calls])
        stop_latency_service("pixel3", prefix="bench")

        mobilenet = create_space("mobilenet", resolution=128)
        rng = np.random.default_rng(args.seed)

        def fresh(n: int) -> list[str]:
            """``n`` newly sampled MobileNet strings (about 1e21 of them: no repeats)."""
            return [mobilenet.to_string(mobilenet.sample(rng)) for _ in range(n)]

        def batched(archs: list[str], b: int) -> list[list[str]]:
            return [archs[i:i + b] for i in range(0, len(archs) - b + 1, b)]

        with tempfile.TemporaryDirectory() as tmp:
            table = build_table(mobilenet, repeats=3, rounds=1, warmup=1)
            path = table.save(Path(tmp) / "mobilenet.parquet")
            handle = start_latency_service("cpu", str(path), prefix="bench")
            cold = fresh(40 * 1024)
            # Each cold measurement sends architectures the service has not been sent before;
            # the warm one repeats two batches the first cold one already sent.
            for label, b, archs in (("cold", 1024, cold), ("warm", 1024, cold[:2 * 1024]),
                                    ("cold", 64, fresh(256 * 64))):
                rate, calls = throughput(handle, batched(archs, b), budget,
                                         cycle=label == "warm")
                figures[f"service_mobilenet_{label}_preds_per_s_batch{b}"] = rate
                rows.append([f"mobilenet LUT ({label})", b, rate, calls])
            stop_latency_service("cpu", prefix="bench")

            # The learned path: no space this large is precomputed, so every new architecture
            # is encoded and run through the MLP inside the call.
            train = fresh(MLP_TRAIN_ARCHS)
            mlp = LatencyMLP(mobilenet, device="cpu", ensemble=args.ensemble, seed=args.seed)
            mlp.fit(train, table.predict(train), epochs=60 if args.quick else 300)
            path = mlp.save(Path(tmp) / "mobilenet_mlp.pt")
            handle = start_latency_service("cpu", str(path), prefix="bench")
            info = ray.get(handle.info.remote())
            if info["predictors"] != ["LatencyMLP"] or info["cached"]:
                raise RuntimeError(f"expected an empty LatencyMLP service, got {info}")
            figures["service_mlp_cached_at_start"] = info["cached"]
            figures["service_mlp_train_archs"] = MLP_TRAIN_ARCHS
            for b in BATCHES:
                archs = fresh(MLP_COLD_CALLS[b] * b)
                rate, calls = throughput(handle, batched(archs, b), budget, cycle=False)
                figures[f"service_mlp_cold_preds_per_s_batch{b}"] = rate
                rows.append(["mobilenet MLP (new archs)", b, rate, calls])
            stop_latency_service("cpu", prefix="bench")
    finally:
        ray.shutdown()
    direct = LatencyMLP.load(model)
    batch = strings[:1024]
    start, reps = time.perf_counter(), 20
    for _ in range(reps):
        direct.predict(batch)
    figures["direct_mlp_preds_per_s_batch1024"] = reps * 1024 / (time.perf_counter() - start)
    rows.append(["nb201 MLP in-process, no cache", 1024,
                 figures["direct_mlp_preds_per_s_batch1024"], reps])
    return figures, rows


# --------------------------------------------------------------------------- 5. fewshot
def fewshot(table: Path, args: argparse.Namespace) -> tuple[dict[str, float], list[list[Any]]]:
    """Leave each device out; predict it from ``args.shots`` of its measurements."""
    from raynas.latency.fewshot import fit_from_columns, predict_columns
    from raynas.latency.measure import latency_stats, read_latency_columns

    archs, columns = read_latency_columns(table)
    figures: dict[str, float] = {}
    rows = []
    for device in columns:
        rhos, within = [], []
        for draw in range(args.draws):
            model, used = fit_from_columns(archs, columns, device, shots=args.shots,
                                           seed=args.seed + draw)
            predicted = predict_columns(model, columns)
            seen = set(used)
            rest = np.array([a not in seen for a in archs]) & np.isfinite(columns[device])
            stats = latency_stats(predicted[rest], columns[device][rest])
            rhos.append(stats["spearman"])
            within.append(stats["within10pct"])
        figures[f"fewshot_spearman_{args.shots}_{device}"] = float(np.mean(rhos))
        figures[f"fewshot_within10pct_{args.shots}_{device}"] = float(np.mean(within))
        rows.append([device, f"{np.mean(rhos):.3f}", f"{np.mean(within):.3f}"])
    figures[f"fewshot_spearman_{args.shots}_mean"] = float(np.mean(
        [figures[f"fewshot_spearman_{args.shots}_{d}"] for d in columns]))
    figures[f"fewshot_within10pct_{args.shots}_mean"] = float(np.mean(
        [figures[f"fewshot_within10pct_{args.shots}_{d}"] for d in columns]))
    rows.append(["mean", f"{figures[f'fewshot_spearman_{args.shots}_mean']:.3f}",
                 f"{figures[f'fewshot_within10pct_{args.shots}_mean']:.3f}"])
    return figures, rows


# --------------------------------------------------------------------------- 6. sample
def sample(table: Path, args: argparse.Namespace,
           ceilings: dict[str, float]) -> tuple[dict[str, float], list[list[Any]]]:
    """Part 6: the additive + residual model on part 1's 1,000 architectures, vs the ceiling."""
    from raynas.latency.additive import RESIDUALS, AdditiveLatency

    space = create_space("nb201")
    devices = table_devices(table, args.quick)
    figures: dict[str, float] = {"sample_train_archs": SAMPLE_TRAIN}
    rows = []
    for device in devices:
        archs, y = read_latency_table(table, device)
        perm = np.random.default_rng(args.seed).permutation(len(archs))  # as part 1
        train, test = perm[:SAMPLE_TRAIN], perm[SAMPLE_TRAIN:]
        start = time.perf_counter()
        model = AdditiveLatency(space, device=device, seed=args.seed)
        model.fit([archs[i] for i in train], y[train])
        seconds = time.perf_counter() - start
        stats = latency_stats(model.predict([archs[i] for i in test]), y[test])
        for key in ("rmse", "spearman", "within10pct"):
            figures[f"sample_{key}_{SAMPLE_TRAIN}_{device}"] = stats[key]
        figures[f"sample_fit_s_{SAMPLE_TRAIN}_{device}"] = seconds
        for loss in RESIDUALS:
            figures[f"sample_cv_within10pct_{loss}_{device}"] = model.cv_scores[loss]
        ceiling_value = ceilings.get(f"ceiling_mlp_within10pct_{device}")
        gap = float("nan") if ceiling_value is None else ceiling_value - stats["within10pct"]
        if ceiling_value is not None:
            figures[f"within10pct_{SAMPLE_TRAIN}_gap_{device}"] = gap
        rows.append([device, model.chosen, stats["spearman"], stats["within10pct"],
                     ceiling_value if ceiling_value is not None else "-", gap, seconds])
        logger.info("%s sample: %s", device, rows[-1])
    gaps = [figures[k] for k in figures if k.startswith(f"within10pct_{SAMPLE_TRAIN}_gap_")]
    if gaps:
        figures[f"within10pct_{SAMPLE_TRAIN}_gap_max"] = float(max(gaps))
    return figures, rows


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen parts, print the tables and merge the figures into the results JSON."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    parts = set(args.parts.split(","))
    unknown = parts - set(PARTS)
    if unknown:
        raise SystemExit(f"error: unknown part(s) {sorted(unknown)}")
    table = require_file(args.data_dir / "latency_ms.csv")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else -1.0
    # A run of some parts keeps the load recorded beside the other parts' figures.
    prefix = "" if len(parts) == len(PARTS) else "_".join(sorted(parts)) + "_"
    figures: dict[str, float] = {f"{prefix}load_avg_1min_at_start": load, "seed": args.seed}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as model_dir:
        if "learned" in parts:
            part, rows = learned(table, args, Path(model_dir))
            figures.update(part)
            figures["learned_ensemble"] = args.ensemble
            print("\nlearned predictors on latency_ms.csv (train on n, test on the rest)")
            print_table(rows, ["device", "n", "model", "rmse_ms", "spearman", "within10pct",
                               "fit_s"])
        if "ceiling" in parts:
            part, rows = ceiling(table, args)
            figures.update(part)
            print(f"\nceiling: predictors trained on {CEILING_TRAIN} architectures, "
                  "within +-10% on the rest and on their own training set")
            print_table(rows, ["device", "model", "within10pct_held_out", "within10pct_train"])
        if "lut" in parts:
            part, rows = lut(args)
            figures.update(part)
            print(f"\nlookup tables on this CPU vs timed networks (1 thread, CPU clock; "
                  f"scale from {CALIBRATION_ARCHS} other networks)")
            print_table(rows, ["space", "statistic", "entries", "spearman", "within10pct",
                               "within10_calib", "scale", "retest_rho", "median_ms",
                               "build_s"])
        if "service" in parts:
            part, rows = service(args, Path(model_dir))
            figures.update(part)
            print("\nLatencyService throughput through the actor")
            print_table(rows, ["predictor", "batch", "preds_per_s", "calls"])
        if "fewshot" in parts:
            part, rows = fewshot(table, args)
            figures.update(part)
            print(f"\nfew-shot: each device left out, {args.shots} of its architectures "
                  f"measured ({args.draws} draws), the rest predicted from the other devices")
            print_table(rows, ["device", "spearman", "within10pct"])
        if "sample" in parts:
            ceilings = {k: v for k, v in figures.items() if k.startswith("ceiling_")}
            if not ceilings and args.out is not None and args.out.is_file():
                ceilings = {k: v for k, v in json.loads(args.out.read_text()).items()
                            if k.startswith("ceiling_mlp_within10pct_")}
            part, rows = sample(table, args, ceilings)
            figures.update(part)
            print(f"\nsample efficiency: additive + residual model on {SAMPLE_TRAIN} "
                  "architectures (as part 1), within +-10% on the rest, vs the ceiling "
                  f"(MLP on {CEILING_TRAIN})")
            print_table(rows, ["device", "residual", "spearman", "within10pct", "ceiling",
                               "gap", "fit_s"])
    figures[f"wall_s_{'_'.join(sorted(parts))}"] = time.perf_counter() - start
    machine = machine_description()
    print(f"\n{machine}; 1-min load average at start {load:.2f}")
    if args.out is not None:
        merge_results(args.out, figures, machine=machine)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
