"""``raynas latency build | measure | train``: lookup tables, measured networks, predictors."""

from __future__ import annotations

import argparse
import logging
from typing import Any

logger = logging.getLogger(__name__)


def _space_options(items: list[str] | None) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--space-option must read KEY=VALUE, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def _space_arguments(p: argparse.ArgumentParser, *, default: str | None = None) -> None:
    p.add_argument("--space", default=default, required=default is None,
                   help="search space name" + (f" (default {default})" if default else ""))
    p.add_argument("--space-option", action="append", metavar="KEY=VALUE",
                   help="space option, e.g. resolution=128 or widths=[8,16] (repeatable)")


def _timing_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--torch-device", default="cpu", help="where to time: cpu, cuda, auto")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--warmup", type=int, default=5, help="untimed passes per item")
    p.add_argument("--repeats", type=int, default=30, help="timed passes per item")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the repeats")
    p.add_argument("--threads", type=int, default=1, help="torch threads while timing")
    p.add_argument("--statistic", default="p10", help="median, min, mean or p<q> of passes")


def add_latency_parser(sub: Any) -> None:
    """Add the ``latency`` command and its subcommands to the main parser's subparsers."""
    latency = sub.add_parser("latency", help="latency lookup tables and learned predictors")
    lsub = latency.add_subparsers(dest="latency_command", required=True)

    build = lsub.add_parser("build", help="time every layer choice of a space into a "
                            "Parquet lookup table")
    _space_arguments(build)
    build.add_argument("--device", default="cpu", help="device name recorded in the table")
    build.add_argument("-o", "--output", required=True, help="Parquet file to write")
    build.add_argument("--calibrate", type=int, default=0, metavar="K",
                       help="also time K whole networks and store a scale factor")
    _timing_arguments(build)

    measure = lsub.add_parser("measure", help="time real sub-networks into a CSV "
                              "(arch_str, <device>) that `train` reads")
    _space_arguments(measure)
    measure.add_argument("--device", default="cpu", help="column name of the latencies")
    measure.add_argument("--archs", type=int, default=100, help="random architectures")
    measure.add_argument("--seed", type=int, default=0)
    measure.add_argument("-o", "--output", required=True, help="CSV file to write")
    _timing_arguments(measure)

    train = lsub.add_parser("train", help="train a learned predictor on measured latencies")
    train.add_argument("--table", required=True, help="CSV/Parquet with arch_str and devices")
    train.add_argument("--device", required=True, help="the table's latency column")
    train.add_argument("-o", "--output", required=True,
                       help="model file to write (.pt for mlp, .npz for additive)")
    train.add_argument("--model", choices=("mlp", "additive"), default="mlp",
                       help="mlp: LatencyMLP on the one-hot encoding; additive: per-operation "
                            "costs times a boosted residual, robust to noisy measurements "
                            "(raynas.latency.additive; --epochs/--hidden/--ensemble unused)")
    # A default, not a branch: the bundled device table (../shared/data/nb201/latency_ms.csv)
    # is NAS-Bench-201's, so `latency train --table` on it needs no --space.
    _space_arguments(train, default="nb201")
    train.add_argument("--train-size", type=int, help="train on at most this many rows")
    train.add_argument("--holdout", type=float, default=0.1,
                       help="share of rows kept out and reported (default 0.1)")
    train.add_argument("--epochs", type=int, default=300)
    train.add_argument("--hidden", default="128,128", help="hidden layer widths")
    train.add_argument("--ensemble", type=int, default=3, help="MLPs averaged")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--few-shot", type=int, metavar="K",
                       help="a new device from K measured architectures: transfer from the "
                            "table's other devices (writes a JSON model and, with "
                            "--predictions, the device's predicted column for every row)")
    train.add_argument("--measured", help="with --few-shot: CSV/Parquet with arch_str and the "
                                          "new device's column (else the table's column)")
    train.add_argument("--predictions", help="with --few-shot: CSV to write (arch_str, device) "
                                             "for every row; usable as a measured table")


def _timing(args: argparse.Namespace) -> dict[str, Any]:
    return {"batch_size": args.batch_size, "warmup": args.warmup, "repeats": args.repeats,
            "rounds": args.rounds, "threads": args.threads, "statistic": args.statistic}


def _build(args: argparse.Namespace) -> int:
    from raynas.latency.lut import build_table
    from spaces import create_space

    space = create_space(args.space, **_space_options(args.space_option))
    table = build_table(space, device=args.device, torch_device=args.torch_device,
                        calibrate=args.calibrate, **_timing(args))
    path = table.save(args.output)
    print(f"raynas: {len(table.entries)} entries for {space.name} on {args.device}, fixed "
          f"parts {table.constant:.4g} ms, scale {table.scale:.3f}; wrote {path}")
    return 0


def _measure(args: argparse.Namespace) -> int:
    import csv

    import numpy as np

    from raynas.latency.measure import measure_archs
    from spaces import create_space

    if args.archs < 1:
        raise ValueError(f"--archs must be >= 1, got {args.archs}")
    space = create_space(args.space, **_space_options(args.space_option))
    rng = np.random.default_rng(args.seed)
    archs = [space.sample(rng) for _ in range(args.archs)]
    timing = _timing(args)
    ms = measure_archs(space, archs, device=args.torch_device, statistic=timing.pop("statistic"),
                       **timing)
    with open(args.output, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["arch_str", args.device])
        writer.writerows([space.to_string(a), f"{v:.6g}"] for a, v in zip(archs, ms, strict=True))
    print(f"raynas: {len(archs)} {space.name} networks, median {np.median(ms):.4g} ms; "
          f"wrote {args.output}")
    return 0


def _few_shot(args: argparse.Namespace) -> int:
    import csv

    import numpy as np

    from raynas.latency.fewshot import fit_from_columns, predict_columns, read_inputs
    from raynas.latency.measure import latency_stats

    archs, columns, measured = read_inputs(args.table, args.device, args.measured)
    model, used = fit_from_columns(archs, columns, args.device, shots=args.few_shot,
                                   seed=args.seed, measured=measured)
    path = model.save(args.output)
    line = (f"raynas: {args.device} from {len(used)} measured architectures and "
            f"{len(model.references)} reference devices ({', '.join(model.references)})")
    predicted = predict_columns(model, columns)
    if args.device in columns:  # measured rows the fit did not use: report the fit on them
        seen = set(used)
        rest = [i for i, a in enumerate(archs) if a not in seen
                and np.isfinite(columns[args.device][i]) and np.isfinite(predicted[i])]
        if len(rest) >= 2:
            stats = latency_stats(predicted[rest], columns[args.device][rest])
            line += (f"; on the other {len(rest)} measured rows: Spearman "
                     f"{stats['spearman']:.4f}, within 10% {100 * stats['within10pct']:.1f}%")
    if args.predictions:
        with open(args.predictions, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["arch_str", args.device])
            writer.writerows([a, "" if not np.isfinite(v) else f"{v:.6g}"]
                             for a, v in zip(archs, predicted, strict=True))
        line += f"; predictions in {args.predictions}"
    print(f"{line}; wrote {path}")
    return 0


def _train(args: argparse.Namespace) -> int:
    import numpy as np

    if args.few_shot is not None:
        return _few_shot(args)
    if args.measured or args.predictions:
        raise ValueError("--measured and --predictions go with --few-shot")

    from raynas.latency.additive import AdditiveLatency
    from raynas.latency.measure import latency_stats, read_latency_table
    from raynas.latency.predictor import LatencyMLP
    from spaces import create_space

    if not 0 <= args.holdout < 1:
        raise ValueError(f"--holdout must be in [0, 1), got {args.holdout}")
    try:
        hidden = tuple(int(h) for h in args.hidden.split(","))
    except ValueError:
        raise ValueError(f"--hidden must be comma-separated ints, got {args.hidden!r}") from None
    space = create_space(args.space, **_space_options(args.space_option))
    archs, values = read_latency_table(args.table, args.device)
    keep = np.flatnonzero(np.isfinite(values) & (values > 0))
    order = np.random.default_rng(args.seed).permutation(keep)
    n_test = int(round(args.holdout * len(order)))
    test, train = order[:n_test], order[n_test:]
    if args.train_size is not None:
        train = train[: args.train_size]
    if len(train) < 2:
        raise ValueError(f"{args.table} has {len(train)} usable training rows; need >= 2")
    model: LatencyMLP | AdditiveLatency
    if args.model == "additive":
        model = AdditiveLatency(space, device=args.device, seed=args.seed)
        model.fit([archs[i] for i in train], values[train])
    else:
        model = LatencyMLP(space, hidden=hidden, device=args.device, ensemble=args.ensemble,
                           seed=args.seed)
        model.fit([archs[i] for i in train], values[train], epochs=args.epochs)
    path = model.save(args.output)
    line = (f"raynas: trained {args.model} on {len(train)} {space.name} architectures for "
            f"{args.device}")
    if isinstance(model, AdditiveLatency):
        line += f" (residual {model.chosen}, by {model.folds}-fold CV)"
    if len(test) >= 2:
        stats = latency_stats(model.predict([archs[i] for i in test]), values[test])
        line += (f"; held out {len(test)}: RMSE {stats['rmse']:.4g} ms, Spearman "
                 f"{stats['spearman']:.4f}, within 10% {100 * stats['within10pct']:.1f}%")
    print(f"{line}; wrote {path}")
    return 0


def run_latency(args: argparse.Namespace) -> int:
    """Run the ``latency`` subcommand ``args.latency_command``; returns the exit code."""
    commands = {"build": _build, "measure": _measure, "train": _train}
    return commands[args.latency_command](args)
