from __future__ import annotations

from pathlib import Path

import pytest

from raynas.run.config import ConfigError, load_config, parse_config

BASE = {"space": "nb201", "searcher": "random", "evaluator": {"name": "training", "epochs": 1}}


def test_defaults_and_components() -> None:
    cfg = parse_config({**BASE, "searcher": {"name": "rea", "population_size": 4}})
    assert cfg.space.name == "nb201" and cfg.space.options == {}
    assert cfg.searcher.options == {"population_size": 4}
    assert cfg.evaluator.options == {"epochs": 1}
    assert cfg.budget.trials == 20 and cfg.mode == "max"
    assert parse_config(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"budget": {"trials": -3}}, "'budget.trials' must be an integer >= 1, got -3"),
        ({"budget": {"concurrency": 0}}, "'budget.concurrency'"),
        ({"budget": {"trails": 3}}, "unknown config field 'budget.trails'"),
        ({"serach": 1}, "unknown config field 'serach'"),
        ({"mode": "maximise"}, "'mode' must be 'min' or 'max'"),
        ({"space": {"channels": 3}}, "'space.name' must name a space"),
        ({"searcher": 5}, "'searcher' must be a name or a mapping"),
        ({"seed": "zero"}, "'seed' must be an integer"),
        ({"tracking": {"uri": ""}}, "'tracking.uri'"),
    ],
)
def test_bad_fields_are_named(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({**BASE, **change})


def test_missing_section() -> None:
    with pytest.raises(ConfigError, match="'evaluator' is required"):
        parse_config({"space": "nb201", "searcher": "random"})


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("space: [nb201\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_config(listing)


def test_relative_sqlite_uri_becomes_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = parse_config({**BASE, "tracking": {"uri": "sqlite:///runs/m.db"}})
    assert cfg.resolved_tracking_uri() == f"sqlite:///{tmp_path / 'runs/m.db'}"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert parse_config(BASE).resolved_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"


EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "examples").glob("*.yaml"))


@pytest.mark.data
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_configs_build(
    path: Path, nb201_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from raynas.run.config import load_config
    from raynas.run.runner import build_components

    monkeypatch.chdir(path.parents[1])  # examples name the tables relative to the repository
    cfg = load_config(path)
    comps = build_components(cfg)
    assert comps.space.name == cfg.space.name
    assert len(cfg.searcher_labels) == max(1, len(cfg.portfolio))
