"""Layer-wise latency lookup tables (ProxylessNAS, FBNet): time each layer choice once.

A table holds the measured latency of every distinct layer choice of a space at its input
shape and of the fixed parts every network has. The space says which layers those are and
how an architecture is made of them (``SearchSpace.latency_layout()``, a
``spaces.layout.LatencyLayout``; NB201: each operation in each stage; MobileNet: each
kernel/expansion of the first and of the later blocks of each stage). An architecture's
latency is the sum of its layers' entries plus that fixed constant; prediction is a
vectorised gather over index vectors.

Tables are Parquet files (pyarrow): columns ``key``, ``latency_ms``, ``shape``; the schema
metadata ``raynas.latency`` holds the device, the space, and how it was measured.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from raynas.latency.measure import (
    DEFAULT_STATISTIC,
    resolve_clock,
    resolve_device,
    time_modules,
)
from raynas.latency.predictor import ArchEncoder
from spaces import Arch, SearchSpace, space_from_spec

if TYPE_CHECKING:
    import torch

    from spaces.layout import LatencyLayout

logger = logging.getLogger(__name__)

LUT_FORMAT = "raynas-latency-lut/1"
METADATA_KEY = b"raynas.latency"


def _layout(space: SearchSpace) -> LatencyLayout:
    """The space's lookup-table layout; ``ValueError`` naming the space when it has none."""
    try:
        return space.latency_layout()
    except NotImplementedError:
        raise ValueError(
            f"no layer-wise latency table for space {space.name!r}: it has no layout "
            "(SearchSpace.latency_layout); use a measured table or a learned model for it"
        ) from None


# --------------------------------------------------------------------------- table
class LatencyTable:
    """A layer-wise latency lookup table of one space on one device.

    Example:
        >>> from spaces import create_space
        >>> space = create_space("nb201", channels=4, cells_per_stage=1, resolution=8)
        >>> table = build_table(space, repeats=3, rounds=1, warmup=1)
        >>> arch = space.sample(np.random.default_rng(0))
        >>> bool(table.predict([arch])[0] > 0)
        True
    """

    def __init__(self, space: SearchSpace, entries: Mapping[str, float], *,
                 metadata: Mapping[str, Any] | None = None) -> None:
        self.space = space
        self.entries = {str(k): float(v) for k, v in entries.items()}
        self.metadata = dict(metadata or {})
        self.metadata.setdefault("space", space.spec())
        self.device = str(self.metadata.get("device", ""))
        self.layout = _layout(space)
        missing = sorted(set(self.layout.keys()) - set(self.entries))
        if missing:
            raise ValueError(f"latency table for space {space.name!r} lacks {len(missing)} "
                             f"entries, e.g. {missing[:3]}; rebuild it for this space")
        self.constant = sum(self.entries[k] * n for k, n in self.layout.fixed().items())
        self.scale = float(self.metadata.get("scale", 1.0))
        if not np.isfinite(self.scale) or self.scale <= 0:
            raise ValueError(f"latency table scale must be > 0, got {self.scale!r}")
        self._variable = self.layout.compile(self.entries)

    def predict_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """Predicted latency (ms) of each index vector: ``scale * (fixed + its layers)``."""
        vectors = np.asarray(vectors, dtype=np.int64).reshape(-1, len(self.space.dims))
        return self.scale * (self.constant + self._variable(vectors))

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        """Predicted latency (ms) of each architecture (the ``Predictor`` protocol)."""
        return self.predict_vectors(ArchEncoder(self.space, prefill=False).encode(archs))

    def expected(self, probabilities: Sequence[torch.Tensor]) -> torch.Tensor:
        """Expected latency (ms) when decision ``k`` is drawn from ``probabilities[k]`` (torch).

        Differentiable in the probabilities: ProxylessNAS's latency loss (Cai et al. 2019).
        """
        return self.scale * (self.constant + self.layout.expected(self.entries, probabilities))

    def layers(self, arch: Arch) -> dict[str, int]:
        """The table keys an architecture uses, with multiplicities (fixed parts included)."""
        return {**self.layout.fixed(), **self.layout.arch_layers(arch)}

    def save(self, path: str | Path) -> Path:
        """Write Parquet; the metadata goes into the schema under ``raynas.latency``."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        shapes = self.metadata.get("shapes", {})
        keys = sorted(self.entries)
        table = pa.table({
            "key": pa.array(keys, pa.string()),
            "latency_ms": pa.array([self.entries[k] for k in keys], pa.float64()),
            "shape": pa.array([shapes.get(k, "") for k in keys], pa.string()),
        })
        meta = {k: v for k, v in self.metadata.items() if k != "shapes"}
        meta["format"] = LUT_FORMAT
        table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()})
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        """Read a table written by ``save``; the space is rebuilt from its metadata."""
        import pyarrow.parquet as pq

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"latency table {str(path)!r} does not exist")
        try:
            table = pq.read_table(path)
        except Exception as exc:
            raise ValueError(f"{str(path)!r} is not a Parquet latency table: {exc}") from None
        raw = (table.schema.metadata or {}).get(METADATA_KEY)
        if raw is None:
            raise ValueError(f"{str(path)!r} has no {METADATA_KEY.decode()!r} schema metadata; "
                             "build it with `raynas latency build`")
        meta = json.loads(raw)
        if meta.get("format") != LUT_FORMAT:
            raise ValueError(f"{str(path)!r} has format {meta.get('format')!r}, "
                             f"expected {LUT_FORMAT!r}")
        cols = table.to_pydict()
        meta["shapes"] = dict(zip(cols["key"], cols.get("shape", [""] * len(cols["key"]))))
        entries = dict(zip(cols["key"], cols["latency_ms"], strict=True))
        return cls(space_from_spec(meta["space"]), entries, metadata=meta)


def build_table(
    space: SearchSpace,
    *,
    device: str = "cpu",
    torch_device: str = "cpu",
    batch_size: int = 1,
    warmup: int = 5,
    repeats: int = 30,
    rounds: int = 3,
    threads: int | None = 1,
    num_classes: int = 10,
    in_channels: int = 3,
    clock: str = "auto",
    statistic: str = DEFAULT_STATISTIC,
    calibrate: int = 0,
    seed: int = 0,
) -> LatencyTable:
    """Time every distinct layer choice of ``space`` (``statistic`` of ``repeats`` passes).

    ``device`` names the target in the table's metadata; ``torch_device`` is where the
    timing runs (``cpu``, ``cuda``, ``auto``). With ``calibrate=k`` it also times ``k``
    whole random networks (seeded by ``seed``) and stores ``scale``, the median ratio of
    measured to summed latency, which later predictions are multiplied by: layers timed
    alone run on hot caches and miss the Python glue between them (a sum of NB201 layers
    came out about 25% below whole networks here). Ranks do not change.
    """
    import torch

    layout = _layout(space)
    layers = layout.layers(batch_size, in_channels, num_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        times = time_modules([(m, x) for _, m, x in layers], warmup=warmup, repeats=repeats,
                             rounds=rounds, device=torch_device, threads=threads, clock=clock,
                             statistic=statistic)
    entries = {key: float(t) for (key, _, _), t in zip(layers, times, strict=True)}
    metadata = {
        "device": device, "torch_device": str(torch_device), "space": space.spec(),
        "batch_size": batch_size, "num_classes": num_classes, "in_channels": in_channels,
        "warmup": warmup, "repeats": repeats, "rounds": rounds, "threads": threads,
        "statistic": statistic,
        "clock": resolve_clock(clock, resolve_device(torch_device).type, threads),
        "torch_version": torch.__version__, "machine": f"{platform.platform()}; "
        f"{platform.processor() or platform.machine()}",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "shapes": {key: "x".join(map(str, x.shape)) for key, _, x in layers},
    }
    table = LatencyTable(space, entries, metadata=metadata)
    if calibrate:
        from raynas.latency.measure import measure_archs

        rng = np.random.default_rng(seed)
        archs = [space.sample(rng) for _ in range(calibrate)]
        measured = measure_archs(space, archs, batch_size=batch_size, warmup=warmup,
                                 repeats=repeats, rounds=rounds, device=torch_device,
                                 threads=threads, clock=clock, statistic=statistic,
                                 num_classes=num_classes, in_channels=in_channels)
        metadata["scale"] = float(np.median(measured / table.predict(archs)))
        metadata["calibration_archs"] = calibrate
        table = LatencyTable(space, entries, metadata=metadata)
    logger.info("latency table for %s on %s: %d entries", space.name, device, len(entries))
    return table


__all__ = ["LatencyTable", "build_table"]
