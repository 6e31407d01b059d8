"""benchmarks/nb201_search.py and benchmarks/_nb201.py: landmarks come from the table given."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _nb201  # noqa: E402
import nb201_search  # noqa: E402

SCALE, SHIFT = 0.5, 20.0  # the derived table's accuracies: a * SCALE + SHIFT


def _derived_table(source: Path, out: Path, keep_every: int = 4) -> Path:
    """Rows of ``source`` whose index is not a multiple of ``keep_every`` (3/4 of them),
    accuracies scaled and shifted, every 12-epoch cell emptied."""
    with open(source, newline="") as f:
        reader = csv.DictReader(f)
        fields = list(reader.fieldnames or [])
        rows = [r for r in reader if int(r["index"]) % keep_every]
    for row in rows:
        for column in ("val_acc_200ep", "test_acc_200ep"):
            row[column] = repr(float(row[column]) * SCALE + SHIFT)
        row["val_acc_12ep"] = row["test_acc_12ep"] = ""
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return out


def _kth_highest(values: list[float], fraction: float) -> float:
    return sorted(values, reverse=True)[math.ceil(fraction * len(values)) - 1]


@pytest.mark.data
def test_thresholds_of_the_real_cifar10_table(nb201_dir: Path) -> None:
    table = _nb201.load_table(nb201_dir / "cifar10.csv")
    thr = _nb201.table_thresholds(table)
    # the data README: top 1% starts at 93.775, top 0.1% at 94.18, best 94.3733
    assert (thr.top1pct, thr.top01pct, thr.best_test) == (93.775, 94.18, 94.3733)
    data = nb201_search.load_data(nb201_dir / "cifar10.csv", nb201_dir / "latency_ms.csv")
    assert data.complete and data.latency is not None
    ref = nb201_search.hv_reference(
        [table.val[a] for a in table.archs], [data.latency[a] for a in table.archs]
    )
    assert ref == (-86.93, 36.767)  # issue 4's reference point
    assert nb201_search.proxy_skip_reason(table) is None
    assert _nb201.cost_in_full_trainings("val_acc_12ep", 300) == pytest.approx(18.0)


@pytest.mark.data
def test_core_on_a_derived_table(
    nb201_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _derived_table(nb201_dir / "cifar10.csv", tmp_path / "derived.csv")
    data = nb201_search.load_data(path, tmp_path / "latency_ms.csv")
    table = data.table
    assert table.name == "derived" and not data.complete
    assert len(table.archs) == 15625 - math.ceil(15625 / 4)
    assert table.coverage("val_acc_12ep") == 0.0
    assert data.latency is None and "not found" in data.latency_note

    tests = [table.test[a] for a in table.archs]
    thr = data.thresholds
    assert thr.top1pct == _kth_highest(tests, 0.01)
    assert thr.top01pct == _kth_highest(tests, 0.001)
    assert thr.best_test == max(tests)
    assert thr.top1pct < 70  # CIFAR-10's 93.775 is no longer the threshold

    figures, rows = nb201_search.single_objective(
        data, 2, None, 0, query_points=(5, 20), cap=40
    )
    assert "greedypool skipped: derived.csv has no val_acc_12ep values" in capsys.readouterr().out
    assert not any(k.startswith("greedypool") for k in figures)
    for short in ("random", "rea", "reinforce", "genetic"):
        assert SHIFT < figures[f"{short}_20_test_mean"] <= thr.best_test
        assert figures[f"{short}_missing_mean"] > 0  # a quarter of the space has no row
    # the figures use the derived table's threshold: redo REA's runs by hand
    space = nb201_search.create_space("nb201")
    hits, at_20 = [], []
    for seed in range(2):
        run = nb201_search.raynas_run("rea", space, data, seed)
        run.extend(20)
        at_20.append(run.incumbent_test[19])
        run.extend(40)
        assert all(a in table.val for a in run.archs)  # queries are rows of the table
        hits.append(_first_at_or_above(run.incumbent_test, thr.top1pct))
    assert figures["rea_20_test_mean"] == pytest.approx(np.mean(at_20))
    assert figures["rea_20_top1pct_frac"] == np.mean([t >= thr.top1pct for t in at_20])
    assert figures["rea_20_top01pct_frac"] == np.mean([t >= thr.top01pct for t in at_20])
    assert any(h is not None for h in hits)  # else a constant threshold would pass too
    capped = [41 if h is None else h for h in hits]
    assert figures["rea_queries_to_top1pct_median"] == float(np.median(capped))
    assert figures["rea_queries_to_top1pct_censored"] == hits.count(None)

    mo_figures, _ = nb201_search.multi_objective(data, 1, None, query_points=(10, 30))
    assert mo_figures == {} and "multi-objective part skipped" in capsys.readouterr().out


@pytest.mark.data
def test_multi_objective_reference_from_the_derived_table(
    nb201_dir: Path, tmp_path: Path
) -> None:
    path = _derived_table(nb201_dir / "cifar10.csv", tmp_path / "derived.csv", keep_every=2)
    data = nb201_search.load_data(path, nb201_dir / "latency_ms.csv")
    assert data.latency is not None and len(data.latency) == len(data.table.archs)
    figures, _ = nb201_search.multi_objective(data, 1, None, query_points=(10, 30))
    median = float(np.median(list(data.table.val.values())))
    assert figures["hv_ref_neg_val_acc"] == math.ceil(round(-median * 1000, 6)) / 1000
    assert figures["hv_ref_latency_ms"] >= max(data.latency.values())
    assert 0 < figures["nsga2_hv_fraction_10"] <= figures["nsga2_hv_fraction_30"] <= 1


@pytest.mark.data
def test_optuna_counts_distinct_queries_and_trials(nb201_dir: Path) -> None:
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = nb201_search.load_data(nb201_dir / "cifar10.csv", Path("/nonexistent/latency.csv"))
    space = nb201_search.create_space("nb201")
    run = nb201_search.optuna_tpe_run(optuna, space, data, 0)
    run.extend(60)
    driver = run.driver
    assert len(driver.archs) == 60
    assert len({space.canonical(a) for a in driver.archs}) == 60
    assert driver.suggestions == 60 + driver.repeats + driver.missing
    figures = nb201_search.query_counts("optuna_tpe", [driver], 60, [])
    assert figures["optuna_tpe_60_distinct_mean"] == 60
    assert figures["optuna_tpe_60_trials_mean"] == driver.suggestions
    assert figures["optuna_tpe_repeats_mean"] == driver.repeats


def _first_at_or_above(trace: list[float], threshold: float) -> int | None:
    return next((i + 1 for i, t in enumerate(trace) if t >= threshold), None)


# ------------------------------------------------------------------ helpers, no data
def test_load_table_checks_required_cells_and_keeps_optional_gaps(tmp_path: Path) -> None:
    good = tmp_path / "t.csv"
    good.write_text(
        "arch_str,val_acc_200ep,test_acc_200ep,val_acc_12ep\na,1,2,\nb,3,4,5.5\n"
    )
    table = _nb201.load_table(good)
    assert table.archs == ("a", "b") and table.column("val_acc_12ep") == {"b": 5.5}
    assert table.coverage("val_acc_12ep") == 0.5 and table.coverage("zen_score") == 0.0
    bad = tmp_path / "bad.csv"
    bad.write_text("arch_str,val_acc_200ep,test_acc_200ep\na,1,\n")
    with pytest.raises(ValueError, match="line 2: test_acc_200ep is empty"):
        _nb201.load_table(bad)
    bad.write_text("arch_str,val_acc_200ep\na,1\n")
    with pytest.raises(ValueError, match="column 'test_acc_200ep' missing"):
        _nb201.load_table(bad)
    bad.write_text("arch_str,val_acc_200ep,test_acc_200ep,val_acc_12ep\na,1,2,x\n")
    with pytest.raises(ValueError, match="val_acc_12ep 'x' is not a number"):
        _nb201.load_table(bad)


def test_top_fraction_and_median_with_censoring() -> None:
    values = list(range(1, 201))  # 200 values: top 1% = 2 values, top 0.1% = 1
    assert _nb201.top_fraction_threshold(values, 0.01) == 199
    assert _nb201.top_fraction_threshold(values, 0.001) == 200
    assert _nb201.median_queries_to_threshold([3, None, 5], cap=10) == (5.0, 1)
    assert _nb201.median_queries_to_threshold([3, None, None], cap=10) == (11.0, 2)
    trace = _nb201.incumbent_trace([1, 3, 2, 3, 5], [10, 30, 99, 31, 50])
    assert trace == [10, 30, 30, 30, 50]  # first of equal validation values stays
    assert _nb201.first_query_reaching(trace, 40) == 5
    assert _nb201.value_at(trace, 9) == 50


class _Cycle:
    """A proposer that repeats a fixed sequence, recording what it is told."""

    def __init__(self, archs: list[str]) -> None:
        self.archs, self.i, self.told = archs, 0, []  # type: list[Any]

    def ask(self) -> tuple[int, str]:
        arch = self.archs[self.i % len(self.archs)]
        self.i += 1
        return self.i, arch

    def tell(self, handle: Any, result: Any) -> None:
        self.told.append(result)


class _Identity:
    def canonical(self, arch: str) -> str:
        return arch.lower()  # "A" is an isomorph of "a"


def test_driver_counts_distinct_queries_and_caches_repeats() -> None:
    proposer = _Cycle(["a", "A", "b", "gone", "a", "c"])
    values = {"a": 1.0, "A": 7.0, "b": 2.0, "c": 3.0}
    driver = _nb201.DistinctQueryDriver(
        proposer,
        _Identity(),  # type: ignore[arg-type]
        lambda a: {"v": values[a]} if a in values else None,
    )
    assert driver.extend(3)
    assert driver.archs == ["a", "b", "c"]
    assert (driver.suggestions, driver.repeats, driver.missing) == (6, 2, 1)
    assert proposer.told[1] == {"v": 1.0}  # the isomorph gets the cached value, not 7.0
    assert proposer.told[3] is None
    assert not driver.extend(4)  # only repeats left: stops at the proposal cap
    assert driver.stopped and driver.suggestions == _nb201.SUGGEST_FACTOR * 4
