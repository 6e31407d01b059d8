"""Command line: ``raynas run CONFIG``, ``demo``, ``report``, ``spaces``, ``searchers``, ...."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib import resources
from pathlib import Path

from raynas import __version__
from raynas.cli.latency import add_latency_parser, run_latency
from raynas.cli.submit import add_submit_parser, run_submit
from raynas.cli.zero_cost import add_zero_cost_parser, run_zero_cost
from raynas.run.stop import interrupted_exit_code, stop_signals

logger = logging.getLogger(__name__)

DEMO_CONFIG = "demo.yaml"
DEMO_TRAINING_CONFIG = "demo_training.yaml"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raynas", description="Neural architecture search on Ray Tune, tracked in MLflow."
    )
    parser.add_argument("--version", action="version", version=f"raynas {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the search a YAML config describes")
    run.add_argument("config", help="path of the experiment YAML")
    run.add_argument("--warm-start", nargs="+", metavar="RUN_ID", default=(),
                     help="seed the searcher(s) with the finished trials of earlier searches")
    _common_run_options(run)

    resume = sub.add_parser(
        "resume", help="continue a search from what MLflow recorded, until its budget"
    )
    resume.add_argument("run_id", metavar="RUN_ID", help="the search's MLflow (parent) run id")
    resume.add_argument("--spool", metavar="PATH",
                        help="first write this MLflow spool (left by a tracking outage) "
                        "into the store")
    resume.add_argument("--force", action="store_true",
                        help="take over the search from a driver whose lease went stale "
                        "(no heartbeat for a minute); a live driver is never overridden")
    _common_run_options(resume)

    demo = sub.add_parser("demo", help="run the bundled demo search (local Ray, sqlite MLflow)")
    demo.add_argument(
        "--output-dir", default="raynas_demo", help="folder for mlflow.db and results"
    )
    demo.add_argument("--trials", type=int, help="override the demo's number of trials")
    demo.add_argument(
        "--training",
        action="store_true",
        help="train every architecture stand-alone instead of scoring it on a shared supernet",
    )
    _common_run_options(demo)

    _add_report_parser(sub)
    sub.add_parser("spaces", help="list the available search spaces")
    sub.add_parser("searchers", help="list the available searchers")
    add_latency_parser(sub)
    add_submit_parser(sub)
    add_zero_cost_parser(sub)
    return parser


def _add_report_parser(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser(
        "report", help="per-searcher table, plots, trial table and JSON of a search in MLflow"
    )
    report.add_argument("target", metavar="RUN_ID_OR_EXPERIMENT",
                        help="the search's MLflow run id, or an experiment (its latest search)")
    report.add_argument("--tracking-uri",
                        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else ./mlflow.db)")
    report.add_argument("--output-dir", help="folder for the PNGs, report.json, trials.parquet "
                        "(default: raynas_report/<run id>)")
    report.add_argument("--format", choices=("table", "json"), default="table",
                        help="what to print: a table, or the report's JSON (for scripts)")
    report.add_argument("--ref-point", type=float, nargs="+", metavar="V",
                        help="hypervolume reference point, one value per objective in its own "
                        "sign (default: 10%% beyond the worst feasible values)")


def _report(args: argparse.Namespace) -> int:
    from raynas.report.summary import load_report, write_report

    uri = _flag_or_env_uri(args)
    report = load_report(uri, args.target, ref_point=args.ref_point)
    out = Path(args.output_dir or Path("raynas_report") / report.run_id)
    paths = write_report(report, out)
    if args.format == "json":
        print(report.to_json())
    else:
        from raynas.report.summary import render_table

        print(render_table(report))
        print(f"wrote {', '.join(p.name for p in paths)} to {out}")
    return 0


def _flag_or_env_uri(args: argparse.Namespace) -> str:
    """``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else ./mlflow.db; file stores refused."""
    from raynas.run.config import check_tracking_uri_form

    if args.tracking_uri:
        return check_tracking_uri_form(args.tracking_uri, "--tracking-uri")
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return check_tracking_uri_form(env, "MLFLOW_TRACKING_URI")
    return f"sqlite:///{Path('mlflow.db').resolve()}"


def _one_line(exc: BaseException, limit: int = 800) -> str:
    """An error as one bounded line (a library's message may span lines or quote a lot).

    A long line loses its middle, not its end: raynas's own errors end with the command
    to run next (``raynas resume ... --spool ...``).
    """
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    text = text or type(exc).__name__
    if len(text) <= limit:
        return text
    half = (limit - 5) // 2
    return f"{text[:half]} ... {text[-half:]}"


def _common_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help="Ray cluster to join ('auto' or host:port); default local")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (overrides the config)")
    p.add_argument("--verbose", action="store_true", help="show Ray worker output")


def _apply_overrides(cfg, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    if getattr(args, "tracking_uri", None):
        cfg = replace(cfg, tracking=replace(cfg.tracking, uri=args.tracking_uri))
    if getattr(args, "trials", None) is not None:
        cfg = replace(cfg, budget=replace(cfg.budget, trials=args.trials))
    return cfg


def _load_demo(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    import yaml

    from raynas.run.config import ConfigError, parse_config

    name = DEMO_TRAINING_CONFIG if args.training else DEMO_CONFIG
    raw = yaml.safe_load(resources.files("raynas.configs").joinpath(name).read_text())
    out = Path(args.output_dir).resolve()
    if args.trials is not None and args.trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {args.trials}")
    cfg = parse_config(raw)
    uri = args.tracking_uri or f"sqlite:///{out / 'mlflow.db'}"
    return replace(cfg, output_dir=str(out), tracking=replace(cfg.tracking, uri=uri))


def _run(args: argparse.Namespace) -> int:
    from raynas.run.config import load_config
    from raynas.run.runner import run_search

    if args.command == "resume":
        return _resume(args)
    if args.tracking_uri:
        _flag_or_env_uri(args)
    cfg = _load_demo(args) if args.command == "demo" else load_config(args.config)
    cfg = _apply_overrides(cfg, args)
    warm = ()
    if getattr(args, "warm_start", None):
        from raynas.tracking.resume import load_warm_start
        from spaces import create_space

        space = create_space(cfg.space.name, **cfg.space.options)
        warm = load_warm_start(cfg.resolved_tracking_uri(), args.warm_start, space)
    result = run_search(cfg, address=args.address, quiet=not args.verbose, warm_start=warm)
    return _print_result(result)


def _resume(args: argparse.Namespace) -> int:
    import tempfile

    from raynas.run.runner import run_search
    from raynas.tracking.resume import load_resume_plan
    from raynas.tracking.store import check_store_writable

    uri = _flag_or_env_uri(args)
    check_store_writable(uri)  # a resume writes: refused in one line before anything starts
    run_id = args.run_id
    if args.spool:
        from raynas.tracking.store import replay_spool

        mapping = replay_spool(args.spool, uri)
        run_id = mapping.get(run_id, run_id)  # a run created during the outage
        print(f"raynas: spool {args.spool} written to {uri} ({len(mapping)} runs created)")
    with tempfile.TemporaryDirectory(prefix="raynas-resume-") as tmp:
        plan = load_resume_plan(uri, run_id, dest_dir=tmp)
        for warning in plan.warnings:
            print(f"raynas: warning: {warning}", file=sys.stderr)
        print(
            f"raynas: run {plan.run_id}: {len(plan.finished)} trials finished, "
            f"{len(plan.failed)} failed, {len(plan.interrupted)} interrupted; "
            + (f"{plan.remaining} to run" if plan.remaining > 0
               else "all trials done, recording the outcome")
        )
        result = run_search(plan.config, address=args.address, quiet=not args.verbose,
                            resume=plan, force=args.force)
    return _print_result(result)


def _print_result(result) -> int:  # type: ignore[no-untyped-def]
    """Print the best architecture, Pareto front and where things are recorded."""
    print()
    if result.best_arch is None:
        print(f"raynas: no trial succeeded ({result.num_failed} failed)")
    else:
        value = result.best_metrics.get(result.metric)
        extras = ", ".join(
            f"{k}={result.best_metrics[k]:.4g}"
            for k in ("test_acc", "test_acc_200ep", "params", "flops")
            if k in result.best_metrics
        )
        print(f"best architecture: {result.best_arch}")
        print(f"  {result.metric}={value:.4g}" + (f", {extras}" if extras else ""))
    if result.pareto:
        metric_keys = result.objective_keys
        print(f"Pareto front of feasible trials ({len(result.pareto)} architectures):")
        for row in result.pareto[:10]:
            shown = " ".join(f"{k}={row[k]:.4g}" for k in metric_keys if k in row)
            print(f"  {shown}  {row['arch']}")
    for member in result.searchers:
        best = "n/a" if member["best"] is None else f"{member['best']:.4g}"
        print(
            f"  searcher {member['label']}: {member['evaluations']} evaluated, "
            f"{member['cache_hits']} cache hits, best {result.metric}={best}, {member['status']}"
            + (f" ({member['error']})" if member["error"] else "")
        )
    print(
        f"{result.num_trials} trials ({result.num_failed} failed) in {result.wall_time_s:.1f}s; "
        f"trial table: {result.trials_path}"
    )
    print(f"MLflow: experiment {result.experiment_id}, parent run {result.parent_run_id}")
    if result.tracking_uri.startswith("sqlite:"):
        print(
            "open the MLflow UI with:\n"
            f"  mlflow ui --backend-store-uri {result.tracking_uri} --host 127.0.0.1 --port 5000\n"
            "then browse http://127.0.0.1:5000"
        )
    else:
        print(f"browse {result.tracking_uri}")
    if result.status == "KILLED":
        return interrupted_exit_code()  # 130 after Ctrl-C, 143 after SIGTERM
    return 0 if result.best_arch is not None else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``raynas`` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        if args.command == "spaces":
            from spaces import list_spaces

            print("\n".join(list_spaces()))
            return 0
        if args.command == "searchers":
            from searchers import list_searchers

            print("\n".join(list_searchers()))
            return 0
        if args.command == "latency":
            return run_latency(args)
        if args.command == "submit":
            return run_submit(args)
        if args.command == "zero-cost":
            return run_zero_cost(args)
        if args.command == "report":
            return _report(args)
        with stop_signals():  # SIGTERM stops a search as Ctrl-C does
            return _run(args)
    except KeyboardInterrupt:
        print("raynas: interrupted", file=sys.stderr)
        return interrupted_exit_code()
    except (ValueError, TypeError, RuntimeError, OSError) as exc:
        if args.debug:
            raise
        print(f"raynas: error: {_one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
