"""GPU figures of the hardware-aware searches: peak memory and time on CUDA (needs a GPU).

Once-for-All's full MobileNetV3 space (widths 24-160, head 960, depths 2-4, kernels 3/5/7,
expansions 3/4/6) at 32x32: digits images repeated 4x4 (32x32, one channel), batch 64. For
``proxyless``, ``parsec`` (``--samples`` architectures a step) and ``fpnas``, one epoch of
search on the GPU: peak CUDA memory and seconds; as the reference, the peak of one forward
and backward pass of the largest sub-network alone (``largest_path_peak_mb``). The point is
ProxylessNAS's and PARSEC's: memory stays that of one path however many are sampled. Also
milliseconds per step of OFA progressive shrinking and of SPOS on the same supernet.

    python benchmarks/hardware_aware_gpu.py [--samples 16] [--out benchmarks/results/...json]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import RESULTS_DIR, machine_description, merge_results  # noqa: E402
from raynas.evaluators.data import DatasetSplits, load_dataset  # noqa: E402
from raynas.gradient.methods import options_from_mapping  # noqa: E402
from raynas.gradient.paths import SampledPathSearch  # noqa: E402
from spaces import create_space  # noqa: E402

SPACE: dict[str, Any] = {"name": "mobilenet", "resolution": 32}


def upsampled_digits() -> DatasetSplits:
    """Digits at 32x32: each pixel repeated 4x4."""
    data = load_dataset("digits", seed=0)
    grow = {f.name: np.ascontiguousarray(np.repeat(np.repeat(getattr(data, f.name), 4, 2), 4, 3))
            for f in dataclasses.fields(data) if f.name.startswith("x_")}
    return dataclasses.replace(data, **grow)


def largest_path_peak(space: Any, data: DatasetSplits, batch: int) -> float:
    """Peak CUDA memory (MB) of one forward and backward pass of the largest path."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    net = space.build_supernet(num_classes=data.num_classes, in_channels=data.in_channels).cuda()
    x = torch.as_tensor(data.x_train[:batch]).cuda()
    y = torch.as_tensor(data.y_train[:batch]).cuda()
    F.cross_entropy(net(x, space.largest()), y).backward()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**20
    del net
    return peak


def main(argv: list[str] | None = None) -> int:
    """Measure on the GPU, print, merge into the results file."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "hardware_aware_gpu.json")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device; these figures are GPU figures")
    space = create_space(**SPACE)
    data = upsampled_digits()
    figures: dict[str, float] = {"batch_size": args.batch_size, "samples": args.samples,
                                 "resolution": SPACE["resolution"]}
    figures["largest_path_peak_mb"] = largest_path_peak(space, data, args.batch_size)
    for method in ("proxyless", "parsec", "fpnas"):
        torch.cuda.empty_cache()
        options = options_from_mapping({"method": method, "epochs": 1, "device": "cuda",
                                        "batch_size": args.batch_size, "a_lr": 0.05,
                                        "samples_max": args.samples})
        search = SampledPathSearch(space, options, num_classes=data.num_classes,
                                   in_channels=data.in_channels)
        start = time.perf_counter()
        result = search.run(data)
        torch.cuda.synchronize()
        figures[f"{method}_epoch_s"] = time.perf_counter() - start
        figures[f"{method}_peak_mb"] = float(result.peak_memory_mb or 0.0)
        figures[f"{method}_peak_over_largest_path"] = (figures[f"{method}_peak_mb"]
                                                       / figures["largest_path_peak_mb"])
        figures[f"{method}_samples"] = float(result.epochs[-1].samples or 0)
        del search
    from raynas.supernet.trainer import SupernetTrainer

    for method in ("spos", "ofa"):
        extra = {"ofa_phase_steps": [5, 10, 15]} if method == "ofa" else {}
        trainer = SupernetTrainer(SPACE, dataset="digits", method=method, batch_size=64,
                                  total_steps=20, device="cuda", **extra)
        trainer.train(2)  # warm-up: CUDA kernels and allocator
        torch.cuda.synchronize()
        start = time.perf_counter()
        trainer.train(18)
        torch.cuda.synchronize()
        figures[f"{method}_ms_per_step_8x8"] = 1e3 * (time.perf_counter() - start) / 18
        del trainer
    machine = f"{machine_description()}; GPU {torch.cuda.get_device_name(0)}"
    print(machine)
    for key in sorted(figures):
        print(f"{key:40s} {figures[key]:.4g}")
    merge_results(args.out, figures, machine=machine)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
