"""benchmarks/ofa_ranking.py: its sub-network draw and argument checks (the run is manual)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import ofa_ranking  # noqa: E402

from spaces import create_space  # noqa: E402


def test_subnets_are_distinct_seeded_and_valid() -> None:
    archs = ofa_ranking.draw_subnets(30, seed=0)
    space = create_space(**ofa_ranking.SPACE)
    assert len({space.canonical(a) for a in archs}) == 30
    assert archs == ofa_ranking.draw_subnets(30, seed=0) != ofa_ranking.draw_subnets(30, seed=1)
    assert space.provides("shrinking_order")


@pytest.mark.parametrize(("kw", "match"), [({"subnets": 2}, "subnets"), ({"steps": 0}, "steps"),
                                           ({"threads": 0}, "threads")])
def test_bad_arguments(kw: dict[str, int], match: str) -> None:
    args = {"steps": 5, "subnets": 3, "seed": 0, "train_epochs": 1, "threads": 1, **kw}
    with pytest.raises(ValueError, match=match):
        ofa_ranking.ofa_vs_spos(**args)
