"""Serving supernet evaluations: one shared SupernetHost actor against per-trial checkpoint loads.

A NAS-Bench-201 supernet (16 channels, 5 cells per stage, as in NAS-Bench-201; digits data)
is trained briefly by a ``SupernetHost``, which writes its checkpoint. Then, for 1, 2 and 4
concurrent clients (Ray actors, as Tune trials would be), each evaluating its own distinct
architectures with the cache off:

- shared: every client asks one fresh ``SupernetHost`` (restored from the checkpoint) for
  ``evaluate(arch, use_cache=False)``; the host recalibrates the path's BN and validates.
  The host is given the machine's 2 CPUs and runs 2 evaluations at once (``concurrency``),
  one torch thread each, as the naive clients together use both cores.
- naive: every client, per architecture, ``torch.load``s the checkpoint
  (``weights_only=True``), builds the stand-alone network, copies the path's weights into it,
  recalibrates BN on the host's calibration batches and validates, as the host does (the
  accuracies are checked to agree). Torch, the space and the dataset stay loaded in the
  client between architectures (as with Tune's ``reuse_actors=True``); the cold start of a
  fresh client is reported on its own.

The host and each naive client run torch on ``--threads`` threads (default 1): with 2, while
other work kept the machine busy (1-min load average about 7), one evaluation in the host took
5.5 s instead of 0.3-0.4 s with one thread.

Throughput is architectures per second over all clients. Memory is the sum over the processes
involved (host + clients, or the naive clients) of their resident set: the peak of the sum
sampled every 20 ms from /proc (VmRSS, and Pss, which counts shared pages once), and the sum
of each process's VmHWM. Ray's own daemons and the driver are common to both ways and left out.

    python benchmarks/supernet_serving.py [--train-steps 200] [--per-client 16] [--out ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS_DIR, machine_description, merge_results, print_table

from spaces import create_space

logger = logging.getLogger(__name__)

SPACE = {"name": "nb201", "channels": 16, "cells_per_stage": 5, "resolution": 8}
DATASET = "digits"
CONCURRENCY = (1, 2, 4)
EVAL_BATCH = 512  # SupernetTrainer's default eval_batch_size
TARGET_SPEEDUP = 5.0
TARGET_MEMORY_RATIO = 1.2
_EDGE_KEY = re.compile(r"^cells\.(\d+)\.edges\.(\d+)\.(.+)$")


# --------------------------------------------------------------------------- clients
class SharedClient:
    """A trial of the shared way: it only talks to the host (no torch in this process)."""

    def __init__(self, host_name: str) -> None:
        self.host_name = host_name

    def pid(self) -> int:
        """This worker's process id."""
        return os.getpid()

    def run(self, archs: Sequence[str]) -> list[dict[str, float]]:
        """Evaluate each arch through the host, cache off; per-arch client-side latency."""
        import ray

        from raynas.supernet.host import get_host

        host = get_host(self.host_name, replica=0)
        out = []
        for arch in archs:
            start = time.perf_counter()
            result = ray.get(host.evaluate.remote(arch, use_cache=False))
            out.append({**result, "latency_s": time.perf_counter() - start})
        return out


class NaiveClient:
    """A trial of the naive way: checkpoint -> sub-network -> BN recalibration -> validation."""

    def __init__(self, checkpoint: str, threads: int) -> None:
        import torch

        from raynas.evaluators.data import load_dataset

        torch.set_num_threads(threads)
        self.checkpoint = checkpoint
        self.space = create_space(**SPACE)
        # Loaded once per process, as TrainingEvaluator caches its data.
        self.data = load_dataset(DATASET, seed=0)

    def pid(self) -> int:
        """This worker's process id."""
        return os.getpid()

    def run(self, archs: Sequence[str]) -> list[dict[str, float]]:
        """``evaluate`` each arch, in order."""
        return [self.evaluate(a) for a in archs]

    def evaluate(self, arch: str) -> dict[str, float]:
        """What one trial does for one architecture, timed by phase."""
        import torch

        t0 = time.perf_counter()
        state = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        config = json.loads(state["config"])
        t1 = time.perf_counter()
        net = self.space.build_network(arch, num_classes=self.data.num_classes,
                                       in_channels=self.data.in_channels)
        net.load_state_dict(path_state(state["supernet"], net.state_dict(), self.space.ops(arch)))
        del state
        t2 = time.perf_counter()
        acc, loss = self._recalibrate_and_validate(net, config)
        t3 = time.perf_counter()
        return {"val_acc": acc, "val_loss": loss, "load_s": t1 - t0, "build_s": t2 - t1,
                "compute_s": t3 - t2, "latency_s": t3 - t0}

    def _recalibrate_and_validate(self, net: Any, config: dict[str, Any]) -> tuple[float, float]:
        import torch
        from torch import nn

        # The host's calibration batches: SupernetTrainer._load_data with the run's seed.
        x_train = torch.as_tensor(self.data.x_train[: config["train_subset"]])
        x_val = torch.as_tensor(self.data.x_val[: config["val_subset"]])
        y_val = torch.as_tensor(self.data.y_val[: config["val_subset"]])
        bs = config["batch_size"]
        order = np.random.default_rng([config["seed"], 1]).permutation(len(x_train))
        calib = [np.sort(order[i : i + bs])
                 for i in range(0, min(config["calib_batches"] * bs, len(order)), bs)]
        net.eval()
        for bn in (m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)):
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        correct, total = 0, 0.0
        with torch.no_grad():
            for idx in calib:
                net(x_train[torch.from_numpy(idx)])
            net.eval()
            for start in range(0, len(y_val), EVAL_BATCH):
                logits = net(x_val[start : start + EVAL_BATCH])
                yb = y_val[start : start + EVAL_BATCH]
                total += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
                correct += int((logits.argmax(1) == yb).sum())
        return 100.0 * correct / len(y_val), total / len(y_val)


def path_state(supernet: dict[str, Any], network: dict[str, Any], ops: Sequence[str]) -> dict:
    """The stand-alone network's state dict taken from the supernet's (cf. ``extract``)."""
    out = {}
    for key in network:
        match = _EDGE_KEY.match(key)
        if match:
            cell, edge, rest = match.groups()
            out[key] = supernet[f"cells.{cell}.edges.{edge}.{ops[int(edge)]}.{rest}"]
        else:
            out[key] = supernet[key]
    return out


# --------------------------------------------------------------------------- memory
def _proc_kb(pid: int, field: str, name: str = "status") -> int:
    try:
        with open(f"/proc/{pid}/{name}") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class MemorySampler:
    """Peak over time of the summed VmRSS and Pss of ``pids``, sampled in a thread."""

    def __init__(self, pids: Sequence[int], interval_s: float = 0.02) -> None:
        self.pids, self.interval = list(pids), interval_s
        self.peak_rss_kb = self.peak_pss_kb = 0
        self.peak_rss_kb_each = dict.fromkeys(self.pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        tick = 0
        while not self._stop.is_set():
            each = {p: _proc_kb(p, "VmRSS") for p in self.pids}
            self.peak_rss_kb = max(self.peak_rss_kb, sum(each.values()))
            for p, kb in each.items():
                self.peak_rss_kb_each[p] = max(self.peak_rss_kb_each[p], kb)
            if tick % 5 == 0:  # smaps_rollup walks every mapping: sample it less often
                pss = sum(_proc_kb(p, "Pss", "smaps_rollup") for p in self.pids)
                self.peak_pss_kb = max(self.peak_pss_kb, pss)
            tick += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def hwm_kb(self) -> int:
        """Sum over the processes of their own peak resident set (VmHWM) so far."""
        return sum(_proc_kb(p, "VmHWM") for p in self.pids)


# --------------------------------------------------------------------------- one setting
def measure(way: str, clients: int, archs: list[list[str]], warm: str, checkpoint: str,
            threads: int, host_cpus: int) -> dict[str, Any]:
    """Start the processes of one way, warm them up, time all clients together, stop them."""
    import ray

    from raynas.supernet.host import start_hosts, stop_hosts

    host_name, pids = f"bench-serve-{uuid.uuid4().hex[:6]}", []
    started = time.perf_counter()
    if way == "shared":
        (host,) = start_hosts(host_name, space=SPACE, checkpoint_path=checkpoint,
                              num_cpus=host_cpus, num_threads=threads * host_cpus,
                              concurrency=host_cpus, dataset=DATASET)
        info = ray.get(host.ready.remote())
        if not info["restored"]:
            raise RuntimeError("the serving host did not restore the checkpoint")
        pids.append(info["pid"])
        actors = [ray.remote(num_cpus=0)(SharedClient).remote(host_name) for _ in range(clients)]
    else:
        actors = [ray.remote(num_cpus=0)(NaiveClient).remote(checkpoint, threads)
                  for _ in range(clients)]
    try:
        pids += ray.get([a.pid.remote() for a in actors])
        ray.get([a.run.remote([warm]) for a in actors])  # imports, handles, page cache
        cold_start_s = time.perf_counter() - started
        with MemorySampler(pids) as memory:
            t0 = time.perf_counter()
            results = ray.get([a.run.remote(chunk) for a, chunk in zip(actors, archs)])
            wall = time.perf_counter() - t0
        out = {"wall_s": wall, "evals": sum(map(len, results)), "results": results,
               "rss_mb": memory.peak_rss_kb / 1024, "pss_mb": memory.peak_pss_kb / 1024,
               "hwm_mb": memory.hwm_kb() / 1024, "cold_start_s": cold_start_s}
        if way == "shared":
            stats = ray.get(host.stats.remote())
            out["host_compute_s"] = stats["eval_time_s"] / stats["evaluations"]
            out["host_rss_mb"] = memory.peak_rss_kb_each[pids[0]] / 1024
        return out
    finally:
        for actor in actors:
            ray.kill(actor)
        if way == "shared":
            stop_hosts(host_name, 1)


def pretrain(steps: int, folder: str, seed: int, threads: int) -> tuple[str, dict[str, Any]]:
    """Train the supernet in a host for ``steps`` SPOS steps; its checkpoint file and stats."""
    import ray

    from raynas.supernet.host import start_hosts, stop_hosts

    name = f"bench-train-{uuid.uuid4().hex[:6]}"
    path = str(Path(folder) / "supernet.pt")
    (host,) = start_hosts(name, space=SPACE, checkpoint_path=path, num_cpus=1,
                          num_threads=threads, dataset=DATASET, seed=seed,
                          total_steps=steps)
    try:
        start = time.perf_counter()
        ray.get(host.train.remote(steps))  # saves the checkpoint at the end
        stats = ray.get(host.stats.remote())
        stats["train_wall_s"] = time.perf_counter() - start
    finally:
        stop_hosts(name, 1)
    return path, stats


# --------------------------------------------------------------------------- main
def run(args: argparse.Namespace) -> tuple[dict[str, float], list[list[Any]], list[str]]:
    """All settings; figures, table rows and notes."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    space = create_space(**SPACE)
    rng = np.random.default_rng(args.seed)
    need = max(CONCURRENCY) * args.per_client + 1
    archs: list[str] = []
    while len(archs) < need:  # distinct strings, so no two clients ask for the same path
        arch = space.sample(rng)
        if arch not in archs:
            archs.append(arch)
    warm, archs = archs[0], archs[1:]
    figures: dict[str, float] = {"serving_seed": args.seed, "serving_per_client": args.per_client,
                                 "serving_train_steps": args.train_steps,
                                 "serving_channels": SPACE["channels"],
                                 "serving_cells_per_stage": SPACE["cells_per_stage"],
                                 "serving_torch_threads": args.threads,
                                 "serving_host_concurrency": args.host_cpus}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="raynas-serving-") as folder:
            checkpoint, stats = pretrain(args.train_steps, folder, args.seed, args.threads)
            figures["serving_checkpoint_mb"] = os.path.getsize(checkpoint) / 2**20
            figures["serving_supernet_params"] = stats["num_params"]
            figures["serving_pretrain_wall_s"] = stats["train_wall_s"]
            for clients in CONCURRENCY:
                chunks = [archs[i * args.per_client:(i + 1) * args.per_client]
                          for i in range(clients)]
                for way in ("shared", "naive"):
                    runs[way, clients] = measure(way, clients, chunks, warm, checkpoint,
                                                 args.threads, args.host_cpus)
                    logger.info("%s, %d client(s): %.2f evals/s", way, clients,
                                runs[way, clients]["evals"] / runs[way, clients]["wall_s"])
    finally:
        ray.shutdown()
    return summarise(runs, figures)


def summarise(
    runs: dict[tuple[str, int], dict[str, Any]], figures: dict[str, float]
) -> tuple[dict[str, float], list[list[Any]], list[str]]:
    """Figures and table rows from the measured settings."""
    rows = []
    for clients in CONCURRENCY:
        for way in ("shared", "naive"):
            r = runs[way, clients]
            rate = r["evals"] / r["wall_s"]
            flat = [x for chunk in r["results"] for x in chunk]
            latency = 1e3 * float(np.mean([x["latency_s"] for x in flat]))
            figures.update({
                f"evals_per_s_{way}_{clients}": rate, f"latency_ms_{way}_{clients}": latency,
                f"memory_rss_mb_{way}_{clients}": r["rss_mb"],
                f"memory_pss_mb_{way}_{clients}": r["pss_mb"],
                f"memory_hwm_sum_mb_{way}_{clients}": r["hwm_mb"],
            })
            rows.append([way, clients, f"{rate:.2f}", f"{latency:.0f}", f"{r['rss_mb']:.0f}",
                         f"{r['pss_mb']:.0f}", f"{r['hwm_mb']:.0f}"])
        figures[f"shared_vs_naive_evals_per_s_ratio_{clients}"] = (
            figures[f"evals_per_s_shared_{clients}"] / figures[f"evals_per_s_naive_{clients}"])
    top = max(CONCURRENCY)
    naive = [x for chunk in runs["naive", 1]["results"] for x in chunk]
    shared = [x for chunk in runs["shared", 1]["results"] for x in chunk]
    for clients in CONCURRENCY:
        each = [x for chunk in runs["naive", clients]["results"] for x in chunk]
        for phase in ("load", "build", "compute"):
            figures[f"naive_ms_{phase}_{clients}"] = 1e3 * float(
                np.mean([x[f"{phase}_s"] for x in each]))
        figures[f"shared_ms_host_compute_{clients}"] = (
            1e3 * runs["shared", clients]["host_compute_s"])
    for phase in ("load", "build", "compute"):
        figures[f"naive_ms_{phase}"] = figures[f"naive_ms_{phase}_1"]
    # What the shared way saves per arch is the naive way's load and build; the recalibration
    # and validation are the same work in both. With both ways using the same cores, the
    # speed-up cannot exceed (load + build + compute) / compute.
    figures["shared_vs_naive_bound_equal_cores"] = (
        figures["naive_ms_load_1"] + figures["naive_ms_build_1"] + figures["naive_ms_compute_1"]
    ) / figures["shared_ms_host_compute_1"]
    figures["shared_ms_overhead_1"] = (
        figures["latency_ms_shared_1"] - figures["shared_ms_host_compute_1"])
    figures["naive_vs_shared_val_acc_max_abs_diff"] = float(max(
        abs(a["val_acc"] - b["val_acc"]) for a, b in zip(naive, shared)))
    for clients in CONCURRENCY:
        figures[f"memory_rss_mb_host_{clients}"] = runs["shared", clients]["host_rss_mb"]
    figures["memory_rss_ratio_4_vs_1_host_only"] = (
        figures[f"memory_rss_mb_host_{top}"] / figures["memory_rss_mb_host_1"])
    figures["cold_start_s_shared_1"] = runs["shared", 1]["cold_start_s"]
    figures["cold_start_s_naive_1"] = runs["naive", 1]["cold_start_s"]
    figures["shared_vs_naive_evals_per_s_ratio"] = figures[
        f"shared_vs_naive_evals_per_s_ratio_{top}"]
    for kind in ("rss", "pss"):
        for way in ("shared", "naive"):
            figures[f"memory_{kind}_ratio_4_vs_1_{way}"] = (
                figures[f"memory_{kind}_mb_{way}_{top}"] / figures[f"memory_{kind}_mb_{way}_1"])
    figures["memory_ratio_4_vs_1_trials"] = figures["memory_rss_ratio_4_vs_1_shared"]
    figures["memory_ratio_naive_vs_shared_4"] = (
        figures[f"memory_rss_mb_naive_{top}"] / figures[f"memory_rss_mb_shared_{top}"])
    notes = explain(figures, top)
    return figures, rows, notes


def explain(f: dict[str, float], top: int) -> list[str]:
    """Targets, verdicts and what dominates each way's cost, as printable lines."""
    speed, mem = f["shared_vs_naive_evals_per_s_ratio"], f["memory_ratio_4_vs_1_trials"]
    naive_total = f["naive_ms_load"] + f["naive_ms_build"] + f["naive_ms_compute"]
    client_mb = (f[f"memory_rss_mb_shared_{top}"] - f["memory_rss_mb_shared_1"]) / (top - 1)
    return [
        f"shared / naive evals/s with {top} clients: {speed:.2f}x (target >= {TARGET_SPEEDUP}x: "
        f"{'met' if speed >= TARGET_SPEEDUP else 'MISSED'}); with 1 client "
        f"{f['shared_vs_naive_evals_per_s_ratio_1']:.2f}x; upper bound when both ways use "
        f"the same cores: (load + build + compute) / compute = "
        f"{f['shared_vs_naive_bound_equal_cores']:.2f}x",
        f"shared memory, {top} clients vs 1 (VmRSS sum): {mem:.2f}x (target <= "
        f"{TARGET_MEMORY_RATIO}x: {'met' if mem <= TARGET_MEMORY_RATIO else 'MISSED'}); Pss "
        f"{f['memory_pss_ratio_4_vs_1_shared']:.2f}x; naive {top} vs 1: "
        f"{f['memory_rss_ratio_4_vs_1_naive']:.2f}x (Pss "
        f"{f['memory_pss_ratio_4_vs_1_naive']:.2f}x); naive / shared at {top} clients: "
        f"{f['memory_ratio_naive_vs_shared_4']:.2f}x",
        f"naive cost per arch (1 client, {f['serving_torch_threads']:g} thread(s)): "
        f"{naive_total:.0f} ms = "
        f"torch.load of the {f['serving_checkpoint_mb']:.1f} MiB checkpoint "
        f"{f['naive_ms_load']:.0f} + build and copy weights {f['naive_ms_build']:.0f} + "
        f"BN recalibration and validation {f['naive_ms_compute']:.0f}; with {top} clients "
        f"{f[f'naive_ms_load_{top}']:.0f} + {f[f'naive_ms_build_{top}']:.0f} + "
        f"{f[f'naive_ms_compute_{top}']:.0f} ms (they share 2 cores)",
        f"shared cost per arch: the same recalibration and validation in the host, "
        f"{f['shared_ms_host_compute_1']:.0f} ms ({f['shared_ms_host_compute_4']:.0f} ms with "
        f"{top} clients); the host runs {f['serving_host_concurrency']:g} evaluations at "
        f"once, so past that many clients they queue; the call itself adds "
        f"{f['shared_ms_overhead_1']:.0f} ms (client latency minus host compute, 1 client)",
        f"shared memory is the host (torch, supernet, optimizer state, data: "
        f"{f['memory_rss_mb_host_1']:.0f} MiB, {f['memory_rss_ratio_4_vs_1_host_only']:.2f}x "
        f"at {top} clients) plus about {client_mb:.0f} MiB per extra client (a bare Ray "
        f"worker, no torch); naive memory is torch + data + a transient copy of the "
        f"checkpoint in every client",
        f"cold start of one client (actor start, imports, first evaluation): shared "
        f"{f['cold_start_s_shared_1']:.1f} s (host start included), naive "
        f"{f['cold_start_s_naive_1']:.1f} s; a Tune trial without reuse_actors pays the "
        f"naive one per trial",
        f"naive and shared val_acc agree to {f['naive_vs_shared_val_acc_max_abs_diff']:.3g} "
        f"percentage points",
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--train-steps", type=int, default=200,
                        help="SPOS steps of the supernet before serving")
    parser.add_argument("--per-client", type=int, default=16,
                        help="distinct architectures each client evaluates")
    parser.add_argument("--seed", type=int, default=0, help="supernet and architecture seed")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the host and of each naive client (2 helps "
                        "on an idle machine and collapses when other work loads it)")
    parser.add_argument("--host-cpus", type=int, default=2,
                        help="CPUs of the shared host = evaluations it runs at once")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "supernet.json",
                        help="results JSON, merged with what is there (default %(default)s)")
    args = parser.parse_args(argv)
    for name in ("train_steps", "per_client", "threads", "host_cpus"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print a table and merge the figures into the results JSON."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    load = os.getloadavg()[0]
    figures, rows, notes = run(args)
    figures["serving_benchmark_wall_s"] = time.perf_counter() - start
    figures["serving_load_avg_1min_at_start"] = load
    figures["serving_load_avg_1min_at_end"] = os.getloadavg()[0]
    machine = machine_description()
    print(
        f"\nSupernet serving, NB201 {SPACE['channels']} channels x {SPACE['cells_per_stage']} "
        f"cells per stage ({figures['serving_supernet_params']:,} parameters, checkpoint "
        f"{figures['serving_checkpoint_mb']:.1f} MiB with optimizer state), digits, "
        f"{args.per_client} distinct archs per client, cache off, seed {args.seed}.\n"
        f"Memory: peak of the summed VmRSS / Pss sampled every 20 ms, and the sum of VmHWM, "
        f"over host + clients (shared) or clients (naive).\n{machine}; 1-min load average at "
        f"start {load:.2f}, at the end {figures['serving_load_avg_1min_at_end']:.2f}\n"
    )
    print_table(rows, ["way", "clients", "evals/s", "latency ms", "RSS MiB", "Pss MiB",
                       "HWM sum MiB"])
    print()
    for line in notes:
        print(line)
    print(f"total {figures['serving_benchmark_wall_s']:.1f} s")
    merge_results(args.out, figures, machine=machine)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
