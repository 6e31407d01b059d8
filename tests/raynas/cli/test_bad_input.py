"""Broken configs: the CLI prints one line naming the problem and exits 2, no traceback.

Each file in ``bad_configs/`` starts with ``# expect: <text the error must contain>``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from raynas.cli.main import main

BAD_CONFIGS = sorted((Path(__file__).parent / "bad_configs").glob("*.yaml"))
PREFIX = "# expect: "


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
        "unknown_scheduler",
    } <= names
    assert all(_expected(p) for p in BAD_CONFIGS)


@pytest.mark.parametrize("path", BAD_CONFIGS, ids=lambda p: p.stem)
def test_bad_config_fails_with_one_clear_line(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # anything a config wrongly accepted would write lands here
    assert main(["run", str(path)]) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("raynas: error: ")
    assert _expected(path) in lines[0]
    assert "Traceback" not in out + err
    assert list(tmp_path.iterdir()) == []  # failed before any MLflow store or output folder
