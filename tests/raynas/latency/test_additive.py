"""The additive per-operation latency model with a boosted residual."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from raynas.cli.main import main
from raynas.latency.additive import AdditiveLatency, Trees
from raynas.latency.measure import latency_stats, read_latency_table
from spaces import create_space
from spaces.nb201.liveness import live_edges as nb201_live_edges

NONE_CELL = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


def _synthetic(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """NB201 architectures and a device whose ms is a sum of live-op costs (dead ops free)."""
    space = create_space("nb201")
    rng = np.random.default_rng(seed)
    vectors = rng.integers(0, 5, size=(n, 6))
    cost = np.array([0.0, 0.1, 1.0, 3.0, 0.5])  # none, skip, conv1x1, conv3x3, pool
    ms = 2.0 + (cost[vectors] * nb201_live_edges(vectors)).sum(1)
    return [space.decode(v) for v in vectors], ms


def test_live_edges_drop_dead_branches() -> None:
    space = create_space("nb201")
    vec = space.encode(NONE_CELL)
    assert not nb201_live_edges(vec).any()
    # conv on 1<-0 but node 1 feeds nothing: dead; skip on 3<-0: live.
    arch = "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"
    assert nb201_live_edges(space.encode(arch)).tolist() == [
        [False, False, False, True, False, False]]
    additive, residual = space.cost_features(space.encode(arch)[None])
    assert additive.shape == (1, 52) and residual.shape == (1, 73)


def test_exported_trees_predict_as_scikit_learn() -> None:
    from sklearn.ensemble import HistGradientBoostingRegressor

    rng = np.random.default_rng(0)
    x = rng.random((200, 4))
    y = 3 * x[:, 0] + np.sin(5 * x[:, 1]) + rng.normal(0, 0.1, 200)
    for loss in ("absolute_error", "squared_error"):
        model = HistGradientBoostingRegressor(loss=loss, max_iter=30, early_stopping=False)
        model.fit(x, y)
        np.testing.assert_allclose(Trees.from_sklearn(model).predict(x), model.predict(x),
                                   atol=1e-12)


def test_an_additive_device_is_recovered_without_a_residual() -> None:
    archs, ms = _synthetic(300)
    model = AdditiveLatency(create_space("nb201"), residual="none").fit(archs[:200], ms[:200])
    assert model.trees is None and model.chosen == "none"
    np.testing.assert_allclose(model.predict(archs[200:]), ms[200:], rtol=1e-3)


def test_cross_validation_picks_a_residual_and_the_file_round_trips(tmp_path: Path) -> None:
    archs, ms = _synthetic(120, seed=1)
    noisy = ms * np.exp(np.random.default_rng(2).normal(0, 0.05, len(ms)))
    model = AdditiveLatency(create_space("nb201"), device="toy", iterations=50, folds=3)
    model.fit(archs, noisy)
    assert set(model.cv_scores) == {"absolute_error", "squared_error", "none"}
    assert model.cv_scores[model.chosen] == max(model.cv_scores.values())
    path = model.save(tmp_path / "toy.npz")
    again = AdditiveLatency.load(path)
    assert again.chosen == model.chosen and again.device == "toy"
    np.testing.assert_allclose(again.predict(archs), model.predict(archs), rtol=1e-12)
    (tmp_path / "junk.npz").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a raynas latency model"):
        AdditiveLatency.load(tmp_path / "junk.npz")
    with pytest.raises(ValueError, match="residual must be"):
        AdditiveLatency(create_space("nb201"), residual="mse")


def test_the_service_loads_an_additive_model(tmp_path: Path) -> None:
    from raynas.latency.service import load_predictor, normalize_sources

    archs, ms = _synthetic(60)
    path = AdditiveLatency(create_space("nb201"), residual="none").fit(archs, ms) \
        .save(tmp_path / "toy.npz")
    (source,) = normalize_sources(str(path), device="toy")
    predictor = load_predictor(source, device="toy", space=None)
    assert isinstance(predictor, AdditiveLatency)
    np.testing.assert_allclose(predictor.predict(archs), ms, rtol=1e-3)


@pytest.mark.data
def test_beats_the_mlp_on_noisy_pixel3_with_few_samples(nb201_dir: Path) -> None:
    # The MLP on 1,000 pixel3 architectures reaches 0.55 within +-10% (benchmarks, part 1).
    space = create_space("nb201")
    archs, ms = read_latency_table(nb201_dir / "latency_ms.csv", "pixel3")
    perm = np.random.default_rng(0).permutation(len(archs))
    train, test = perm[:400], perm[400:2400]
    model = AdditiveLatency(space, device="pixel3", iterations=200, folds=3)
    model.fit([archs[i] for i in train], ms[train])
    stats = latency_stats(model.predict([archs[i] for i in test]), ms[test])
    assert stats["within10pct"] > 0.6 and stats["spearman"] > 0.9


@pytest.mark.data
def test_cli_trains_the_additive_model(tmp_path: Path, nb201_dir: Path, capsys) -> None:
    out = tmp_path / "raspi4.npz"
    assert main(["latency", "train", "--table", str(nb201_dir / "latency_ms.csv"),
                 "--device", "raspi4", "--model", "additive", "-o", str(out),
                 "--train-size", "200"]) == 0
    printed = capsys.readouterr().out
    assert "trained additive on 200" in printed and "Spearman" in printed
    assert AdditiveLatency.load(out).predict([NONE_CELL])[0] > 0
