from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from searchers import create_searcher
from searchers.reinforce import ReinforceSearch, inverse_cdf, mid_rank, welford
from searchers.testing import METRIC, SearcherConformance, drive
from spaces import Arch, SearchSpace, create_space

CONV = "nor_conv_3x3"


class TestLstmConformance(SearcherConformance):
    """The factorized default runs in test_conformance.py; the LSTM controller here."""

    @staticmethod
    def make_searcher(space: SearchSpace, **kwargs: Any) -> ReinforceSearch:
        return ReinforceSearch(space, policy="lstm", hidden_size=32, **kwargs)


def convs(arch: Arch) -> float:
    """Synthetic reward: edges of an NB201 cell carrying a 3x3 convolution."""
    return float(str(arch).count(CONV + "~"))


def make(policy: str = "factorized", seed: int = 0, **kw: Any) -> ReinforceSearch:
    return ReinforceSearch(
        create_space("nb201"), policy=policy, metric=METRIC, mode="max", seed=seed, **kw
    )


def reverse_completion(searcher: ReinforceSearch, space: SearchSpace, n: int) -> list[Arch]:
    """Suggest 4 at a time and complete each batch newest first."""
    archs: list[Arch] = []
    while len(archs) < n:
        batch = []
        for _ in range(4):
            trial_id = f"r{len(archs)}"
            config = searcher.suggest(trial_id)
            assert isinstance(config, dict)
            arch = space.from_config(config)
            archs.append(arch)
            batch.append((trial_id, arch))
        for trial_id, arch in reversed(batch):
            searcher.on_trial_complete(trial_id, {METRIC: convs(arch)})
    return archs


def test_module_import_does_not_load_torch() -> None:
    code = "import searchers.reinforce, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_inverse_cdf() -> None:
    probs = np.array([0.2, 0.0, 0.5, 0.3])
    assert [inverse_cdf(probs, u) for u in (0.0, 0.19, 0.2, 0.69, 0.7, 0.999999)] == [
        0,
        0,
        2,
        2,
        3,
        3,
    ]
    draws = [inverse_cdf(probs, u) for u in np.random.default_rng(0).random(4000)]
    assert np.allclose(np.bincount(draws, minlength=4) / 4000, probs, atol=0.03)


def test_welford_matches_numpy() -> None:
    xs = np.random.default_rng(1).normal(90, 3, size=50)
    stats = [0.0, 0.0, 0.0]
    for x in xs:
        stats = welford(stats, float(x))
    assert stats[0] == 50
    assert stats[1] == pytest.approx(xs.mean())
    assert stats[2] / stats[0] == pytest.approx(xs.var())


def test_mid_rank() -> None:
    assert mid_rank([1.0], 1.0) == 0.5
    assert mid_rank([1.0, 2.0, 3.0, 4.0], 4.0) == 0.875
    assert mid_rank([1.0, 2.0, 3.0, 4.0], 1.0) == 0.125
    assert mid_rank([2.0, 2.0], 2.0) == 0.5


def test_rank_reward_ignores_the_scale_of_scores() -> None:
    """Rank rewards: the same updates whatever monotone transform the scores went through."""
    space = create_space("nb201")
    plain = drive(make(seed=3), space, 40, score=convs)
    squashed = drive(make(seed=3), space, 40, score=lambda a: 1000.0 * convs(a) ** 3 - 7)
    assert plain == squashed
    raw = drive(make(seed=3, reward="raw"), space, 40, score=lambda a: 1000.0 * convs(a) ** 3)
    assert raw != plain


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"policy": "transformer"}, "policy"),
        ({"lr": 0.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"baseline_decay": 1.0}, "baseline_decay"),
        ({"baseline_decay": -0.1}, "baseline_decay"),
        ({"entropy_weight": -1e-3}, "entropy_weight"),
        ({"hidden_size": 0}, "hidden_size"),
        ({"temperature": 0}, "temperature"),
        ({"tanh_constant": -2.5}, "tanh_constant"),
        ({"normalize_rewards": 1}, "normalize_rewards"),
        ({"reward": "log"}, "reward"),
    ],
)
def test_options_validated(options: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        make(**options)


def test_options_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        ReinforceSearch(create_space("nb201"), "lstm")  # type: ignore[misc]


def test_defaults_per_policy() -> None:
    assert make().options == {
        "policy": "factorized",
        "lr": 0.15,
        "baseline_decay": 0.9,
        "entropy_weight": 0.0,
        "hidden_size": 64,
        "temperature": 1.0,
        "tanh_constant": 0.0,
        "normalize_rewards": True,
        "reward": "rank",
    }
    lstm = create_searcher("reinforce", create_space("nb201"), policy="lstm", seed=0)
    assert isinstance(lstm, ReinforceSearch)
    assert (lstm.options["lr"], lstm.options["temperature"], lstm.options["tanh_constant"]) == (
        0.005,
        5.0,
        2.5,
    )
    assert make("lstm", tanh_constant=0, temperature=1).options["tanh_constant"] == 0.0


@pytest.mark.parametrize("policy", ["factorized", "lstm"])
def test_policy_learns_the_rewarded_operation(policy: str) -> None:
    space = create_space("nb201")
    archs = drive(make(policy), space, 150, score=convs)
    first = np.mean([convs(a) for a in archs[:30]])
    last = np.mean([convs(a) for a in archs[-30:]])
    assert last > first + 1.5, (first, last)


def test_out_of_order_completions_under_concurrency() -> None:
    space = create_space("nb201")
    searcher = make()
    archs = reverse_completion(searcher, space, 120)
    assert len({space.canonical(a) for a in archs}) == len(archs)
    assert searcher.get_state()["algorithm"]["vectors"] == {}  # every pending one observed
    assert np.mean([convs(a) for a in archs[-24:]]) > np.mean([convs(a) for a in archs[:24]]) + 1
    assert float(searcher.probabilities()[0][space.decisions[0].choices.index(CONV)]) > 0.3


@pytest.mark.parametrize("policy", ["factorized", "lstm"])
def test_state_json_round_trip_with_pending_trials(policy: str) -> None:
    space = create_space("nb201")
    reference = make(policy, seed=4)
    searcher = make(policy, seed=4)
    for s in (reference, searcher):
        drive(s, space, 12, score=convs)
        for i in range(3):  # left pending across the save
            assert isinstance(s.suggest(f"p{i}"), dict)
    state = json.loads(json.dumps(searcher.get_state()))
    fresh = make(policy, seed=123, lr=0.3, baseline_decay=0.5)
    fresh.set_state(state)
    assert fresh.get_state() == state
    assert fresh.options == reference.options
    for s in (reference, fresh):
        for i in reversed(range(3)):
            text = s.get_state()["pending"][f"p{i}"]
            s.on_trial_complete(f"p{i}", {METRIC: convs(text)})
    assert drive(fresh, space, 10, score=convs, prefix="u") == drive(
        reference, space, 10, score=convs, prefix="u"
    )
    assert fresh.get_state() == reference.get_state()


def test_failed_trial_gives_no_update() -> None:
    searcher = make()
    searcher.suggest("a")
    searcher.on_trial_complete("a", {METRIC: 1.0})
    searcher.suggest("b")
    before = searcher.get_state()["algorithm"]
    searcher.on_trial_complete("b", error=True)
    after = searcher.get_state()["algorithm"]
    assert after["controller"] == before["controller"]
    assert after["baseline"] == before["baseline"]
    assert after["vectors"] == {}


@pytest.mark.parametrize("policy", ["factorized", "lstm"])
def test_pretraining_on_recorded_rewards(policy: str) -> None:
    space = create_space("nb201")
    rng = np.random.default_rng(5)
    searcher = make(policy)
    k = space.decisions[0].choices.index(CONV)
    before = searcher.probabilities()[0][k]
    for _ in range(60):
        arch = space.sample(rng)  # never proposed by this searcher
        searcher.add_evaluated_point(space.to_config(arch), convs(arch))
    assert searcher.probabilities()[0][k] > before + 0.1


def test_global_torch_settings_untouched() -> None:
    import torch

    rng_state, threads = torch.random.get_rng_state(), torch.get_num_threads()
    searcher = make("lstm")
    drive(searcher, create_space("nb201"), 5, score=convs)
    assert torch.equal(rng_state, torch.random.get_rng_state())
    assert torch.get_num_threads() == threads
