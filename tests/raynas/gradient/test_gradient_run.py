"""``searcher: {name: darts, ...}`` end to end: gradient runs as Tune trials, then their cells.

Each gradient run is a real Tune trial on the session's Ray, recorded in a real MLflow store;
the derived architectures are trained stand-alone by the ``training`` evaluator on digits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from mlflow.tracking import MlflowClient

from raynas.cli.main import main
from raynas.gradient.phase import TAG_DERIVED, TAG_STOPPED, finished_runs

from .._store import kill_driver_when, runs, search_run, write_config

REPO = Path(__file__).resolve().parents[3]


def _config(tmp_path: Path, searcher: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "name": "grad",
        "space": {"name": "nb201", "channels": 4, "cells_per_stage": 1, "resolution": 8},
        "searcher": {"name": "darts", "epochs": 3, "batch_size": 128, **searcher},
        "evaluator": {"name": "training", "dataset": "digits", "epochs": 1, "batch_size": 128},
        "budget": {"trials": 10, "concurrency": 1},
        "seed": 0,
        "metric": "val_acc",
        "mode": "max",
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "grad"},
        "output_dir": str(tmp_path / "out"),
        **extra,
    }


@pytest.mark.ray
@pytest.mark.slow
def test_gradient_runs_are_trials_asha_stops_a_weak_one_and_the_cell_is_evaluated(
    tmp_path: Path, ray_session: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # One at a time: the second run (a learning rate too small to learn) reaches ASHA's rung
    # at epoch 1 below the first's accuracy there, and is stopped.
    config = _config(tmp_path, {"method": "darts", "w_lr": [0.1, 1e-6], "batch_size": 32,
                                "scheduler": {"name": "asha", "max_t": 3, "grace_period": 1,
                                              "reduction_factor": 4}})
    uri = config["tracking"]["uri"]
    assert main(["run", str(write_config(tmp_path, config))]) == 0
    out = capsys.readouterr().out
    assert "raynas: 2 gradient runs (darts)" in out, out

    gradient = sorted(runs(uri, "gradient"), key=lambda r: float(r.data.params["w_lr"]))
    weak, strong = gradient
    assert strong.info.status == "FINISHED" and weak.info.status == "KILLED"
    assert weak.data.tags.get(TAG_STOPPED) == "true"
    client = MlflowClient(uri)
    assert len(client.get_metric_history(strong.info.run_id, "supernet_val_acc")) == 3
    assert len(client.get_metric_history(weak.info.run_id, "supernet_val_acc")) == 1
    for key in ("alpha_entropy", "param_free_fraction", "alpha/op/0/skip_connect"):
        assert len(client.get_metric_history(strong.info.run_id, key)) == 3
    artifacts = {a.path for a in client.list_artifacts(strong.info.run_id, "alpha")}
    assert artifacts == {"alpha/alpha.parquet", "alpha/alpha.png"}
    local = client.download_artifacts(strong.info.run_id, "alpha/alpha.parquet", str(tmp_path))
    table = pq.read_table(local).to_pylist()
    assert len(table) == 3 * 6 * 5 and {r["epoch"] for r in table} == {1, 2, 3}

    # The stopped run is done too: its answer is its last epoch's cell, and a resume would
    # not run it again.
    assert weak.data.tags[TAG_DERIVED] == weak.data.tags["raynas.arch"]
    derived = {strong.data.tags[TAG_DERIVED], weak.data.tags[TAG_DERIVED]}
    parent = search_run(uri)
    assert set(finished_runs(client, parent.info.run_id).values()) == derived
    assert f"raynas: 2 gradient runs done; {len(derived)} distinct architectures" in out
    trials = runs(uri, "trial")
    assert {t.data.tags["raynas.arch"] for t in trials} == derived
    assert all(t.info.status == "FINISHED" and 0 < t.data.metrics["val_acc"] <= 100
               for t in trials)
    rows = pq.read_table(next((tmp_path / "out").rglob("trials.parquet"))).to_pylist()
    assert {r["arch"] for r in rows} == derived
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["num_trials"] == len(derived)
    assert main(["report", parent.info.run_id, "--tracking-uri", uri,
                 "--output-dir", str(tmp_path / "report")]) == 0
    report = capsys.readouterr().out
    assert any(arch in report for arch in derived)


@pytest.mark.ray
@pytest.mark.slow
def test_a_search_killed_in_its_gradient_phase_resumes_the_unfinished_runs(
    tmp_path: Path, ray_session: None, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, {"method": ["darts", "gdas", "fairdarts"], "epochs": 4})
    uri = config["tracking"]["uri"]
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(config))
    kill_driver_when(path, uri, lambda lines: (any(x.startswith("raynas: searching") for x in lines)
                                   and any(r.info.status == "FINISHED"
                                           for r in runs(uri, "gradient"))))
    finished = [r for r in runs(uri, "gradient") if r.info.status == "FINISHED"]
    assert 1 <= len(finished) < 3
    assert runs(uri, "trial") == []  # killed before any cell was evaluated
    parent = search_run(uri)
    assert parent.info.status == "RUNNING"

    assert main(["resume", parent.info.run_id, "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert f"raynas: {len(finished)} of 3 gradient runs already done" in out
    done = [r for r in runs(uri, "gradient") if r.info.status == "FINISHED"]
    assert sorted(r.data.params["method"] for r in done) == ["darts", "fairdarts", "gdas"]
    assert {r.info.run_id for r in finished} <= {r.info.run_id for r in done}  # not rerun
    # the run the kill interrupted is closed, not left RUNNING
    assert all(r.info.status in ("FINISHED", "KILLED") for r in runs(uri, "gradient"))
    derived = {r.data.tags[TAG_DERIVED] for r in done}
    trials = [r for r in runs(uri, "trial") if r.info.status == "FINISHED"]
    assert {r.data.tags["raynas.arch"] for r in trials} <= derived
    assert len(trials) == len({r.data.tags["raynas.canonical"] for r in trials}) >= 1
    assert search_run(uri).info.status == "FINISHED"


@pytest.mark.parametrize(("searcher", "space", "message"), [
    ({"method": "enas"}, None, "config field 'searcher.method': method 'enas' is unknown"),
    ({"method": ["darts", "gdas"], "w_lr": -1}, None,
     "config field 'searcher.w_lr': w_lr must be > 0, got -1"),
    ({"lr": 0.1}, None, "config field 'searcher': unknown option 'lr'"),
    ({"seed": []}, None, "config field 'searcher.seed' is an empty list"),
    ({"dataset": "npz:/no/such.npz"}, None, "config field 'searcher.dataset'"),
    ({}, {"name": "mobilenet"}, "darts needs a space with a differentiable supernet; space "
                                "'mobilenet' has none"),
])
def test_bad_gradient_config_is_one_line_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], searcher: dict[str, Any],
    space: dict[str, Any] | None, message: str,
) -> None:
    config = _config(tmp_path, searcher)
    if space is not None:
        config["space"] = space
    assert main(["run", str(write_config(tmp_path, config))]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "mlflow.db").exists()
