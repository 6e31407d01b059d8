"""Per-thread batch-norm copies: concurrent supernet evaluations that do not disturb each other."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from raynas.supernet.private_bn import private_batchnorms, route_batchnorms
from raynas.supernet.trainer import SupernetTrainer

SPACES = {
    "nb201": {"name": "nb201", "channels": 8, "cells_per_stage": 1, "resolution": 8},
    "mobilenet": {"name": "mobilenet", "resolution": 16, "stem_width": 8,
                  "widths": [8, 16], "strides": [1, 2], "depth_choices": [1, 2],
                  "head_width": 32},
}


def _sequential_reference(trainer: SupernetTrainer, archs: list[Any]) -> list[tuple]:
    """Each arch through the old in-place recalibration (shared buffers, restored after)."""
    out = []
    for arch in archs:
        with trainer._recalibrated(arch):
            out.append(trainer._validate(arch))
    return out


@pytest.mark.parametrize("space", sorted(SPACES))
def test_threads_evaluate_at_once_as_one_thread_would(space: str) -> None:
    trainer = SupernetTrainer(SPACES[space], dataset="digits", num_threads=None)
    trainer.train(5)
    rng = np.random.default_rng(0)
    archs = [trainer.space.sample(rng) for _ in range(8)]
    before = {k: v.clone() for k, v in trainer.supernet.state_dict().items()}
    reference = _sequential_reference(trainer, archs)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda a: trainer.evaluate(a, use_cache=False), archs * 2))
    assert [(r["val_acc"], r["val_loss"]) for r in results] == reference * 2
    after = trainer.supernet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing shared written
    assert trainer.evaluations == 16


def test_copies_are_private_to_the_thread_and_block() -> None:
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4))
    assert route_batchnorms(net) == 1
    assert route_batchnorms(net) == 0  # routed once
    bn = net[1]
    x = torch.randn(8, 2, 6, 6)
    net.eval()
    expected = nn.BatchNorm2d.forward(bn, net[0](x))
    assert torch.equal(net(x), expected)  # outside a block: the module itself
    with private_batchnorms([bn]) as (copy,):
        assert "forward" not in copy.__dict__
        copy.reset_running_stats()
        copy.momentum = None
        copy.train()
        with torch.no_grad():
            net(x)
        assert int(copy.num_batches_tracked) == 1
        assert not torch.equal(copy.running_mean, bn.running_mean)
        with ThreadPoolExecutor(1) as pool:  # another thread sees the original
            assert torch.equal(pool.submit(net, x).result(), expected)
        with pytest.raises(RuntimeError, match="nest"):
            with private_batchnorms([bn]):
                pass
    assert int(bn.num_batches_tracked) == 0
    assert torch.equal(net(x), expected)
