"""Evaluators: map an architecture to metrics, by training it or by looking it up in a table."""

from __future__ import annotations

import importlib
import json
import logging
import math
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from raynas.evaluators.data import DatasetSplits, batches, load_dataset, resolve_spec
from raynas.run.config import clip, short
from spaces import Arch, SearchSpace

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

Report = Callable[[dict[str, float]], None]
NB201_DATA_HINT = (
    "the NAS-Bench-201 tables (cifar10.csv, latency_ms.csv) live in ../shared/data/nb201 "
    "relative to the project root"
)

# Per-process caches, so a Ray worker that runs many trials loads each dataset / table once.
_LOCK = threading.Lock()
_DATASETS: dict[str, DatasetSplits] = {}
_TABLES: dict[str, tuple[list[str], dict[str, dict[str, Any]]]] = {}


class Evaluator(ABC):
    """Maps an architecture to a dict of float metrics.

    Contract: ``evaluate`` may call ``report(metrics)`` for intermediate results (once per
    epoch or fidelity before the last, each dict holding the searcher's metric; Tune gets
    each at once, so a scheduler can stop the trial) and returns the final metrics, which
    the caller reports last. Evaluators are pickled to Ray Tune workers
    (``tune.with_parameters``): they keep paths and options, never loaded data, and load
    lazily once per process. Metrics named ``test_*`` are for reporting only; searchers
    and schedulers must optimise ``default_metric``.
    """

    @property
    @abstractmethod
    def metrics(self) -> tuple[str, ...]:
        """Names of the metrics ``evaluate`` returns."""

    @property
    def default_metric(self) -> tuple[str, str]:
        """The searcher-visible metric and its mode (``"max"`` or ``"min"``)."""
        return "val_acc", "max"

    @abstractmethod
    def evaluate(self, arch: Arch, *, report: Report | None = None) -> dict[str, float]:
        """Metrics of ``arch``; intermediate results go to ``report`` if given."""

    def setup(
        self,
        *,
        log_metrics: Callable[[dict[str, float], int], None] | None = None,
        checkpoint_dir: str | None = None,
        search_id: str | None = None,
        log_artifact: Callable[[str], None] | None = None,
        restore_from: str | None = None,
    ) -> None:
        """Driver-side preparation before the first trial (e.g. train a shared supernet).

        ``search_id`` (the search's MLflow run id) names what belongs to one search, the
        same for every driver of it; ``log_artifact(path)`` stores a file in the search's
        run while setup runs (e.g. a checkpoint per chunk of training); ``restore_from`` is
        a file an earlier driver of the search logged, to continue from.
        """
        return None

    def artifacts(self) -> list[str]:
        """Local files the driver logs to the search's MLflow run after ``setup``."""
        return []

    def teardown(self) -> None:
        """Release what ``setup`` started, after the last trial."""
        return None


# --------------------------------------------------------------------------- training
class TrainingEvaluator(Evaluator):
    """Train ``space.build_network(arch)`` from scratch with SGD and a cosine schedule.

    Each epoch reports ``epoch``, ``train_loss``, ``val_acc`` and ``val_loss`` (accuracies in
    percent); the result adds ``test_acc``, ``params``, ``flops`` (MACs) and ``train_time_s``.
    Runs are seeded: the same arch, seed and thread count give the same numbers. A
    non-finite loss ends training and the metrics read NaN (a failed trial), nothing raises.

    Example:
        >>> from spaces import create_space
        >>> space = create_space("nb201", channels=8, cells_per_stage=1)
        >>> ev = TrainingEvaluator(space, dataset="digits", epochs=1)
        >>> arch = space.sample(np.random.default_rng(0))
        >>> sorted(ev.evaluate(arch))[:3]
        ['epoch', 'flops', 'params']
    """

    def __init__(
        self,
        space: SearchSpace,
        *,
        dataset: str | Mapping[str, Any] = "digits",
        epochs: int = 3,
        batch_size: int = 64,
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        seed: int = 0,
        num_threads: int | None = None,
        data_seed: int = 0,
        train_subset: int | None = None,
        grad_clip: float | None = 5.0,
        device: str = "auto",
    ) -> None:
        for label, value in (("epochs", epochs), ("batch_size", batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{label} must be a positive integer, got {short(value)}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {short(lr)}")
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be >= 1 or None, got {short(num_threads)}")
        if train_subset is not None and train_subset < 1:
            raise ValueError(f"train_subset must be >= 1 or None, got {short(train_subset)}")
        if not space.provides("build_network"):
            raise ValueError(
                f"space {space.name!r} has no network to train (SearchSpace.build_network): "
                "name your own training function as the evaluator ('package.module:function')"
            )
        self.space = space
        # Resolved on the driver: paths become absolute and a bad spec fails before any trial.
        self.dataset = resolve_spec(dataset)
        self.epochs, self.batch_size = epochs, batch_size
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.seed, self.data_seed, self.num_threads = seed, data_seed, num_threads
        self.train_subset, self.grad_clip, self.device = train_subset, grad_clip, device

    @property
    def metrics(self) -> tuple[str, ...]:
        """Per-epoch metrics, then those only in the final result."""
        return ("epoch", "train_loss", "val_acc", "val_loss", "test_acc", "params", "flops",
                "train_time_s")

    def data(self) -> DatasetSplits:
        """The dataset splits, loaded once per process."""
        key = json.dumps([self.dataset, self.data_seed], sort_keys=True, default=str)
        with _LOCK:
            if key not in _DATASETS:
                _DATASETS[key] = load_dataset(self.dataset, seed=self.data_seed)
            return _DATASETS[key]

    def evaluate(self, arch: Arch, *, report: Report | None = None) -> dict[str, float]:
        """Train ``arch`` for ``epochs`` epochs; report each epoch; return the final metrics."""
        import torch

        arch = self.space.validate(arch)
        data = self.data()
        previous_threads = torch.get_num_threads()
        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        try:
            # fork_rng keeps the worker's global torch RNG untouched by the seeded run.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                return self._train(arch, data, report)
        finally:
            if self.num_threads is not None:
                torch.set_num_threads(previous_threads)

    def _train(self, arch: Arch, data: DatasetSplits, report: Report | None) -> dict[str, float]:
        import torch

        device = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto"
            else self.device
        )
        model = self.space.build_network(
            arch, num_classes=data.num_classes, in_channels=data.in_channels
        ).to(device)
        x_train, y_train = data.x_train, data.y_train
        if self.train_subset is not None:
            x_train, y_train = x_train[: self.train_subset], y_train[: self.train_subset]
        steps = self.epochs * math.ceil(len(y_train) / self.batch_size)
        optimizer = torch.optim.SGD(
            model.parameters(), lr=self.lr, momentum=self.momentum,
            weight_decay=self.weight_decay, nesterov=self.momentum > 0,
        )
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
        gen = torch.Generator().manual_seed(self.seed)
        loss_fn = torch.nn.CrossEntropyLoss()
        metrics: dict[str, float] = {}
        start = time.perf_counter()
        for epoch in range(1, self.epochs + 1):
            model.train()
            total, count = 0.0, 0
            for xb, yb in batches(x_train, y_train, self.batch_size, shuffle=True, rng=gen):
                xb, yb = xb.to(device), yb.to(device)
                loss = loss_fn(model(xb), yb)
                if not torch.isfinite(loss):
                    total, count = math.nan, 1
                    break
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), self.grad_clip)
                optimizer.step()
                schedule.step()
                total += loss.item() * len(yb)
                count += len(yb)
            train_loss = total / max(count, 1)
            if math.isfinite(train_loss):
                val_acc, val_loss = _accuracy(model, data.x_val, data.y_val, device)
            else:
                logger.warning("non-finite training loss for %s at epoch %d", arch, epoch)
                val_acc = val_loss = math.nan
            metrics = {"epoch": float(epoch), "train_loss": train_loss,
                       "val_acc": val_acc, "val_loss": val_loss}
            if not math.isfinite(train_loss):
                break
            if report is not None and epoch < self.epochs:
                report(dict(metrics))  # the last epoch is in the returned dict
        train_time = time.perf_counter() - start
        failed = not math.isfinite(metrics["train_loss"])
        test_acc = math.nan if failed else _accuracy(model, data.x_test, data.y_test, device)[0]
        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return {**metrics, "test_acc": test_acc, "params": float(params),
                "flops": self._flops(arch, data), "train_time_s": train_time}

    def _flops(self, arch: Arch, data: DatasetSplits) -> float:
        _, height, width = data.input_shape
        if height != width:  # count_flops assumes square images
            return math.nan
        try:
            return float(self.space.count_flops(
                arch, num_classes=data.num_classes, in_channels=data.in_channels,
                resolution=height,
            ))
        except NotImplementedError:
            return math.nan


def _accuracy(
    model: torch.nn.Module, x: np.ndarray, y: np.ndarray, device: torch.device
) -> tuple[float, float]:
    """Accuracy in percent and mean cross-entropy of ``model`` on ``(x, y)``; NaN if empty."""
    import torch

    if len(y) == 0:
        return math.nan, math.nan
    model.eval()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for xb, yb in batches(x, y, 512):
            xb, yb = xb.to(device), yb.to(device)
            logits = model(xb)
            loss += float(torch.nn.functional.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(dim=1) == yb).sum())
    return 100.0 * correct / len(y), loss / len(y)


# --------------------------------------------------------------------------- tabular
def _read_table(path: Path) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Columns and ``arch_str -> row`` of a CSV table, read once per process.

    Rows repeating an ``arch_str`` with the same values are dropped; with other values the
    table is refused (which one is right is unknown, and the last one would win silently).
    """
    key = str(path)
    with _LOCK:
        if key not in _TABLES:
            import pyarrow
            import pyarrow.csv as pacsv

            try:
                columns = pacsv.read_csv(path).to_pydict()
            except pyarrow.ArrowException as exc:
                raise ValueError(
                    f"table {short(key, 150)} cannot be read: {clip(str(exc))}"
                ) from None
            if "arch_str" not in columns:
                raise ValueError(
                    f"table {short(key, 150)} has no 'arch_str' column: {short(sorted(columns))}"
                )
            names = list(columns)
            rows: dict[str, dict[str, Any]] = {}
            line: dict[str, int] = {}
            for i, arch in enumerate(columns["arch_str"]):
                row = {n: columns[n][i] for n in names}
                if arch in rows and not _same_row(rows[arch], row):
                    # CSV lines count from 1 and the header is line 1.
                    raise ValueError(
                        f"table {short(key, 150)} has two different rows for arch_str "
                        f"{short(arch, 120)} (lines {line[arch]} and {i + 2}); keep one"
                    )
                if arch not in rows:
                    rows[arch], line[arch] = row, i + 2
            if len(rows) < len(columns["arch_str"]):
                logger.info("table %s: %d repeated identical rows dropped", key,
                            len(columns["arch_str"]) - len(rows))
            _TABLES[key] = (names, rows)
        return _TABLES[key]


def _same_row(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two table rows hold the same values (NaN equals NaN), ``index`` aside."""
    for name, value in a.items():
        other = b[name]
        if name == "index" or value == other:
            continue
        if isinstance(value, float) and isinstance(other, float) and (
            math.isnan(value) and math.isnan(other)
        ):
            continue
        return False
    return True


def _float(value: Any) -> float:
    """A table cell as a float; empty cells read NaN."""
    return math.nan if value is None else float(value)


def _read_header(path: Path) -> list[str]:
    with path.open(newline="") as f:
        return f.readline().strip().split(",")


# A table covering less of a finite space than this gets a warning: most trials would fail.
MIN_TABLE_COVERAGE = 0.5


def _warn_coverage(space: SearchSpace, path: Path, rows: int) -> None:
    """Warn (one line) when a table has rows for a small part of a finite space."""
    if not space.finite or space.size <= 0:
        return
    if rows < MIN_TABLE_COVERAGE * space.size:
        logger.warning(
            "table %s covers %d of the %d architectures of space %r (%.3g%%): trials of "
            "the others fail", short(str(path), 150), rows, space.size, space.name,
            100.0 * rows / space.size,
        )


class TabularEvaluator(Evaluator):
    """Answer from a NAS-Bench-201 table: a lookup, no training (Dong & Yang, ICLR 2020).

    Rows are found by the space's ``table_key`` (the ``arch_str`` column: for NB201 the
    NAS-Bench-201 string); spaces without table keys are refused.

    ``val_acc`` is the ``metric`` column, the only value a searcher may see. The other
    numeric columns (``val_acc_12ep``, ``test_acc_200ep``, ...) and ``latency_<device>``
    come along for reporting; ``test_*`` columns must not drive the search. ``table_path``
    may be the CSV or its folder; ``latency_path`` defaults to ``latency_ms.csv`` beside it.

    Example:
        >>> from spaces import create_space
        >>> ev = TabularEvaluator(create_space("nb201"), table_path="../shared/data/nb201",
        ...                       devices=("pixel3",))
        >>> ev.evaluate("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+"
        ...             "|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")["val_acc"]
        90.39
    """

    def __init__(
        self,
        space: SearchSpace,
        *,
        table_path: str | Path,
        metric: str = "val_acc_200ep",
        latency_path: str | Path | None = None,
        devices: Sequence[str] = (),
        multi_fidelity: bool = False,
        delay_s: float = 0.0,
    ) -> None:
        try:  # any architecture tells whether the space has table keys at all
            space.table_key(space.sample(np.random.default_rng(0)))
        except NotImplementedError:
            raise ValueError(
                f"space {space.name!r} has no table key (SearchSpace.table_key); the 'tabular' "
                "evaluator looks each architecture's row up by it: use a space with one or "
                "another evaluator"
            ) from None
        self.space = space
        self.table_path = self._existing(Path(table_path), "cifar10.csv")
        columns = _read_header(self.table_path)
        self.value_columns = tuple(c for c in columns if c not in ("index", "arch_str"))
        if metric not in self.value_columns:
            raise ValueError(
                f"unknown metric {short(metric)} for table {short(str(self.table_path), 150)}; "
                f"columns: {', '.join(self.value_columns)}"
            )
        if metric.startswith("test_"):
            logger.warning("metric %r is a test metric: searchers should see validation only",
                           metric)
        self.metric = metric
        if not isinstance(multi_fidelity, bool):
            raise ValueError(
                f"multi_fidelity must be true or false, got {short(multi_fidelity)}"
            )
        low = "val_acc_12ep"
        if multi_fidelity and (low not in self.value_columns or metric == low):
            raise ValueError(
                "multi_fidelity reports val_acc_12ep first and then the metric column: it needs "
                f"a val_acc_12ep column and another metric, got metric {short(metric)}"
            )
        self.multi_fidelity = multi_fidelity
        if isinstance(delay_s, bool) or not isinstance(delay_s, (int, float)) or not (
            0 <= delay_s < math.inf
        ):
            raise ValueError(f"delay_s must be a number of seconds >= 0, got {short(delay_s)}")
        self.delay_s = float(delay_s)
        if isinstance(devices, str):
            raise ValueError(f"devices must be a sequence of names, e.g. ({short(devices)},)")
        self.devices = tuple(devices)
        self.latency_path: Path | None = None
        self.all_devices: tuple[str, ...] = ()
        if latency_path is not None or self.devices:
            default = self.table_path.parent / "latency_ms.csv"
            self.latency_path = self._existing(
                Path(latency_path) if latency_path is not None else default, "latency_ms.csv"
            )
            header = _read_header(self.latency_path)
            self.all_devices = tuple(c for c in header if c not in ("index", "arch_str"))
            unknown = [d for d in self.devices if d not in self.all_devices]
            if unknown:
                raise ValueError(
                    f"unknown device(s) {short(unknown)}; devices in "
                    f"{short(str(self.latency_path), 150)}: {', '.join(self.all_devices)}"
                )
        # Read on the driver: a table with conflicting rows is refused before anything starts.
        _, rows = _read_table(self.table_path)
        if self.latency_path is not None:
            _read_table(self.latency_path)
        _warn_coverage(space, self.table_path, len(rows))

    @staticmethod
    def _existing(path: Path, default_name: str) -> Path:
        """``path`` (or ``default_name`` inside the folder it names) if it is a file."""
        path = path.expanduser().absolute()
        if path.is_dir():
            path = path / default_name
        if not path.is_file():
            raise ValueError(f"table {short(str(path), 150)} does not exist; {NB201_DATA_HINT}")
        return path

    @property
    def metrics(self) -> tuple[str, ...]:
        """``val_acc``, the table's numeric columns, then ``latency_<device>`` per device."""
        extra = ("epochs",) if self.multi_fidelity else ()
        return ("val_acc", *extra, *self.value_columns,
                *(f"latency_{d}" for d in self.devices))

    def lookup(self, arch: Arch) -> dict[str, Any]:
        """The full table row of ``arch`` plus ``latency_<device>`` for every table device."""
        text = self.space.table_key(arch)
        _, rows = _read_table(self.table_path)
        if text not in rows:
            raise ValueError(f"architecture {text!r} is not in table {str(self.table_path)!r}")
        row = dict(rows[text])
        if self.latency_path is not None:
            _, lat_rows = _read_table(self.latency_path)
            if text not in lat_rows:
                raise ValueError(f"architecture {text!r} is not in {str(self.latency_path)!r}")
            row.update({f"latency_{d}": lat_rows[text][d] for d in self.all_devices})
        return row

    @property
    def epochs(self) -> int:
        """Training epochs the metric column stands for (200 unless it names another)."""
        match = re.search(r"_(\d+)ep$", self.metric)
        return int(match.group(1)) if match else 200

    def evaluate(self, arch: Arch, *, report: Report | None = None) -> dict[str, float]:
        """Table values of ``arch``; with ``multi_fidelity`` the 12-epoch value is reported first.

        ``delay_s`` stands in for the training time of the full evaluation (split between
        fidelities by epochs), so schedulers and concurrency can be measured on a table.
        """
        row = self.lookup(arch)
        total = self.epochs
        done = 0
        if self.multi_fidelity:
            done = 12
            time.sleep(self.delay_s * done / total)
            if report is not None:
                report({"val_acc": _float(row["val_acc_12ep"]), "epochs": float(done)})
        time.sleep(self.delay_s * (total - done) / total)
        out = {"val_acc": _float(row[self.metric])}
        if self.multi_fidelity:
            out["epochs"] = float(total)
        out.update({c: _float(row[c]) for c in self.value_columns})
        out.update({f"latency_{d}": _float(row[f"latency_{d}"]) for d in self.devices})
        return out

    def table(self) -> dict[str, np.ndarray]:
        """All rows as columns (``arch_str`` and numeric arrays, in table order)."""
        names, rows = _read_table(self.table_path)
        archs = list(rows)
        out: dict[str, np.ndarray] = {"arch_str": np.array(archs, dtype=object)}
        for n in names:
            if n != "arch_str":
                values = np.array([rows[a][n] for a in archs])
                if values.dtype == object:  # empty cells
                    values = np.array([_float(v) for v in values], dtype=np.float64)
                out[n] = values
        if self.latency_path is not None:
            _, lat_rows = _read_table(self.latency_path)
            for d in self.all_devices:
                out[f"latency_{d}"] = np.array([lat_rows[a][d] for a in archs], dtype=np.float64)
        return out


# --------------------------------------------------------------------------- factory
EVALUATORS: dict[str, str] = {
    "training": "raynas.evaluators:TrainingEvaluator",
    "tabular": "raynas.evaluators:TabularEvaluator",
    "supernet": "raynas.supernet.evaluator:SupernetEvaluator",
    "latency": "raynas.latency.evaluator:LatencyEvaluator",
    "zero_cost": "raynas.zero_cost.evaluator:ZeroCostEvaluator",
}


def create_evaluator(name: str, space: SearchSpace, **options: Any) -> Evaluator:
    """Build evaluator ``name``: a bundled one (``training``, ``tabular``, ``supernet``,
    ``latency``, ``zero_cost``), a ``raynas.evaluators`` entry point, or your
    ``package.module:function``.

    A function (or an entry point naming one) becomes a ``FunctionEvaluator`` called as
    ``fn(config, report, **options)``; an entry point naming an ``Evaluator`` subclass is
    built as ``cls(space, **options)``.
    """
    from raynas.evaluators.function import (
        FunctionEvaluator,
        entry_point_names,
        entry_point_target,
        resolve_target,
    )

    if not isinstance(name, str) or not name:
        raise ValueError(
            f"evaluator must be a name or 'package.module:function', got {short(name)}"
        )
    key = name.lower()
    if key in EVALUATORS:
        module, _, attr = EVALUATORS[key].partition(":")
        cls = getattr(importlib.import_module(module), attr)
        return cls(space, **options)  # type: ignore[no-any-return]
    target = name if ":" in name else entry_point_target(name)
    if target is None:
        plugins = entry_point_names()
        raise ValueError(
            f"unknown evaluator {short(name)}; available: {', '.join(sorted(EVALUATORS))}"
            + (f", {', '.join(plugins)}" if plugins else "")
            + " (or your own 'package.module:function')"
        )
    obj = resolve_target(target)
    if isinstance(obj, type) and issubclass(obj, Evaluator):
        return obj(space, **options)
    return FunctionEvaluator(space, target=target, options=options)
