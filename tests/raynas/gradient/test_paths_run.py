"""ProxylessNAS, PARSEC and FP-NAS through ``raynas run``: Tune trials, MLflow, portfolios, resume.

A lookup table is timed on this machine with ``raynas latency build``; the searches run on the
session's Ray as Tune trials, recorded in a real MLflow store; their derived architectures
are trained stand-alone on digits and timed by the latency evaluator's service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from mlflow.tracking import MlflowClient

from raynas.cli.main import main
from raynas.gradient.phase import TAG_DERIVED
from raynas.latency.lut import LatencyTable

from .._store import kill_driver_when, runs, search_run, write_config

REPO = Path(__file__).resolve().parents[3]
SPACE = {"name": "mobilenet", "resolution": 8, "stem_width": 8, "widths": [8, 16],
         "strides": [1, 2], "depth_choices": [1, 2], "kernel_choices": [3, 5],
         "expand_choices": [2, 3], "head_width": 16}


@pytest.fixture(scope="module")
def lut(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, float]:
    """A lookup table timed here, and a target latency inside its range."""
    path = tmp_path_factory.mktemp("lut") / "cpu.parquet"
    options = [f"--space-option={k}={v}" for k, v in SPACE.items() if k != "name"]
    assert main(["latency", "build", "--space", "mobilenet", *options, "--device", "cpu",
                 "-o", str(path), "--repeats", "5", "--rounds", "1", "--warmup", "1"]) == 0
    table = LatencyTable.load(path)
    lat = table.predict([table.space.sample(np.random.default_rng(i)) for i in range(300)])
    return str(path), float(np.percentile(lat, 50))


def _config(tmp_path: Path, lut: tuple[str, float], **extra: Any) -> dict[str, Any]:
    path, target = lut
    return {
        "name": "hw",
        "space": SPACE,
        "searcher": {"name": "proxyless", "epochs": 2, "batch_size": 64, "a_lr": 0.05,
                     "latency_table": path, "target_ms": target, "samples_max": 4},
        "evaluator": {"name": "latency", "devices": {"cpu": path},
                      "evaluator": {"name": "training", "dataset": "digits", "epochs": 1,
                                    "batch_size": 128}},
        "budget": {"trials": 6, "concurrency": 1},
        "seed": 0,
        "metric": ["val_acc", "latency_cpu"],
        "mode": ["max", "min"],
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "hw"},
        "output_dir": str(tmp_path / "out"),
        **extra,
    }


@pytest.mark.ray
@pytest.mark.slow
def test_hardware_aware_methods_run_beside_nsga2_in_a_portfolio(
    tmp_path: Path, ray_session: None, lut: tuple[str, float],
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = _config(tmp_path, lut)
    searcher = config.pop("searcher")
    # The latency term reads the table the latency evaluator's service serves for "cpu".
    searcher = {k: v for k, v in searcher.items() if k != "latency_table"}
    config["searchers"] = [
        {**searcher, "method": ["proxyless", "fpnas"], "label": "hw", "trials": 2,
         "latency_device": "cpu"},
        {"name": "nsga2", "label": "moo", "trials": 4, "population_size": 4},
    ]
    uri = config["tracking"]["uri"]
    assert main(["run", str(write_config(tmp_path, config))]) == 0
    out = capsys.readouterr().out
    assert "raynas: 2 gradient runs (fpnas, proxyless)" in out, out

    gradient = {r.data.params["method"]: r for r in runs(uri, "gradient")}
    assert set(gradient) == {"proxyless", "fpnas"}
    client = MlflowClient(uri)
    table = LatencyTable.load(lut[0])
    for run in gradient.values():
        assert run.info.status == "FINISHED"
        for key in ("supernet_val_acc", "expected_latency_ms", "latency_ms", "samples",
                    "alpha/depth/0/1", "alpha/ks/0/5"):
            assert len(client.get_metric_history(run.info.run_id, key)) == 2, key
        derived = run.data.tags[TAG_DERIVED]
        assert run.data.metrics["latency_ms"] == pytest.approx(
            float(table.predict([derived])[0]))
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "alpha")}
        assert artifacts == {"alpha/alpha.parquet", "alpha/alpha.png"}
    derived = {r.data.tags[TAG_DERIVED] for r in gradient.values()}
    trials = runs(uri, "trial")
    by_member: dict[str, set[str]] = {}
    for t in trials:
        by_member.setdefault(t.data.tags.get("raynas.searcher", ""), set()).add(
            t.data.tags["raynas.arch"])
    # Answers differing only in blocks beyond a stage's depth are one network, evaluated once.
    canonical = {table.space.canonical(a) for a in derived}
    assert {table.space.canonical(a) for a in by_member.get("hw", ())} == canonical, by_member
    assert len(by_member.get("moo", ())) >= 1
    assert all(t.info.status == "FINISHED" and t.data.metrics["latency_cpu"] > 0 for t in trials)
    rows = pq.read_table(next((tmp_path / "out").rglob("trials.parquet"))).to_pylist()
    assert canonical <= {table.space.canonical(r["arch"]) for r in rows}
    parent = search_run(uri)
    assert parent.info.status == "FINISHED"
    assert main(["report", parent.info.run_id, "--tracking-uri", uri,
                 "--output-dir", str(tmp_path / "report")]) == 0
    report = capsys.readouterr().out
    assert "hw" in report and "moo" in report


@pytest.mark.ray
@pytest.mark.slow
def test_a_hardware_aware_search_killed_mid_phase_resumes(
    tmp_path: Path, ray_session: None, lut: tuple[str, float],
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = _config(tmp_path, lut)
    config["searcher"] = {**config["searcher"], "name": "fpnas",
                          "method": ["proxyless", "parsec", "fpnas"], "epochs": 3}
    uri = config["tracking"]["uri"]
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(config))
    kill_driver_when(path, uri, lambda _: any(r.info.status == "FINISHED"
                                         for r in runs(uri, "gradient")))
    finished = [r for r in runs(uri, "gradient") if r.info.status == "FINISHED"]
    assert 1 <= len(finished) < 3
    parent = search_run(uri)
    assert parent.info.status == "RUNNING"

    assert main(["resume", parent.info.run_id, "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert f"raynas: {len(finished)} of 3 gradient runs already done" in out
    done = [r for r in runs(uri, "gradient") if r.info.status == "FINISHED"]
    assert sorted(r.data.params["method"] for r in done) == ["fpnas", "parsec", "proxyless"]
    assert {r.info.run_id for r in finished} <= {r.info.run_id for r in done}
    derived = {r.data.tags[TAG_DERIVED] for r in done}
    trials = [r for r in runs(uri, "trial") if r.info.status == "FINISHED"]
    space = LatencyTable.load(lut[0]).space
    assert {r.data.tags["raynas.canonical"] for r in trials} == {space.canonical(a)
                                                                 for a in derived}
    assert search_run(uri).info.status == "FINISHED"


@pytest.mark.parametrize(("searcher", "message"), [
    ({"target_ms": -1}, "config field 'searcher.target_ms': target_ms must be a number > 0"),
    ({"latency_table": "/no/such.parquet"},
     "config field 'searcher.latency_table': latency_table '/no/such.parquet' is not a file"),
    ({"latency_loss": "square"}, "config field 'searcher.latency_loss'"),
    ({"latency_device": "pixel3"},
     "config field 'searcher.latency_device': 'pixel3' is not a device of the latency "
     "evaluator (devices: cpu)"),
])
def test_bad_hardware_aware_config_is_one_line_before_anything_starts(
    tmp_path: Path, lut: tuple[str, float], capsys: pytest.CaptureFixture[str],
    searcher: dict[str, Any], message: str,
) -> None:
    config = _config(tmp_path, lut)
    config["searcher"] = {**config["searcher"], **searcher}
    assert main(["run", str(write_config(tmp_path, config))]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "mlflow.db").exists()


def test_a_lookup_table_of_another_space_is_refused(
    tmp_path: Path, lut: tuple[str, float], capsys: pytest.CaptureFixture[str],
) -> None:
    config = _config(tmp_path, lut)
    config["space"] = {**SPACE, "kernel_choices": [3, 5, 7]}
    config["evaluator"] = {"name": "training", "dataset": "digits", "epochs": 1}
    config["metric"], config["mode"] = "val_acc", "max"
    assert main(["run", str(write_config(tmp_path, config))]) == 2
    err = capsys.readouterr().err.strip()
    assert "config field 'searcher.latency_table'" in err and len(err.splitlines()) == 1, err
