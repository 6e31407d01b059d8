"""MobileNet's progressive-shrinking hooks: shrinking_order, largest, sample_shrunk (OFA)."""

from __future__ import annotations

import numpy as np
import pytest

from spaces import create_space
from spaces.mobilenet import MobileNetSpace


@pytest.fixture(scope="module")
def space() -> MobileNetSpace:
    return MobileNetSpace(resolution=16, widths=(16, 24), strides=(2, 2), head_width=32)


def test_hooks_are_provided_only_where_implemented(space: MobileNetSpace) -> None:
    for hook in ("shrinking_order", "largest", "sample_shrunk"):
        assert space.provides(hook)
        assert not create_space("nb201").provides(hook)
    with pytest.raises(NotImplementedError, match="nb201.*shrinking_order"):
        create_space("nb201").shrinking_order()


def test_shrinking_order_is_ofas(space: MobileNetSpace) -> None:
    assert space.shrinking_order() == ("kernel", "depth", "expand")


def test_largest(space: MobileNetSpace) -> None:
    big = space.largest()
    assert space.validate(big) == big
    assert big.depths == (4, 4)
    assert big.kernels == (7,) * 8 and big.expands == (6,) * 8
    # The largest network has the most parameters and MACs of the space.
    rng = np.random.default_rng(0)
    for _ in range(20):
        arch = space.sample(rng)
        assert space.count_params(arch) <= space.count_params(big)
        assert space.count_flops(arch) <= space.count_flops(big)


def test_sample_shrunk_varies_only_the_named_dimensions(space: MobileNetSpace) -> None:
    big = space.largest()
    rng = np.random.default_rng(1)
    assert space.sample_shrunk(rng, ()) == big
    for elastic in [("kernel",), ("kernel", "depth"), ("depth",), ("expand",),
                    ("kernel", "depth", "expand")]:
        archs = [space.sample_shrunk(rng, elastic) for _ in range(200)]
        assert all(space.validate(a) == a for a in archs)
        for field, name, choices in (("kernels", "kernel", space.kernel_choices),
                                     ("depths", "depth", space.depth_choices),
                                     ("expands", "expand", space.expand_choices)):
            values = {v for a in archs for v in getattr(a, field)}
            if name in elastic:
                assert values == set(choices), (elastic, field)  # every value drawn
            else:
                assert all(getattr(a, field) == getattr(big, field) for a in archs)


def test_sample_shrunk_with_all_dimensions_is_uniform(space: MobileNetSpace) -> None:
    rng = np.random.default_rng(2)
    archs = [space.sample_shrunk(rng, space.shrinking_order()) for _ in range(3000)]
    for field, choices in (("kernels", space.kernel_choices), ("depths", space.depth_choices),
                           ("expands", space.expand_choices)):
        values = np.array([getattr(a, field) for a in archs]).ravel()
        freq = [np.mean(values == c) for c in choices]
        assert freq == pytest.approx([1 / len(choices)] * len(choices), abs=0.03)


def test_sample_shrunk_is_seeded(space: MobileNetSpace) -> None:
    draw = [space.sample_shrunk(np.random.default_rng(5), ["depth", "expand"]) for _ in range(2)]
    assert draw[0] == draw[1]


@pytest.mark.parametrize("elastic", [("width",), ("kernel", "resolution", "width"), "kernel"])
def test_sample_shrunk_rejects_unknown_dimensions(space: MobileNetSpace, elastic) -> None:
    with pytest.raises(ValueError) as info:
        space.sample_shrunk(np.random.default_rng(0), elastic)
    message = str(info.value)
    assert "\n" not in message
    if isinstance(elastic, tuple):
        for name in set(elastic) - {"kernel"}:
            assert repr(name) in message
        assert "'kernel'" not in message.split(";")[0]  # only the unknown ones are named
