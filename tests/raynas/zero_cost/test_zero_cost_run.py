"""The zero_cost evaluator, proxy tables and ``raynas zero-cost score``, for real on Ray."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from raynas.cli.main import main
from raynas.evaluators import create_evaluator
from raynas.run.config import parse_config
from raynas.run.runner import run_search
from raynas.zero_cost.evaluator import ZeroCostEvaluator
from raynas.zero_cost.scorer import ProxyScorer
from raynas.zero_cost.table import TableScorer, read_table, sample_archs
from spaces import create_space

TINY = {"channels": 4, "cells_per_stage": 1, "resolution": 8}
SPACE_OPTIONS = [f"{k}={v}" for k, v in TINY.items()]


@pytest.fixture(scope="module")
def space():  # type: ignore[no-untyped-def]
    return create_space("nb201", **TINY)


def test_evaluator_reports_each_proxy_and_its_cost(space) -> None:  # type: ignore[no-untyped-def]
    ev = create_evaluator("zero_cost", space, proxies="synflow,naswot,params",
                          dataset="digits", batch_size=16)
    assert isinstance(ev, ZeroCostEvaluator)
    assert ev.default_metric == ("synflow", "max")
    arch = space.sample(np.random.default_rng(0))
    out = ev.evaluate(arch)
    assert set(out) == set(ev.metrics)
    assert out["params"] == space.count_params(arch, num_classes=10, in_channels=1)
    assert all(out[f"ms_{p}"] > 0 for p in ("synflow", "naswot"))
    assert out["zero_cost_ms"] == pytest.approx(sum(out[f"ms_{p}"] for p in ev.proxies))
    again = ev.evaluate(arch)
    assert [again[p] for p in ev.proxies] == [out[p] for p in ev.proxies]  # seeded


def test_evaluator_refuses_an_unknown_proxy_in_one_line(space) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="synflw") as info:
        create_evaluator("zero_cost", space, proxies=["synflw"])
    assert "\n" not in str(info.value)


def test_sample_archs_is_distinct_and_seeded(space) -> None:  # type: ignore[no-untyped-def]
    a = sample_archs(space, 50, seed=3)
    assert len({space.canonical(x) for x in a}) == 50
    assert a == sample_archs(space, 50, seed=3)
    assert a != sample_archs(space, 50, seed=4)
    assert len(sample_archs(space, None, seed=0)) == 15625


@pytest.mark.ray
def test_score_command_writes_a_table_that_backs_a_search(
    space, tmp_path: Path, ray_session, capsys  # type: ignore[no-untyped-def]
) -> None:
    out = tmp_path / "proxies.parquet"
    code = main(["zero-cost", "score", "--space", "nb201", *sum(
        (["--space-option", o] for o in SPACE_OPTIONS), []),
        "--proxies", "synflow,params", "--archs", "6", "--chunk", "2",
        "--dataset", "digits", "-o", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    assert "6/6" in captured.err and "scored 6 architectures" in captured.out
    rows, settings = read_table(out)
    assert len(rows) == 6 and settings["proxies"] == ["synflow", "params"]
    assert settings["archs"] == 6 and settings["seed"] == 0
    # Parallel Ray tasks give what one process computes: scoring is seeded per architecture.
    scorer = ProxyScorer(space, ["synflow", "params"], dataset="digits")
    first = next(iter(rows))
    direct = scorer.score(space.from_string(first))
    assert rows[first]["synflow"] == pytest.approx(direct["synflow"], rel=1e-9)
    assert rows[first]["params"] == direct["params"]

    # The table backs the evaluator (values and recorded cost read, not recomputed) ...
    ev = ZeroCostEvaluator(space, ["synflow", "params"], table=str(out))
    got = ev.evaluate(space.from_string(first))
    assert got["synflow"] == rows[first]["synflow"]
    assert got["ms_synflow"] == rows[first]["ms_synflow"]
    # ... and a searcher's scorer, which charges each architecture once.
    lookup = TableScorer(space, out)
    keys = list(rows)[:3]
    values = lookup([space.from_string(k) for k in keys + keys])
    assert values.shape == (6, 2) and lookup.names == ["params", "synflow"]
    charged = sum(rows[k]["ms_params"] + rows[k]["ms_synflow"] for k in keys) / 1000
    assert lookup.seconds == pytest.approx(charged)


def test_score_command_bad_input_is_one_line(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code = main(["zero-cost", "score", "--space", "nb201", "--proxies", "synflow,bogus",
                 "-o", str(tmp_path / "x.parquet")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bogus" in err
    with pytest.raises(ValueError, match="does not exist"):
        read_table(tmp_path / "missing.parquet")


@pytest.mark.ray
def test_a_search_maximises_a_proxy_through_raynas_run(tmp_path: Path, ray_session) -> None:
    cfg = parse_config({
        "name": "zc",
        "space": {"name": "nb201", **TINY},
        "searcher": {"name": "regularized_evolution", "population_size": 4,
                     "tournament_size": 2},
        "evaluator": {"name": "zero_cost", "proxies": ["synflow", "params"],
                      "dataset": None},
        "budget": {"trials": 8, "concurrency": 2, "cpus_per_trial": 0.5},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
        "output_dir": str(tmp_path / "out"),
    })
    result = run_search(cfg, echo=lambda line: None)
    assert result.num_trials == 8 and result.num_failed == 0
    assert result.metric == "synflow"
    best = max(row["synflow"] for row in result.rows)
    assert result.best_metrics["synflow"] == best
    assert all(math.isfinite(row["ms_synflow"]) for row in result.rows)


@pytest.mark.ray
def test_yaml_warm_start_and_predictor_with_proxies(tmp_path: Path, ray_session) -> None:
    import json

    from raynas.run.runner import STATE_FILE

    def config(name: str, searcher: dict) -> dict:  # type: ignore[type-arg]
        return {
            "name": name,
            "space": {"name": "nb201", **TINY},
            "searcher": searcher,
            "evaluator": {"name": "zero_cost", "proxies": ["params"], "dataset": None},
            "budget": {"trials": 6, "concurrency": 1, "cpus_per_trial": 0.5},
            "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
            "output_dir": str(tmp_path / name),
        }

    warm = parse_config(config("warm", {
        "name": "regularized_evolution", "population_size": 4,
        "warm_start": {"proxies": ["synflow"], "dataset": None, "screen": 30, "top": 3}}))
    result = run_search(warm, echo=lambda line: None)
    assert result.num_trials == 6 and result.num_failed == 0
    state = json.loads(next((tmp_path / "warm").glob(f"warm-*/{STATE_FILE}")).read_text())
    assert state["searcher"] == "ZeroCostWarmStart"
    screened = [text for text, _ in state["algorithm"]["screened"]]
    assert len(screened) == 30 and state["algorithm"]["proxy_seconds"] > 0
    assert [row["arch"] for row in result.rows[:3]] == screened[:3]

    pred = parse_config(config("pred", {
        "name": "bananas", "initial_size": 3, "batch_size": 2, "ensemble_size": 2,
        "screen": 20, "mutation_candidates": 10, "random_candidates": 10,
        "zero_cost": {"proxies": ["synflow", "flops"], "dataset": None}}))
    result = run_search(pred, echo=lambda line: None)
    assert result.num_trials == 6 and result.num_failed == 0
    state = json.loads(next((tmp_path / "pred").glob(f"pred-*/{STATE_FILE}")).read_text())
    assert len(state["algorithm"]["proxies"]) >= 20 and state["algorithm"]["screened"]


def test_bad_zero_cost_searcher_options_are_one_line(tmp_path: Path) -> None:
    from raynas.run.config import ConfigError
    from raynas.run.runner import build_components

    base = {"name": "x", "space": {"name": "nb201", **TINY},
            "evaluator": {"name": "zero_cost", "proxies": ["params"], "dataset": None},
            "budget": {"trials": 2}}
    cases = [
        ({"name": "regularized_evolution", "warm_start": {"proxies": ["synflw"]}}, "synflw"),
        ({"name": "regularized_evolution", "warm_start": {"screens": 10}}, "screens"),
        ({"name": "regularized_evolution", "zero_cost": {"proxies": ["synflow"]}},
         "takes no proxy scorer"),
        ({"name": "predictor", "zero_cost": {"proxies": ["naswot"], "dataset": None}},
         "needs data"),
        ({"name": "predictor", "zero_cost": {"table": str(tmp_path / "no.parquet")}},
         "does not exist"),
    ]
    for searcher, needle in cases:
        with pytest.raises(ConfigError, match=needle) as info:
            build_components(parse_config({**base, "searcher": searcher}))
        assert "\n" not in str(info.value)
