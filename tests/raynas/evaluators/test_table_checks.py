"""Tables are checked when the evaluator is built: conflicting rows refused, small ones warned."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from raynas.evaluators.base import TabularEvaluator
from spaces.nb201.space import NB201Space

A = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|" \
    "skip_connect~2|"
B = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|" \
    "skip_connect~2|"
HEADER = "index,arch_str,val_acc_200ep,test_acc_200ep\n"


def test_identical_repeated_rows_are_taken_once(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text(HEADER + f"0,{A},90.5,93.0\n1,{B},,80.0\n2,{A},90.5,93.0\n3,{B},,80.0\n")
    ev = TabularEvaluator(NB201Space(), table_path=table)
    assert ev.evaluate(A)["val_acc"] == 90.5
    assert list(ev.table()["arch_str"]) == [A, B]


def test_conflicting_rows_are_refused_naming_file_and_lines(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text(HEADER + f"0,{A},90.5,93.0\n1,{B},85.0,88.0\n2,{B},85.0,88.5\n")
    with pytest.raises(ValueError, match=rf"table '{table}' has two different rows for arch_str "
                                         r"'\|avg_pool_3x3~0.*' \(lines 3 and 4\); keep one"):
        TabularEvaluator(NB201Space(), table_path=table)


def test_a_table_covering_little_of_the_space_is_warned_about_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    table = tmp_path / "t.csv"
    table.write_text(HEADER + f"0,{A},90.5,93.0\n1,{B},85.0,88.0\n")
    with caplog.at_level(logging.WARNING, logger="raynas.evaluators.base"):
        TabularEvaluator(NB201Space(), table_path=table)
    (record,) = [r for r in caplog.records if "covers" in r.getMessage()]
    message = record.getMessage()
    assert "\n" not in message
    assert f"table '{table}' covers 2 of the 15625 architectures of space 'nb201'" in message


@pytest.mark.data
def test_the_full_table_is_not_warned_about(
    nb201_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="raynas.evaluators.base"):
        TabularEvaluator(NB201Space(), table_path=nb201_dir)
    assert not [r for r in caplog.records if "covers" in r.getMessage()]
