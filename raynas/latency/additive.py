"""An additive per-operation latency model with a learned residual, for noisy measurements.

Stage 1 sums a cost per (edge, operation), as nn-Meter's kernel-level sums do (Zhang et al.,
"nn-Meter", MobiSys 2021), in milliseconds, on the space's ``cost_features``: on
NAS-Bench-201 each operation has a second cost when it is *live* (on a path from the cell's
input to its output: mobile runtimes such as TFLite drop dead branches), plus a cost per
addition of live inputs. It is fitted by least
absolute relative error, ``sum |pred - ms| / ms`` (a linear program), so a minority of slow
or fast outliers does not pull it. Stage 2 is a histogram gradient-boosting model of the log
ratio ``log(ms / stage1)`` on the one-hot, liveness and operation counts (Friedman's
gradient boosting with the absolute-error loss: the conditional median, which is what the
share of predictions within +-10% of noisy measurements rewards). Its loss (absolute or
squared error, or no residual at all) is chosen by k-fold cross-validation inside the
training set, by the share within +-10%.

On the NB201 device table (``benchmarks/latency_predictors.py``, part ``sample``), trained on
1,000 architectures, it is within +-10% on 0.665 (pixel3) and 0.646 (raspi4) of the others,
where the MLP on 1,000 reaches 0.548 and 0.587 and an MLP on 12,000 0.696 and 0.708; on the
five other devices it matches or passes that 12,000-architecture MLP.

Files are ``.npz`` archives of plain arrays and a JSON string (``allow_pickle=False``): the
boosted trees are exported as node arrays and evaluated here, not by scikit-learn.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from raynas.latency.predictor import ArchEncoder
from spaces import Arch, SearchSpace, space_from_spec

logger = logging.getLogger(__name__)

ADDITIVE_FORMAT = "raynas-latency-additive/1"
RESIDUALS = ("absolute_error", "squared_error", "none")
STAGE1_PENALTY = 1e-4  # L1 penalty of the linear program: only breaks ties among costs


# --------------------------------------------------------------------------- stages
def fit_additive(x: np.ndarray, ms: np.ndarray) -> tuple[np.ndarray, float]:
    """Costs and constant minimising ``sum |x @ w + b - ms| / ms`` (weighted median regression)."""
    from sklearn.linear_model import QuantileRegressor

    model = QuantileRegressor(quantile=0.5, alpha=STAGE1_PENALTY, solver="highs")
    model.fit(x, ms, sample_weight=1.0 / ms)
    return np.asarray(model.coef_, dtype=np.float64), float(model.intercept_)


class Trees:
    """Boosted regression trees as flat node arrays (``x[feature] <= threshold`` goes left)."""

    def __init__(self, baseline: float, feature: np.ndarray, threshold: np.ndarray,
                 left: np.ndarray, right: np.ndarray, leaf: np.ndarray, value: np.ndarray,
                 roots: np.ndarray) -> None:
        self.baseline = float(baseline)
        self.feature, self.threshold = feature.astype(np.int64), threshold.astype(np.float64)
        self.left, self.right = left.astype(np.int64), right.astype(np.int64)
        self.leaf, self.value = leaf.astype(bool), value.astype(np.float64)
        self.roots = roots.astype(np.int64)

    @classmethod
    def from_sklearn(cls, model: Any) -> Trees:
        """Export a fitted single-output ``HistGradientBoostingRegressor`` (numeric features)."""
        parts: dict[str, list[np.ndarray]] = {k: [] for k in
                                              ("feature", "threshold", "left", "right", "leaf",
                                               "value")}
        roots, offset = [], 0
        for (tree,) in model._predictors:
            nodes = tree.nodes
            roots.append(offset)
            parts["feature"].append(nodes["feature_idx"])
            parts["threshold"].append(nodes["num_threshold"])
            parts["left"].append(nodes["left"].astype(np.int64) + offset)
            parts["right"].append(nodes["right"].astype(np.int64) + offset)
            parts["leaf"].append(nodes["is_leaf"])
            parts["value"].append(nodes["value"])
            offset += len(nodes)
        if not roots:  # no boosting iteration: the baseline alone
            return cls(float(np.ravel(model._baseline_prediction)[0]), *(np.zeros(0),) * 6,
                       np.zeros(0))
        cat = {k: np.concatenate(v) for k, v in parts.items()}
        return cls(float(np.ravel(model._baseline_prediction)[0]), cat["feature"],
                   cat["threshold"], cat["left"], cat["right"], cat["leaf"], cat["value"],
                   np.array(roots))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Baseline plus the sum of every tree's leaf value for each row of ``x``."""
        out = np.full(len(x), self.baseline)
        if not len(self.roots) or not len(x):
            return out
        node = np.broadcast_to(self.roots, (len(x), len(self.roots))).copy()
        rows = np.arange(len(x))[:, None]
        while True:
            inner = ~self.leaf[node]
            if not inner.any():
                break
            go_left = x[rows, self.feature[node]] <= self.threshold[node]
            node = np.where(inner, np.where(go_left, self.left[node], self.right[node]), node)
        return np.asarray(out + self.value[node].sum(axis=1), dtype=np.float64)

    def arrays(self) -> dict[str, np.ndarray]:
        """The node arrays, for ``np.savez``."""
        return {"tree_feature": self.feature, "tree_threshold": self.threshold,
                "tree_left": self.left, "tree_right": self.right, "tree_leaf": self.leaf,
                "tree_value": self.value, "tree_roots": self.roots}


def fit_residual(x: np.ndarray, target: np.ndarray, loss: str, *, iterations: int,
                 learning_rate: float, leaves: int, seed: int) -> Trees:
    """Histogram gradient boosting of ``target`` (log ratio) with ``loss``, as ``Trees``."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    model = HistGradientBoostingRegressor(loss=loss, max_iter=iterations,
                                          learning_rate=learning_rate, max_leaf_nodes=leaves,
                                          early_stopping=False, random_state=seed)
    model.fit(x, target)
    return Trees.from_sklearn(model)


def within10(predicted: np.ndarray, measured: np.ndarray) -> float:
    """Share of predictions within +-10% of the measured value."""
    return float(np.mean(np.abs(predicted - measured) <= 0.1 * np.abs(measured)))


# --------------------------------------------------------------------------- model
class AdditiveLatency:
    """Additive per-operation latency (ms) times a boosted residual; see the module doc.

    ``residual="auto"`` picks the residual's loss (``RESIDUALS``) by ``folds``-fold
    cross-validation on the training architectures; the scores are kept in ``cv_scores``.

    Example:
        >>> from spaces import create_space
        >>> space = create_space("nb201")
        >>> rng = np.random.default_rng(0)
        >>> archs = [space.sample(rng) for _ in range(60)]
        >>> ms = [1.0 + space.count_flops(a) / 1e7 for a in archs]
        >>> model = AdditiveLatency(space, residual="none").fit(archs, ms)
        >>> model.predict(archs[:2]).shape
        (2,)
    """

    def __init__(self, space: SearchSpace, *, device: str = "", residual: str = "auto",
                 iterations: int = 400, learning_rate: float = 0.05, leaves: int = 15,
                 folds: int = 5, seed: int = 0) -> None:
        if residual != "auto" and residual not in RESIDUALS:
            raise ValueError(f"residual must be auto or one of {RESIDUALS}, got {residual!r}")
        if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
            raise ValueError(f"folds must be an integer >= 2, got {folds!r}")
        self.space, self.device, self.residual = space, device, residual
        self.iterations, self.learning_rate, self.leaves = iterations, learning_rate, leaves
        self.folds, self.seed = folds, seed
        self.coef = np.zeros(0)
        self.intercept = 0.0
        self.floor = 0.0
        self.trees: Trees | None = None
        self.chosen = ""
        self.cv_scores: dict[str, float] = {}
        self.num_train = 0

    # ----------------------------------------------------------------- fitting
    def _fit_stages(self, a: np.ndarray, r: np.ndarray, ms: np.ndarray, loss: str
                    ) -> tuple[np.ndarray, float, float, Trees | None]:
        coef, intercept = fit_additive(a, ms)
        floor = 0.05 * float(ms.min())
        base = np.maximum(a @ coef + intercept, floor)
        if loss == "none":
            return coef, intercept, floor, None
        trees = fit_residual(np.hstack([r, np.log(base)[:, None]]), np.log(ms) - np.log(base),
                             loss, iterations=self.iterations,
                             learning_rate=self.learning_rate, leaves=self.leaves,
                             seed=self.seed)
        return coef, intercept, floor, trees

    @staticmethod
    def _apply(a: np.ndarray, r: np.ndarray, coef: np.ndarray, intercept: float, floor: float,
               trees: Trees | None) -> np.ndarray:
        base = np.asarray(np.maximum(a @ coef + intercept, floor), dtype=np.float64)
        if trees is None:
            return base
        return np.asarray(base * np.exp(trees.predict(np.hstack([r, np.log(base)[:, None]]))),
                          dtype=np.float64)

    def cross_validate(self, a: np.ndarray, r: np.ndarray, ms: np.ndarray) -> dict[str, float]:
        """Mean share within +-10% on held-out folds of each residual loss."""
        order = np.random.default_rng(self.seed).permutation(len(ms))
        scores: dict[str, list[float]] = {loss: [] for loss in RESIDUALS}
        for k in range(self.folds):
            val = order[k::self.folds]
            tr = np.setdiff1d(order, val)
            coef, intercept, floor, _ = self._fit_stages(a[tr], r[tr], ms[tr], "none")
            scores["none"].append(within10(
                self._apply(a[val], r[val], coef, intercept, floor, None), ms[val]))
            for loss in RESIDUALS[:-1]:
                c, i, f, trees = self._fit_stages(a[tr], r[tr], ms[tr], loss)
                scores[loss].append(within10(self._apply(a[val], r[val], c, i, f, trees),
                                             ms[val]))
        return {loss: float(np.mean(s)) for loss, s in scores.items()}

    def fit(self, archs: Sequence[Arch], latencies_ms: Sequence[float]) -> AdditiveLatency:
        """Fit on (architecture, latency in ms) pairs; non-positive latencies are rejected."""
        ms = np.asarray(latencies_ms, dtype=np.float64)
        if len(archs) != len(ms) or len(ms) < 2:
            raise ValueError(f"need >= 2 (arch, latency) pairs, got {len(archs)} and {len(ms)}")
        if not np.all(np.isfinite(ms)) or np.any(ms <= 0):
            raise ValueError("latencies must be finite and > 0")
        a, r = self.space.cost_features(ArchEncoder(self.space, prefill=False).encode(archs))
        chosen = self.residual
        self.cv_scores = {}
        if chosen == "auto":
            if len(ms) < 2 * self.folds:
                chosen = "none"
            else:
                self.cv_scores = self.cross_validate(a, r, ms)
                chosen = max(RESIDUALS, key=lambda k: self.cv_scores[k])
                logger.info("residual by %d-fold CV: %s %s", self.folds, chosen, self.cv_scores)
        self.coef, self.intercept, self.floor, self.trees = self._fit_stages(a, r, ms, chosen)
        self.chosen, self.num_train = chosen, len(ms)
        return self

    # ----------------------------------------------------------------- prediction
    def predict_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """Predicted latency (ms) of each index vector."""
        if not len(self.coef):
            raise RuntimeError("AdditiveLatency is not trained: call fit() or load() first")
        a, r = self.space.cost_features(vectors)
        return self._apply(a, r, self.coef, self.intercept, self.floor, self.trees)

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        """Predicted latency (ms) of each architecture (the ``Predictor`` protocol)."""
        return self.predict_vectors(ArchEncoder(self.space, prefill=False).encode(archs))

    # ----------------------------------------------------------------- files
    def metadata(self) -> dict[str, Any]:
        """What a file records beside the arrays."""
        return {"format": ADDITIVE_FORMAT, "space": self.space.spec(), "device": self.device,
                "residual": self.residual, "chosen": self.chosen, "cv_scores": self.cv_scores,
                "iterations": self.iterations, "learning_rate": self.learning_rate,
                "leaves": self.leaves, "folds": self.folds, "seed": self.seed,
                "intercept": self.intercept, "floor": self.floor, "num_train": self.num_train,
                "baseline": None if self.trees is None else self.trees.baseline}

    def save(self, path: str | Path) -> Path:
        """Write an ``.npz`` of plain arrays and a JSON string (no pickle)."""
        if not len(self.coef):
            raise RuntimeError("AdditiveLatency is not trained: nothing to save")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"metadata": np.array(json.dumps(self.metadata())), "coef": self.coef}
        if self.trees is not None:
            arrays.update(self.trees.arrays())
        with open(path, "wb") as f:  # np.savez would append ".npz" to other suffixes
            np.savez(f, allow_pickle=False, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> AdditiveLatency:
        """Read a file written by ``save`` (``allow_pickle=False``)."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"latency model {str(path)!r} does not exist")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            meta = json.loads(str(arrays["metadata"]))
        except Exception as exc:  # any unreadable or foreign file
            raise ValueError(f"{str(path)!r} is not a raynas latency model: {exc}") from None
        if meta.get("format") != ADDITIVE_FORMAT:
            raise ValueError(f"{str(path)!r} has format {meta.get('format')!r}, "
                             f"expected {ADDITIVE_FORMAT!r}")
        model = cls(space_from_spec(meta["space"]), device=meta["device"],
                    residual=meta["residual"], iterations=meta["iterations"],
                    learning_rate=meta["learning_rate"], leaves=meta["leaves"],
                    folds=meta["folds"], seed=meta["seed"])
        model.coef = arrays["coef"].astype(np.float64)
        model.intercept, model.floor = float(meta["intercept"]), float(meta["floor"])
        model.chosen, model.cv_scores = meta["chosen"], dict(meta["cv_scores"])
        model.num_train = int(meta["num_train"])
        if meta["baseline"] is not None:
            model.trees = Trees(meta["baseline"], *(arrays[f"tree_{k}"] for k in (
                "feature", "threshold", "left", "right", "leaf", "value", "roots")))
        return model
