"""`raynas submit` checks that need no cluster: the tracking URI the job gets, the entrypoint,
the working dir, and one-line errors (the real submission is in tests/cluster/test_submit.py)."""

from __future__ import annotations

import shlex
import socket
from pathlib import Path

import pytest
import yaml

from raynas.cli.jobs import build_entrypoint, job_tracking_uri, submit_search
from raynas.cli.main import main
from raynas.run.config import ConfigError

CONFIG = {"name": "s", "space": "nb201", "searcher": "random",
          "evaluator": {"name": "supernet", "train_steps": 5}}


def _write(folder: Path, **extra: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "search.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, **extra}))
    return path


def test_job_tracking_uri_order_and_refusals() -> None:
    assert job_tracking_uri("http://a:5000", override="http://b:5000",
                            env_uri="http://c:5000") == "http://b:5000"
    assert job_tracking_uri("http://a:5000", env_uri="http://c:5000") == "http://a:5000"
    assert job_tracking_uri(None, env_uri="sqlite:////abs/m.db") == "sqlite:////abs/m.db"
    with pytest.raises(ConfigError, match="needs a tracking store"):
        job_tracking_uri(None)
    for relative in ("sqlite:///results/m.db", "./mlruns", "file:mlruns"):
        with pytest.raises(ConfigError, match="relative path"):
            job_tracking_uri(relative)


def test_entrypoint_quotes_its_arguments() -> None:
    line = build_entrypoint("my dir/search.yaml", "sqlite:////a b/m.db")
    assert shlex.split(line) == ["raynas", "run", "my dir/search.yaml", "--address", "auto",
                                 "--tracking-uri", "sqlite:////a b/m.db"]


def test_config_must_lie_inside_the_working_dir(tmp_path: Path) -> None:
    config = _write(tmp_path / "conf")
    (tmp_path / "code").mkdir()
    with pytest.raises(ConfigError, match="must lie inside --working-dir"):
        submit_search(config, address="http://127.0.0.1:1", working_dir=tmp_path / "code",
                      tracking_uri="http://127.0.0.1:5000")
    with pytest.raises(ConfigError, match="is not a folder"):
        submit_search(config, address="http://127.0.0.1:1", working_dir=tmp_path / "none",
                      tracking_uri="http://127.0.0.1:5000")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_submit_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    config = _write(tmp_path, tracking={"uri": "http://127.0.0.1:5000"})
    cases = [
        ([], "needs --address http://HEAD:8265"),
        (["--address", "head:8265"], "must be the Ray dashboard's URL"),
        (["--address", f"http://127.0.0.1:{_closed_port()}"], "cannot reach the Ray job server"),
        (["--address", "http://127.0.0.1:1", "--env", "NOEQUALS"], "--env must read KEY=VALUE"),
    ]
    for extra, message in cases:
        assert main(["submit", str(config), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    # A bad config is reported before any cluster is contacted.
    bad = _write(tmp_path / "bad", budget={"trials": -1})
    assert main(["submit", str(bad), "--address", "http://127.0.0.1:1"]) == 2
    assert "budget.trials" in capsys.readouterr().err
