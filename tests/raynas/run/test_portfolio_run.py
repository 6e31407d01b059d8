"""Portfolios and schedulers through `raynas run` on real Ray and a real MLflow store."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from raynas.cli.main import main
from raynas.run.config import Component, ConfigError, parse_config
from raynas.run.schedulers import create_scheduler
from raynas.tracking.store import TAG_ROLE, TAG_SEARCHER
from searchers.random_search import RandomSearch

from .._store import runs as store_runs
from .._store import write_config

pytestmark = [pytest.mark.ray, pytest.mark.data]


class ExplodingSearch(RandomSearch):
    """A plug-in searcher with a bug: raises on its fifth suggestion."""

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.num_suggested == 4:
            raise RuntimeError("bug in the plug-in searcher")
        return super().suggest(trial_id)


def _base(tmp_path: Path, nb201_dir: Path, **extra: Any) -> dict[str, Any]:
    return {
        "name": "pf",
        "space": "nb201",
        "evaluator": {"name": "tabular", "table_path": str(nb201_dir)},
        "budget": {"concurrency": 2},
        "seed": 2,
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "pf"},
        "output_dir": str(tmp_path / "out"),
        **extra,
    }


def test_two_searchers_nest_searcher_and_trial_runs(tmp_path, nb201_dir, ray_session,
                                                     capsys) -> None:
    config = _base(tmp_path, nb201_dir, searchers=[
        {"name": "regularized_evolution", "trials": 14, "label": "evo", "population_size": 5},
        {"name": "random", "trials": 10, "share": False},
    ])
    assert main(["run", str(write_config(tmp_path, config))]) == 0
    out = capsys.readouterr().out
    assert "searcher evo: 14 evaluated" in out and "searcher random: 10 evaluated" in out
    runs = store_runs(config["tracking"]["uri"])
    by_id = {r.info.run_id: r for r in runs}
    parent = next(r for r in runs if r.data.tags.get(TAG_ROLE) == "search")
    members = {r.data.tags[TAG_SEARCHER]: r for r in runs
               if r.data.tags.get(TAG_ROLE) == "searcher"}
    assert set(members) == {"evo", "random"}
    for run in members.values():
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.status == "FINISHED"
        assert "cache_hits" in run.data.metrics
    trials = [r for r in runs if r.data.tags.get(TAG_ROLE) == "trial"]
    owners = Counter(by_id[r.data.tags["mlflow.parentRunId"]].data.tags[TAG_SEARCHER]
                     for r in trials)
    assert owners == {"evo": 14, "random": 10}
    assert all(r.data.tags[TAG_SEARCHER] == by_id[r.data.tags["mlflow.parentRunId"]]
               .data.tags[TAG_SEARCHER] for r in trials)
    # one evaluation per architecture across the whole experiment
    assert max(Counter(r.data.tags["raynas.canonical"] for r in trials).values()) == 1
    assert members["evo"].data.metrics["evaluations"] == 14
    table = pq.read_table(next((tmp_path / "out").rglob("trials.parquet"))).to_pylist()
    assert Counter(r["searcher"] for r in table) == {"evo": 14, "random": 10}
    assert parent.data.metrics["num_trials"] == 24


def test_crashing_searcher_leaves_the_other_finished(tmp_path, nb201_dir, ray_session,
                                                     capsys) -> None:
    config = _base(tmp_path, nb201_dir, searchers=[
        {"name": f"{__name__}:ExplodingSearch", "trials": 12, "label": "buggy"},
        {"name": "regularized_evolution", "trials": 12, "label": "evo", "population_size": 4},
    ])
    assert main(["run", str(write_config(tmp_path, config))]) == 0
    out = capsys.readouterr().out
    assert "searcher 'buggy' failed" in out and "bug in the plug-in searcher" in out
    runs = store_runs(config["tracking"]["uri"])
    members = {r.data.tags[TAG_SEARCHER]: r for r in runs
               if r.data.tags.get(TAG_ROLE) == "searcher"}
    assert members["buggy"].info.status == "FAILED"
    assert "bug in the plug-in searcher" in members["buggy"].data.tags["raynas.error"]
    assert members["evo"].info.status == "FINISHED"
    trials = Counter(r.data.tags[TAG_SEARCHER] for r in runs
                     if r.data.tags.get(TAG_ROLE) == "trial" and r.info.status == "FINISHED")
    assert trials == {"buggy": 4, "evo": 12}
    parent = next(r for r in runs if r.data.tags.get(TAG_ROLE) == "search")
    assert parent.info.status == "FINISHED"


def test_asha_stops_trials_at_the_12_epoch_rung(tmp_path, nb201_dir, ray_session) -> None:
    config = _base(
        tmp_path, nb201_dir,
        searcher={"name": "random"},
        evaluator={"name": "tabular", "table_path": str(nb201_dir), "multi_fidelity": True},
        scheduler={"name": "asha", "time_attr": "epochs", "max_t": 200, "grace_period": 12,
                   "reduction_factor": 4},
        budget={"trials": 24, "concurrency": 2},
    )
    assert main(["run", str(write_config(tmp_path, config))]) == 0
    runs = store_runs(config["tracking"]["uri"])
    trials = [r for r in runs if r.data.tags.get(TAG_ROLE) == "trial"]
    assert len(trials) == 24
    client = MlflowClient(config["tracking"]["uri"])
    epochs = Counter(r.data.metrics["epochs"] for r in trials)
    # every trial reported its 12-epoch rung; ASHA let only some reach 200 epochs
    assert 0 < epochs[200.0] < 24 and epochs[12.0] == 24 - epochs[200.0]
    survivor = next(r for r in trials if r.data.metrics["epochs"] == 200.0)
    history = client.get_metric_history(survivor.info.run_id, "val_acc")
    assert [m.step for m in history] == [1, 2]
    assert history[0].value == pytest.approx(survivor.data.metrics["val_acc_12ep"])


def test_scheduler_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="scheduler.name"):
        parse_config({"space": "nb201", "searcher": "random", "evaluator": "tabular",
                      "scheduler": "pbt"})
    with pytest.raises(ConfigError, match="scheduler.grace"):  # when parsing, not at the run
        parse_config({"space": "nb201", "searcher": "random", "evaluator": "tabular",
                      "scheduler": {"name": "asha", "grace": 3}})
    with pytest.raises(ConfigError, match="scheduler.grace"):
        create_scheduler(Component("asha", {"grace": 3}))
    assert create_scheduler(None) is None


def test_portfolio_budget_rules() -> None:
    base = {"space": "nb201", "evaluator": "tabular"}
    cfg = parse_config({**base, "searchers": ["random", "reinforce"], "budget": {"trials": 7}})
    assert [m.trials for m in cfg.portfolio] == [4, 3] and cfg.budget.trials == 7
    with pytest.raises(ConfigError, match="exactly one of"):
        parse_config({**base, "searcher": "random", "searchers": ["random"]})
    with pytest.raises(ConfigError, match="label 'random' twice"):
        parse_config({**base, "searchers": [{"name": "random", "trials": 2},
                                            {"name": "random", "trials": 2}]})
    with pytest.raises(ConfigError, match="add up to 4"):
        parse_config({**base, "searchers": [{"name": "random", "trials": 2},
                                            {"name": "rea", "trials": 2}],
                      "budget": {"trials": 5}})
