"""Input checks of the config: bounded quoting, YAML limits, objectives, names, stores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from raynas.run.config import (
    MAX_YAML_VALUES,
    ConfigError,
    check_tracking_uri_form,
    check_writable,
    load_config,
    parse_config,
    short,
)
from spaces.params.decisions import short as spaces_short

BASE = {"space": "nb201", "searcher": "random", "evaluator": {"name": "training", "epochs": 1}}
BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi")
)


@pytest.mark.parametrize("cut", [short, spaces_short])
def test_short_quotes_any_value_within_its_limit(cut) -> None:  # type: ignore[no-untyped-def]
    bomb = yaml.safe_load(BOMB)  # shared lists: small in memory, 9**9 items when printed
    for value, limit in ((bomb, 200), ("x" * 10_000, 200), (list(range(10**6)), 80),
                         ({"k": ["v"] * 1000}, 50)):
        text = cut(value, limit)
        assert len(text) <= limit
    assert cut("val_acc", 200) == "'val_acc'"
    assert cut([1, 2], 200) == "[1, 2]"


def test_yaml_aliases_within_the_limit_load_and_merge_keys_are_not_repeats(
    tmp_path: Path,
) -> None:
    path = tmp_path / "anchors.yaml"
    path.write_text(
        "space: nb201\nsearcher: random\n"
        "common: &common {name: training, epochs: 1}\n"
        "evaluator: {<<: *common, dataset: digits}\n"
    )
    with pytest.raises(ConfigError, match="unknown config field 'common'"):
        load_config(path)  # read fine: only the extra field is refused
    path.write_text("space: nb201\nsearcher: random\nevaluator: &e {name: training}\n"
                    "searchers: null\n")
    with pytest.raises(ConfigError, match="exactly one of 'searcher'"):
        load_config(path)


def test_the_yaml_value_limit_counts_expanded_aliases(tmp_path: Path) -> None:
    path = tmp_path / "wide.yaml"
    # Four levels of ten: 11,111 values once expanded, well within the limit.
    text = "a: &a [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n" + "".join(
        f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abc", "bcd")
    )
    path.write_text(text)
    with pytest.raises(ConfigError, match="unknown config field 'a'"):
        load_config(path)
    path.write_text(text + f"e: [{', '.join(['*d'] * (MAX_YAML_VALUES // 11_111 + 1))}]\n")
    with pytest.raises(ConfigError, match=f"holds more than {MAX_YAML_VALUES} values"):
        load_config(path)


@pytest.mark.parametrize(
    ("metric", "mode", "message"),
    [
        (["val_acc", "val_acc"], ["max", "min"], "lists 'val_acc' twice \\(modes max and min\\)"),
        (["val_acc", "val_acc"], "max", "lists 'val_acc' twice; name each objective once"),
        (["val_acc", "params", "val_acc"], ["max", "min", "max"], "lists 'val_acc' twice"),
    ],
)
def test_an_objective_named_twice_is_refused(metric: list, mode: object, message: str) -> None:
    with pytest.raises(ConfigError, match=f"config field 'metric' {message}"):
        parse_config({**BASE, "metric": metric, "mode": mode})


def test_two_distinct_objectives_still_parse() -> None:
    cfg = parse_config({**BASE, "metric": ["val_acc", "params"], "mode": ["max", "min"]})
    assert cfg.metric == ("val_acc", "params") and cfg.mode == ("max", "min")


@pytest.mark.parametrize("name", ["../x", "/tmp/x", "a/b", "..", ".", "a\\b", "tab\there",
                                  "n" * 201])
def test_a_name_must_be_one_folder_name(name: str) -> None:
    with pytest.raises(ConfigError, match="config field 'name' must be one folder name"):
        parse_config({**BASE, "name": name})


@pytest.mark.parametrize("name", ["nb201-rea", "café run", "a..b", ".hidden", "n" * 200])
def test_ordinary_names_pass(name: str) -> None:
    assert parse_config({**BASE, "name": name}).name == name


@pytest.mark.parametrize("uri", ["sqlite:////abs/m.db", "sqlite:///rel.db", "http://h:5000",
                                 "https://h", "databricks", "postgresql://u@h/db"])
def test_database_and_server_uris_pass(uri: str) -> None:
    assert check_tracking_uri_form(uri, "X") == uri


@pytest.mark.parametrize(("uri", "instead"), [
    ("file:///data/mlruns", "sqlite:////data/mlflow.db"),
    ("/data/mlruns", "sqlite:////data/mlflow.db"),
    ("file:relative/mlruns", "sqlite:///"),
])
def test_file_store_uris_name_the_field_and_the_sqlite_uri(uri: str, instead: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({**BASE, "tracking": {"uri": uri}})
    assert str(info.value).startswith(f"config field 'tracking.uri' is {uri!r}, a file store")
    assert f"e.g. {instead}" in str(info.value)


def test_resolved_uri_names_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "./mlruns")
    with pytest.raises(ConfigError, match="^MLFLOW_TRACKING_URI is './mlruns', a file store"):
        parse_config(BASE).resolved_tracking_uri()


def test_a_misspelled_scheduler_option_fails_when_parsing() -> None:
    with pytest.raises(ConfigError, match="'scheduler.grace_periode' is not an option of asha"):
        parse_config({**BASE, "scheduler": {"name": "asha", "grace_periode": 1}})
    with pytest.raises(ConfigError, match="'scheduler': Reduction Factor not valid"):
        parse_config({**BASE, "scheduler": {"name": "hyperband", "reduction_factor": 1}})
    cfg = parse_config({**BASE, "scheduler": {"name": "asha", "grace_period": 2, "max_t": 8}})
    assert cfg.scheduler is not None and cfg.scheduler.options == {"grace_period": 2, "max_t": 8}


@pytest.mark.parametrize(("budget", "message"), [
    ({"cpus_per_trial": 0}, "'budget.cpus_per_trial' must be > 0, got 0"),
    ({"cpus_per_trial": -1}, "'budget.cpus_per_trial' must be > 0, got -1"),
    ({"cpus_per_trial": "1"}, "'budget.cpus_per_trial' must be a number > 0, got '1'"),
    ({"gpus_per_trial": -0.5}, "'budget.gpus_per_trial' must be >= 0, got -0.5"),
    ({"gpus_per_trial": float("nan")}, "'budget.gpus_per_trial' must be a number >= 0"),
    ({"concurrency": 0}, "'budget.concurrency' must be an integer >= 1, got 0"),
])
def test_budget_resources_are_checked(budget: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({**BASE, "budget": budget})
    assert parse_config({**BASE, "budget": {"cpus_per_trial": 0.5}}).budget.cpus_per_trial == 0.5


def test_check_writable_names_the_path_and_creates_nothing(tmp_path: Path) -> None:
    check_writable(tmp_path / "a" / "b" / "m.db", "store", folder=False)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=f"store '{tmp_path}/file/m.db' cannot be created: "
                                          f"'{tmp_path}/file' is not a directory"):
        check_writable(tmp_path / "file" / "m.db", "store", folder=False)
    with pytest.raises(ConfigError, match=f"out '{tmp_path}/file' is not a directory"):
        check_writable(tmp_path / "file", "out", folder=True)
    with pytest.raises(ConfigError, match=f"store '{tmp_path}' is a directory"):
        check_writable(tmp_path, "store", folder=False)
    if os.geteuid() != 0:  # root writes through any file mode
        (tmp_path / "locked").mkdir(mode=0o555)
        with pytest.raises(ConfigError, match="no permission to write"):
            check_writable(tmp_path / "locked" / "m.db", "store", folder=False)
