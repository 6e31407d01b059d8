from __future__ import annotations

import json

import numpy as np
import pytest

from spaces import SearchSpace, create_space, list_spaces
from spaces.mobilenet import MobileNetArch, MobileNetSpace


@pytest.fixture(scope="module")
def space() -> MobileNetSpace:
    return MobileNetSpace()


def _arch(depths, kernels=None, expands=None) -> MobileNetArch:
    return MobileNetArch(tuple(depths), tuple(kernels or [3] * 20), tuple(expands or [3] * 20))


def test_registered_and_created_by_name() -> None:
    assert "mobilenet" in list_spaces()
    space = create_space("mobilenet", resolution=32)
    assert isinstance(space, MobileNetSpace)
    assert space.resolution == 32


def test_decisions_layout(space: MobileNetSpace) -> None:
    names = [d.name for d in space.decisions]
    assert names[:5] == [f"depth/{s}" for s in range(5)]
    assert names[5:25] == [f"ks/{b}" for b in range(20)]
    assert names[25:] == [f"e/{b}" for b in range(20)]
    assert space.decisions[0].choices == (2, 3, 4)
    assert space.decisions[5].choices == (3, 5, 7)
    assert space.decisions[25].choices == (3, 4, 6)


def test_size(space: MobileNetSpace) -> None:
    assert space.dims == (3,) * 45
    assert space.size == 3**45
    assert space.num_canonical == (9**2 + 9**3 + 9**4) ** 5
    described = space.describe()
    json.dumps(described)
    assert described["num_canonical"] == space.num_canonical
    assert described["options"]["widths"] == [24, 40, 80, 112, 160]


def test_round_trips(space: MobileNetSpace) -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        arch = space.sample(rng)
        assert isinstance(arch, MobileNetArch)
        hash(arch)
        assert space.validate(arch) == arch
        text = space.to_string(arch)
        assert space.from_string(text) == arch
        assert space.validate(text) == arch
        config = space.to_config(arch)
        assert all(isinstance(v, int) for v in config.values())
        assert space.from_config(config) == arch
        assert space.decode(space.encode(arch)) == arch
        assert space.from_config({k: np.int64(v) for k, v in config.items()}) == arch


def test_string_form_is_readable(space: MobileNetSpace) -> None:
    arch = _arch([2, 3, 4, 2, 3], [3, 5, 7, 3] * 5, [6, 4, 3, 6] * 5)
    text = space.to_string(arch)
    assert text.startswith("d2.3.4.2.3|k3.5.7.3.3.5.7.3")
    assert "|e6.4.3.6" in text
    assert space.to_config(arch)["depth/2"] == 4
    assert space.to_config(arch)["ks/2"] == 7
    assert space.to_config(arch)["e/0"] == 6


def test_arch_accepts_lists_and_stays_hashable() -> None:
    arch = MobileNetArch([2] * 5, [3] * 20, [3] * 20)  # type: ignore[arg-type]
    assert arch == _arch([2] * 5)
    assert len({arch, _arch([2] * 5)}) == 1


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (MobileNetArch((2, 3, 4, 2), (3,) * 20, (3,) * 20), "depths must have 5 entries"),
        (MobileNetArch((2,) * 5, (3,) * 19, (3,) * 20), "kernels must have 20 entries"),
        (MobileNetArch((2,) * 5, (3,) * 20, (3,) * 21), "expands must have 20 entries"),
        (MobileNetArch((2, 5, 2, 2, 2), (3,) * 20, (3,) * 20), r"depths\[1\] is 5"),
        (MobileNetArch((2,) * 5, (3,) * 7 + (4,) + (3,) * 12, (3,) * 20), r"kernels\[7\] is 4"),
        (MobileNetArch((2,) * 5, (3,) * 20, (5,) + (3,) * 19), r"expands\[0\] is 5"),
        (MobileNetArch((2,) * 5, (3.0,) * 20, (3,) * 20), r"kernels\[0\] is 3.0"),
        (MobileNetArch((True,) * 5, (3,) * 20, (3,) * 20), r"depths\[0\] is True"),
        ("d2.2.2.2.2|k3|e3", "kernels must have 20 entries"),
        ("d2.2.2.2.2", "must look like"),
        ("k3|d2|e3", "must look like"),
        ("d2.x.2.2.2|k3|e3", "dot-separated integers"),
        (42, "got int"),
        ((2, 2, 2, 2, 2), "got tuple"),
    ],
)
def test_validate_errors(space: MobileNetSpace, bad: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        space.validate(bad)


def test_validate_error_names_allowed_values(space: MobileNetSpace) -> None:
    with pytest.raises(ValueError, match=r"allowed: \[3, 5, 7\]"):
        space.validate(MobileNetArch((2,) * 5, (4,) * 20, (3,) * 20))


def test_from_config_errors(space: MobileNetSpace) -> None:
    config = space.to_config(space.sample(np.random.default_rng(0)))
    bad = dict(config, **{"ks/3": 4})
    with pytest.raises(ValueError, match=r"'ks/3'.*value 4.*allowed: \[3, 5, 7\]"):
        space.from_config(bad)
    del config["e/19"]
    with pytest.raises(ValueError, match="e/19"):
        space.from_config(config)


def test_sampling_covers_every_choice(space: MobileNetSpace) -> None:
    rng = np.random.default_rng(1)
    vectors = np.array([space.encode(space.sample(rng)) for _ in range(300)])
    for i, n in enumerate(space.dims):
        assert set(vectors[:, i].tolist()) == set(range(n)), space.decisions[i].name


def test_inactive_blocks_share_canonical_form(space: MobileNetSpace) -> None:
    depths = (2, 3, 4, 2, 3)
    base = _arch(depths, [5] * 20, [4] * 20)
    kernels, expands = list(base.kernels), list(base.expands)
    for slot in (2, 3, 7, 14, 15, 19):  # inactive: stage 0 blocks 2-3, stage 1 block 3, ...
        kernels[slot], expands[slot] = 7, 6
    other = _arch(depths, kernels, expands)
    assert other != base
    assert space.to_string(other) != space.to_string(base)
    assert space.canonical(other) == space.canonical(base)
    assert space.active_blocks(base) == (0, 1, 4, 5, 6, 8, 9, 10, 11, 12, 13, 16, 17, 18)
    assert space.canonical(base).startswith("d2.3.4.2.3|k5.5.3.3.5.5.5.3")
    # Active changes do change it.
    kernels[0] = 3
    assert space.canonical(_arch(depths, kernels, expands)) != space.canonical(base)


def test_mutation_changes_the_network(space: MobileNetSpace) -> None:
    rng = np.random.default_rng(2)
    for _ in range(30):
        arch = space.sample(rng)
        child = space.mutate(arch, rng)
        assert space.validate(child) == child
        assert space.canonical(child) != space.canonical(arch)
        assert int(np.sum(space.encode(child) != space.encode(arch))) == 1


def test_crossover_and_neighbours(space: MobileNetSpace) -> None:
    rng = np.random.default_rng(3)
    a, b = space.sample(rng), space.sample(rng)
    child = space.crossover(a, b, rng)
    va, vb, vc = space.encode(a), space.encode(b), space.encode(child)
    assert np.all((vc == va) | (vc == vb))
    smallest = space.decode([0] * 45)
    neighbours = space.neighbours(smallest)
    # 5 depth changes x 2 values, plus 2 values for each of 2x10 active kernel/expand slots.
    assert len(neighbours) == 5 * 2 + 2 * 2 * 10
    assert len({space.canonical(n) for n in neighbours}) == len(neighbours)


def test_block_specs_follow_the_stage_layout(space: MobileNetSpace) -> None:
    arch = _arch((2, 3, 4, 2, 3), [7] * 20, [6] * 20)
    specs = space.block_specs(arch)
    assert len(specs) == 1 + 14
    first = specs[0]
    assert (first.in_channels, first.out_channels, first.expand, first.kernel) == (16, 16, 1, 3)
    assert first.residual
    stage_starts = [specs[i] for i in (1, 3, 6, 10, 12)]
    assert [s.stride for s in stage_starts] == [2, 2, 2, 1, 2]
    assert [s.out_channels for s in stage_starts] == [24, 40, 80, 112, 160]
    assert not any(s.residual for s in stage_starts)
    assert all(s.residual for i, s in enumerate(specs[1:], 1) if i not in (1, 3, 6, 10, 12))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"resolution": 0}, "resolution"),
        ({"stem_width": -1}, "stem_width"),
        ({"head_width": 2.5}, "head_width"),
        ({"widths": ()}, "widths"),
        ({"widths": (24, 0)}, "widths"),
        ({"strides": (2, 2, 2, 1)}, "strides"),
        ({"strides": (2, 2, 3, 1, 2)}, "strides"),
        ({"depth_choices": ()}, "depth_choices"),
        ({"depth_choices": (2, 2)}, "depth_choices"),
        ({"kernel_choices": (3, 4)}, "kernel_choices"),
        ({"expand_choices": "346"}, "expand_choices"),
    ],
)
def test_bad_options_raise(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MobileNetSpace(**options)
    with pytest.raises(ValueError, match=message):
        create_space("mobilenet", **options)


def test_custom_options() -> None:
    space = MobileNetSpace(
        widths=(8, 16, 24),
        strides=(1, 2, 2),
        depth_choices=(1, 2),
        kernel_choices=(5, 3),
        expand_choices=(1, 2),
    )
    assert space.num_stages == 3 and space.max_depth == 2
    assert space.decisions[3].choices == (3, 5)  # sorted
    assert len(space.decisions) == 3 + 2 * 6
    arch = space.sample(np.random.default_rng(0))
    assert space.from_string(space.to_string(arch)) == arch


def test_base_network_methods_state_the_contract() -> None:
    class Bare(SearchSpace):
        name = "bare"
        decisions = ()

        def encode(self, arch):  # type: ignore[no-untyped-def]
            return np.zeros(0, dtype=np.int64)

        def decode(self, vector):  # type: ignore[no-untyped-def]
            return "x"

        def validate(self, arch):  # type: ignore[no-untyped-def]
            return arch

    bare = Bare()
    for method in (bare.build_network, bare.count_params, bare.count_flops):
        with pytest.raises(NotImplementedError, match="space 'bare' has no"):
            method("x")
