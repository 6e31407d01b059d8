"""Once-for-All progressive shrinking in SupernetTrainer (real torch, no Ray)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from raynas.supernet.evaluator import SupernetEvaluator
from raynas.supernet.ofa import distillation_loss, ofa_phase_starts
from raynas.supernet.trainer import METHODS, SupernetTrainer
from spaces import create_space
from spaces.mobilenet import MobileNetArch, MobileNetSpace

OPTIONS: dict[str, Any] = {"resolution": 16, "widths": (16, 24), "strides": (2, 2),
                           "head_width": 32}
SPEC = {"name": "mobilenet", **{k: list(v) if isinstance(v, tuple) else v
                                for k, v in OPTIONS.items()}}


class RecordingSpace(MobileNetSpace):
    """MobileNetSpace that remembers the ``elastic`` argument of every ``sample_shrunk``."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.shrunk_calls: list[tuple[str, ...]] = []

    def sample_shrunk(self, rng: np.random.Generator, elastic: Sequence[str]) -> MobileNetArch:
        self.shrunk_calls.append(tuple(elastic))
        return super().sample_shrunk(rng, elastic)


def _trainer(space: Any = SPEC, **kw: Any) -> SupernetTrainer:
    # One thread: bitwise repeatable on a loaded 2-core machine.
    kw = {"method": "ofa", "batch_size": 32, "num_threads": 1, **kw}
    return SupernetTrainer(space, **kw)


def test_ofa_is_a_method() -> None:
    assert "ofa" in METHODS


def test_phases_enable_the_elastic_dimensions_in_order() -> None:
    space = RecordingSpace(**OPTIONS)
    trainer = _trainer(space, ofa_phase_steps=[2, 4, 6], ofa_subnets=3)
    forwards: list[tuple[int, MobileNetArch]] = []
    original = trainer.supernet.forward

    def recording_forward(x: torch.Tensor, arch: Any) -> torch.Tensor:
        forwards.append((trainer.step, arch))
        return original(x, arch)

    trainer.supernet.forward = recording_forward  # type: ignore[method-assign]
    records = trainer.train(8)
    assert [r["phase"] for r in records] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [r["elastic_dims"] for r in records] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [trainer.ofa_phase(s) for s in range(8)] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert all(np.isnan(r["subnet_loss"]) for r in records[:2])
    assert all(np.isfinite(r["subnet_loss"]) and r["kd_loss"] >= 0 for r in records[2:])
    assert space.shrunk_calls == (
        [("kernel",)] * 6 + [("kernel", "depth")] * 6 + [("kernel", "depth", "expand")] * 6
    )
    big = space.largest()
    by_step: dict[int, list[MobileNetArch]] = {}
    for step, arch in forwards:
        by_step.setdefault(step, []).append(space.validate(arch))
    # Phase 0: the largest network alone; later: the largest (the teacher) first, then 3.
    assert [len(by_step[s]) for s in range(8)] == [1, 1, 4, 4, 4, 4, 4, 4]
    assert all(archs[0] == big for archs in by_step.values())

    def students(phase: int) -> list[MobileNetArch]:
        return [a for s in (2 * phase, 2 * phase + 1) for a in by_step[s][1:]]

    def varies(archs: list[MobileNetArch], field: str) -> bool:
        return any(getattr(a, field) != getattr(big, field) for a in archs)

    assert varies(students(1), "kernels")
    assert not varies(students(1), "depths") and not varies(students(1), "expands")
    assert varies(students(2), "kernels") and varies(students(2), "depths")
    assert not varies(students(2), "expands")
    assert all(varies(students(3), f) for f in ("kernels", "depths", "expands"))


def test_default_phases_split_total_steps_evenly() -> None:
    assert ofa_phase_starts(8, 3) == (2, 4, 6)
    assert ofa_phase_starts(10, 3) == (2, 5, 7)
    trainer = _trainer(total_steps=12)
    assert trainer.ofa_phase_steps == (3, 6, 9)
    assert [trainer.ofa_phase(s) for s in (0, 2, 3, 8, 9, 100)] == [0, 0, 1, 2, 3, 3]


def test_distillation_loss() -> None:
    logits = torch.randn(16, 10, generator=torch.Generator().manual_seed(0))
    assert float(distillation_loss(logits, logits, 1.0)) == pytest.approx(0.0, abs=1e-6)
    student = logits.clone().requires_grad_(True)
    loss = distillation_loss(student, logits.flip(0).requires_grad_(True), 2.0)
    assert float(loss.detach()) > 0
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_ofa_trains_evaluates_and_resumes_identically(tmp_path: Path) -> None:
    trainer = _trainer(ofa_phase_steps=[1, 3, 5], train_subset=512)
    arch = trainer.space.sample(np.random.default_rng(0))
    before = trainer.evaluate(arch)
    first = trainer.train(4)
    assert [r["step"] for r in first] == [1, 2, 3, 4]
    assert set(first[0]) == {"step", "loss", "acc", "lr", "phase", "elastic_dims",
                             "subnet_loss", "subnet_acc", "kd_loss"}
    after = trainer.evaluate(arch)
    assert after["supernet_step"] == 4 and after != before
    assert trainer.evaluate(arch, use_cache=False) == after
    assert trainer.stats()["method"] == "ofa"
    path = trainer.save(tmp_path / "ofa.pt")
    clone = _trainer(ofa_phase_steps=[1, 3, 5], train_subset=512)
    clone.load(path)
    assert clone.evaluate(arch) == after
    # Batches, sampled sub-networks and the phase change at step 5: as if never interrupted.
    assert clone.train(3) == trainer.train(3)
    theirs, mine = clone.supernet.state_dict(), trainer.supernet.state_dict()
    assert all(torch.equal(theirs[k], mine[k]) for k in mine)


def _one_line_error(match: str, **kw: Any) -> None:
    with pytest.raises(ValueError, match=match) as info:
        _trainer(**kw)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"space": {"name": "nb201", "channels": 8, "cells_per_stage": 1, "resolution": 8},
          "total_steps": 10}, "progressive shrinking.*'nb201'"),
        ({}, "ofa_phase_steps .* or total_steps"),
        ({"ofa_phase_steps": [1, 2]}, "ofa_phase_steps must be 3 non-decreasing"),
        ({"ofa_phase_steps": [3, 2, 4]}, "ofa_phase_steps must be 3 non-decreasing"),
        ({"ofa_phase_steps": [-1, 2, 4]}, "ofa_phase_steps must be 3 non-decreasing"),
        ({"ofa_phase_steps": "123"}, "ofa_phase_steps must be 3 non-decreasing"),
        ({"ofa_phase_steps": [1, 2.5, 4]}, "ofa_phase_steps must be 3 non-decreasing"),
        ({"total_steps": 9, "ofa_subnets": 0}, "ofa_subnets must be a positive integer"),
        ({"total_steps": 9, "ofa_kd_weight": -1.0}, "ofa_kd_weight must be a finite number"),
        ({"total_steps": 9, "ofa_kd_weight": float("nan")}, "ofa_kd_weight"),
        ({"total_steps": 9, "ofa_kd_temperature": 0}, "ofa_kd_temperature must be a finite"),
    ],
)
def test_bad_options_give_one_line_errors(kw: dict[str, Any], match: str) -> None:
    _one_line_error(match, **kw)


def test_evaluator_checks_ofa_on_the_driver_and_places_the_phases() -> None:
    space = create_space(**SPEC)
    ev = SupernetEvaluator(space, method="ofa", train_steps=40)
    assert ev.trainer_options["ofa_phase_steps"] == [10, 20, 30]
    ev = SupernetEvaluator(space, method="ofa", train_steps=40, total_steps=80)
    assert "ofa_phase_steps" not in ev.trainer_options
    ev = SupernetEvaluator(space, method="ofa", ofa_phase_steps=[0, 1, 2], ofa_subnets=4)
    assert ev.trainer_options["ofa_phase_steps"] == [0, 1, 2]
    nb201 = create_space("nb201", channels=8, cells_per_stage=1, resolution=8)
    for bad, kw, match in ((nb201, {"train_steps": 10}, "progressive shrinking"),
                           (space, {"train_steps": 0}, "train_steps >= 1"),
                           (space, {"train_steps": 9, "ofa_phase_steps": [5, 1, 2]},
                            "non-decreasing")):
        with pytest.raises(ValueError, match=match) as info:
            SupernetEvaluator(bad, method="ofa", **kw)
        assert "\n" not in str(info.value)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_ofa_trains_through_every_phase_on_cuda() -> None:
    trainer = _trainer(ofa_phase_steps=[2, 4, 6], train_subset=512, device="cuda")
    assert next(trainer.supernet.parameters()).is_cuda
    records = trainer.train(8)
    assert [r["phase"] for r in records] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert all(np.isfinite(r["loss"]) for r in records)
    result = trainer.evaluate(trainer.space.sample(np.random.default_rng(0)))
    assert 0 <= result["val_acc"] <= 100 and result["supernet_step"] == 8
