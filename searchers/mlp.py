"""An ensemble of small numpy MLP regressors (ReLU, full-batch Adam), trained side by side.

numpy rather than torch: the predictor searcher refits its ensemble on a few hundred rows every
batch of suggestions, where torch's per-operation overhead dominates; the members are trained
as one stacked computation (a batch of matrix products per layer), and the fit stays
independent of torch's global RNG and thread settings.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["MLPEnsemble"]

_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8


class MLPEnsemble:
    """One MLP per seed: ``hidden`` ReLU layers and a linear output, fitted to squared error.

    Each member starts from He-uniform weights drawn from its own seed and takes ``steps``
    full-batch Adam steps (learning rate ``lr``, L2 ``weight_decay``) on the same data; the
    members differ only by their initialisation, as in BANANAS' ensemble. Deterministic for
    given seeds and data.

    Example:
        >>> x = np.random.default_rng(0).normal(size=(64, 3))
        >>> y = x @ [1.0, -2.0, 0.5]
        >>> preds = MLPEnsemble([16], seeds=[0, 1], steps=300).fit(x, y).predict(x)
        >>> preds.shape, bool(np.corrcoef(preds.mean(axis=0), y)[0, 1] > 0.95)
        ((2, 64), True)
    """

    def __init__(self, hidden: Sequence[int], *, seeds: Sequence[int], steps: int = 300,
                 lr: float = 1e-2, weight_decay: float = 1e-4) -> None:
        self.hidden = [int(h) for h in hidden]
        self.seeds = [int(s) for s in seeds]
        if not self.seeds:
            raise ValueError("seeds must name at least one member")
        self.steps = int(steps)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.weights: list[np.ndarray] = []  # (members, fan_in, fan_out) per layer
        self.biases: list[np.ndarray] = []  # (members, 1, fan_out) per layer

    def fit(self, x: np.ndarray, y: np.ndarray) -> MLPEnsemble:
        """Fit every member to rows ``x`` (n, d) and targets ``y`` (n,); returns self."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64).reshape(1, -1, 1)
        widths = [x.shape[1], *self.hidden, 1]
        rngs = [np.random.default_rng(s) for s in self.seeds]
        self.weights, self.biases = [], []
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            bound = np.sqrt(6.0 / max(fan_in, 1))
            self.weights.append(np.stack([r.uniform(-bound, bound, size=(fan_in, fan_out))
                                          for r in rngs]))
            self.biases.append(np.zeros((len(rngs), 1, fan_out)))
        params = [*self.weights, *self.biases]
        m = [np.zeros_like(p) for p in params]
        v = [np.zeros_like(p) for p in params]
        layers = len(self.weights)
        scale = 2.0 / len(x)
        for step in range(1, self.steps + 1):
            acts = [x[None]]
            for w, b in zip(self.weights[:-1], self.biases[:-1]):
                acts.append(np.maximum(acts[-1] @ w + b, 0.0))
            grad = (acts[-1] @ self.weights[-1] + self.biases[-1] - y) * scale
            grads: list[np.ndarray] = [np.empty(0)] * (2 * layers)
            for i in range(layers - 1, -1, -1):
                grads[i] = acts[i].transpose(0, 2, 1) @ grad + self.weight_decay * self.weights[i]
                grads[layers + i] = grad.sum(axis=1, keepdims=True)
                if i:
                    grad = (grad @ self.weights[i].transpose(0, 2, 1)) * (acts[i] > 0.0)
            lr = self.lr * np.sqrt(1.0 - _BETA2**step) / (1.0 - _BETA1**step)
            for p, g, mj, vj in zip(params, grads, m, v):
                mj *= _BETA1
                mj += (1.0 - _BETA1) * g
                vj *= _BETA2
                vj += (1.0 - _BETA2) * g * g
                p -= lr * mj / (np.sqrt(vj) + _EPS)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Every member's predictions for rows ``x``: shape (members, n)."""
        if not self.weights:
            raise RuntimeError("MLPEnsemble.predict before fit")
        h = np.asarray(x, dtype=np.float64)[None]
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            h = np.maximum(h @ w + b, 0.0)
        return (h @ self.weights[-1] + self.biases[-1])[:, :, 0]  # type: ignore[no-any-return]
