"""Experiment configuration: YAML -> frozen dataclasses, validated with field-naming errors."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the field and the fix."""


@dataclass(frozen=True)
class Component:
    """A named, registered component (space, searcher, evaluator) and its keyword options."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Budget:
    """How many trials, how many at once, and resources and retries per trial."""

    trials: int = 20
    concurrency: int = 2
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_failures: int = 0


@dataclass(frozen=True)
class Tracking:
    """Where MLflow records the search, and how often the searcher state is saved there."""

    uri: str | None = None
    experiment: str = "raynas"
    # Log the searcher's state as an artifact every this many finished trials (0: at the end only).
    checkpoint_every: int = 10
    # How long logging may fail (tracking store down) before the search stops.
    max_outage_s: float = 300.0


@dataclass(frozen=True)
class Member:
    """One searcher of a portfolio: its label, component, trial budget and result sharing."""

    label: str
    searcher: Component
    trials: int
    # Tell this searcher of the results other members found (``add_evaluated_point``).
    share: bool = True


@dataclass(frozen=True)
class ExperimentConfig:
    """One search: space, searcher, evaluator, budget, objective and tracking."""

    name: str
    space: Component
    searcher: Component
    evaluator: Component
    budget: Budget = Budget()
    seed: int = 0
    metric: str | tuple[str, ...] | None = None
    mode: str | tuple[str, ...] = "max"
    constraints: tuple[str, ...] = ()
    tracking: Tracking = Tracking()
    output_dir: str = "raynas_results"
    # A portfolio: several searchers run side by side (``searcher`` is then "portfolio").
    portfolio: tuple[Member, ...] = ()
    # A Tune trial scheduler (asha, hyperband, median) for multi-fidelity evaluators.
    scheduler: Component | None = None

    @property
    def searcher_labels(self) -> tuple[str, ...]:
        """Labels of the searchers this config runs (one name unless it is a portfolio)."""
        return tuple(m.label for m in self.portfolio) or (self.searcher.name,)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (the YAML that would recreate this config)."""
        out = asdict(self)
        for key in ("space", "searcher", "evaluator"):
            comp = out.pop(key)
            out[key] = {"name": comp["name"], **comp["options"]}
        members = out.pop("portfolio")
        if members:
            out.pop("searcher")
            out["searchers"] = [
                {"label": m["label"], "name": m["searcher"]["name"], "trials": m["trials"],
                 "share": m["share"], **m["searcher"]["options"]}
                for m in members
            ]
        scheduler = out.pop("scheduler")
        if scheduler is not None:
            out["scheduler"] = {"name": scheduler["name"], **scheduler["options"]}
        return out

    def to_yaml(self) -> str:
        """YAML text of ``to_dict``."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def resolved_tracking_uri(self) -> str:
        """The tracking URI: config, else ``MLFLOW_TRACKING_URI``, else ``./mlflow.db``."""
        uri = self.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            uri = f"sqlite:///{Path('mlflow.db').resolve()}"
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            # Relative sqlite paths are relative to the working directory; make them absolute
            # so Ray workers and later `resume` calls find the same file.
            path = Path(uri[len("sqlite:///") :]).resolve()
            uri = f"sqlite:///{path}"
        return uri


_TOP_LEVEL = {
    "name",
    "space",
    "searcher",
    "evaluator",
    "budget",
    "seed",
    "metric",
    "mode",
    "constraints",
    "tracking",
    "output_dir",
    "searchers",
    "scheduler",
}

SCHEDULERS = ("asha", "hyperband", "median", "fifo")


def _portfolio(raw: Any, total: int | None) -> tuple[tuple[Member, ...], int]:
    """Members of a ``searchers:`` list and the total trial budget they add up to."""
    if not isinstance(raw, list) or not raw:
        raise ConfigError(
            "config field 'searchers' must be a non-empty list of searchers, e.g. "
            "[{name: regularized_evolution, trials: 50}, {name: random, trials: 50}]"
        )
    specs = []
    for i, item in enumerate(raw):
        where = f"searchers[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, Mapping):
            raise ConfigError(f"config field '{where}' must be a name or a mapping, got {item!r}")
        options = dict(item)
        label = options.pop("label", None)
        trials = options.pop("trials", None)
        share = options.pop("share", True)
        comp = _component(options, where)
        label = comp.name if label is None else label
        if not isinstance(label, str) or not label or "/" in label:
            raise ConfigError(f"config field '{where}.label' must be a name without '/'")
        if trials is not None:
            trials = _int({"trials": trials}, "trials", 1, f"{where}.", 1)
        if not isinstance(share, bool):
            raise ConfigError(f"config field '{where}.share' must be true or false, got {share!r}")
        specs.append((label, comp, trials, share))
    labels = [s[0] for s in specs]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ConfigError(
            f"config field 'searchers' uses the label {dup[0]!r} twice; give each a 'label'"
        )
    unset = [s for s in specs if s[2] is None]
    if unset and total is None:
        raise ConfigError(
            "config field 'searchers': give each searcher 'trials' or set budget.trials "
            "to split evenly"
        )
    given = sum(s[2] for s in specs if s[2] is not None)
    if unset:
        rest = total - given  # type: ignore[operator]
        if rest < len(unset):
            raise ConfigError(
                f"config field 'budget.trials' ({total}) leaves {rest} trials for "
                f"{len(unset)} searchers without 'trials'"
            )
        share_each, extra = divmod(rest, len(unset))
        fill = iter([share_each + (j < extra) for j in range(len(unset))])
        specs = [(lb, c, t if t is not None else next(fill), sh) for lb, c, t, sh in specs]
    members = tuple(Member(lb, c, t, sh) for lb, c, t, sh in specs)
    trials = sum(m.trials for m in members)
    if total is not None and not unset and total != trials:
        raise ConfigError(
            f"config field 'budget.trials' ({total}) differs from the searchers' trials, "
            f"which add up to {trials}; drop one of them"
        )
    return members, trials


def _scheduler(raw: Any) -> Component | None:
    if raw is None:
        return None
    comp = _component(raw, "scheduler")
    if comp.name not in SCHEDULERS:
        raise ConfigError(
            f"config field 'scheduler.name' is {comp.name!r}; known: {', '.join(SCHEDULERS)}"
        )
    return comp


def _component(raw: Any, field_name: str) -> Component:
    if isinstance(raw, str) and raw:
        return Component(raw)
    if isinstance(raw, Mapping):
        options = dict(raw)
        name = options.pop("name", None)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"config field '{field_name}.name' must name a {field_name}")
        extra = options.pop("options", None)
        if extra is not None:
            if not isinstance(extra, Mapping):
                raise ConfigError(f"config field '{field_name}.options' must be a mapping")
            options.update(extra)
        return Component(name, options)
    raise ConfigError(
        f"config field '{field_name}' must be a name or a mapping with 'name', got {raw!r}"
    )


def _int(raw: Mapping[str, Any], key: str, default: int, where: str, minimum: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(
            f"config field '{where}{key}' must be an integer >= {minimum}, got {value!r}"
        )
    return value


def _float(raw: Mapping[str, Any], key: str, default: float, where: str) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"config field '{where}{key}' must be a number, got {value!r}")
    if value < 0:
        raise ConfigError(f"config field '{where}{key}' must be >= 0, got {value!r}")
    return float(value)


def _mapping(raw: Any, field_name: str, known: set[str]) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config field '{field_name}' must be a mapping, got {raw!r}")
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"unknown config field '{field_name}.{unknown[0]}'; known: {', '.join(sorted(known))}"
        )
    return raw


def _objectives(metric: Any, mode: Any) -> tuple[Any, Any]:
    """Validate ``metric`` (a name or list of names) and ``mode`` (one per metric)."""
    if isinstance(metric, list):
        if not metric or not all(isinstance(m, str) and m for m in metric):
            raise ConfigError(f"config field 'metric' must list metric names, got {metric!r}")
        metric = tuple(metric) if len(metric) > 1 else metric[0]
    elif metric is not None and (not isinstance(metric, str) or not metric):
        raise ConfigError(f"config field 'metric' must be a metric name, got {metric!r}")
    modes = tuple(mode) if isinstance(mode, list) else (mode,)
    for m in modes:
        if m not in ("min", "max"):
            raise ConfigError(f"config field 'mode' must be 'min' or 'max', got {m!r}")
    if isinstance(metric, tuple):
        if len(modes) == 1:
            modes = modes * len(metric)
        if len(modes) != len(metric):
            raise ConfigError(
                f"config field 'mode' needs one mode per metric: {len(metric)} metrics, "
                f"{len(modes)} modes"
            )
        return metric, modes
    if len(modes) != 1:
        raise ConfigError(f"config field 'mode' has {len(modes)} modes for one metric")
    return metric, modes[0]


def parse_config(raw: Any, *, default_name: str = "raynas") -> ExperimentConfig:
    """Validate a parsed YAML mapping into an ``ExperimentConfig``."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"a config must be a YAML mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _TOP_LEVEL)
    if unknown:
        raise ConfigError(
            f"unknown config field '{unknown[0]}'; known: {', '.join(sorted(_TOP_LEVEL))}"
        )
    for required in ("space", "evaluator"):
        if required not in raw:
            raise ConfigError(f"config field '{required}' is required")
    if ("searcher" in raw) == ("searchers" in raw):
        raise ConfigError(
            "config needs exactly one of 'searcher' (one searcher) or 'searchers' (a portfolio)"
        )
    b = _mapping(raw.get("budget"), "budget", set(Budget.__dataclass_fields__))
    members: tuple[Member, ...] = ()
    trials = _int(b, "trials", Budget.trials, "budget.", 1)
    if "searchers" in raw:
        members, trials = _portfolio(raw["searchers"], b.get("trials") and trials)
    budget = Budget(
        trials=trials,
        concurrency=_int(b, "concurrency", Budget.concurrency, "budget.", 1),
        cpus_per_trial=_float(b, "cpus_per_trial", Budget.cpus_per_trial, "budget."),
        gpus_per_trial=_float(b, "gpus_per_trial", Budget.gpus_per_trial, "budget."),
        max_failures=_int(b, "max_failures", Budget.max_failures, "budget.", 0),
    )
    t = _mapping(raw.get("tracking"), "tracking", set(Tracking.__dataclass_fields__))
    uri = t.get("uri")
    if uri is not None and (not isinstance(uri, str) or not uri):
        raise ConfigError(f"config field 'tracking.uri' must be a URI string, got {uri!r}")
    experiment = t.get("experiment", Tracking.experiment)
    if not isinstance(experiment, str) or not experiment:
        raise ConfigError(f"config field 'tracking.experiment' must be a name, got {experiment!r}")
    metric, mode = _objectives(raw.get("metric"), raw.get("mode", "max"))
    constraints = raw.get("constraints") or ()
    if isinstance(constraints, str):
        constraints = (constraints,)
    if not isinstance(constraints, (list, tuple)) or not all(
        isinstance(c, str) for c in constraints
    ):
        raise ConfigError(
            "config field 'constraints' must be a list of strings like 'latency_pixel3 <= 5', "
            f"got {constraints!r}"
        )
    try:
        from searchers.objectives import parse_constraint

        constraints = tuple(str(parse_constraint(c)) for c in constraints)
    except ValueError as exc:
        raise ConfigError(f"config field 'constraints': {exc}") from None
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"config field 'name' must be a non-empty string, got {name!r}")
    output_dir = raw.get("output_dir", ExperimentConfig.output_dir)
    if not isinstance(output_dir, str) or not output_dir:
        raise ConfigError(f"config field 'output_dir' must be a path, got {output_dir!r}")
    return ExperimentConfig(
        name=name,
        space=_component(raw["space"], "space"),
        searcher=Component("portfolio") if members else _component(raw["searcher"], "searcher"),
        evaluator=_component(raw["evaluator"], "evaluator"),
        budget=budget,
        seed=_int(raw, "seed", 0, "", 0),
        metric=metric,
        mode=mode,
        constraints=constraints,
        tracking=Tracking(
            uri=uri,
            experiment=experiment,
            checkpoint_every=_int(t, "checkpoint_every", Tracking.checkpoint_every,
                                  "tracking.", 0),
            max_outage_s=_float(t, "max_outage_s", Tracking.max_outage_s, "tracking."),
        ),
        output_dir=output_dir,
        portfolio=members,
        scheduler=_scheduler(raw.get("scheduler")),
    )


def load_config(path: str | os.PathLike[str]) -> ExperimentConfig:
    """Read and validate a YAML config file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"config file {str(p)!r} is not valid YAML{line}") from None
    return parse_config(raw, default_name=p.stem)
