"""Small helpers shared by the benchmark scripts: data location, machine, results, tables."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# Benchmark the checkout this script belongs to, whatever else is installed: a script's
# sys.path[0] is benchmarks/, not the repository root.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "nb201"
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"


def add_data_dir_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--data-dir``: the NAS-Bench-201 tables, default ``<repo>/../shared/data/nb201``."""
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"folder holding cifar10.csv (default: {DEFAULT_DATA_DIR})",
    )


def require_file(path: Path) -> Path:
    """``path`` if it is a file, else ``SystemExit`` with one clear line."""
    if not path.is_file():
        raise SystemExit(f"error: {path} not found; pass --data-dir pointing at the NB201 tables")
    return path


def machine_description() -> str:
    """One line describing where a benchmark ran: platform, Python, CPU model and count."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{platform.platform()}; Python {platform.python_version()}; {cpu}; "
        f"{os.cpu_count()} CPUs ({usable} usable)"
    )


def write_results(
    path: Path,
    figures: Mapping[str, float | int],
    *,
    machine: str,
    labels: Mapping[str, str] | None = None,
) -> None:
    """Write a flat JSON object: figure name -> finite number, ``machine`` and ``labels``.

    ``labels`` are text fields (e.g. ``{"data": "cifar10"}``); their names must not be
    figure names.
    """
    out: dict[str, float | int | str] = {}
    for name, text in (labels or {}).items():
        if name in figures or name == "machine" or not isinstance(text, str):
            raise ValueError(f"label {name!r} must be a string not named like a figure")
        out[name] = text
    for name, value in figures.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"figure {name!r} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"figure {name!r} is not finite: {value!r}")
        out[name] = value
    out["machine"] = machine
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def print_table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> None:
    """Print rows as a plain left-aligned text table; floats with 4 significant decimals."""

    def fmt(cell: object) -> str:
        if isinstance(cell, float):
            return f"{cell:.4f}" if abs(cell) < 1e5 else f"{cell:.4g}"
        return str(cell)

    text = [[fmt(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in text]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    print(line)
    print("-" * len(line))
    for row in text:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def merge_results(path: Path, figures: Mapping[str, float | int], *, machine: str) -> None:
    """``write_results`` into ``path`` keeping the figures already there under other names.

    Several scripts share one results file; each replaces its own keys and ``machine``.
    """
    old: dict[str, float | int] = {}
    if path.is_file():
        try:
            loaded = json.loads(path.read_text())
        except ValueError as exc:
            raise SystemExit(f"error: {path} is not valid JSON ({exc}); move it away") from None
        old = {k: v for k, v in loaded.items() if k != "machine"}
    write_results(path, {**old, **figures}, machine=machine)
