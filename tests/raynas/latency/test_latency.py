"""Latency lookup tables, learned predictors, the LatencyService actor and its wiring."""

from __future__ import annotations

import csv
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from raynas.cli.main import main
from raynas.latency.lut import METADATA_KEY, LatencyTable, build_table
from raynas.latency.measure import MeasuredLatency, latency_stats, measure_archs, summarize
from raynas.latency.predictor import ArchEncoder, LatencyMLP, one_hot
from searchers.protocols import Predictor
from searchers.testing import TinySpace
from spaces import create_space

TINY_NB201 = {"channels": 4, "cells_per_stage": 1, "resolution": 8}
TINY_MOBILENET = {"resolution": 32, "widths": [8, 16], "strides": [2, 2], "depth_choices": [1, 2],
                  "kernel_choices": [3, 5], "expand_choices": [3, 4], "head_width": 32}
FAST = {"warmup": 1, "repeats": 3, "rounds": 1}
OP_COST = {"none": 0.01, "skip_connect": 0.02, "nor_conv_1x1": 0.4, "nor_conv_3x3": 1.5,
           "avg_pool_3x3": 0.3}


def synthetic_latency(space, archs) -> np.ndarray:
    """A known latency: per-edge operation costs, heavier on later edges, plus a fixed part."""
    return np.array([2.0 + sum(OP_COST[op] * (1 + 0.2 * i) for i, op in enumerate(space.ops(a)))
                     for a in archs])


@pytest.fixture(scope="module")
def tiny_nb201():
    return create_space("nb201", **TINY_NB201)


@pytest.fixture(scope="module")
def nb201_table(tiny_nb201):
    return build_table(tiny_nb201, device="tinycpu", **FAST)


@pytest.fixture(scope="module")
def table_file(nb201_table, tmp_path_factory) -> Path:
    return nb201_table.save(tmp_path_factory.mktemp("lut") / "tiny.parquet")


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory) -> str:
    """One sqlite store for the module's MLflow tests (creating one takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    space = create_space("nb201")
    rng = np.random.default_rng(0)
    archs = list({space.sample(rng) for _ in range(260)})
    y = synthetic_latency(space, archs)
    model = LatencyMLP(space, device="synth", hidden=(64, 64), ensemble=2)
    model.fit(archs[:200], y[:200], epochs=60)
    path = model.save(tmp_path_factory.mktemp("mlp") / "synth.pt")
    return model, path, archs, y


# --------------------------------------------------------------------------- tables
def test_build_table_times_every_layer_choice(tiny_nb201, nb201_table) -> None:
    assert len(nb201_table.entries) == 22  # 3 stages x (5 ops + add), stem, 2 reductions, head
    assert all(v > 0 for v in nb201_table.entries.values())
    meta = nb201_table.metadata
    assert meta["device"] == "tinycpu" and meta["space"]["options"]["channels"] == 4
    assert meta["clock"] == "cpu" and meta["statistic"] == "p10" and meta["repeats"] == 3
    archs = [tiny_nb201.sample(np.random.default_rng(i)) for i in range(20)]
    slow = [sum(nb201_table.entries[k] * n for k, n in nb201_table.layers(a).items())
            for a in archs]
    np.testing.assert_allclose(nb201_table.predict(archs), slow)
    assert isinstance(nb201_table, Predictor)


def test_mobilenet_table_sums_active_blocks_only() -> None:
    space = create_space("mobilenet", **TINY_MOBILENET)
    table = build_table(space, **FAST)
    assert len(table.entries) == 3 + 2 * 2 * 4  # stem, first, head; 2 stages x 2 positions x 4
    archs = [space.sample(np.random.default_rng(i)) for i in range(30)]
    slow = [sum(table.entries[k] * n for k, n in table.layers(a).items()) for a in archs]
    np.testing.assert_allclose(table.predict(archs), slow)
    a = space.validate("d1.1|k3.5.3.5|e3.4.3.4")
    b = space.validate("d1.1|k3.3.3.3|e3.3.3.3")  # differs only in unused slots
    assert table.predict([a])[0] == table.predict([b])[0]


def test_parquet_round_trip_keeps_entries_and_metadata(nb201_table, table_file, tiny_nb201):
    raw = pq.read_table(table_file)
    assert raw.column_names == ["key", "latency_ms", "shape"]
    assert b"tinycpu" in raw.schema.metadata[METADATA_KEY]
    loaded = LatencyTable.load(table_file)
    assert loaded.entries == nb201_table.entries
    assert loaded.metadata["device"] == "tinycpu"
    assert loaded.metadata["space"] == nb201_table.metadata["space"]
    assert loaded.metadata["shapes"]["cell2/nor_conv_3x3"] == "1x16x2x2"
    archs = [tiny_nb201.sample(np.random.default_rng(i)) for i in range(10)]
    np.testing.assert_array_equal(loaded.predict(archs), nb201_table.predict(archs))


def test_bad_tables_are_refused(tmp_path, nb201_table, tiny_nb201) -> None:
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"key": ["stem"], "latency_ms": [1.0]}), plain)
    with pytest.raises(ValueError, match="no 'raynas.latency' schema metadata"):
        LatencyTable.load(plain)
    partial = dict(nb201_table.entries)
    del partial["cell1/nor_conv_1x1"]
    with pytest.raises(ValueError, match="lacks 1 entries"):
        LatencyTable(tiny_nb201, partial)
    with pytest.raises(ValueError, match=r"no layer-wise latency table for space 'tiny': .*"
                                         r"\(SearchSpace.latency_layout\)"):
        build_table(TinySpace(), **FAST)


def test_measure_real_networks(tiny_nb201) -> None:
    archs = [tiny_nb201.sample(np.random.default_rng(i)) for i in range(3)]
    ms = measure_archs(tiny_nb201, archs, **FAST, chunk=2)
    assert ms.shape == (3,) and np.all(ms > 0)
    np.testing.assert_allclose(summarize([np.array([3.0, 1.0, 2.0])], "median"), [2.0])
    with pytest.raises(ValueError, match="statistic must be"):
        measure_archs(tiny_nb201, archs, statistic="p200")


# --------------------------------------------------------------------------- learned
def test_training_reduces_held_out_error(trained) -> None:
    model, _, archs, y = trained
    test_archs, test_y = archs[200:], y[200:]
    constant = {"rmse": float(np.sqrt(np.mean((np.exp(model.mean) - test_y) ** 2)))}
    space = create_space("nb201")
    barely = LatencyMLP(space, hidden=(64, 64), ensemble=1).fit(archs[:200], y[:200], epochs=1,
                                                               lr=1e-4)
    early = latency_stats(barely.predict(test_archs), test_y)
    after = latency_stats(model.predict(test_archs), test_y)
    assert after["rmse"] < 0.3 * constant["rmse"]
    assert after["rmse"] < 0.3 * early["rmse"]
    assert after["spearman"] > 0.95 and after["within10pct"] > 0.8
    assert isinstance(model, Predictor)


def test_model_file_round_trip_and_refusals(trained, tmp_path) -> None:
    import torch

    model, path, archs, _ = trained
    loaded = LatencyMLP.load(path)
    np.testing.assert_array_equal(loaded.predict(archs[:50]), model.predict(archs[:50]))
    assert loaded.device == "synth" and loaded.num_train == 200
    evil = tmp_path / "evil.pt"
    torch.save({"metadata": Path("x"), "state": {}}, evil)  # needs pickle to load
    with pytest.raises(ValueError, match="is not a raynas latency model"):
        LatencyMLP.load(evil)
    with pytest.raises(ValueError, match="non-positive|> 0"):
        LatencyMLP(create_space("nb201")).fit(archs[:2], [1.0, 0.0])


def test_encoder_rejects_foreign_architectures_atomically() -> None:
    space = create_space("nb201")
    enc = ArchEncoder(space, prefill=False)
    good = space.sample(np.random.default_rng(0))
    with pytest.raises(ValueError, match="is not of space 'nb201'"):
        enc.rows([good, "d2.3.4.2.3|k3|e3"])
    assert len(enc) == 0
    assert enc.rows([good, good]).tolist() == [0, 0]
    assert len(ArchEncoder(space)) == 15625


def test_fast_mobilenet_parsing_matches_the_space() -> None:
    space = create_space("mobilenet")  # 10^40 strings: parsed on demand, never prefilled
    archs = [space.sample(np.random.default_rng(i)) for i in range(200)]
    texts = [space.to_string(a) for a in archs]
    enc = ArchEncoder(space)
    np.testing.assert_array_equal(enc.encode(texts), np.stack([space.encode(a) for a in archs]))
    np.testing.assert_array_equal(enc.encode(archs[:3]), enc.encode(texts[:3]))
    d, k, e = texts[0].split("|")
    with pytest.raises(ValueError, match=r"kernels\[0\] is 9"):
        enc.rows([texts[1], f"{d}|k9{k[2:]}|{e}"])
    assert len(enc) == 203  # the 3 MobileNetArch values are rows of their own
    wide = create_space("mobilenet", **{**TINY_MOBILENET, "expand_choices": [3, 12]})
    texts = [wide.to_string(wide.sample(np.random.default_rng(i))) for i in range(50)]
    np.testing.assert_array_equal(ArchEncoder(wide, prefill=False).encode(texts),
                                  np.stack([wide.encode(t) for t in texts]))


def test_one_hot_ignores_unused_mobilenet_slots() -> None:
    space = create_space("mobilenet", **TINY_MOBILENET)
    a = space.encode("d1.1|k3.5.3.5|e3.4.3.4")
    b = space.encode("d1.1|k3.3.3.3|e3.3.3.3")
    fa, fb = one_hot(space, np.stack([a, b]))
    np.testing.assert_array_equal(fa, fb)
    assert fa.sum() == 2 + 2 * 2  # two depths, kernel and expansion of two used blocks


# --------------------------------------------------------------------------- service
@pytest.mark.ray
def test_service_found_by_name_from_a_task(ray_session, table_file, nb201_table, tiny_nb201):
    import ray

    from raynas.latency.service import (
        LatencyPredictor,
        get_latency_service,
        list_latency_services,
        start_latency_service,
        stop_latency_service,
    )

    prefix = f"t-{uuid.uuid4().hex[:6]}"
    start_latency_service("tinycpu", str(table_file), prefix=prefix)
    archs = [tiny_nb201.to_string(tiny_nb201.sample(np.random.default_rng(i)))
             for i in range(300)]

    @ray.remote(num_cpus=0)
    def from_task(items: list[str]) -> list[float]:
        return LatencyPredictor("tinycpu", prefix=prefix).predict(items).tolist()

    remote = ray.get(from_task.remote(archs))
    direct = nb201_table.predict(archs)
    np.testing.assert_allclose(remote, direct, rtol=1e-12)
    singles = [ray.get(get_latency_service("tinycpu", prefix=prefix).predict.remote([a]))[0]
               for a in archs[:5]]
    np.testing.assert_allclose(singles, direct[:5], rtol=1e-12)
    assert list_latency_services(prefix=prefix) == ["tinycpu"]
    with pytest.raises(ValueError, match="no latency service for device 'nope'; running: "
                                         "tinycpu"):
        get_latency_service("nope", prefix=prefix)
    client = LatencyPredictor("tinycpu", prefix=prefix)
    with pytest.raises(ValueError, match="is not of space 'nb201'"):
        client.predict(["d2.3.4.2.3|k3.5|e3.4"])
    with pytest.raises(ValueError, match="device must be a name"):
        LatencyPredictor("pixel 3")
    assert stop_latency_service("tinycpu", prefix=prefix)
    assert list_latency_services(prefix=prefix) == []


@pytest.mark.ray
def test_service_restarts_and_reloads(ray_session, trained) -> None:
    import ray

    from raynas.latency.service import LatencyPredictor, start_latency_service

    model, path, archs, _ = trained
    prefix = f"t-{uuid.uuid4().hex[:6]}"
    handle = start_latency_service("synth", {"model": str(path)}, prefix=prefix)
    before = ray.get(handle.info.remote())
    assert before["predictors"] == ["LatencyMLP"] and before["cached"] == 15625
    client = LatencyPredictor("synth", prefix=prefix)
    expected = model.predict(archs[:20])
    np.testing.assert_allclose(client.predict(archs[:20]), expected, rtol=1e-6)
    ray.kill(handle, no_restart=False)
    deadline = time.monotonic() + 60
    while True:  # the kill is asynchronous: a first call may still reach the old process
        try:
            after = ray.get(handle.info.remote(), timeout=60)
        except ray.exceptions.RayActorError:
            after = before
        if after["pid"] != before["pid"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert after["pid"] != before["pid"] and after["restarted"]
    assert after["loaded_at"] > before["loaded_at"] and after["cached"] == 15625
    np.testing.assert_allclose(client.predict(archs[:20]), expected, rtol=1e-6)
    ray.kill(handle, no_restart=True)


@pytest.mark.ray
def test_service_chains_sources_and_reads_mlflow(ray_session, trained, tmp_path,
                                                 mlflow_uri) -> None:
    from mlflow.tracking import MlflowClient

    from raynas.latency.service import (
        LatencyPredictor,
        start_latency_service,
        stop_latency_service,
    )

    model, path, archs, y = trained
    measured = tmp_path / "measured.csv"
    with measured.open("w", newline="") as f:
        csv.writer(f).writerows([["arch_str", "synth"], [archs[0], 123.0], [archs[1], 7.0]])
    uri = mlflow_uri
    client = MlflowClient(uri)
    exp = client.create_experiment("lat", artifact_location=str(tmp_path / "artifacts"))
    run = client.create_run(exp).info.run_id
    client.log_artifact(run, str(path))
    prefix = f"t-{uuid.uuid4().hex[:6]}"
    start_latency_service("synth", [str(measured), {"model": f"runs:/{run}/synth.pt"}],
                          prefix=prefix, tracking_uri=uri)
    out = LatencyPredictor("synth", prefix=prefix).predict(archs[:4])
    assert out[:2].tolist() == [123.0, 7.0]  # the measured table first
    np.testing.assert_allclose(out[2:], model.predict(archs[2:4]), rtol=1e-6)
    with pytest.raises(ValueError, match="does not exist"):
        start_latency_service("synth", str(tmp_path / "missing.pt"), prefix=prefix)
    with pytest.raises(ValueError, match="with other sources"):
        start_latency_service("synth", str(path), prefix=prefix)
    stop_latency_service("synth", prefix=prefix)


# --------------------------------------------------------------------------- CLI
def test_cli_build_measure_train(tmp_path, capsys) -> None:
    options = [f"--space-option={k}={v}" for k, v in TINY_NB201.items()]
    lut = tmp_path / "tiny.parquet"
    assert main(["latency", "build", "--space", "nb201", *options, "--device", "cpu",
                 "-o", str(lut), "--repeats", "2", "--rounds", "1", "--warmup", "1"]) == 0
    assert LatencyTable.load(lut).metadata["device"] == "cpu"
    measured = tmp_path / "measured.csv"
    assert main(["latency", "measure", "--space", "nb201", *options, "--archs", "12",
                 "-o", str(measured), "--repeats", "2", "--rounds", "1"]) == 0
    with measured.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and float(rows[0]["cpu"]) > 0
    model = tmp_path / "cpu.pt"
    assert main(["latency", "train", "--table", str(measured), "--device", "cpu",
                 "-o", str(model), "--epochs", "5", "--holdout", "0.25"]) == 0
    assert LatencyMLP.load(model).num_train == 9
    assert "held out 3" in capsys.readouterr().out
    assert main(["latency", "train", "--table", str(measured), "--device", "pixel3",
                 "-o", str(model)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"raynas: error: unknown device 'pixel3' in {str(measured)!r}; devices: cpu"


@pytest.mark.data
def test_cli_train_on_the_device_table(tmp_path, nb201_dir, capsys) -> None:
    out = tmp_path / "pixel3.pt"
    assert main(["latency", "train", "--table", str(nb201_dir / "latency_ms.csv"),
                 "--device", "pixel3", "-o", str(out), "--train-size", "100",
                 "--epochs", "30"]) == 0
    assert "Spearman" in capsys.readouterr().out
    assert LatencyMLP.load(out).predict(["|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"])[0] > 0


def test_measured_table_needs_a_space(tmp_path) -> None:
    from raynas.latency.service import LatencyServiceImpl

    space = create_space("nb201")
    arch = space.sample(np.random.default_rng(0))
    measured = tmp_path / "measured.csv"
    measured.write_text(f"arch_str,cpu\n{arch},2.5\n")
    with pytest.raises(ValueError, match="needs the space of its arch_str column: pass space"):
        LatencyServiceImpl("cpu", str(measured))
    assert LatencyServiceImpl("cpu", str(measured), space="nb201").predict([arch]) == [2.5]


def test_measured_table_lookup(tmp_path) -> None:
    space = create_space("nb201")
    arch = space.sample(np.random.default_rng(0))
    table = MeasuredLatency(space, [arch], [4.5])
    other = space.mutate(arch, np.random.default_rng(1))
    assert table.predict([arch])[0] == 4.5 and np.isnan(table.predict([other])[0])


# --------------------------------------------------------------------------- search
@pytest.mark.ray
@pytest.mark.data
def test_run_search_with_latency_metrics(tmp_path, nb201_dir, table_file, ray_session,
                                         mlflow_uri) -> None:
    from raynas.run.config import parse_config
    from raynas.run.runner import build_components

    latency_csv = nb201_dir / "latency_ms.csv"
    config = {
        "name": "hw",
        "space": "nb201",
        "searcher": "random",
        "evaluator": {
            "name": "latency",
            "evaluator": {"name": "tabular", "table_path": str(nb201_dir)},
            "devices": {"pixel3": str(latency_csv), "tinycpu": {"lut": str(table_file)}},
        },
        "metric": ["val_acc", "latency_pixel3"],
        "mode": ["max", "min"],
        "constraints": ["latency_tinycpu <= 1000"],
        "budget": {"trials": 6, "concurrency": 2},
        "seed": 1,
        "tracking": {"uri": mlflow_uri, "experiment": "hw"},
        "output_dir": str(tmp_path / "out"),
    }
    comps = build_components(parse_config(config))
    assert comps.evaluator.metrics[-2:] == ("latency_pixel3", "latency_tinycpu")
    path = tmp_path / "hw.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path)]) == 0
    (trials,) = (tmp_path / "out").glob("hw-*/trials.parquet")
    rows = pq.read_table(trials).to_pylist()
    assert len(rows) == 6 and all(r["status"] == "OK" for r in rows)
    truth = MeasuredLatency.from_file(create_space("nb201"), latency_csv, "pixel3")
    lut = LatencyTable.load(table_file)
    for row in rows:
        assert row["latency_pixel3"] == pytest.approx(truth.predict([row["arch"]])[0])
        assert row["latency_tinycpu"] == pytest.approx(lut.predict([row["arch"]])[0])
    from raynas.latency.service import list_latency_services

    assert list_latency_services() == []  # teardown stopped the services it started
