"""Network-level latency predictors: a learned MLP and exact lookups in measured tables.

The learned predictor follows HAT (Wang et al., ACL 2020) and BRP-NAS (Dudziak et al.,
NeurIPS 2020): a small MLP on the space's one-hot encoding, trained on (architecture,
measured latency) pairs with a log-latency target. A gradient-boosted model was measured
against it on the NAS-Bench-201 device table (``benchmarks/latency_predictors.py``): it is
as good at 1,000 samples and clearly worse at 100, so the MLP is the one kept.

Files hold no pickle: ``torch.save`` of tensors plus a JSON string, read back with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spaces import Arch, SearchSpace, create_space

logger = logging.getLogger(__name__)

MLP_FORMAT = "raynas-latency-mlp/1"
PREFILL_LIMIT = 100_000  # spaces up to this size are encoded whole when an encoder starts
_SPACE_OPTIONS = {
    "nb201": ("channels", "cells_per_stage", "resolution"),
    "mobilenet": ("resolution", "stem_width", "widths", "strides", "depth_choices",
                  "kernel_choices", "expand_choices", "head_width"),
}


# --------------------------------------------------------------------------- spaces
def space_spec(space: SearchSpace) -> dict[str, Any]:
    """JSON-friendly ``{"name", "options"}`` that ``space_from_spec`` rebuilds ``space`` from."""
    keys = _SPACE_OPTIONS.get(space.name)
    if keys is None:
        options = dict(space.describe().get("options", {}))
    else:
        options = {k: getattr(space, k) for k in keys}
    options = {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
    return {"name": space.name, "options": options}


def space_from_spec(spec: Mapping[str, Any]) -> SearchSpace:
    """The space a ``space_spec`` describes."""
    return create_space(spec["name"], **dict(spec.get("options", {})))


def one_hot(space: SearchSpace, vectors: np.ndarray) -> np.ndarray:
    """Float32 one-hot features of index vectors ``(n, d)``; unused MobileNet slots are zero."""
    vectors = np.asarray(vectors, dtype=np.int64).reshape(-1, len(space.dims))
    dims = np.asarray(space.dims)
    offsets = np.concatenate([[0], np.cumsum(dims)[:-1]])
    out = np.zeros((len(vectors), int(dims.sum())), dtype=np.float32)
    rows = np.repeat(np.arange(len(vectors)), len(dims))
    mask = np.ones(vectors.shape, dtype=bool)
    if space.name == "mobilenet":
        mask = _mobilenet_active(space, vectors)
    cols = (vectors + offsets).ravel()
    keep = mask.ravel()
    out[rows[keep], cols[keep]] = 1.0
    return out


def _mobilenet_active(space: Any, vectors: np.ndarray) -> np.ndarray:
    """Which decisions of each MobileNet vector matter (depths, and kernels/expands in use)."""
    stages, depth = space.num_stages, space.max_depth
    depths = np.asarray(space.depth_choices)[vectors[:, :stages]]  # (n, stages)
    slot = np.arange(stages * depth) % depth  # position of each slot within its stage
    stage = np.arange(stages * depth) // depth
    active = slot[None, :] < depths[:, stage]  # (n, slots)
    return np.hstack([np.ones((len(vectors), stages), dtype=bool), active, active])


class ArchEncoder:
    """Architecture -> index vector, memoised, with a clear error for foreign architectures.

    Each distinct architecture gets a row in ``vectors``; ``rows(archs)`` returns row ids
    (new architectures are validated, encoded and appended), so callers can keep per-row
    results (predictions) beside it. Spaces of at most ``PREFILL_LIMIT`` strings are
    encoded whole at start, so every later call is a dictionary lookup.

    Example:
        >>> enc = ArchEncoder(create_space("nb201"))
        >>> enc.vectors[enc.rows(["|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"])].tolist()
        [[0, 0, 0, 0, 0, 0]]
    """

    def __init__(self, space: SearchSpace, *, prefill: bool | None = None) -> None:
        self.space = space
        self._index: dict[Hashable, int] = {}
        self._chunks: list[np.ndarray] = []
        self._vectors = np.zeros((0, len(space.dims)), dtype=np.int64)
        if prefill is None:
            prefill = space.size <= PREFILL_LIMIT
        if prefill:
            vectors = np.array(np.meshgrid(*(np.arange(n) for n in space.dims), indexing="ij"))
            vectors = vectors.reshape(len(space.dims), -1).T
            self._index = {space.decode(v): i for i, v in enumerate(vectors)}
            self._vectors = vectors.astype(np.int64)

    def __len__(self) -> int:
        return len(self._index)

    @property
    def vectors(self) -> np.ndarray:
        """Index vectors of every architecture seen, by row id."""
        if self._chunks:
            self._vectors = np.vstack([self._vectors, *self._chunks])
            self._chunks = []
        return self._vectors

    def rows(self, archs: Sequence[Arch]) -> np.ndarray:
        """Row ids of ``archs``; raises ``ValueError`` naming the first foreign architecture."""
        index = self._index
        try:
            return np.fromiter((index[a] for a in archs), dtype=np.int64, count=len(archs))
        except (KeyError, TypeError):
            pass
        out = np.empty(len(archs), dtype=np.int64)
        new: list[np.ndarray] = []
        for i, arch in enumerate(archs):
            row = index.get(arch) if isinstance(arch, Hashable) else None
            if row is None:
                vector = self.encode_one(arch)
                row = len(index)
                index[arch] = row
                new.append(vector)
            out[i] = row
        if new:
            self._chunks.append(np.vstack(new))
        return out

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


# --------------------------------------------------------------------------- measured tables
def read_latency_table(
    path: str | Path, column: str
) -> tuple[list[str], np.ndarray]:
    """``(arch strings, latencies in ms)`` of a CSV or Parquet table with ``arch_str``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"latency table {str(path)!r} does not exist")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        data = pq.read_table(path).to_pydict()
    else:
        import pyarrow.csv as pacsv

        data = pacsv.read_csv(path).to_pydict()
    if "arch_str" not in data:
        raise ValueError(f"latency table {str(path)!r} has no 'arch_str' column")
    devices = [c for c in data if c not in ("index", "arch_str")]
    if column not in data:
        raise ValueError(
            f"unknown device {column!r} in {str(path)!r}; devices: {', '.join(devices)}"
        )
    values = np.array([math.nan if v is None else float(v) for v in data[column]])
    return [str(a) for a in data["arch_str"]], values


class MeasuredLatency:
    """Exact lookup in a table of measured latencies; NaN for architectures it lacks.

    Example:
        >>> table = MeasuredLatency(create_space("nb201"), ["|none~0|+|none~0|none~1|+|"
        ...     "none~0|none~1|none~2|"], [0.5])
        >>> table.predict(["|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"]).tolist()
        [0.5]
    """

    def __init__(self, space: SearchSpace, archs: Sequence[Arch], latencies: Sequence[float],
                 *, device: str = "") -> None:
        if len(archs) != len(latencies):
            raise ValueError(f"{len(archs)} architectures but {len(latencies)} latencies")
        self.space, self.device = space, device
        self._dims = np.asarray(space.dims, dtype=object)
        self._values = {self._key(space.encode(a)): float(v)
                        for a, v in zip(archs, latencies, strict=True)}

    @classmethod
    def from_file(cls, space: SearchSpace, path: str | Path, column: str) -> MeasuredLatency:
        """Read ``column`` of a CSV/Parquet table with an ``arch_str`` column."""
        archs, values = read_latency_table(path, column)
        return cls(space, archs, values, device=column)

    def _key(self, vector: np.ndarray) -> tuple[int, ...]:
        return tuple(int(v) for v in vector)

    def __len__(self) -> int:
        return len(self._values)

    def predict_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """Latency (ms) of each index vector; NaN where the table has no entry."""
        get = self._values.get
        return np.array([get(self._key(v), math.nan) for v in vectors], dtype=np.float64)

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        """Latency (ms) of each architecture; NaN where the table has no entry."""
        return self.predict_vectors(ArchEncoder(self.space, prefill=False).encode(archs))


# --------------------------------------------------------------------------- learned MLP
class LatencyMLP:
    """A small MLP on one-hot features, trained on log latency (HAT / BRP-NAS style).

    ``ensemble`` independently seeded MLPs are averaged in log space.

    Example:
        >>> space = create_space("nb201")
        >>> rng = np.random.default_rng(0)
        >>> archs = [space.sample(rng) for _ in range(64)]
        >>> ms = [1.0 + space.count_flops(a) / 1e7 for a in archs]
        >>> model = LatencyMLP(space).fit(archs, ms, epochs=20)
        >>> model.predict(archs[:2]).shape
        (2,)
    """

    def __init__(self, space: SearchSpace, *, hidden: Sequence[int] = (128, 128),
                 device: str = "", ensemble: int = 1, seed: int = 0) -> None:
        if not hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1
                             for h in hidden):
            raise ValueError(f"hidden must list positive layer widths, got {hidden!r}")
        if isinstance(ensemble, bool) or not isinstance(ensemble, int) or ensemble < 1:
            raise ValueError(f"ensemble must be a positive integer, got {ensemble!r}")
        self.space, self.device = space, device
        self.hidden, self.ensemble, self.seed = tuple(hidden), ensemble, seed
        self.mean, self.std = 0.0, 1.0
        self.num_train = 0
        self.models: list[Any] = []

    def _new_model(self) -> Any:
        from torch import nn

        layers: list[nn.Module] = []
        width = int(sum(self.space.dims))
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        return nn.Sequential(*layers)

    def fit(self, archs: Sequence[Arch], latencies_ms: Sequence[float], *, epochs: int = 300,
            lr: float = 3e-3, weight_decay: float = 1e-4, batch_size: int = 64) -> LatencyMLP:
        """Train on (architecture, latency in ms) pairs; non-positive latencies are rejected."""
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
        with torch.inference_mode():
            out = torch.stack([m(x).squeeze(1) for m in self.models]).mean(0)
        return np.exp(out.double().numpy() * self.std + self.mean)

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        """Predicted latency (ms) of each architecture (the ``Predictor`` protocol)."""
        return self.predict_vectors(ArchEncoder(self.space, prefill=False).encode(archs))

    # ----------------------------------------------------------------- files
    def metadata(self) -> dict[str, Any]:
        """What a file records beside the weights."""
        return {"format": MLP_FORMAT, "space": space_spec(self.space), "device": self.device,
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
