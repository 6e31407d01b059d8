"""Tests of raynas.evaluators: training on digits and NAS-Bench-201 table lookups."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from raynas.evaluators.base import (
    Evaluator,
    TabularEvaluator,
    TrainingEvaluator,
    create_evaluator,
)
from spaces import create_space
from spaces.nb201.space import NB201Space

CONV = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
)
# Row 1 of cifar10.csv and latency_ms.csv.
ARCH_1 = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
)


@pytest.fixture(scope="module")
def space() -> NB201Space:
    return create_space("nb201", channels=8, cells_per_stage=1)  # type: ignore[return-value]


# --------------------------------------------------------------------------- training
# One thread: as in Ray workers, and robust on a loaded 2-core CI machine.
def test_training_reports_each_epoch_and_learns(space: NB201Space) -> None:
    reports: list[dict[str, float]] = []
    ev = TrainingEvaluator(space, epochs=2, num_threads=1)
    result = ev.evaluate(CONV, report=reports.append)
    # every epoch but the last is reported; the last one is the returned result
    assert [r["epoch"] for r in reports] == [1.0]
    assert set(reports[0]) == {"epoch", "train_loss", "val_acc", "val_loss"}
    assert set(result) == set(ev.metrics)
    assert result["epoch"] == 2.0
    assert result["val_acc"] > 50 and result["test_acc"] > 50  # chance is 10 %
    assert result["params"] == space.count_params(CONV, num_classes=10, in_channels=1)
    assert result["flops"] == space.count_flops(CONV, num_classes=10, in_channels=1, resolution=8)
    assert result["train_time_s"] > 0
    assert ev.default_metric == ("val_acc", "max")


def test_training_is_seeded(space: NB201Space) -> None:
    def run(seed: int) -> dict[str, float]:
        ev = TrainingEvaluator(space, epochs=1, train_subset=256, seed=seed, num_threads=1)
        out = ev.evaluate(CONV)
        out.pop("train_time_s")
        return out

    first = run(0)
    assert run(0) == first
    assert run(1)["train_loss"] != first["train_loss"]


def test_training_leaves_global_state(space: NB201Space) -> None:
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    TrainingEvaluator(space, epochs=1, train_subset=64, num_threads=1).evaluate(CONV)
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads


def test_training_evaluator_pickles_small(space: NB201Space) -> None:
    ev = TrainingEvaluator(space, epochs=1, train_subset=128, num_threads=1)
    ev.data()  # loaded data must not travel with the evaluator
    blob = pickle.dumps(ev)
    assert len(blob) < 10_000
    clone = pickle.loads(blob)
    assert isinstance(clone, Evaluator)
    a, b = ev.evaluate(CONV), clone.evaluate(CONV)
    assert a["val_acc"] == b["val_acc"] and a["train_loss"] == b["train_loss"]


class _NaNNet(torch.nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(1, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(1, 2, 3))[:, None]) * math.nan


class _NaNSpace(NB201Space):
    def build_network(self, arch, *, num_classes=10, in_channels=3):  # noqa: ANN001
        return _NaNNet(num_classes)


def test_training_nan_loss_reports_nan() -> None:
    reports: list[dict[str, float]] = []
    ev = TrainingEvaluator(_NaNSpace(channels=8, cells_per_stage=1), epochs=3)
    result = ev.evaluate(CONV, report=reports.append)
    # training stops at the first non-finite loss; that epoch is the returned result
    assert reports == [] and result["epoch"] == 1.0
    assert math.isnan(result["train_loss"])
    assert math.isnan(result["val_acc"]) and math.isnan(result["test_acc"])


def test_training_option_errors(space: NB201Space, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="epochs"):
        TrainingEvaluator(space, epochs=0)
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        TrainingEvaluator(space, dataset="mnist")
    with pytest.raises(ValueError, match="does not exist"):
        TrainingEvaluator(space, dataset=f"npz:{tmp_path / 'none.npz'}")
    with pytest.raises(ValueError, match="must have 3 nodes"):
        TrainingEvaluator(space, epochs=1).evaluate("|nor_conv_3x3~0|")


def test_create_evaluator(space: NB201Space) -> None:
    assert isinstance(create_evaluator("training", space, epochs=1), TrainingEvaluator)
    with pytest.raises(ValueError,
                       match="unknown evaluator 'zero_shot'.*tabular, training, zero_cost"):
        create_evaluator("zero_shot", space)


# --------------------------------------------------------------------------- tabular
def _tiny_table(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.csv"
    path.write_text(
        "index,arch_str,val_acc_200ep,test_acc_200ep\n"
        f"1,{ARCH_1},90.39,93.66\n"
    )
    return path


def test_tabular_on_a_small_table(tmp_path: Path) -> None:
    ev = TabularEvaluator(NB201Space(), table_path=_tiny_table(tmp_path))
    assert ev.evaluate(ARCH_1) == {"val_acc": 90.39, "val_acc_200ep": 90.39,
                                   "test_acc_200ep": 93.66}
    with pytest.raises(ValueError, match="is not in table"):
        ev.evaluate(CONV)
    with pytest.raises(ValueError, match="NAS-Bench-201"):
        ev.evaluate("not an architecture")
    with pytest.raises(ValueError, match="columns: val_acc_200ep, test_acc_200ep"):
        TabularEvaluator(NB201Space(), table_path=_tiny_table(tmp_path), metric="val_acc_12ep")


def test_tabular_errors_without_data(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist.*shared/data/nb201"):
        TabularEvaluator(NB201Space(), table_path=tmp_path / "cifar10.csv")
    with pytest.raises(ValueError, match=r"space 'mobilenet' has no table key "
                                         r"\(SearchSpace.table_key\)"):
        TabularEvaluator(create_space("mobilenet"), table_path=_tiny_table(tmp_path))


@pytest.mark.data
def test_tabular_known_values(nb201_dir: Path) -> None:
    ev = create_evaluator("tabular", NB201Space(), table_path=nb201_dir / "cifar10.csv",
                          devices=("pixel3", "2080ti_32"))
    result = ev.evaluate(ARCH_1)
    assert result["val_acc"] == pytest.approx(90.39)
    assert result["val_acc_200ep"] == pytest.approx(90.39)
    assert result["test_acc_200ep"] == pytest.approx(93.66)
    assert result["val_acc_12ep"] == pytest.approx(82.834)
    assert result["test_acc_12ep"] == pytest.approx(88.22)
    assert result["latency_pixel3"] == pytest.approx(17.2381)
    assert result["latency_2080ti_32"] == pytest.approx(8.166627883911133)
    assert set(result) == set(ev.metrics)
    row = ev.lookup(ARCH_1)
    assert row["index"] == 1 and row["latency_raspi4"] == pytest.approx(54.77739761998237)
    low = TabularEvaluator(NB201Space(), table_path=nb201_dir, metric="val_acc_12ep")
    assert low.evaluate(ARCH_1)["val_acc"] == pytest.approx(82.834)
    assert len(pickle.dumps(ev)) < 10_000


@pytest.mark.data
def test_tabular_table_columns(nb201_dir: Path) -> None:
    table = TabularEvaluator(NB201Space(), table_path=nb201_dir, devices=("fpga",)).table()
    assert len(table["arch_str"]) == 15625
    best = int(np.argmax(table["test_acc_200ep"]))
    assert table["index"][best] == 6111
    assert table["test_acc_200ep"][best] == pytest.approx(94.3733)
    assert table["latency_fpga"][1] == pytest.approx(5.31536)


@pytest.mark.data
def test_tabular_errors(nb201_dir: Path) -> None:
    with pytest.raises(ValueError, match="unknown metric 'accuracy'.*val_acc_12ep"):
        TabularEvaluator(NB201Space(), table_path=nb201_dir, metric="accuracy")
    with pytest.raises(ValueError, match="unknown device.*'tpu'.*pixel3, raspi4"):
        TabularEvaluator(NB201Space(), table_path=nb201_dir, devices=("tpu",))
    with pytest.raises(ValueError, match="sequence of names"):
        TabularEvaluator(NB201Space(), table_path=nb201_dir, devices="pixel3")  # type: ignore[arg-type]
    ev = TabularEvaluator(NB201Space(), table_path=nb201_dir)
    with pytest.raises(ValueError, match="unknown operation"):
        ev.evaluate("|conv_5x5~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|none~1|none~2|")
    with pytest.raises(ValueError):
        ev.lookup({"ks/0": 3})
