"""Tests of raynas.supernet.pool and raynas.supernet.trainer (no Ray)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from raynas.supernet.pool import CandidatePool
from raynas.supernet.trainer import SupernetTrainer, cosine_lr, greedy_epsilon
from spaces import create_space

SPEC = {"name": "nb201", "channels": 8, "cells_per_stage": 1, "resolution": 8}
CONV = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
)


def _trainer(**kw: object) -> SupernetTrainer:
    # One thread: as in a one-CPU actor, and bitwise repeatable on a loaded 2-core machine.
    return SupernetTrainer(SPEC, num_threads=1, **kw)  # type: ignore[arg-type]


def _archs(n: int, seed: int = 7) -> list[str]:
    space = create_space(**SPEC)
    rng = np.random.default_rng(seed)
    return [space.to_string(space.sample(rng)) for _ in range(n)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[SupernetTrainer, Path]:
    """A SPOS trainer after 30 steps, and its checkpoint."""
    trainer = _trainer()
    trainer.train(30)
    path = Path(trainer.save(tmp_path_factory.mktemp("ckpt") / "supernet.pt"))
    return trainer, path


# --------------------------------------------------------------------------- pool
def test_pool_keeps_best_within_bound_and_dedupes() -> None:
    pool = CandidatePool(3)
    for arch, loss in [("a", 0.9), ("b", 0.5), ("c", 0.7), ("d", 0.2), ("e", 1.5)]:
        pool.add(arch, loss)
    assert len(pool) == 3 and pool.top() == [("d", 0.2), ("b", 0.5), ("c", 0.7)]
    assert pool.add("c", 0.1) and pool.top(1) == [("c", 0.1)]
    assert pool.add("c", 0.8) and dict(pool.top())["c"] == 0.1  # the better score stays
    assert not pool.add("f", math.nan) and not pool.add("g", 0.9)
    assert "a" not in pool and len(pool) == 3


def test_pool_sample_state_and_errors() -> None:
    pool = CandidatePool(5)
    pool.update({"x": 1.0, "y": 2.0, "z": 3.0})
    draws = [pool.sample(np.random.default_rng(3)) for _ in range(3)]
    assert len(set(draws)) == 1 and draws[0] in pool
    state = pool.to_state()
    clone = CandidatePool.from_state(json.dumps(state))
    assert clone.top() == pool.top() and clone.max_size == 5
    assert json.loads(json.dumps(state)) == state
    with pytest.raises(RuntimeError, match="empty"):
        CandidatePool(2).sample(np.random.default_rng(0))
    with pytest.raises(ValueError, match="max_size"):
        CandidatePool(0)


def test_schedules() -> None:
    assert cosine_lr(0.1, 5, None) == 0.1
    assert cosine_lr(0.1, 0, 10) == pytest.approx(0.1) and cosine_lr(0.1, 10, 10) == 0.0
    assert greedy_epsilon(0, 0.8, 10) == 0.0 and greedy_epsilon(5, 0.8, 10) == 0.4
    assert greedy_epsilon(50, 0.8, 10) == 0.8


# --------------------------------------------------------------------------- training
def test_spos_training_lowers_the_loss() -> None:
    fresh = _trainer()
    before = fresh.evaluate(CONV)["val_loss"]
    records = fresh.train(30)
    assert [r["step"] for r in records] == list(range(1, 31))
    assert set(records[0]) == {"step", "loss", "acc", "lr"}
    first = np.mean([r["loss"] for r in records[:8]])
    last = np.mean([r["loss"] for r in records[-8:]])
    assert last < first  # per-step losses are noisy: each step trains another path
    assert fresh.evaluate(CONV)["val_loss"] < before - 0.3
    assert fresh.stats()["steps"] == 30 and fresh.stats()["method"] == "spos"


def test_greedynas_fills_a_bounded_pool_with_its_best_paths() -> None:
    trainer = _trainer(method="greedynas", greedy_m=6, greedy_k=2, greedy_eps_steps=4,
                       pool_size=5, greedy_val_batch=64)
    records = trainer.train(8)
    assert [r["eps"] for r in records[:5]] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8])
    assert all(r["score"] <= 2 * r["loss"] + 5 for r in records)  # scores are losses
    pool = trainer.candidate_pool()
    assert len(pool) == 5 == trainer.stats()["pool_size"]
    assert [v for _, v in pool] == sorted(v for _, v in pool)
    assert trainer.candidate_pool(2) == pool[:2]
    space = create_space(**SPEC)
    assert all(space.validate(a) == a for a, _ in pool)


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="method"):
        _trainer(method="darts")
    with pytest.raises(ValueError, match="greedy_k"):
        _trainer(greedy_m=2, greedy_k=3)
    with pytest.raises(ValueError, match="batch_size"):
        _trainer(batch_size=0)
    with pytest.raises(ValueError, match="save needs a path"):
        _trainer().save()


# --------------------------------------------------------------------------- evaluation
def test_evaluation_is_deterministic_and_leaves_training_state(
    trained: tuple[SupernetTrainer, Path],
) -> None:
    trainer, _ = trained
    archs = _archs(3)
    state = {k: v.clone() for k, v in trainer.supernet.state_dict().items()}
    training = trainer.supernet.training
    momenta = [m.momentum for m in trainer.supernet.modules() if hasattr(m, "momentum")]
    first = trainer.evaluate_many(archs, use_cache=False)
    again = trainer.evaluate_many(list(reversed(archs)), use_cache=False)[::-1]
    assert first == again
    assert all(0 <= r["val_acc"] <= 100 and r["supernet_step"] == 30 for r in first)
    assert trainer.evaluate(archs[0]) == first[0]  # cached answer, same numbers
    after = trainer.supernet.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in state)
    assert trainer.supernet.training == training
    assert momenta == [m.momentum for m in trainer.supernet.modules() if hasattr(m, "momentum")]


def test_checkpoint_round_trip(trained: tuple[SupernetTrainer, Path]) -> None:
    trainer, path = trained
    raw = torch.load(path, weights_only=True)  # tensors and primitives only
    assert raw["step"] == 30 and isinstance(raw["rng"], str) and isinstance(raw["pool"], str)
    assert not list(path.parent.glob(".*"))  # no temporary file left behind
    clone = _trainer()
    clone.load(path)
    archs = _archs(3, seed=11)
    assert clone.evaluate_many(archs) == trainer.evaluate_many(archs, use_cache=False)
    assert clone.stats()["steps"] == 30
    # The resumed trainer continues exactly as an uninterrupted one (batches, paths, RNG).
    other = _trainer()
    other.load(path)
    assert clone.train(3) == other.train(3)


def test_mobilenet_supernet_trains_evaluates_and_resumes(tmp_path: Path) -> None:
    spec = {"name": "mobilenet", "resolution": 8, "stem_width": 8, "widths": [8, 16],
            "strides": [1, 2], "head_width": 32}
    trainer = SupernetTrainer(spec, num_threads=1, method="greedynas", greedy_m=4,
                              greedy_k=2, greedy_eps_steps=2, batch_size=32)
    trainer.train(4)
    arch = trainer.space.sample(np.random.default_rng(0))
    state = {k: v.clone() for k, v in trainer.supernet.state_dict().items()}
    first = trainer.evaluate(arch, use_cache=False)
    assert trainer.evaluate(trainer.space.to_string(arch), use_cache=False) == first
    assert all(torch.equal(v, state[k]) for k, v in trainer.supernet.state_dict().items())
    assert len(trainer.candidate_pool()) > 0
    clone = SupernetTrainer(spec, num_threads=1, method="greedynas", batch_size=32)
    clone.load(trainer.save(tmp_path / "mb.pt"))
    assert clone.evaluate(arch) == first and clone.candidate_pool() == trainer.candidate_pool()
