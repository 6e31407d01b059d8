"""``raynas zero-cost score``: zero-cost proxies of many architectures into a Parquet table."""

from __future__ import annotations

import argparse
import time
from typing import Any

from raynas.cli.latency import _space_arguments, _space_options


def add_zero_cost_parser(sub: Any) -> None:
    """Add the ``zero-cost`` command and its ``score`` subcommand to the main parser."""
    zc = sub.add_parser("zero-cost", help="zero-cost proxies of untrained networks")
    zsub = zc.add_subparsers(dest="zero_cost_command", required=True)
    score = zsub.add_parser("score", help="score architectures by proxies in parallel Ray "
                            "tasks into a Parquet table (arch_str, <proxy>, ms_<proxy>)")
    _space_arguments(score)
    score.add_argument("--proxies", required=True,
                       help="comma-separated proxies, e.g. synflow,naswot,zen")
    group = score.add_mutually_exclusive_group()
    group.add_argument("--archs", type=int, default=1000,
                       help="distinct random architectures to score (default 1000)")
    group.add_argument("--all", action="store_true", help="every architecture of the space")
    score.add_argument("--seed", type=int, default=0,
                       help="seed of the sample and of every network's initialisation")
    score.add_argument("--dataset", default="digits",
                       help="batch source of data-dependent proxies: digits, npz:PATH, an "
                       "image folder (default digits)")
    score.add_argument("--batch-size", type=int, default=64)
    score.add_argument("--in-channels", type=int,
                       help="image channels of the networks (default the data's; 3 scores "
                       "greyscale data as RGB)")
    score.add_argument("--torch-device", default="auto", help="cpu, cuda or auto")
    score.add_argument("--chunk", type=int, default=8, help="architectures per Ray task")
    score.add_argument("--address", help="Ray cluster to join; default a local node")
    score.add_argument("-o", "--output", required=True, help="Parquet file to write")


def run_zero_cost(args: argparse.Namespace) -> int:
    """Run ``raynas zero-cost score``; returns the exit code."""
    import ray

    from raynas.run.runner import ensure_ray
    from raynas.zero_cost.scorer import ProxyScorer, check_proxy_names
    from raynas.zero_cost.table import progress_bar, sample_archs, score_archs, write_table
    from spaces import create_space

    proxies = check_proxy_names([p.strip() for p in args.proxies.split(",") if p.strip()])
    for name, value in (("--batch-size", args.batch_size), ("--chunk", args.chunk)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    space = create_space(args.space, **_space_options(args.space_option))
    scorer = ProxyScorer(space, proxies, dataset=args.dataset, batch_size=args.batch_size,
                         seed=args.seed, device=args.torch_device,
                         in_channels=args.in_channels)
    archs = sample_archs(space, None if args.all else args.archs, args.seed)
    cuda = scorer.uses_cuda()
    started = ensure_ray(args.address)
    t0 = time.monotonic()
    try:
        rows = score_archs(scorer, archs, chunk=args.chunk, gpus_per_task=1.0 if cuda else 0.0,
                           progress=progress_bar())
    finally:
        if started:
            ray.shutdown()
    wall = time.monotonic() - t0
    settings = {"space": space.spec(), "proxies": proxies, "seed": args.seed,
                "dataset": scorer.dataset, "batch_size": args.batch_size,
                "in_channels": args.in_channels, "device": scorer.torch_device(),
                "archs": len(rows), "wall_s": round(wall, 2)}
    out = write_table(rows, args.output, settings)
    charged = sum(r.get(f"ms_{p}", 0.0) for r in rows for p in proxies) / 1000.0
    print(f"raynas: scored {len(rows)} architectures by {', '.join(proxies)} in {wall:.1f} s "
          f"({charged:.1f} s of proxy compute); wrote {out}")
    return 0
