"""Supernet fine-tuning as a fidelity: chunk reports, inherited weights, ASHA via the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient

from raynas.cli.main import main
from raynas.supernet.evaluator import SupernetEvaluator
from raynas.tracking.store import TAG_ROLE, TAG_TRIAL_INDEX
from spaces import SearchSpace, create_space

TINY = {"name": "nb201", "channels": 4, "cells_per_stage": 1, "resolution": 8}
FINETUNE = {"finetune_steps": 40, "finetune_chunk": 10}


def _space() -> SearchSpace:
    return create_space(**TINY)


@pytest.fixture(scope="module")
def evaluator(ray_session: None) -> Iterator[SupernetEvaluator]:
    """A tiny SPOS supernet, trained 30 steps on digits, with 40 fine-tuning steps per arch."""
    # Half a CPU: the module's hosts stay up during the CLI test, whose host and trial need 1.
    ev = SupernetEvaluator(_space(), train_steps=30, num_threads=1, num_cpus=0.5, **FINETUNE)
    ev.setup()
    try:
        yield ev
    finally:
        ev.teardown()


def _archs(n: int) -> list[str]:
    space = _space()
    rng = np.random.default_rng(3)
    return [space.to_string(space.sample(rng)) for _ in range(n)]


def _host_scores(ev: SupernetEvaluator, text: str) -> dict[str, float]:
    return dict(ray.get(ev.host().evaluate.remote(text, use_cache=False)))


def test_finetune_options_are_checked_and_add_the_fidelity_metric() -> None:
    space = _space()
    for bad, match in (({"finetune_steps": -1}, "finetune_steps must be an integer >= 0"),
                       ({"finetune_steps": 2.5}, "finetune_steps must be an integer >= 0"),
                       ({"finetune_chunk": 0}, "finetune_chunk must be an integer >= 1"),
                       ({"finetune_lr": 0.0}, "finetune_lr must be a number > 0")):
        with pytest.raises(ValueError, match=match):
            SupernetEvaluator(space, **bad)
    assert "finetune_steps" not in SupernetEvaluator(space).metrics
    assert "finetune_steps" in SupernetEvaluator(space, finetune_steps=5).metrics


@pytest.mark.ray
@pytest.mark.slow
def test_finetuning_reports_each_chunk_and_starts_from_the_hosts_score(evaluator) -> None:
    for text in _archs(2):
        before = _host_scores(evaluator, text)
        reports: list[dict[str, float]] = []
        out = evaluator.evaluate(text, report=reports.append)
        # One report per chunk but the last, which is the returned dict.
        assert [r["finetune_steps"] for r in reports] == [10.0, 20.0, 30.0]
        assert all(set(r) == {"val_acc", "val_loss", "finetune_steps"} for r in reports)
        assert out["finetune_steps"] == 40.0
        assert out["supernet_step"] == before["supernet_step"] == 30.0
        assert set(evaluator.metrics) == set(out)
        # The extracted network carries the host's recalibrated BN statistics, so before any
        # step it computes the supernet path's function: the same predictions up to float
        # rounding (an argmax could flip only on an exact tie), hence loss to 1e-5.
        assert out["inherited_val_acc"] == pytest.approx(before["val_acc"], abs=1e-9)
        assert out["inherited_val_loss"] == pytest.approx(before["val_loss"], abs=1e-5)
        # 40 steps on a supernet trained for 30 move the network well past its inherited score.
        assert out["val_loss"] < out["inherited_val_loss"]
        assert out["val_acc"] > out["inherited_val_acc"]
        assert [r["val_loss"] for r in reports] != [reports[0]["val_loss"]] * 3
        # Seeded: the same arch gives the same numbers; the supernet itself is untouched.
        again: list[dict[str, float]] = []
        repeat = evaluator.evaluate(text, report=again.append)
        assert again == reports
        assert {k: v for k, v in repeat.items() if k != "finetune_time_s"} == {
            k: v for k, v in out.items() if k != "finetune_time_s"}
        assert _host_scores(evaluator, text) == before


@pytest.mark.ray
@pytest.mark.slow
def test_uneven_chunks_and_plain_lookup_on_the_same_host(evaluator) -> None:
    from raynas.supernet.finetune import finetune

    text = _archs(1)[0]
    space = evaluator.space
    extracted = ray.get(evaluator.host().extract.remote(text))
    reports: list[dict[str, float]] = []
    out = finetune(space, space.validate(text), extracted, steps=25, chunk=10,
                   report=reports.append)
    assert [r["finetune_steps"] for r in reports] == [10.0, 20.0] and out["finetune_steps"] == 25
    # The first 20 steps are those of the 40-step run: the batch sequence depends on the seed only.
    full: list[dict[str, float]] = []
    evaluator.evaluate(text, report=full.append)
    assert reports == full[:2]
    # finetune_steps=0 keeps the plain host lookup and never reports.
    plain = SupernetEvaluator(space, host_name=evaluator.host_name)
    calls: list[dict[str, float]] = []
    assert plain.evaluate(text, report=calls.append) == _host_scores(evaluator, text)
    assert calls == []


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in
            sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


@pytest.mark.ray
@pytest.mark.slow
def test_asha_stops_finetuning_trials_at_rungs_through_the_cli(tmp_path: Path,
                                                               ray_session) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config: dict[str, Any] = {
        "name": "finetune-asha",
        "space": TINY,
        "searcher": {"name": "random"},
        "evaluator": {"name": "supernet", "train_steps": 30, "num_threads": 1, "num_cpus": 0.5,
                      **FINETUNE},
        "scheduler": {"name": "asha", "time_attr": "finetune_steps", "max_t": 40,
                      "grace_period": 10, "reduction_factor": 2},
        # One trial at a time: ASHA sees results in trial order, so its decisions are fixed.
        "budget": {"trials": 8, "concurrency": 1, "cpus_per_trial": 0.5},
        "seed": 0,
        "tracking": {"uri": uri, "experiment": "finetune-asha"},
        "output_dir": str(tmp_path / "out"),
    }
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path)]) == 0
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parent = next(r for r in runs if r.data.tags.get(TAG_ROLE) == "search")
    trials = sorted((r for r in runs if r.data.tags.get(TAG_ROLE) == "trial"),
                    key=lambda r: int(r.data.tags[TAG_TRIAL_INDEX]))
    assert len(trials) == 8
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parent.info.run_id}
    reached: list[float] = []
    rung_scores: list[float] = []  # val_acc at the first rung, in trial order
    for run in trials:
        steps = _history(client, run.info.run_id, "finetune_steps")
        accs = _history(client, run.info.run_id, "val_acc")
        # One result per rung / chunk, logged at Tune's iterations 1, 2, ...
        assert [v for _, v in steps] == [10.0, 20.0, 30.0, 40.0][: len(steps)]
        assert [s for s, _ in accs] == [s for s, _ in steps] == list(range(1, len(steps) + 1))
        first = accs[0][1]
        # ASHA (max mode, rf 2) stops a trial at a rung when it is below the median of the
        # earlier trials' results there.
        stopped = len(steps) == 1
        if rung_scores:
            assert stopped == (first < np.percentile(rung_scores, 50))
        rung_scores.append(first)
        reached.append(steps[-1][1])
        # Only a trial that ran to the end returned its final dict.
        assert ("inherited_val_acc" in run.data.metrics) == (steps[-1][1] == 40.0)
    assert reached[0] == 40.0  # the first trial has no one to compare with at any rung
    assert 0 < reached.count(10.0) and 0 < reached.count(40.0)
    assert parent.data.metrics["num_trials"] == 8
