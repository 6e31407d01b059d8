"""Plain-Python zero-cost scorers (``searchers.protocols.Scorer``) for the searcher tests."""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


class HashScorer:
    """Two deterministic pseudo-proxies of any space's architecture string; NaN now and then.

    Counts what it scores, and charges 1 ms per architecture.
    """

    names = ["h_even", "h_nan"]

    def __init__(self) -> None:
        self.seconds = 0.0
        self.scored: Counter[str] = Counter()

    def __call__(self, archs: Sequence[Any]) -> np.ndarray:
        rows = []
        for arch in archs:
            h = zlib.crc32(str(arch).encode())
            rows.append([float(h % 1000), math.nan if h % 7 == 0 else float((h >> 10) % 997)])
            self.scored[str(arch)] += 1
        self.seconds += 0.001 * len(archs)
        return np.array(rows, dtype=float).reshape(len(archs), 2)


class ConvCount:
    """An NB201 stand-in proxy: the number of convolutions (and of 3x3 ones) in the cell."""

    names = ["convs", "conv3x3"]

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self.scored = 0

    def __call__(self, archs: Sequence[Any]) -> np.ndarray:
        self.calls += 1
        self.scored += len(archs)
        self.seconds += 0.001 * len(archs)
        return np.array([[str(a).count("conv"), str(a).count("3x3")] for a in archs],
                        dtype=float).reshape(len(archs), 2)


class TableColumn:
    """A real proxy: the ``zen_score`` column (NASLib's Zen-score) of the NB201 table."""

    names = ["zen_score"]

    def __init__(self, rows: Mapping[str, Mapping[str, str]]) -> None:
        self.rows = rows
        self.seconds = 0.0
        self.scored = 0

    def __call__(self, archs: Sequence[Any]) -> np.ndarray:
        self.scored += len(archs)
        return np.array([[float(self.rows[str(a)]["zen_score"])] for a in archs])


class Unpicklable(ConvCount):
    """A scorer holding a lambda: ``pickle`` cannot write it."""

    def __init__(self) -> None:
        super().__init__()
        self.hook = lambda x: x
