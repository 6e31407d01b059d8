"""Latency for a new device from a few measurements, transferred from the table's devices."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from raynas.cli.main import main
from raynas.latency.fewshot import FewShotLatency, fit_from_table, predict_table
from raynas.latency.measure import MeasuredLatency, read_latency_table
from spaces import create_space


def _table(tmp_path: Path, n: int = 60, *, new: bool = True) -> tuple[Path, np.ndarray]:
    """A table of ``n`` NB201 architectures on devices a, b and (if ``new``) a derived one."""
    space = create_space("nb201")
    rng = np.random.default_rng(0)
    archs = [space.decode(v) for v in rng.integers(0, 5, size=(n, 6))]
    a = rng.uniform(1, 10, n)
    b = rng.uniform(1, 10, n)
    target = np.exp(0.2 + 0.7 * np.log(a) + 0.3 * np.log(b))  # what "new" measures
    path = tmp_path / "lat.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["arch_str", "a", "b", *(["new"] if new else [])])
        for i, arch in enumerate(archs):
            writer.writerow([arch, a[i], b[i], *([target[i]] if new else [])])
    return path, target


def test_without_a_penalty_a_log_linear_device_is_recovered_exactly() -> None:
    rng = np.random.default_rng(1)
    refs = rng.uniform(1, 20, size=(12, 3))
    target = np.exp(-0.5 + np.log(refs) @ np.array([0.5, 1.5, -0.25]))
    model = FewShotLatency.fit(["x", "y", "z"], refs, target, ridge=0.0)
    others = rng.uniform(1, 20, size=(50, 3))
    expected = np.exp(-0.5 + np.log(others) @ np.array([0.5, 1.5, -0.25]))
    np.testing.assert_allclose(model.predict(others), expected, rtol=1e-9)


def test_the_penalty_shrinks_towards_the_mean_and_keeps_the_order() -> None:
    refs = np.arange(1.0, 21.0).reshape(-1, 1)
    target = 2 * refs[:, 0] ** 1.0
    exact = FewShotLatency.fit(["x"], refs, target, ridge=0.0)
    ridge = FewShotLatency.fit(["x"], refs, target)
    assert 0 < ridge.weights[0] < exact.weights[0]
    assert spearmanr(ridge.predict(refs), target).statistic == pytest.approx(1.0)


def test_fit_from_a_table_and_predict_every_row(tmp_path: Path) -> None:
    path, target = _table(tmp_path)
    model, used = fit_from_table(path, "new", shots=20, seed=3)
    assert model.references == ["a", "b"] and len(used) == len(set(used)) == 20
    archs, predicted = predict_table(model, path)
    assert len(archs) == 60 and spearmanr(predicted, target).statistic > 0.99
    again, _ = fit_from_table(path, "new", shots=20, seed=3)
    assert again.weights == model.weights  # seeded
    loaded = FewShotLatency.load(model.save(tmp_path / "m.json"))
    np.testing.assert_array_equal(loaded.predict(np.array([[2.0, 3.0]])),
                                  model.predict(np.array([[2.0, 3.0]])))


def test_cli_few_shot_writes_a_model_and_a_table_a_search_can_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, target = _table(tmp_path, new=False)
    measured = tmp_path / "measured.csv"
    archs, _ = read_latency_table(path, "a")
    with open(measured, "w", newline="") as f:  # 8 architectures timed on the new device
        writer = csv.writer(f)
        writer.writerow(["arch_str", "phone"])
        writer.writerows([archs[i], target[i]] for i in range(8))
    out = tmp_path / "phone.csv"
    assert main(["latency", "train", "--table", str(path), "--device", "phone", "--few-shot",
                 "8", "--measured", str(measured), "-o", str(tmp_path / "phone.json"),
                 "--predictions", str(out)]) == 0
    assert "phone from 8 measured architectures and 2 reference devices" in capsys.readouterr().out
    lookup = MeasuredLatency.from_file(create_space("nb201"), out, "phone")
    got = lookup.predict(archs[10:20])
    assert spearmanr(got, target[10:20]).statistic > 0.95


@pytest.mark.parametrize(("extra", "message"), [
    (["--few-shot", "1", "--device", "new"], "--few-shot must be >= 2, got 1"),
    (["--few-shot", "100", "--device", "new"],
     "60 measurements of 'new', fewer than --few-shot 100"),
    (["--few-shot", "5", "--device", "phone"], "device 'phone' is not a column of"),
    (["--device", "new", "--predictions", "x.csv"], "--measured and --predictions go with"),
])
def test_bad_few_shot_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        extra: list[str], message: str) -> None:
    path, _ = _table(tmp_path)
    assert main(["latency", "train", "--table", str(path), "-o", str(tmp_path / "m"),
                 *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


@pytest.mark.data
def test_leave_one_device_out_on_the_shared_table(nb201_dir: Path) -> None:
    model, used = fit_from_table(nb201_dir / "latency_ms.csv", "pixel3", shots=20, seed=0)
    assert "pixel3" not in model.references and len(model.references) == 6
    archs, predicted = predict_table(model, nb201_dir / "latency_ms.csv")
    _, measured = read_latency_table(nb201_dir / "latency_ms.csv", "pixel3")
    rest = np.array([a not in set(used) for a in archs])
    assert spearmanr(predicted[rest], measured[rest]).statistic > 0.9
