"""Which operations of NAS-Bench-201 cells are live, and the latency features that follow."""

from __future__ import annotations

import numpy as np


def live_edges(vectors: np.ndarray) -> np.ndarray:
    """Boolean ``(n, 6)``: the edge's op is not ``none`` and lies on a path from node 0 to 3.

    Mobile runtimes such as TFLite drop dead branches, so only live operations cost time there.
    """
    v = np.asarray(vectors).reshape(-1, 6)
    on = v != 0  # NB201_OPS[0] is "none"
    # Edges (in string order): 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2.
    f1 = on[:, 0]
    f2 = on[:, 1] | (on[:, 2] & f1)
    b2 = on[:, 5]
    b1 = on[:, 4] | (on[:, 2] & b2)
    ones = np.ones(len(v), dtype=bool)
    src = np.stack([ones, ones, f1, ones, f1, f2], axis=1)  # input reachable from node 0
    dst = np.stack([b1, b2, b2, ones, ones, ones], axis=1)  # output reaches node 3
    return np.asarray(on & src & dst, dtype=bool)


def cost_features(one_hot: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Additive and residual latency-model inputs of cells: liveness on top of the one-hot.

    Additive: the one-hot and the live one-hot (``none`` left out, it costs nothing by
    itself), the additions live in-degrees imply, the in-degrees of nodes 1-3. Residual: the
    one-hot, the live one-hot, operation counts (all and live) and the in-degrees.
    """
    x = np.asarray(one_hot, dtype=np.float64)
    v = np.asarray(vectors, dtype=np.int64).reshape(-1, 6)
    live = live_edges(v)
    live_x = x * np.repeat(live, 5, axis=1)
    indeg = np.stack([live[:, [0]].sum(1), live[:, [1, 2]].sum(1), live[:, [3, 4, 5]].sum(1)],
                     axis=1).astype(np.float64)
    adds = np.clip(indeg - 1, 0, None).sum(1, keepdims=True)
    not_none = [k for k in range(30) if k % 5]
    additive = np.hstack([x[:, not_none], live_x[:, not_none], adds, indeg])
    counts = np.stack([(v == o).sum(1) for o in range(5)]
                      + [((v == o) & live).sum(1) for o in range(5)], axis=1)
    residual = np.hstack([x, live_x, counts.astype(np.float64), indeg])
    return additive, residual
