"""Network-level latency predictors: a learned MLP and exact lookups in measured tables.

The learned predictor follows HAT (Wang et al., ACL 2020) and BRP-NAS (Dudziak et al.,
NeurIPS 2020): a small MLP on the space's features (``SearchSpace.features``, by default
a one-hot encoding), trained on (architecture, measured latency) pairs with a log-latency
target. A gradient-boosted model was measured against it on the NAS-Bench-201 device table
(``benchmarks/latency_predictors.py``): it is as good at 1,000 samples and clearly worse at
100, so the MLP is the one kept.

Files hold no pickle: ``torch.save`` of tensors plus a JSON string, read back with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from raynas.latency.measure import torch_threads
from spaces import Arch, SearchSpace, space_from_spec

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

MLP_FORMAT = "raynas-latency-mlp/1"
PREFILL_LIMIT = 100_000  # spaces up to this size are encoded whole when an encoder starts


# --------------------------------------------------------------------------- features
def one_hot(space: SearchSpace, vectors: np.ndarray) -> np.ndarray:
    """The predictor's float32 inputs of index vectors ``(n, d)``: ``space.features``.

    By default a one-hot of each active choice; a space leaves out what does not shape its
    networks (MobileNet: the slots beyond a stage's depth).
    """
    vectors = np.asarray(vectors, dtype=np.int64).reshape(-1, len(space.dims))
    return space.features(vectors)


def feature_width(space: SearchSpace) -> int:
    """Number of columns of ``space.features`` (the MLP's input width)."""
    return int(one_hot(space, np.zeros((1, len(space.dims)), dtype=np.int64)).shape[1])


class AppendArray:
    """An append-only array (rows along axis 0) with amortised O(1) appends.

    Re-stacking a memo on every call made a service's calls slower the more it had seen
    (quadratic overall); capacity doubles instead.
    """

    def __init__(self, shape: tuple[int, ...] = (), dtype: Any = np.float64) -> None:
        self._buf = np.zeros((16, *shape), dtype=dtype)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def append(self, rows: np.ndarray) -> None:
        """Append ``rows`` (shape ``(k, *shape)``)."""
        need = self._n + len(rows)
        if need > len(self._buf):
            grown = np.zeros((max(need, 2 * len(self._buf)), *self._buf.shape[1:]),
                             dtype=self._buf.dtype)
            grown[: self._n] = self._buf[: self._n]
            self._buf = grown
        self._buf[self._n : need] = rows
        self._n = need

    @property
    def view(self) -> np.ndarray:
        """The rows so far (a view: valid until the next append)."""
        return self._buf[: self._n]


class ArchEncoder:
    """Architecture -> index vector, memoised, with a clear error for foreign architectures.

    Each distinct architecture gets a row in ``vectors``; ``rows(archs)`` returns row ids
    (new architectures are validated, encoded and appended), so callers can keep per-row
    results (predictions) beside it. Spaces of at most ``PREFILL_LIMIT`` strings are
    encoded whole at start, so every later call is a dictionary lookup.

    Example:
        >>> from spaces import create_space
        >>> enc = ArchEncoder(create_space("nb201"))
        >>> enc.vectors[enc.rows(["|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"])].tolist()
        [[0, 0, 0, 0, 0, 0]]
    """

    def __init__(self, space: SearchSpace, *, prefill: bool | None = None) -> None:
        self.space = space
        self._index: dict[Hashable, int] = {}
        self._vectors = AppendArray((len(space.dims),), np.int64)
        if prefill is None:
            prefill = space.size <= PREFILL_LIMIT
        if prefill:
            vectors = np.array(np.meshgrid(*(np.arange(n) for n in space.dims), indexing="ij"))
            vectors = vectors.reshape(len(space.dims), -1).T
            for i, v in enumerate(vectors):
                arch = space.decode(v)
                self._index[arch] = i
                if not isinstance(arch, str):  # answer the string form without parsing too
                    self._index[space.to_string(arch)] = i
            self._vectors.append(vectors.astype(np.int64))

    def __len__(self) -> int:
        """Number of rows (distinct architecture vectors seen)."""
        return len(self._vectors)

    @property
    def vectors(self) -> np.ndarray:
        """Index vectors of every architecture seen, by row id."""
        return self._vectors.view

    def rows(self, archs: Sequence[Arch]) -> np.ndarray:
        """Row ids of ``archs``; raises ``ValueError`` naming the first foreign architecture.

        Nothing is recorded from a batch that raises.
        """
        index = self._index
        try:
            return np.fromiter((index[a] for a in archs), dtype=np.int64, count=len(archs))
        except (KeyError, TypeError):
            pass
        for arch in archs:
            if not isinstance(arch, Hashable):
                raise ValueError(f"architecture {arch!r} of space {self.space.name!r} must be "
                                 "hashable (a string or the space's Arch value)")
        missing = [a for a in dict.fromkeys(archs) if a not in index]
        vectors = self._encode_new(missing)
        base = len(self._vectors)
        index.update((a, base + i) for i, a in enumerate(missing))
        self._vectors.append(vectors)
        return np.fromiter((index[a] for a in archs), dtype=np.int64, count=len(archs))

    def _encode_new(self, archs: list[Arch]) -> np.ndarray:
        if all(isinstance(a, str) for a in archs):
            vectors = self.space.encode_strings(archs)
            if vectors is not None:
                return vectors
        return np.vstack([self.encode_one(a) for a in archs])

    def encode_one(self, arch: Arch) -> np.ndarray:
        """Index vector of one architecture (validated)."""
        try:
            return self.space.encode(self.space.validate(arch))
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"architecture {arch!r} is not of space {self.space.name!r}: {exc}"
            ) from None

    def encode(self, archs: Sequence[Arch]) -> np.ndarray:
        """Index vectors ``(n, d)`` of ``archs``."""
        rows = self.rows(archs)
        return self.vectors[rows]


# --------------------------------------------------------------------------- learned MLP
class LatencyMLP:
    """A small MLP on one-hot features, trained on log latency (HAT / BRP-NAS style).

    ``ensemble`` independently seeded MLPs are averaged in log space (three gained 1 to 3
    points of predictions within +-10% over one on the NB201 device table). Training and
    inference run with ``threads`` torch threads (default 1: on the 2-core machine, fitting
    200 architectures took 1 s with one thread and 34 s with two under load).

    Example:
        >>> from spaces import create_space
        >>> space = create_space("nb201")
        >>> rng = np.random.default_rng(0)
        >>> archs = [space.sample(rng) for _ in range(64)]
        >>> ms = [1.0 + space.count_flops(a) / 1e7 for a in archs]
        >>> model = LatencyMLP(space, ensemble=1).fit(archs, ms, epochs=20)
        >>> model.predict(archs[:2]).shape
        (2,)
    """

    def __init__(self, space: SearchSpace, *, hidden: Sequence[int] = (128, 128),
                 device: str = "", ensemble: int = 3, seed: int = 0,
                 threads: int | None = 1) -> None:
        if not hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1
                             for h in hidden):
            raise ValueError(f"hidden must list positive layer widths, got {hidden!r}")
        if isinstance(ensemble, bool) or not isinstance(ensemble, int) or ensemble < 1:
            raise ValueError(f"ensemble must be a positive integer, got {ensemble!r}")
        self.space, self.device = space, device
        self.hidden, self.ensemble, self.seed = tuple(hidden), ensemble, seed
        self.threads = threads
        self.mean, self.std = 0.0, 1.0
        self.num_train = 0
        self.models: list[Any] = []

    def _new_model(self) -> Any:
        from torch import nn

        layers: list[nn.Module] = []
        width = feature_width(self.space)
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        return nn.Sequential(*layers)

    def fit(self, archs: Sequence[Arch], latencies_ms: Sequence[float], *, epochs: int = 300,
            lr: float = 3e-3, weight_decay: float = 1e-4, batch_size: int = 64) -> LatencyMLP:
        """Train on (architecture, latency in ms) pairs; non-positive latencies are rejected."""
        with torch_threads(self.threads):
            return self._fit(archs, latencies_ms, epochs=epochs, lr=lr,
                             weight_decay=weight_decay, batch_size=batch_size)

    def _fit(self, archs: Sequence[Arch], latencies_ms: Sequence[float], *, epochs: int,
             lr: float, weight_decay: float, batch_size: int) -> LatencyMLP:
        import torch

        y = np.asarray(latencies_ms, dtype=np.float64)
        if len(archs) != len(y) or len(y) < 2:
            raise ValueError(f"need >= 2 (arch, latency) pairs, got {len(archs)} and {len(y)}")
        if not np.all(np.isfinite(y)) or np.any(y <= 0):
            raise ValueError("latencies must be finite and > 0 (the target is log latency)")
        x = torch.from_numpy(one_hot(self.space, ArchEncoder(self.space, prefill=False)
                                     .encode(archs)))
        target = np.log(y)
        self.mean, self.std = float(target.mean()), float(target.std() or 1.0)
        t = torch.from_numpy(((target - self.mean) / self.std).astype(np.float32))
        n, bs = len(t), min(batch_size, len(t))
        self.models = []
        for member in range(self.ensemble):
            gen = torch.Generator().manual_seed(self.seed + member)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed + member)
                model = self._new_model()
            opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
            steps = epochs * math.ceil(n / bs)
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
            model.train()
            for _ in range(epochs):
                perm = torch.randperm(n, generator=gen)
                for start in range(0, n, bs):
                    idx = perm[start:start + bs]
                    loss = torch.nn.functional.mse_loss(model(x[idx]).squeeze(1), t[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    schedule.step()
            model.eval()
            self.models.append(model)
        self.num_train = n
        return self

    def predict_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """Predicted latency (ms) of each index vector, one batched forward pass per member."""
        import torch

        if not self.models:
            raise RuntimeError("LatencyMLP is not trained: call fit() or load() first")
        x = torch.from_numpy(one_hot(self.space, vectors))
        with torch_threads(self.threads), torch.inference_mode():
            out = torch.stack([m(x).squeeze(1) for m in self.models]).mean(0)
        return np.exp(out.double().numpy() * self.std + self.mean)

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        """Predicted latency (ms) of each architecture (the ``Predictor`` protocol)."""
        return self.predict_vectors(ArchEncoder(self.space, prefill=False).encode(archs))

    def expected(self, probabilities: Sequence[torch.Tensor]) -> torch.Tensor:
        """Latency (ms) predicted at the expected encoding when decision ``k`` is drawn from
        ``probabilities[k]``: a differentiable relaxation of the expected latency (the
        predictor fed soft one-hots, as FBNetV2 and HELP differentiate their predictors)."""
        import torch

        if not self.models:
            raise RuntimeError("LatencyMLP is not trained: call fit() or load() first")
        # On the CPU, where the members live (autograd follows the copy back to the device).
        x = self.space.expected_features(probabilities).float().cpu()[None]
        for m in self.models:  # gradients reach the probabilities, not the trained weights
            m.requires_grad_(False)
        with torch_threads(self.threads):
            out = torch.stack([m(x).squeeze() for m in self.models]).mean()
        latency = torch.exp(out.double() * self.std + self.mean)
        return latency.to(device=probabilities[0].device, dtype=probabilities[0].dtype)

    # ----------------------------------------------------------------- files
    def metadata(self) -> dict[str, Any]:
        """What a file records beside the weights."""
        return {"format": MLP_FORMAT, "space": self.space.spec(), "device": self.device,
                "hidden": list(self.hidden), "ensemble": len(self.models) or self.ensemble,
                "seed": self.seed, "mean": self.mean, "std": self.std,
                "num_train": self.num_train}

    def save(self, path: str | Path) -> Path:
        """Write weights and metadata (tensors and a JSON string; loadable without pickle)."""
        import torch

        if not self.models:
            raise RuntimeError("LatencyMLP is not trained: nothing to save")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {f"{i}.{k}": v.detach().cpu() for i, m in enumerate(self.models)
                 for k, v in m.state_dict().items()}
        torch.save({"metadata": json.dumps(self.metadata()), "state": state}, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> LatencyMLP:
        """Read a file written by ``save`` (``weights_only=True``: no code runs on load)."""
        import torch

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"latency model {str(path)!r} does not exist")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            meta = json.loads(blob["metadata"])
            state = blob["state"]
        except Exception as exc:  # any unreadable or foreign file
            raise ValueError(f"{str(path)!r} is not a raynas latency model: {exc}") from None
        if meta.get("format") != MLP_FORMAT:
            raise ValueError(f"{str(path)!r} has format {meta.get('format')!r}, "
                             f"expected {MLP_FORMAT!r}")
        model = cls(space_from_spec(meta["space"]), hidden=meta["hidden"],
                    device=meta.get("device", ""), ensemble=meta["ensemble"],
                    seed=meta.get("seed", 0))
        model.mean, model.std = float(meta["mean"]), float(meta["std"])
        model.num_train = int(meta.get("num_train", 0))
        for i in range(model.ensemble):
            member = model._new_model()
            prefix = f"{i}."
            member.load_state_dict({k[len(prefix):]: v for k, v in state.items()
                                    if k.startswith(prefix)})
            member.eval()
            model.models.append(member)
        return model

