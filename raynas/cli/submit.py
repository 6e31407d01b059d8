"""``raynas submit CONFIG --address http://HEAD:8265``: the search as a Ray Job."""

from __future__ import annotations

import argparse
import logging
import os
import sys

logger = logging.getLogger(__name__)


def add_submit_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``submit`` subcommand to the ``raynas`` parser."""
    p = sub.add_parser(
        "submit", help="submit a search to a running Ray cluster as a Ray Job; prints the job id"
    )
    p.add_argument("config", help="path of the experiment YAML (shipped with the job)")
    p.add_argument("--address", default=os.environ.get("RAY_API_SERVER_ADDRESS"),
                   help="the Ray dashboard's URL, e.g. http://HEAD:8265 "
                   "(default: RAY_API_SERVER_ADDRESS)")
    p.add_argument("--tracking-uri",
                   help="MLflow tracking URI the job uses (default: the config's tracking.uri, "
                   "else MLFLOW_TRACKING_URI); an MLflow server the cluster reaches")
    p.add_argument("--working-dir",
                   help="folder uploaded as the job's working directory (your data and code); "
                   "the config must lie inside it (default: the config file alone)")
    p.add_argument("--env", action="append", metavar="KEY=VALUE", default=[],
                   help="environment variable for the job (repeatable; shown in the dashboard, "
                   "so no secrets)")
    p.add_argument("--wait", action="store_true",
                   help="stream the job's log until it ends; exit 0 only if it succeeded")


def _env(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--env must read KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def run_submit(args: argparse.Namespace) -> int:
    """Submit the job, print its id; with ``--wait`` stream its log and return its outcome."""
    from raynas.cli.jobs import job_client, submit_search, wait_for_job

    if not args.address:
        raise ValueError("raynas submit needs --address http://HEAD:8265 (the Ray dashboard)")
    # The config, tracking URI and working dir are checked before the cluster is contacted.
    job_id = submit_search(
        args.config, address=args.address, working_dir=args.working_dir,
        tracking_uri=args.tracking_uri, env_vars=_env(args.env),
        env_uri=os.environ.get("MLFLOW_TRACKING_URI"),
    )
    print(job_id, flush=True)
    if not args.wait:
        print(f"raynas: submitted; follow it with: ray job logs --follow {job_id} "
              f"--address {args.address}", file=sys.stderr)
        return 0
    try:
        status = wait_for_job(job_client(args.address), job_id, echo=print)
    except KeyboardInterrupt:
        print(f"raynas: stopped waiting; the job runs on (ray job stop {job_id} "
              f"--address {args.address})", file=sys.stderr)
        return 130
    print(f"raynas: job {job_id} {status}", file=sys.stderr)
    return 0 if status == "SUCCEEDED" else 1
