"""PredictorSearch (BANANAS): the ensemble, proxy features, exact restore, the NB201 table."""

from __future__ import annotations

import copy
import csv
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import spearmanr

from searchers import create_searcher, get_searcher_class
from searchers.mlp import MLPEnsemble
from searchers.predictor import PredictorSearch
from searchers.screening import MissingScorerError, mean_rank
from searchers.testing import METRIC, SearcherConformance, drive, objective
from spaces import create_space
from tests.searchers._proxy_scorers import ConvCount, HashScorer, TableColumn

SPACE = create_space("nb201")
# The contract, not the search quality, is under test here: a small ensemble.
LIGHT: dict[str, Any] = {"ensemble_size": 2, "hidden_size": 8, "train_steps": 100,
                         "mutation_candidates": 20, "random_candidates": 20, "screen": 30}


class TestPredictorWithProxiesConformance(SearcherConformance):
    """The whole contract with proxy features and the proxy-screened start."""

    @staticmethod
    def make_searcher(space: Any, **kwargs: Any) -> PredictorSearch:
        return PredictorSearch(space, scorer=HashScorer(), initial_size=5, batch_size=4,
                               **LIGHT, **kwargs)


@pytest.fixture(scope="module")
def table(nb201_dir: Path) -> dict[str, dict[str, str]]:
    with open(nb201_dir / "cifar10.csv", newline="") as f:
        return {row["arch_str"]: row for row in csv.DictReader(f)}


def test_registered_with_its_alias() -> None:
    assert get_searcher_class("bananas") is PredictorSearch
    assert get_searcher_class("predictor") is PredictorSearch


def test_mlp_ensemble_fits_fast_and_deterministically() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 36))
    y = x[:, 0] - 2.0 * x[:, 1] + np.abs(x[:, 2])
    start = time.process_time()
    ensemble = MLPEnsemble([32, 32], seeds=range(5), steps=300).fit(x, y)
    assert time.process_time() - start < 1.0  # CPU seconds, even on a busy machine
    held = rng.normal(size=(200, 36))
    truth = held[:, 0] - 2.0 * held[:, 1] + np.abs(held[:, 2])
    preds = ensemble.predict(held)
    assert preds.shape == (5, 200) and preds.std(axis=0).mean() > 0  # members differ
    assert spearmanr(preds.mean(axis=0), truth).statistic > 0.7
    one = MLPEnsemble([32, 32], seeds=[3], steps=300).fit(x, y).predict(held)
    assert np.allclose(one[0], preds[3])  # a member does not depend on the others


def test_first_suggestions_are_the_best_by_proxy_then_the_model_chooses() -> None:
    scorer = ConvCount()
    s = PredictorSearch(SPACE, scorer=scorer, initial_size=4, batch_size=3,
                        metric=METRIC, mode="max", seed=0, **{**LIGHT, "screen": 200})
    first = drive(s, SPACE, 4)
    assert scorer.calls == 1 and scorer.scored == 200  # one screening, no training
    convs = ConvCount()(first)
    assert convs[:, 0].min() >= 5  # of the 200 sampled, the top by mean rank
    drive(s, SPACE, 6, prefix="u")
    assert s.num_scored == scorer.scored  # each architecture scored once


def test_each_architecture_is_scored_once_and_charged() -> None:
    scorer = HashScorer()
    s = PredictorSearch(SPACE, scorer=scorer, initial_size=5, batch_size=4, metric=METRIC,
                        mode="max", seed=5, **LIGHT)
    archs = drive(s, SPACE, 30, concurrency=2)
    assert len({SPACE.canonical(a) for a in archs}) == 30
    assert max(scorer.scored.values()) == 1
    keys = {SPACE.canonical(SPACE.from_string(t)) for t in scorer.scored}
    assert len(keys) == len(scorer.scored) == s.num_scored  # by canonical form
    assert s.proxy_seconds == pytest.approx(scorer.seconds) and s.proxy_seconds > 0


def test_save_restore_continues_exactly(tmp_path: Path) -> None:
    def make(scorer: Any = None) -> PredictorSearch:
        return PredictorSearch(SPACE, scorer=scorer, initial_size=5, batch_size=4,
                               metric=METRIC, mode="max", seed=5, **LIGHT)

    for scorer_cls in (None, HashScorer):
        whole = drive(make(scorer_cls and scorer_cls()), SPACE, 24)
        for cut in (3, 10):  # inside the initial design; inside a batch
            first = make(scorer_cls and scorer_cls())
            head = drive(first, SPACE, cut)
            path = str(tmp_path / f"{cut}.json")
            first.save(path)
            bare = PredictorSearch()
            bare.restore(path)
            assert bare.options == first.options
            if scorer_cls is not None:  # the scorer is not part of the state: re-attach it
                with pytest.raises(MissingScorerError, match="searcher.scorer = scorer"):
                    drive(pickle.loads(pickle.dumps(bare)), SPACE, 24 - cut)
                bare.scorer = scorer_cls()
            tail = drive(bare, SPACE, 24 - cut, prefix="u")
            assert head + tail == whole, (scorer_cls, cut)


def test_predict_and_bad_options() -> None:
    s = PredictorSearch(SPACE, metric=METRIC, mode="max", seed=0, **LIGHT)
    with pytest.raises(ValueError, match="at least 2"):
        s.predict([SPACE.sample(np.random.default_rng(0))])
    drive(s, SPACE, 12)
    archs = [SPACE.sample(np.random.default_rng(i)) for i in range(7)]
    mean, std = s.predict(archs)
    assert mean.shape == std.shape == (7,) and (std >= 0).all() and std.max() > 0
    again = s.predict(archs)
    assert np.array_equal(again[0], mean)  # refitted to the same data with the same seeds
    for bad, match in (({"ensemble_size": 1}, "ensemble_size"), ({"batch_size": 0}, "batch"),
                       ({"acquisition": "ei"}, "acquisition"), ({"ucb_beta": -1.0}, "ucb_beta"),
                       ({"mutation_candidates": 0, "random_candidates": 0}, "candidates"),
                       ({"scorer": lambda a: a}, "scorer"), ({"hidden_size": 2.5}, "hidden")):
        with pytest.raises(ValueError, match=match):
            PredictorSearch(SPACE, **bad)
    with pytest.warns(DeprecationWarning, match="'initial_size'"):
        assert PredictorSearch(SPACE, initial=3).options["initial_size"] == 3


def test_ucb_and_the_candidates_are_unseen_neighbours_and_samples() -> None:
    s = PredictorSearch(SPACE, acquisition="ucb", initial_size=6, batch_size=5,
                        metric=METRIC, mode="max", seed=1, **LIGHT)
    f = objective(SPACE)
    drive(s, SPACE, 6, score=f)
    twin = copy.deepcopy(s)
    queued = s._acquire()
    candidates = twin._candidates()  # the same draws
    keys = [SPACE.canonical(a) for a in candidates]
    assert len(set(keys)) == len(keys) and not any(s.is_seen(a) for a in candidates)
    assert 20 < len(candidates) <= 40
    parents = [SPACE.from_string(t) for t, _ in s._results]
    near = {SPACE.canonical(n) for p in parents for n in SPACE.neighbours(p)}
    assert sum(k in near for k in keys) >= 5  # some are one decision from a parent
    mean, std = twin._predict(candidates)
    best = np.argsort(-(mean + std), kind="stable")[:5]
    assert queued == [SPACE.to_string(candidates[i]) for i in best]


@pytest.mark.data
def test_proxy_features_and_the_ensemble_on_real_data(table: dict[str, Any]) -> None:
    rng = np.random.default_rng(0)
    keys = list(table)
    picks = rng.choice(len(keys), 400, replace=False)
    train, test = [keys[i] for i in picks[:100]], [keys[i] for i in picks[100:]]
    truth = np.array([float(table[k]["val_acc_200ep"]) for k in test])
    rhos = {}
    for label, scorer in (("encoding", None), ("encoding+zen_score", TableColumn(table))):
        s = PredictorSearch(SPACE, scorer=scorer, metric="val", mode="max", seed=0)
        for k in train:
            s.add_evaluated_point(SPACE.to_config(SPACE.from_string(k)),
                                  float(table[k]["val_acc_200ep"]))
        mean, _ = s.predict([SPACE.from_string(k) for k in test])
        rhos[label] = float(spearmanr(mean, truth).statistic)
    zen = np.array([float(table[k]["zen_score"]) for k in test])
    rhos["zen_score alone"] = float(spearmanr(mean_rank(zen), truth).statistic)
    print(f"Spearman with val_acc_200ep on 300 held-out, 100 training archs: {rhos}")
    assert rhos["encoding"] > 0.5 and rhos["encoding+zen_score"] > 0.5


@pytest.mark.data
def test_predictor_search_beats_random_on_the_table(table: dict[str, Any]) -> None:
    def val(arch: Any) -> float:
        return float(table[str(arch)]["val_acc_200ep"])

    def best_test(name: str, seed: int) -> float:
        s = create_searcher(name, SPACE, metric=METRIC, mode="max", seed=seed)
        archs = drive(s, SPACE, 100, score=val)
        assert len({SPACE.canonical(a) for a in archs}) == 100
        return float(table[str(max(archs, key=val))]["test_acc_200ep"])

    seeds = range(3)
    predictor = float(np.mean([best_test("predictor", seed) for seed in seeds]))
    random = float(np.mean([best_test("random", seed) for seed in seeds]))
    print(f"best test accuracy at 100 queries (3 seeds): predictor {predictor:.2f}, "
          f"random {random:.2f}")
    assert predictor > random
