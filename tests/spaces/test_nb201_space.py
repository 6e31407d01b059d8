from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest

from spaces import create_space, list_spaces
from spaces.nb201.space import NB201_OPS, NB201Space

ARCH = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
)


@pytest.fixture
def space() -> NB201Space:
    return create_space("nb201")  # type: ignore[return-value]


def test_registry_lists_and_rejects() -> None:
    assert "nb201" in list_spaces()
    with pytest.raises(ValueError, match="unknown space 'nope'; available: .*nb201"):
        create_space("nope")


def test_round_trips(space: NB201Space) -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        arch = space.sample(rng)
        assert space.decode(space.encode(arch)) == arch
        assert space.from_config(space.to_config(arch)) == arch
        assert space.from_string(space.to_string(arch)) == arch
    assert space.to_config(ARCH)["op/2"] == "avg_pool_3x3"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown operation 'conv'"),
        ("|none~0|+|none~0|none~1|", "3 nodes"),
        ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "must read from node 0"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", "must have 2 inputs"),
        (42, "is a string"),
    ],
)
def test_validation_names_the_problem(space: NB201Space, bad: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        space.validate(bad)


def test_config_errors(space: NB201Space) -> None:
    config = space.to_config(ARCH)
    with pytest.raises(ValueError, match="lacks key 'op/5'"):
        space.from_config({k: v for k, v in config.items() if k != "op/5"})
    with pytest.raises(ValueError, match="'op/0' .* value 'conv5x5'"):
        space.from_config({**config, "op/0": "conv5x5"})
    with pytest.raises(ValueError, match="out of range"):
        space.decode([0, 0, 0, 0, 0, 5])


def test_sampling_covers_every_op(space: NB201Space) -> None:
    rng = np.random.default_rng(1)
    vectors = np.array([space.encode(space.sample(rng)) for _ in range(300)])
    for edge in range(6):
        assert set(vectors[:, edge]) == set(range(len(NB201_OPS)))


def test_mutation_is_one_valid_change(space: NB201Space) -> None:
    rng = np.random.default_rng(2)
    for _ in range(200):
        arch = space.sample(rng)
        child = space.mutate(arch, rng)
        space.validate(child)
        assert space.canonical(child) != space.canonical(arch)
        assert int((space.encode(child) != space.encode(arch)).sum()) == 1


def test_crossover_takes_genes_from_parents(space: NB201Space) -> None:
    rng = np.random.default_rng(3)
    a, b = space.sample(rng), space.sample(rng)
    child = space.encode(space.crossover(a, b, rng))
    assert all(c in (x, y) for c, x, y in zip(child, space.encode(a), space.encode(b)))


def test_neighbours_are_distinct_computations(space: NB201Space) -> None:
    neighbours = space.neighbours(ARCH)
    keys = {space.canonical(n) for n in neighbours}
    assert len(keys) == len(neighbours) and space.canonical(ARCH) not in keys
    assert 0 < len(neighbours) <= 6 * 4


def test_isomorphic_cells_share_canonical_form(space: NB201Space) -> None:
    # A skip edge forwards its input, so conv(node 1) with node 1 = input is conv(input).
    a = "|skip_connect~0|+|none~0|nor_conv_3x3~1|+|none~0|none~1|skip_connect~2|"
    b = "|skip_connect~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|skip_connect~2|"
    assert a != b
    assert space.canonical(a) == space.canonical(b)
    dead = "|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|"
    dead2 = "|avg_pool_3x3~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|"
    assert space.canonical(dead) == space.canonical(dead2)
    assert space.canonical(ARCH) != space.canonical(a)


def test_size_and_distinct_computations(space: NB201Space) -> None:
    archs = list(space.enumerate())
    assert space.size == len(archs) == 15625
    assert len({space.canonical(a) for a in archs}) == 6466


@pytest.mark.data
def test_strings_equal_the_public_table(space: NB201Space, nb201_dir) -> None:
    with open(nb201_dir / "cifar10.csv") as f:
        table = [row["arch_str"] for row in csv.DictReader(f)]
    assert len(table) == 15625
    assert set(table) == set(space.enumerate())
    for text in table[:200]:
        assert space.decode(space.encode(text)) == text


def test_import_spaces_stays_light() -> None:
    code = "import spaces, spaces.nb201.space, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_is_connected(space: NB201Space) -> None:
    assert space.is_connected(ARCH)
    assert not space.is_connected("|none~0|+|none~0|none~1|+|none~0|none~1|avg_pool_3x3~2|")
    assert not space.is_connected("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert space.is_connected("|none~0|+|skip_connect~0|none~1|+|none~0|none~1|avg_pool_3x3~2|")
