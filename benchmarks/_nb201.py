"""NAS-Bench-201-style tables for the benchmarks: loading, thresholds, distinct-query driving.

A table is a CSV with one row per NB201 architecture string: ``arch_str``,
``val_acc_200ep`` and ``test_acc_200ep`` (required in every row), and optional numeric
columns (a low fidelity such as ``val_acc_12ep``, a proxy such as ``zen_score``) whose
empty cells are missing values. The CIFAR-10, CIFAR-100 and ImageNet16-120 exports of
NAS-Bench-201 (Dong & Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural
Architecture Search", ICLR 2020) have this form.

Protocol pieces shared by the benchmarks that search such a table:

* ``table_thresholds``: the test accuracy at which the table's top 1% / 0.1% start, and its
  optimum, computed from the rows of the table given (never constants);
* ``DistinctQueryDriver``: a query is a distinct architecture (by canonical form) for every
  method; a proposal repeating one already queried is answered from the evaluation cache
  with the value measured the first time and costs nothing; an architecture the table lacks
  is told to the searcher as a failed trial and is not a query (nothing was measured);
* ``incumbent_trace`` / ``first_query_reaching`` / ``median_queries_to_threshold``: the
  architecture a search returns after ``q`` queries is the best by ``val_acc_200ep`` among
  them (the first on ties), reported by its ``test_acc_200ep``.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from spaces import SearchSpace

ARCH = "arch_str"
VAL = "val_acc_200ep"
TEST = "test_acc_200ep"
INDEX = "index"
FULL_EPOCHS = 200  # the epochs of the full-fidelity columns
LOW_FIDELITY = "val_acc_12ep"
OPTIONAL_COLUMNS = ("val_acc_12ep", "test_acc_12ep", "zen_score")
TOP1PCT = 0.01
TOP01PCT = 0.001
SUGGEST_FACTOR = 20  # a driver gives up after this many proposals per distinct query wanted

Result = Mapping[str, float]


@dataclass(frozen=True)
class NB201Table:
    """The columns of one NB201-style table, keyed by architecture string."""

    name: str  # the file name without suffix, e.g. "cifar10"
    path: Path
    archs: tuple[str, ...]  # every row's arch_str, in file order
    val: dict[str, float]  # val_acc_200ep
    test: dict[str, float]  # test_acc_200ep
    optional: dict[str, dict[str, float]]  # column -> {arch: value} of its non-empty cells
    index: dict[str, str] = field(default_factory=dict)  # arch -> the "index" cell, if any

    def column(self, name: str) -> dict[str, float]:
        """Non-empty cells of optional column ``name`` (empty if the file lacks it)."""
        return self.optional.get(name, {})

    def coverage(self, name: str) -> float:
        """Fraction of the rows with a value in optional column ``name``."""
        return len(self.column(name)) / len(self.archs)


def load_table(path: Path, optional: Sequence[str] = OPTIONAL_COLUMNS) -> NB201Table:
    """Read an NB201-style CSV: required ``arch_str``/``val``/``test``, ``optional`` columns."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        for required in (ARCH, VAL, TEST):
            if required not in header:
                raise ValueError(f"{path.name}: column {required!r} missing (has {header[:8]})")
        present = [c for c in optional if c in header]
        archs: list[str] = []
        val: dict[str, float] = {}
        test: dict[str, float] = {}
        extra: dict[str, dict[str, float]] = {c: {} for c in present}
        index: dict[str, str] = {}
        for line, row in enumerate(reader, start=2):
            arch = (row[ARCH] or "").strip()
            if not arch:
                raise ValueError(f"{path.name} line {line}: {ARCH} is empty")
            if arch in val:
                raise ValueError(f"{path.name} line {line}: {ARCH} {arch[:60]!r} repeated")
            val[arch] = _number(row[VAL], VAL, path, line, required=True)  # type: ignore[assignment]
            test[arch] = _number(row[TEST], TEST, path, line, required=True)  # type: ignore[assignment]
            for column in present:
                value = _number(row[column], column, path, line, required=False)
                if value is not None:
                    extra[column][arch] = value
            if INDEX in row and row[INDEX]:
                index[arch] = row[INDEX]
            archs.append(arch)
    if not archs:
        raise ValueError(f"{path.name}: no rows")
    return NB201Table(path.stem, path, tuple(archs), val, test, extra, index)


def _number(
    cell: str | None, column: str, path: Path, line: int, *, required: bool
) -> float | None:
    text = (cell or "").strip()
    if not text:
        if required:
            raise ValueError(f"{path.name} line {line}: {column} is empty")
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(
            f"{path.name} line {line}: {column} {text[:20]!r} is not a number"
        ) from None
    if not math.isfinite(value):
        raise ValueError(f"{path.name} line {line}: {column} {text[:20]!r} is not finite")
    return value


def check_archs(table: NB201Table, space: SearchSpace) -> None:
    """``ValueError`` naming the first ``arch_str`` that is not the space's string form."""
    for arch in table.archs:
        try:
            same = space.to_string(space.from_string(arch)) == arch
        except ValueError as exc:
            raise ValueError(f"{table.name}: {ARCH} {arch[:60]!r}: {exc}") from None
        if not same:
            raise ValueError(f"{table.name}: {ARCH} {arch[:60]!r} is not in canonical string form")


def fidelity_epochs(column: str) -> int:
    """Training epochs of a fidelity column named ``..._<n>ep`` (``val_acc_12ep`` -> 12)."""
    match = re.search(r"_(\d+)ep$", column)
    if match is None:
        raise ValueError(f"fidelity column {column!r} does not end in _<epochs>ep")
    return int(match.group(1))


def cost_in_full_trainings(column: str, evaluations: int) -> float:
    """``evaluations`` at ``column``'s fidelity in 200-epoch trainings (12ep: 12/200 each)."""
    return evaluations * fidelity_epochs(column) / FULL_EPOCHS


# ---------------------------------------------------------------------- thresholds
def top_fraction_threshold(values: Sequence[float] | np.ndarray, fraction: float) -> float:
    """Value where the top ``fraction`` starts: the ceil(fraction * n)-th highest value.

    Every value >= it is "in the top fraction" (ties at the threshold included).
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    ordered = np.sort(np.asarray(values, dtype=float))[::-1]
    if ordered.size == 0:
        raise ValueError("no values to take a top fraction of")
    return float(ordered[math.ceil(round(fraction * ordered.size, 9)) - 1])


@dataclass(frozen=True)
class Thresholds:
    """Test-accuracy landmarks of one table."""

    top1pct: float  # test at which the top 1% starts
    top01pct: float  # test at which the top 0.1% starts
    best_test: float  # the optimum: the table's highest test accuracy
    best_val_test: float  # test of the best-by-validation row (first in file order on ties)


def table_thresholds(table: NB201Table) -> Thresholds:
    """Top 1% / 0.1% thresholds and the optimum by ``test_acc_200ep`` of ``table``'s rows."""
    tests = [table.test[a] for a in table.archs]
    best_val_arch = max(table.archs, key=lambda a: table.val[a])  # max keeps the first of ties
    return Thresholds(
        top1pct=top_fraction_threshold(tests, TOP1PCT),
        top01pct=top_fraction_threshold(tests, TOP01PCT),
        best_test=max(tests),
        best_val_test=table.test[best_val_arch],
    )


# --------------------------------------------------------------- incumbents, queries
def incumbent_trace(vals: Sequence[float], tests: Sequence[float]) -> list[float]:
    """Test of the best-by-validation query after each query (strict >: first of ties stays)."""
    best_val, best_test = -math.inf, math.nan
    trace: list[float] = []
    for v, t in zip(vals, tests):
        if v > best_val:
            best_val, best_test = v, t
        trace.append(best_test)
    return trace


def value_at(trace: Sequence[float], queries: int) -> float:
    """``trace`` after ``queries`` queries; a shorter (stopped) run keeps its last value."""
    if not trace:
        return math.nan
    return trace[min(queries, len(trace)) - 1]


def first_query_reaching(trace: Sequence[float], threshold: float) -> int | None:
    """Smallest q (1-based) with ``trace[q - 1] >= threshold``, or None if never."""
    hits = np.flatnonzero(np.asarray(trace, dtype=float) >= threshold)
    return int(hits[0]) + 1 if hits.size else None


def median_queries_to_threshold(hits: Sequence[int | None], cap: int) -> tuple[float, int]:
    """Median queries to the threshold over runs, and how many runs never reached it.

    A run that did not reach it within ``cap`` queries (``None``) counts as ``cap + 1``:
    beyond the budget. The median is thus exact while at most half the runs are censored,
    and ``cap + 1`` says "not reached within the budget" otherwise.
    """
    if not hits:
        raise ValueError("no runs to take a median over")
    counts = [cap + 1 if h is None else h for h in hits]
    return float(np.median(counts)), sum(h is None for h in hits)


# ------------------------------------------------------------------------ driving
class Proposer(Protocol):
    """A search method as the driver sees it: propose an architecture, be told its result."""

    def ask(self) -> tuple[Any, str] | None:
        """(handle, architecture string) of the next proposal, or None when it has no more."""

    def tell(self, handle: Any, result: Result | None) -> None:
        """The result of proposal ``handle``; None when it failed (the table lacks it)."""


class SearcherProposer:
    """A raynas ``NASSearch`` driven in process through ``suggest``/``on_trial_complete``."""

    def __init__(self, searcher: Any) -> None:
        self.searcher = searcher
        self._count = 0

    def ask(self) -> tuple[Any, str] | None:
        """The next suggestion (trial ids t0, t1, ...), None when the searcher is FINISHED."""
        trial_id = f"t{self._count}"
        self._count += 1
        config = self.searcher.suggest(trial_id)
        if config == "FINISHED":  # ray.tune.search.Searcher.FINISHED
            return None
        if not isinstance(config, dict):
            raise RuntimeError(f"{self.searcher} returned {config!r} at trial {trial_id}")
        space = self.searcher.space
        return trial_id, space.to_string(space.from_config(config))

    def tell(self, handle: Any, result: Result | None) -> None:
        """``on_trial_complete`` with the result, or as an error when there is none."""
        if result is None:
            self.searcher.on_trial_complete(handle, None, error=True)
        else:
            self.searcher.on_trial_complete(handle, dict(result))


class OptunaProposer:
    """An Optuna study driven through ``ask``/``tell``, one categorical per space decision."""

    def __init__(self, study: Any, space: SearchSpace, metrics: Sequence[str]) -> None:
        self.study, self.space, self.metrics = study, space, list(metrics)

    def ask(self) -> tuple[Any, str]:
        """A new trial and the architecture of its sampled categoricals."""
        trial = self.study.ask()
        config = {
            d.name: trial.suggest_categorical(d.name, d.choices) for d in self.space.decisions
        }
        return trial, self.space.to_string(self.space.from_config(config))

    def tell(self, handle: Any, result: Result | None) -> None:
        """``study.tell`` the metric value(s), or state FAIL when there is no result."""
        if result is None:
            from optuna.trial import TrialState

            self.study.tell(handle, state=TrialState.FAIL)
        elif len(self.metrics) == 1:
            self.study.tell(handle, result[self.metrics[0]])
        else:
            self.study.tell(handle, [result[m] for m in self.metrics])


class DistinctQueryDriver:
    """Drive a ``Proposer`` until it has queried a number of distinct architectures.

    ``evaluate(arch)`` is the measurement (None if the table lacks ``arch``). Distinct is by
    ``space.canonical``: a repeat is answered from the cache and is not a query, nor is a
    failed one. ``extend`` stops early when the proposer has no more or after
    ``suggest_factor`` proposals per distinct query wanted (a method stuck on repeats).
    """

    def __init__(
        self,
        proposer: Proposer,
        space: SearchSpace,
        evaluate: Callable[[str], Result | None],
        *,
        suggest_factor: int = SUGGEST_FACTOR,
    ) -> None:
        self.proposer, self.space, self.evaluate = proposer, space, evaluate
        self.suggest_factor = suggest_factor
        self.archs: list[str] = []  # the queries, in order
        self.results: list[Result] = []  # their results
        self.suggestions = 0  # proposals, repeats and failures included
        self.repeats = 0  # proposals answered from the cache
        self.missing = 0  # distinct proposals the table lacks
        self.stopped = False  # no more proposals, or the proposal cap was hit
        self._cache: dict[str, Result | None] = {}

    def extend(self, queries: int) -> bool:
        """Query until ``queries`` distinct architectures are measured; False if it stopped."""
        while len(self.archs) < queries and not self.stopped:
            if self.suggestions >= self.suggest_factor * queries:
                self.stopped = True
                break
            proposal = self.proposer.ask()
            if proposal is None:
                self.stopped = True
                break
            handle, arch = proposal
            self.suggestions += 1
            key = self.space.canonical(arch)
            if key in self._cache:
                self.repeats += 1
                self.proposer.tell(handle, self._cache[key])
                continue
            result = self.evaluate(arch)
            self._cache[key] = result
            self.proposer.tell(handle, result)
            if result is None:
                self.missing += 1
                continue
            self.archs.append(arch)
            self.results.append(result)
        return len(self.archs) >= queries


def table_evaluator(table: NB201Table) -> Callable[[str], Result | None]:
    """``evaluate`` for a driver: ``{val_acc_200ep: value}``, None for a row the table lacks."""

    def evaluate(arch: str) -> Result | None:
        value = table.val.get(arch)
        return None if value is None else {VAL: value}

    return evaluate


def driver_trace(driver: DistinctQueryDriver, table: NB201Table) -> list[float]:
    """Incumbent test accuracy after each of a single-objective driver's queries."""
    return incumbent_trace([r[VAL] for r in driver.results], [table.test[a] for a in driver.archs])
