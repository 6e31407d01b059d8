"""Fixtures shared by the network and supernet tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from spaces.nb201 import NB201Space


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny networks: extra torch threads only add contention on busy CI machines."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def nb201() -> NB201Space:
    """A small NB201 space for 8x8 single-channel inputs."""
    return NB201Space(channels=8, cells_per_stage=1, resolution=8)
