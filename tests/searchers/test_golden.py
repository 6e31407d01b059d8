"""Golden determinism: seeded searches on the real NAS-Bench-201 table give stored results.

The expected values come from a run of this very protocol (100 queries, the searcher sees
``val_acc_200ep`` from ``cifar10.csv``). A change here means the searchers' behaviour
changed (RNG use, mutation, tournament, de-duplication): update the values only when
that change is intended, and say so in the changelog.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest

from searchers import create_searcher
from spaces import create_space

TABLE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "nb201" / "cifar10.csv"
METRIC = "val_acc_200ep"
QUERIES = 100
REA = ("regularized_evolution", {"population_size": 20, "tournament_size": 5})
RANDOM = ("random", {})

# (searcher, options, seed) -> (returned arch, its val_acc_200ep, sha256[:16] of the sequence)
GOLDEN = [
    (
        *REA,
        0,
        "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|",
        91.33,
        "0e0495156696f708",
    ),
    (
        *REA,
        1,
        "|skip_connect~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
        "+|nor_conv_3x3~0|skip_connect~1|nor_conv_1x1~2|",
        90.74,
        "f54e990370ea4ddd",
    ),
    (
        *REA,
        2,
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
        "+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|",
        91.32,
        "11a634d466bd06cb",
    ),
    (
        *RANDOM,
        0,
        "|none~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|skip_connect~1|nor_conv_3x3~2|",
        90.51,
        "6dd27f212660f972",
    ),
    (
        *RANDOM,
        1,
        "|nor_conv_1x1~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_1x1~2|",
        90.14,
        "c41d71e5568f216b",
    ),
    (
        *RANDOM,
        2,
        "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|"
        "+|nor_conv_3x3~0|nor_conv_1x1~1|skip_connect~2|",
        90.8,
        "902d85dcf7c3f7ac",
    ),
]


@pytest.fixture(scope="module")
def val_table() -> dict[str, float]:
    if not TABLE.is_file():
        pytest.skip(f"NAS-Bench-201 table not found at {TABLE} (shared data not checked out)")
    with open(TABLE, newline="") as f:
        return {row["arch_str"]: float(row[METRIC]) for row in csv.DictReader(f)}


@pytest.mark.data
@pytest.mark.parametrize(
    ("name", "options", "seed", "arch", "value", "digest"),
    GOLDEN,
    ids=[f"{g[0]}-seed{g[2]}" for g in GOLDEN],
)
def test_seeded_search_matches_golden(
    val_table: dict[str, float],
    name: str,
    options: dict[str, int],
    seed: int,
    arch: str,
    value: float,
    digest: str,
) -> None:
    space = create_space("nb201")
    searcher = create_searcher(name, space, metric=METRIC, mode="max", seed=seed, **options)
    sequence = []
    for i in range(QUERIES):
        config = searcher.suggest(f"t{i}")
        assert isinstance(config, dict)
        proposed = space.from_config(config)
        sequence.append(proposed)
        searcher.on_trial_complete(f"t{i}", {METRIC: val_table[proposed]})

    assert len({space.canonical(a) for a in sequence}) == QUERIES  # never a repeat
    assert searcher.best == (arch, value)
    assert hashlib.sha256("\n".join(sequence).encode()).hexdigest()[:16] == digest
