"""``raynas report``: table, JSON, Parquet and PNGs read back from a real MLflow store."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from matplotlib import image as mpimg
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from pymoo.indicators.hv import HV

from raynas.cli.main import main
from raynas.report.summary import load_report, log_report, render_table
from raynas.tracking.store import default_artifact_location

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T0 = 1_700_000_000_000  # parent start, ms
MULTI_PLOTS = {"pareto.png", "best_so_far_trials.png", "best_so_far_time.png",
               "hypervolume_time.png"}

# (label, acc, latency, status) in start order; None metrics are not logged.
PORTFOLIO_TRIALS: list[tuple[str, float | None, float | None, str]] = [
    ("rea", 70.0, 2.0, "FINISHED"),
    ("rand", 75.0, 3.0, "FINISHED"),
    ("rea", 80.0, 4.0, "FINISHED"),
    ("rand", 72.0, 5.0, "FINISHED"),  # dominated by rand's 75/3
    ("rea", 85.0, 6.5, "FINISHED"),
    ("rand", 90.0, 7.5, "FINISHED"),
    ("rea", 95.0, 9.0, "FINISHED"),  # breaks latency <= 8: infeasible
    ("rea", None, None, "FAILED"),
    ("rand", 88.0, None, "FINISHED"),  # no latency: INVALID
    ("rea", 84.0, 4.5, "FINISHED"),
    ("rand", 60.0, 1.0, "FINISHED"),
    ("rand", None, None, "RUNNING"),
]


def _uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One sqlite store for the synthetic tests (creating its tables takes seconds)."""
    uri = _uri(tmp_path_factory.mktemp("report"))
    Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True)
    MlflowClient(uri).search_experiments()
    return uri


@pytest.fixture()
def synthetic(store: str, request: pytest.FixtureRequest) -> tuple[str, MlflowClient, str, str]:
    """A fresh experiment per test in the shared store: (uri, client, id, name)."""
    client = MlflowClient(store)
    name = f"synthetic-{request.node.name}"
    exp = client.create_experiment(name, artifact_location=default_artifact_location(store))
    return store, client, exp, name


def _config(portfolio: bool, multi: bool) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": "synth",
        "space": "nb201",
        "evaluator": {"name": "tabular", "table_path": "/not/needed"},
        "metric": ["val_acc", "latency"] if multi else "val_acc",
        "mode": ["max", "min"] if multi else "max",
        "constraints": ["latency <= 8"] if multi else [],
    }
    if portfolio:
        config["searchers"] = [
            {"label": "rea", "name": "regularized_evolution", "trials": 6},
            {"label": "rand", "name": "random", "trials": 6},
        ]
    else:
        config["searcher"] = "random"
    return config


def _make_search(
    client: MlflowClient,
    exp: str,
    trials: list[tuple[str, float | None, float | None, str]],
    *,
    portfolio: bool,
    multi: bool = True,
    t0: int = T0,
) -> str:
    """A search as the runner records it: parent -> (searcher runs ->) trial runs."""
    tags = {"raynas.role": "search", "raynas.space": "nb201",
            "raynas.searcher": "portfolio" if portfolio else "random"}
    parent = client.create_run(exp, start_time=t0, tags=tags, run_name="synth").info.run_id
    client.log_text(parent, yaml.safe_dump(_config(portfolio, multi)), "config.yaml")
    holders = {}
    for label in dict.fromkeys(t[0] for t in trials):
        if portfolio:
            holders[label] = client.create_run(exp, start_time=t0, tags={
                "raynas.role": "searcher", "raynas.searcher": label,
                "mlflow.parentRunId": parent}).info.run_id
        else:
            holders[label] = parent
    for i, (label, acc, lat, status) in enumerate(trials):
        run = client.create_run(exp, start_time=t0 + 1000 * (i + 1), tags={
            "raynas.role": "trial", "raynas.searcher": label, "raynas.trial_id": f"t{i:02d}",
            "raynas.arch": f"arch{i}", "raynas.canonical": f"canon{i}",
            "mlflow.parentRunId": holders[label]}).info.run_id
        # An earlier, better-looking step: the report must use the last value of each metric.
        metrics = []
        for key, value, early in (("val_acc", acc, 99.9), ("latency", lat, 0.01)):
            if value is not None:
                metrics += [Metric(key, early, t0 + 1000 * i, 1),
                            Metric(key, value, t0 + 1000 * i + 1, 2)]
        params = [Param("edge/0", str(i % 5)), Param("arch", f"arch{i}")]
        client.log_batch(run, metrics=metrics, params=params)
        if status != "RUNNING":
            client.set_terminated(run, status, end_time=t0 + 1000 * (i + 1) + 400 + 10 * i)
    client.set_terminated(parent, "FINISHED", end_time=t0 + 1000 * (len(trials) + 2))
    return parent


def _expected_hv(points: list[tuple[float, float]], ref: list[float]) -> float:
    """pymoo's HV on (max acc, min latency) points, computed here without raynas helpers."""
    F = np.array([[-a, lat] for a, lat in points], dtype=float)
    ref_min = np.array([-ref[0], ref[1]], dtype=float)
    F = F[np.all(F < ref_min, axis=1)]
    return float(HV(ref_point=ref_min)(F)) if len(F) else 0.0


def _feasible(label: str | None) -> list[tuple[float, float]]:
    return [(a, lat) for lb, a, lat, st in PORTFOLIO_TRIALS
            if (label is None or lb == label) and st == "FINISHED" and a is not None
            and lat is not None and lat <= 8]


def _check_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert float(pixels[..., :3].std()) > 0.01  # something was drawn, not a blank canvas


def test_portfolio_report_matches_direct_computation(synthetic) -> None:
    _, client, exp, name = synthetic
    trials = PORTFOLIO_TRIALS
    parent = _make_search(client, exp, trials, portfolio=True)
    report = load_report(client, parent)
    data = json.loads(report.to_json())

    assert data["schema"] == "raynas.report/1"
    assert data["run_id"] == parent and data["experiment_name"] == name
    assert data["metrics"] == ["val_acc", "latency"] and data["modes"] == ["max", "min"]
    assert data["constraints"] == ["latency <= 8"]
    assert [s["label"] for s in data["searchers"]] == ["rea", "rand"]
    rea, rand = data["searchers"]
    assert (rea["trials"], rea["ok"], rea["failed"], rea["running"]) == (6, 5, 1, 0)
    assert rand["trials"] == 6 and rand["running"] == 1
    assert data["num_trials"] == len(trials) == data["overall"]["trials"]

    # Reference point: worst feasible value per objective, 10% of the range beyond it.
    pts = np.array(_feasible(None))
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    expected_ref = [lo[0] - 0.1 * (hi[0] - lo[0]), hi[1] + 0.1 * (hi[1] - lo[1])]
    assert data["reference_point"] == pytest.approx(expected_ref)
    ref = data["reference_point"]
    for summary, label in ((rea, "rea"), (rand, "rand"), (data["overall"], None)):
        direct = _expected_hv(_feasible(label), ref)
        assert direct > 0
        assert summary["hypervolume"] == pytest.approx(direct, rel=1e-12)
        assert summary["hypervolume_curve"][-1][2] == pytest.approx(direct, rel=1e-12)
        hvs = [p[2] for p in summary["hypervolume_curve"]]
        assert hvs == sorted(hvs)
    assert data["overall"]["hypervolume"] > max(rea["hypervolume"], rand["hypervolume"])

    # Best = highest scalar (acc - latency - 100 * relative violation), as `raynas run` picks.
    def scalar(acc: float, lat: float) -> float:
        return acc - lat - 100 * max(0.0, lat - 8) / 8

    for summary, label in ((rea, "rea"), (rand, "rand")):
        ok = [(a, lat, i) for i, (lb, a, lat, st) in enumerate(trials)
              if lb == label and st == "FINISHED" and a is not None and lat is not None]
        a, lat, i = max(ok, key=lambda t: scalar(t[0], t[1]))
        assert summary["best_arch"] == f"arch{i}"
        assert summary["best"] == {"val_acc": a, "latency": lat}
        assert summary["best_so_far"][-1][2] == pytest.approx(scalar(a, lat))
    front = {(r["val_acc"], r["latency"]) for r in data["pareto_front"]}
    assert front == {(60.0, 1.0), (70.0, 2.0), (75.0, 3.0), (80.0, 4.0), (84.0, 4.5),
                     (85.0, 6.5), (90.0, 7.5)}
    assert rea["time_s"] == pytest.approx((T0 + 10_000 + 490 - (T0 + 1000)) / 1000)


def test_cli_report_writes_pngs_json_and_parquet(tmp_path: Path, synthetic, capsys) -> None:
    uri, client, exp, _ = synthetic
    parent = _make_search(client, exp, PORTFOLIO_TRIALS, portfolio=True)
    out = tmp_path / "out"
    code = main(["report", parent, "--tracking-uri", uri, "--output-dir", str(out),
                 "--format", "json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((out / "report.json").read_text())
    for name in MULTI_PLOTS:
        _check_png(out / name)
    table = pq.read_table(out / "trials.parquet").to_pylist()
    assert len(table) == len(PORTFOLIO_TRIALS) == printed["num_trials"]
    assert [r["trial_index"] for r in table] == list(range(len(table)))
    assert [r["arch"] for r in table] == [f"arch{i}" for i in range(len(table))]
    statuses = [r["status"] for r in table]
    assert statuses.count("ERROR") == 1 and statuses.count("RUNNING") == 1
    assert table[0]["config/edge/0"] == 0 and table[0]["val_acc"] == 70.0

    code = main(["report", parent, "--tracking-uri", uri, "--output-dir", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("searcher "))
    rows = [line.split() for line in lines[header + 1: header + 4]]
    assert [r[0] for r in rows] == ["rea", "rand", "all"]
    # trials, ok, failed, running
    assert [r[1:5] for r in rows] == [["6", "5", "1", "0"], ["6", "4", "1", "1"],
                                      ["12", "9", "2", "1"]]


def test_report_resolves_experiment_and_trial_ids(synthetic) -> None:
    _, client, exp, name = synthetic
    older = _make_search(client, exp, PORTFOLIO_TRIALS[:4], portfolio=True)
    single = [("random", *t[1:]) for t in PORTFOLIO_TRIALS[:6]]
    newer = _make_search(client, exp, single, portfolio=False, t0=T0 + 60_000)
    assert load_report(client, name).run_id == newer
    assert load_report(client, exp).run_id == newer
    # A trial run, or a portfolio's searcher run, leads to its search.
    runs = client.search_runs([exp], max_results=100)
    by_role: dict[tuple[str, str], str] = {}
    for run in runs:
        tags = run.data.tags
        search = newer if tags.get("mlflow.parentRunId") == newer else older
        by_role[(tags["raynas.role"], search)] = run.info.run_id
    for role, search in (("trial", older), ("trial", newer), ("searcher", older)):
        assert load_report(client, by_role[(role, search)]).run_id == search
    assert [s.trials for s in load_report(client, older).searchers] == [2, 2]
    assert [s.trials for s in load_report(client, newer).searchers] == [6]


def test_single_searcher_single_objective(tmp_path: Path, synthetic) -> None:
    _, client, exp, _ = synthetic
    trials = [("random", a, lat, st) for _, a, lat, st in PORTFOLIO_TRIALS]
    parent = _make_search(client, exp, trials, portfolio=False, multi=False)
    report = load_report(client, parent)
    data = json.loads(report.to_json())
    assert data["reference_point"] is None and data["pareto_front"] == []
    (only,) = data["searchers"]
    assert only["label"] == "random" and only["hypervolume"] is None
    accs = [a for _, a, _, st in trials if st == "FINISHED" and a is not None]
    assert only["best"] == {"val_acc": max(accs)} and only["ok"] == len(accs)
    curve = [p[2] for p in only["best_so_far"]]
    assert curve == sorted(curve) and curve[-1] == max(accs)
    paths = log_report(client, parent, tmp_path / "logged")
    assert {p.name for p in paths} == (MULTI_PLOTS - {"hypervolume_time.png"}) | {
        "report.json", "trials.parquet"}
    logged = {a.path for a in client.list_artifacts(parent, "report")}
    assert logged == {f"report/{p.name}" for p in paths}
    assert "random" in render_table(report).splitlines()[-2]


def test_log_report_through_a_tracker(tmp_path: Path, synthetic) -> None:
    from raynas.tracking.store import Tracker

    uri, client, exp, name = synthetic
    parent = _make_search(client, exp, PORTFOLIO_TRIALS, portfolio=True)
    tracker = Tracker(uri, name)
    try:
        paths = log_report(tracker, parent, tmp_path / "logged")
        assert tracker.flush(60)
    finally:
        tracker.close()
    assert {p.name for p in paths} == MULTI_PLOTS | {"report.json", "trials.parquet"}
    logged = {a.path for a in client.list_artifacts(parent, "report")}
    assert logged == {f"report/{p.name}" for p in paths}
    local = tmp_path / "downloaded"
    local.mkdir()
    got = Path(client.download_artifacts(parent, "report/report.json", str(local)))
    assert json.loads(got.read_text())["overall"]["hypervolume"] == pytest.approx(
        _expected_hv(_feasible(None), json.loads(got.read_text())["reference_point"]))


def test_explicit_reference_point(synthetic) -> None:
    _, client, exp, _ = synthetic
    parent = _make_search(client, exp, PORTFOLIO_TRIALS, portfolio=True)
    ref = [65.0, 9.5]  # wide enough to hold the infeasible 95/9 trial: it must not count
    report = load_report(client, parent, ref_point=ref)
    assert report.reference_point == ref
    assert report.overall.hypervolume == pytest.approx(_expected_hv(_feasible(None), ref))
    with pytest.raises(ValueError, match="one value per objective"):
        load_report(client, parent, ref_point=[1.0])


def test_unknown_run_is_a_clean_cli_error(tmp_path: Path, synthetic, capsys) -> None:
    uri, client, exp, _ = synthetic
    _make_search(client, exp, PORTFOLIO_TRIALS[:2], portfolio=True)
    assert main(["report", "0123456789abcdef", "--tracking-uri", uri]) == 2
    ours = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("raynas")]
    assert len(ours) == 1
    assert ours[0].startswith("raynas: error: no MLflow run or experiment named '0123456789abcdef'")
    missing = f"sqlite:///{tmp_path / 'nowhere' / 'mlflow.db'}"
    assert main(["report", "x", "--tracking-uri", missing]) == 2
    assert "no MLflow store" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.ray
@pytest.mark.data
def test_report_of_a_real_tabular_search(tmp_path, nb201_dir, ray_session, capsys) -> None:
    uri = _uri(tmp_path)
    config = {
        "name": "report-e2e",
        "space": "nb201",
        "searcher": "random",
        "evaluator": {"name": "tabular", "table_path": str(nb201_dir), "devices": ["pixel3"]},
        "metric": ["val_acc", "latency_pixel3"],
        "mode": ["max", "min"],
        "budget": {"trials": 20, "concurrency": 2},
        "seed": 5,
        "tracking": {"uri": uri, "experiment": "report-e2e"},
        "output_dir": str(tmp_path / "results"),
    }
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path)]) == 0
    capsys.readouterr()

    out = tmp_path / "report"
    assert main(["report", "report-e2e", "--tracking-uri", uri, "--output-dir", str(out),
                 "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    for name in MULTI_PLOTS:
        _check_png(out / name)
    # `raynas run` logged the same report as artifacts of the search's run.
    logged = {a.path for a in MlflowClient(uri).list_artifacts(data["run_id"], "report")}
    assert {f"report/{name}" for name in MULTI_PLOTS} | {"report/report.json"} <= logged
    (only,) = data["searchers"]
    assert (only["label"], only["trials"], only["ok"], only["failed"]) == ("random", 20, 20, 0)
    assert pq.read_table(out / "trials.parquet").num_rows == 20

    # The runner's own trial table (written from Tune's results, not from MLflow) gives the
    # points; pymoo's HV on them with the report's reference point must agree.
    (runner_table,) = (tmp_path / "results").glob("*/trials.parquet")
    rows = [r for r in pq.read_table(runner_table).to_pylist() if r["status"] == "OK"]
    assert len(rows) == 20
    points = [(r["val_acc"], r["latency_pixel3"]) for r in rows]
    direct = _expected_hv(points, data["reference_point"])
    assert direct > 0 and math.isfinite(direct)
    assert only["hypervolume"] == pytest.approx(direct, rel=1e-9)
    assert data["overall"]["hypervolume"] == pytest.approx(direct, rel=1e-9)
    best = max(rows, key=lambda r: r["val_acc"] - r["latency_pixel3"])
    assert only["best_arch"] == best["arch"]
    ours = pq.read_table(out / "trials.parquet").to_pylist()
    assert {r["mlflow_run_id"] for r in ours} == {r["mlflow_run_id"] for r in rows}
