"""Random search: uniform sampling without repeats (Li & Talwalkar, 2019)."""

from __future__ import annotations

import logging

from searchers._base import NASSearch
from spaces import Arch

logger = logging.getLogger(__name__)


class RandomSearch(NASSearch):
    """Uniformly random architectures, each computation suggested at most once.

    The baseline every NAS method must beat (Li & Talwalkar, "Random Search and
    Reproducibility for Neural Architecture Search", UAI 2019).

    Example:
        >>> from spaces import create_space
        >>> s = RandomSearch(create_space("nb201"), metric="val_acc", mode="max", seed=0)
        >>> sorted(s.suggest("t1"))[:2]
        ['op/0', 'op/1']
    """

    def _propose(self) -> Arch:
        return self.space.sample(self._rng)

    def _observe(self, arch: Arch, score: float | None) -> None:
        pass
