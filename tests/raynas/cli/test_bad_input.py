"""Broken configs: the CLI prints one line naming the problem and exits 2, no traceback.

Each file in ``bad_configs/`` starts with ``# expect: <text the error must contain>``; every
one is refused before Ray starts and before any MLflow store, run or output folder exists.
The few cases a file cannot hold (a directory, binary bytes, a read-only filesystem, a
table beside the config) are built by the tests below.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import ray

from raynas.cli.main import main

BAD_CONFIGS = sorted((Path(__file__).parent / "bad_configs").glob("*.yaml"))
PREFIX = "# expect: "
MAX_LINE = 400  # quoted values are cut to ~200 characters; the whole line stays under this
VALID = {"space": "nb201", "searcher": "random",
         "evaluator": {"name": "training", "dataset": "digits"}, "budget": {"trials": 2}}


def _expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    if not first.startswith(PREFIX) or not first[len(PREFIX) :].strip():
        raise ValueError(f"{path.name} must start with '{PREFIX}<part of the error>'")
    return first[len(PREFIX) :].strip()


def test_the_corpus_covers_the_known_mistakes() -> None:
    names = {p.stem for p in BAD_CONFIGS}
    assert {
        "malformed_yaml", "unknown_top_level_field", "unknown_space", "unknown_searcher",
        "bad_budget", "metric_not_reported", "constraint_syntax", "duplicate_labels",
        "unknown_scheduler", "metric_duplicate_contradictory", "metric_duplicate_same_mode",
        "name_path_traversal", "name_absolute_path", "tracking_file_uri",
        "tracking_sqlite_under_a_file", "cpus_per_trial_zero", "cpus_per_trial_negative",
        "cpus_per_trial_text", "gpus_per_trial_negative", "concurrency_zero",
        "scheduler_misspelled_option", "yaml_alias_bomb", "long_value",
    } <= names
    assert len(BAD_CONFIGS) >= 40
    assert all(_expected(p) for p in BAD_CONFIGS)


def _refused(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], expected: str,
    keep: tuple[str, ...] = (),
) -> str:
    """Run the CLI in process; assert one bounded error line and nothing started or made."""
    ray_before = ray.is_initialized()
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("raynas: error: ")
    assert expected in lines[0]
    assert len(lines[0]) <= MAX_LINE, lines[0]
    assert "Traceback" not in out + err
    assert ray.is_initialized() is ray_before  # refused before Ray was started
    # The default store (MLFLOW_TRACKING_URI, tests/conftest.py) and output folder land in
    # tmp_path: nothing there means no MLflow store, parent run or output folder exists.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)
    return lines[0]


@pytest.mark.parametrize("path", BAD_CONFIGS, ids=lambda p: p.stem)
def test_bad_config_fails_with_one_clear_line(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # anything a config wrongly accepted would write lands here
    _refused(["run", str(path)], tmp_path, capsys, _expected(path))


def test_a_directory_or_binary_bytes_as_config_name_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "inputs"
    folder = inputs / "search.yaml"
    folder.mkdir(parents=True)
    latin1 = inputs / "latin1.yaml"
    latin1.write_bytes("name: café\nspace: nb201\n".encode("latin-1"))
    monkeypatch.chdir(tmp_path)
    _refused(["run", str(folder)], tmp_path, capsys,
             f"config file {str(folder)!r} is a directory", keep=("inputs",))
    line = _refused(["run", str(latin1)], tmp_path, capsys, f"config file {str(latin1)!r}",
                    keep=("inputs",))
    assert "is not UTF-8 text (byte 0xe9 at offset 9)" in line
    _refused(["run", str(inputs / "none.yaml")], tmp_path, capsys, "does not exist",
             keep=("inputs",))


def test_file_store_uris_are_refused_wherever_they_come_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "search.yaml"
    config.write_text(json.dumps(VALID))
    monkeypatch.chdir(tmp_path)
    keep = ("search.yaml",)
    _refused(["run", str(config), "--tracking-uri", "file:///srv/mlruns"], tmp_path, capsys,
             "--tracking-uri is 'file:///srv/mlruns', a file store, which MLflow 3 refuses: "
             "use a sqlite file, e.g. sqlite:////srv/mlflow.db", keep)
    _refused(["resume", "0123abcd", "--tracking-uri", "file:///srv/mlruns"], tmp_path, capsys,
             "--tracking-uri is 'file:///srv/mlruns', a file store", keep)
    _refused(["report", "0123abcd", "--tracking-uri", "/srv/mlruns"], tmp_path, capsys,
             "--tracking-uri is '/srv/mlruns', a file store", keep)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "file:///srv/mlruns")
    _refused(["run", str(config)], tmp_path, capsys,
             "MLFLOW_TRACKING_URI is 'file:///srv/mlruns', a file store", keep)
    _refused(["resume", "0123abcd"], tmp_path, capsys, "MLFLOW_TRACKING_URI is 'file:///srv",
             keep)


ARCHS = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
)


def test_a_table_with_conflicting_rows_is_refused_naming_file_and_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    table = inputs / "results.csv"
    table.write_text("index,arch_str,val_acc_200ep\n"
                     f"0,{ARCHS[0]},90.1\n1,{ARCHS[1]},85.0\n2,{ARCHS[0]},71.3\n")
    config = inputs / "search.yaml"
    config.write_text(json.dumps(
        {**VALID, "evaluator": {"name": "tabular", "table_path": str(table)}}
    ))
    monkeypatch.chdir(tmp_path)
    line = _refused(["run", str(config)], tmp_path, capsys,
                    f"table {str(table)!r} has two different rows for arch_str", ("inputs",))
    assert f"{ARCHS[0]!r} (lines 2 and 4)" in line


def _read_only_command(folder: Path, argv: list[str]) -> list[str]:
    """A command running ``argv`` (after python) with ``folder`` on a read-only filesystem.

    As root (who writes through any file mode) a read-only bind mount in a private mount
    namespace; otherwise a folder without write permission.
    """
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return [sys.executable, *argv]
    if shutil.which("unshare") is None:
        pytest.skip("running as root without unshare: no way to make a read-only filesystem")
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
               str(folder)]
    probe = subprocess.run([*command, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a read-only filesystem here: {probe.stderr.strip()}")
    return [*command, sys.executable, *argv]


DRIVER = """
import contextlib, io, json, sys
from raynas.cli.main import main
done = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    done.append([code, err.getvalue()])
print(json.dumps(done))
"""


def test_a_store_on_a_read_only_filesystem_is_refused_at_startup(tmp_path: Path) -> None:
    from raynas.tracking.store import Tracker
    from tests.raynas._store import runs

    store = tmp_path / "store"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    tracker = Tracker(uri, "raynas")  # a real store holding one search
    parent = tracker.start_search(name="earlier", params={}, tags={})
    tracker.end(parent)
    tracker.close()
    config = tmp_path / "search.yaml"
    config.write_text(json.dumps({**VALID, "tracking": {"uri": uri}}))
    work = tmp_path / "cwd"
    work.mkdir()
    calls = [["run", str(config)], ["resume", parent, "--tracking-uri", uri],
             ["run", str(config), "--tracking-uri", f"sqlite:///{store / 'new' / 'm.db'}"]]
    before = (store / "mlflow.db").read_bytes()
    try:
        proc = subprocess.run(
            _read_only_command(store, ["-c", DRIVER, json.dumps(calls)]), cwd=work,
            capture_output=True, text=True, timeout=300,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])},
        )
    finally:
        store.chmod(0o755)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.splitlines()[-1])
    for (code, err), what in zip(results, ("mlflow.db", "mlflow.db", "new/m.db")):
        lines = err.splitlines()
        assert code == 2 and len(lines) == 1, err
        assert lines[0].startswith(f"raynas: error: MLflow store '{store / what}' cannot be ")
        assert "read-only filesystem" in lines[0] or "no permission to write" in lines[0]
    assert list(work.iterdir()) == []  # no output folder: refused before the search began
    assert (store / "mlflow.db").read_bytes() == before
    assert [r.info.run_id for r in runs(uri)] == [parent]


def test_submit_refuses_a_file_store_naming_where_it_came_from() -> None:
    from raynas.cli.jobs import job_tracking_uri
    from raynas.run.config import ConfigError

    with pytest.raises(ConfigError, match="^MLFLOW_TRACKING_URI is 'file:///srv/mlruns', a file"):
        job_tracking_uri(None, env_uri="file:///srv/mlruns")
    with pytest.raises(ConfigError, match="^--tracking-uri is '/srv/mlruns', a file store"):
        job_tracking_uri("http://a:5000", override="/srv/mlruns")
    assert job_tracking_uri("sqlite:////srv/m.db") == "sqlite:////srv/m.db"


def test_an_error_from_elsewhere_is_printed_as_one_bounded_line() -> None:
    from raynas.cli.main import _one_line

    assert _one_line(RuntimeError("first\n  second\n\nthird")) == "first second third"
    long = _one_line(ValueError("x" * 100_000 + "; continue with: raynas resume ID"))
    assert len(long) <= 800 and " ... " in long
    assert long.endswith("continue with: raynas resume ID")  # the command to run survives
    assert _one_line(OSError()) == "OSError"
