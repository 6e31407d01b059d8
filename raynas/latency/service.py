"""The ``LatencyService`` Ray actor: one per device, batched predictions, found by name.

A service holds one or more predictors of one device, tried in order: an architecture is
answered by the first that covers it (a measured table covers only its rows; a lookup
table or a learned model covers the whole space). Sources are files or MLflow artifact
URIs (``runs:/<run_id>/pixel3.pt``), loaded in the actor's constructor, so an actor Ray
restarts after a crash (``max_restarts``) loads them again and keeps serving.

Every answer is memoised per architecture; spaces of at most ``PREFILL_LIMIT`` strings
(NAS-Bench-201's 15,625) are predicted whole when the service starts, so a call is a
dictionary lookup per architecture plus one array gather.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import ray

from raynas.latency.measure import MeasuredLatency
from raynas.latency.predictor import AppendArray, ArchEncoder, LatencyMLP
from spaces import Arch, SearchSpace, space_from_spec

if TYPE_CHECKING:
    from ray.actor import ActorHandle

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "raynas-latency"
SOURCE_KINDS = ("table", "lut", "model")
MAX_TASK_RETRIES = 3  # calls in flight when the actor died are retried, then they raise
MAX_CACHED = 1_000_000  # memoised architectures before the memo starts afresh
_DEVICE = re.compile(r"^[A-Za-z0-9_.-]+$")
_SUFFIX_KINDS = {".csv": "table", ".parquet": "lut", ".pt": "model", ".pth": "model",
                 ".npz": "model"}
_HANDLES: dict[tuple[str | None, str], ActorHandle] = {}  # lookups, dropped on errors
# Handles of the services this process started: Ray destroys a non-detached actor, named or
# not, once its owner holds no handle, so these stay until stop_latency_service.
_STARTED: dict[tuple[str | None, str], ActorHandle] = {}
_LOCK = threading.Lock()


def check_device(device: Any) -> str:
    """``device`` if it can name a metric (``latency_<device>``), else ``ValueError``."""
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise ValueError(f"device must be a name of letters, digits, '_', '.', '-', "
                         f"got {device!r}")
    return device


def is_uri(path: str) -> bool:
    """Whether ``path`` is an MLflow / remote artifact URI rather than a local file."""
    return "://" in path or path.startswith(("runs:/", "models:/"))


def normalize_sources(spec: Any, *, device: str = "") -> list[dict[str, str]]:
    """Source specs as ``[{"kind", "path"[, "column"]}]`` with absolute local paths.

    A spec is a path or URI (kind from its suffix: ``.csv`` measured table, ``.parquet``
    lookup table, ``.pt`` learned MLP, ``.npz`` additive model), a mapping with one of
    ``table``/``lut``/``model`` (a table may add ``column``, default the device name), or a
    list of these.
    """
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise ValueError(f"device {device!r} lists no latency sources")
        return [s for item in spec for s in normalize_sources(item, device=device)]
    if isinstance(spec, (str, os.PathLike)):
        path = str(spec)
        suffix = Path(path.split("?")[0]).suffix.lower()
        if suffix not in _SUFFIX_KINDS:
            raise ValueError(f"cannot tell the kind of latency source {path!r} from its suffix;"
                             f" write {{table|lut|model: {path}}}")
        spec = {_SUFFIX_KINDS[suffix]: path}
    if not isinstance(spec, Mapping):
        raise ValueError(f"a latency source is a path or a mapping, got {spec!r}")
    if "kind" in spec and spec.get("kind") in SOURCE_KINDS:  # already normalised
        spec = {spec["kind"]: spec.get("path"), **{k: v for k, v in spec.items()
                                                   if k not in ("kind", "path")}}
    kinds = [k for k in SOURCE_KINDS if k in spec]
    extra = set(spec) - set(SOURCE_KINDS) - {"column"}
    if len(kinds) != 1 or extra:
        raise ValueError(f"a latency source names exactly one of {', '.join(SOURCE_KINDS)} "
                         f"(a table may add 'column'), got {dict(spec)!r}")
    kind, path = kinds[0], str(spec[kinds[0]])
    if not is_uri(path):
        local = Path(path).expanduser().absolute()
        if not local.is_file():
            raise ValueError(f"latency {kind} {str(local)!r} for device {device!r} "
                             "does not exist")
        path = str(local)
    out = {"kind": kind, "path": path}
    if "column" in spec:
        if kind != "table":
            raise ValueError(f"'column' applies to a measured table, not a {kind}")
        out["column"] = str(spec["column"])
    return [out]


def load_predictor(source: Mapping[str, str], *, device: str, space: SearchSpace | None,
                   tracking_uri: str | None = None) -> Any:
    """The predictor of one normalised source (downloading MLflow artifacts first)."""
    from raynas.latency.lut import LatencyTable

    path = source["path"]
    if is_uri(path):
        import mlflow.artifacts

        dst = tempfile.mkdtemp(prefix="raynas-latency-")
        path = mlflow.artifacts.download_artifacts(artifact_uri=path, dst_path=dst,
                                                   tracking_uri=tracking_uri)
    if source["kind"] == "lut":
        return LatencyTable.load(path)
    if source["kind"] == "model":
        if Path(path).suffix == ".npz":
            from raynas.latency.additive import AdditiveLatency

            return AdditiveLatency.load(path)
        return LatencyMLP.load(path)
    if space is None:
        raise ValueError(f"measured latency table {source['path']!r} needs the space of its "
                         "arch_str column: pass space")
    return MeasuredLatency.from_file(space, path, source.get("column", device))


def _decisions(space: SearchSpace) -> list[tuple[str, tuple[Any, ...]]]:
    return [(d.name, d.choices) for d in space.decisions]


class LatencyServiceImpl:
    """Predictors of one device behind a batched ``predict``; the body of ``LatencyService``.

    ``space`` (a ``SearchSpace.spec()`` mapping or a name) is the space of measured tables,
    required when no lookup table or model is among the sources; lookup tables and models
    carry their own, and all must encode architectures alike.

    Example:
        >>> table = "../shared/data/nb201/latency_ms.csv"
        >>> svc = LatencyServiceImpl("pixel3", table, space="nb201")  # doctest: +SKIP
        >>> svc.predict(["|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"])  # doctest: +SKIP
        [0.0040146...]
    """

    def __init__(self, device: str, sources: Any, *, space: Mapping[str, Any] | str | None = None,
                 owner: str = "", tracking_uri: str | None = None) -> None:
        self.device = check_device(device)
        self.sources = normalize_sources(sources, device=device)
        self.owner = owner
        base = None
        if space is not None:
            base = space_from_spec({"name": space} if isinstance(space, str) else dict(space))
        loaded: dict[int, Any] = {}
        # Lookup tables and models carry their space; measured tables take the service's.
        for own_space in (True, False):
            for i, source in enumerate(self.sources):
                if (source["kind"] != "table") != own_space:
                    continue
                if base is None and not own_space:
                    raise ValueError(f"latency service {device!r}: measured table "
                                     f"{source['path']!r} needs the space of its arch_str "
                                     "column: pass space (a spec or a name) or a lookup table "
                                     "or model among the sources")
                pred = load_predictor(source, device=device, space=base,
                                      tracking_uri=tracking_uri)
                if base is None:
                    base = pred.space
                elif _decisions(pred.space) != _decisions(base):
                    raise ValueError(f"latency source {source['path']!r} is for space "
                                     f"{pred.space.spec()}, not {base.spec()}")
                loaded[i] = pred
        self.predictors = [loaded[i] for i in range(len(self.sources))]
        self.space: SearchSpace = base  # type: ignore[assignment]
        self._encoder = ArchEncoder(self.space)
        self._values = AppendArray()
        self._lock = threading.Lock()
        self._extend()
        self.loaded_at = time.time()
        logger.info("latency service %s: %d predictors, %d architectures precomputed",
                    device, len(self.predictors), len(self._values))

    def _extend(self) -> None:
        vectors = self._encoder.vectors[len(self._values):]
        if not len(vectors):
            return
        values = np.full(len(vectors), np.nan)
        for pred in self.predictors:
            todo = np.isnan(values)
            if not todo.any():
                break
            values[todo] = pred.predict_vectors(vectors[todo])
        self._values.append(values)

    def predict(self, archs: Sequence[Arch]) -> list[float]:
        """Latency in ms of each architecture, in order; ``ValueError`` for foreign ones."""
        with self._lock:
            if len(self._values) > MAX_CACHED:
                self._encoder, self._values = ArchEncoder(self.space), AppendArray()
                self._extend()
            rows = self._encoder.rows(archs)
            if len(rows) and rows.max() >= len(self._values):
                self._extend()
            out = self._values.view[rows]
        if np.isnan(out).any():
            first = archs[int(np.flatnonzero(np.isnan(out))[0])]
            raise ValueError(f"no latency source of device {self.device!r} covers "
                             f"architecture {first!r}; add a lookup table or a model")
        return out.tolist()

    def info(self) -> dict[str, Any]:
        """Device, space, sources, owner token, process, and whether Ray restarted it."""
        out: dict[str, Any] = {
            "device": self.device, "space": self.space.spec(), "sources": self.sources,
            "owner": self.owner, "pid": os.getpid(), "loaded_at": self.loaded_at,
            "cached": len(self._values),
            "predictors": [type(p).__name__ for p in self.predictors],
        }
        if ray.is_initialized():
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    context = ray.get_runtime_context()
                    out["restarted"] = bool(context.was_current_actor_reconstructed)
            except Exception:  # not inside an actor
                pass
        return out


# Restart on death and retry calls in flight (bounded); calls that raise are not retried.
LatencyService = ray.remote(max_restarts=-1, max_task_retries=MAX_TASK_RETRIES)(
    LatencyServiceImpl
)


# --------------------------------------------------------------------------- helpers
def service_name(device: str, *, prefix: str = DEFAULT_PREFIX) -> str:
    """The Ray actor name of a device's service: ``f"{prefix}-{device}"``."""
    return f"{prefix}-{check_device(device)}"


def start_latency_service(
    device: str,
    sources: Any,
    *,
    space: Mapping[str, Any] | str | None = None,
    prefix: str = DEFAULT_PREFIX,
    namespace: str | None = None,
    num_cpus: float = 0,
    detached: bool = False,
    tracking_uri: str | None = None,
    owner: str = "",
) -> ActorHandle:
    """Start (or find) the named service of ``device`` and wait until it has loaded.

    ``num_cpus=0`` by default: the service answers in microseconds and must not take a
    CPU slot from trials. MLflow URIs are fetched with ``tracking_uri`` (default: this
    process's). A service already running under the name with other sources raises.
    """
    normalized = normalize_sources(sources, device=device)
    if tracking_uri is None and any(is_uri(s["path"]) for s in normalized):
        import mlflow

        tracking_uri = mlflow.get_tracking_uri()
    options: dict[str, Any] = {"name": service_name(device, prefix=prefix),
                               "get_if_exists": True, "num_cpus": num_cpus,
                               "lifetime": "detached" if detached else None}
    if namespace is not None:
        options["namespace"] = namespace
    handle = LatencyService.options(**options).remote(  # type: ignore[attr-defined]
        device, normalized, space=space, owner=owner, tracking_uri=tracking_uri
    )
    try:
        info = ray.get(handle.info.remote())
    except ray.exceptions.RayActorError as exc:
        raise ValueError(f"latency service of device {device!r} failed to start: "
                         f"{_cause(exc)}") from None
    if info["sources"] != normalized:
        raise ValueError(f"a latency service {options['name']!r} with other sources "
                         f"({info['sources']}) is running; stop it or use another prefix")
    with _LOCK:
        _HANDLES[(namespace, options["name"])] = handle
        _STARTED[(namespace, options["name"])] = handle
    return handle


def _cause(exc: BaseException) -> str:
    text = str(getattr(exc, "cause", None) or exc)
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def list_latency_services(*, prefix: str = DEFAULT_PREFIX,
                          namespace: str | None = None) -> list[str]:
    """Devices with a running service under ``prefix`` (this job's namespace by default)."""
    start = f"{prefix}-"
    if namespace is None:
        names = ray.util.list_named_actors()
    else:
        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if a.get("namespace") == namespace]
    return sorted(n[len(start):] for n in names if n.startswith(start))


def get_latency_service(device: str, *, prefix: str = DEFAULT_PREFIX,
                        namespace: str | None = None) -> ActorHandle:
    """The running service of ``device``, from any process of the cluster (cached)."""
    name = service_name(device, prefix=prefix)
    with _LOCK:
        if (namespace, name) in _HANDLES:
            return _HANDLES[(namespace, name)]
    try:
        handle = ray.get_actor(name, namespace=namespace)
    except ValueError:
        running = list_latency_services(prefix=prefix, namespace=namespace)
        raise ValueError(f"no latency service for device {device!r}; running: "
                         f"{', '.join(running) or 'none'} (start one with "
                         "start_latency_service)") from None
    with _LOCK:
        _HANDLES[(namespace, name)] = handle
    return handle


def forget_latency_service(device: str, *, prefix: str = DEFAULT_PREFIX,
                           namespace: str | None = None) -> None:
    """Drop this process's cached handle of a device's service."""
    with _LOCK:
        _HANDLES.pop((namespace, service_name(device, prefix=prefix)), None)


def stop_latency_service(device: str, *, prefix: str = DEFAULT_PREFIX,
                         namespace: str | None = None) -> bool:
    """Kill a device's service for good (no restart); whether one was running."""
    name = service_name(device, prefix=prefix)
    try:
        handle = ray.get_actor(name, namespace=namespace)
    except ValueError:
        handle = None
    forget_latency_service(device, prefix=prefix, namespace=namespace)
    with _LOCK:
        _STARTED.pop((namespace, name), None)
    if handle is None:
        return False
    ray.kill(handle, no_restart=True)
    return True


class LatencyPredictor:
    """Client of a running service: the searchers' ``Predictor`` protocol, picklable.

    Holds names only and finds the actor lazily in each process. Non-string architectures
    are turned into strings with ``space.to_string`` when a space is given.

    Example:
        >>> predictor = LatencyPredictor("pixel3")
        >>> predictor.predict(["|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"])  # doctest: +SKIP
        array([0.0040147])
    """

    def __init__(self, device: str, *, space: SearchSpace | None = None,
                 prefix: str = DEFAULT_PREFIX, namespace: str | None = None,
                 timeout_s: float = 60.0) -> None:
        self.device, self.space = check_device(device), space
        self.prefix, self.namespace, self.timeout_s = prefix, namespace, timeout_s

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        """Latency (ms) of each architecture, as a float64 array in order."""
        items = [a if isinstance(a, str) or self.space is None else self.space.to_string(a)
                 for a in archs]
        for attempt in range(2):
            handle = get_latency_service(self.device, prefix=self.prefix,
                                         namespace=self.namespace)
            try:
                return np.asarray(ray.get(handle.predict.remote(items), timeout=self.timeout_s),
                                  dtype=np.float64)
            except ray.exceptions.RayTaskError as exc:
                if isinstance(getattr(exc, "cause", None), ValueError):
                    raise ValueError(str(exc.cause)) from None
                raise
            except ray.exceptions.RayActorError:
                # A cached handle of a service that was stopped and started anew.
                forget_latency_service(self.device, prefix=self.prefix, namespace=self.namespace)
                if attempt:
                    raise
        raise AssertionError("unreachable")
