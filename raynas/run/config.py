"""Experiment configuration: YAML -> frozen dataclasses, validated with field-naming errors."""

from __future__ import annotations

import logging
import math
import os
import reprlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the field and the fix."""


def short(value: Any, limit: int = 200) -> str:
    """``repr(value)`` in at most ``limit`` characters, computed in bounded time (for errors)."""
    # Bounded work as well as length: a YAML alias bomb is small as data but its full repr
    # is gigabytes, so ``repr(value)[:limit]`` is no answer.
    cut = reprlib.Repr()
    cut.maxlevel, cut.maxlist, cut.maxtuple, cut.maxdict, cut.maxset = 3, 6, 6, 4, 6
    cut.maxlong, cut.maxother, cut.maxstring = 60, 100, max(limit, 10)
    text = cut.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def clip(text: str, limit: int = 300) -> str:
    """The first line of a message from elsewhere, cut to ``limit`` characters."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else ""
    return first if len(first) <= limit else first[: limit - 3] + "..."


def check_tracking_uri_form(uri: Any, source: str) -> str:
    """``uri`` if MLflow can keep a search there; else ``ConfigError`` naming ``source``.

    A ``file:`` URI or a plain path is MLflow's file store, which MLflow 3 refuses; the
    message names the sqlite URI to use instead. Nothing is read or written here.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise ConfigError(f"{source} must be a URI string, got {short(uri)}")
    scheme = urlsplit(uri).scheme.lower() if ":" in uri else ""
    if scheme not in ("", "file") or uri == "databricks":
        return uri
    path = Path(unquote(urlsplit(uri).path) if scheme == "file" else uri).expanduser()
    db = path.absolute().parent / "mlflow.db"
    raise ConfigError(
        f"{source} is {short(uri, 100)}, a file store, which MLflow 3 refuses: use a "
        f"sqlite file, e.g. {clip(f'sqlite:///{db}', 120)}, or an MLflow server "
        "(http://HOST:5000)"
    )


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
        if uri:
            source = "config field 'tracking.uri'" if self.tracking.uri else "MLFLOW_TRACKING_URI"
            uri = check_tracking_uri_form(uri, source)
        else:
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
# What reading a config may cost: a config is a page of YAML.
MAX_CONFIG_BYTES = 1 << 20
MAX_YAML_VALUES = 100_000
# The output folder adds a timestamp and a suffix to the name; file names stop at 255 bytes.
MAX_NAME = 200


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
            raise ConfigError(
                f"config field '{where}' must be a name or a mapping, got {short(item)}"
            )
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
            raise ConfigError(
                f"config field '{where}.share' must be true or false, got {short(share)}"
            )
        specs.append((label, comp, trials, share))
    labels = [s[0] for s in specs]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ConfigError(
            f"config field 'searchers' uses the label {short(dup[0])} twice; give each a 'label'"
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
            f"config field 'scheduler.name' is {short(comp.name)}; known: {', '.join(SCHEDULERS)}"
        )
    # Built once and dropped: a misspelled or bad option fails here, before anything starts.
    from raynas.run.schedulers import create_scheduler

    create_scheduler(comp)
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
        f"config field '{field_name}' must be a name or a mapping with 'name', got {short(raw)}"
    )


def _int(raw: Mapping[str, Any], key: str, default: int, where: str, minimum: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(
            f"config field '{where}{key}' must be an integer >= {minimum}, got {short(value)}"
        )
    return value


def _float(
    raw: Mapping[str, Any], key: str, default: float, where: str, *, positive: bool = False
) -> float:
    value = raw.get(key, default)
    bound = "> 0" if positive else ">= 0"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(
            f"config field '{where}{key}' must be a number {bound}, got {short(value)}"
        )
    if value < 0 or (positive and value == 0):
        raise ConfigError(f"config field '{where}{key}' must be {bound}, got {short(value)}")
    return float(value)


def _mapping(raw: Any, field_name: str, known: set[str]) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config field '{field_name}' must be a mapping, got {short(raw)}")
    unknown = sorted(set(raw) - known, key=str)
    if unknown:
        raise ConfigError(
            f"unknown config field {short(f'{field_name}.{unknown[0]}')}; "
            f"known: {', '.join(sorted(known))}"
        )
    return raw


def _objectives(metric: Any, mode: Any) -> tuple[Any, Any]:
    """Validate ``metric`` (a name or list of names) and ``mode`` (one per metric)."""
    if isinstance(metric, list):
        if not metric or not all(isinstance(m, str) and m for m in metric):
            raise ConfigError(
                f"config field 'metric' must list metric names, got {short(metric)}"
            )
        metric = tuple(metric) if len(metric) > 1 else metric[0]
    elif metric is not None and (not isinstance(metric, str) or not metric):
        raise ConfigError(f"config field 'metric' must be a metric name, got {short(metric)}")
    modes = tuple(mode) if isinstance(mode, list) else (mode,)
    for m in modes:
        if m not in ("min", "max"):
            raise ConfigError(f"config field 'mode' must be 'min' or 'max', got {short(m)}")
    if isinstance(metric, tuple):
        if len(modes) == 1:
            modes = modes * len(metric)
        if len(modes) != len(metric):
            raise ConfigError(
                f"config field 'mode' needs one mode per metric: {len(metric)} metrics, "
                f"{len(modes)} modes"
            )
        first: dict[str, str] = {}
        for name, m in zip(metric, modes):
            if name in first:
                # Two objectives on one metric: contradictory (max and min) or redundant;
                # either way the Pareto front and the best trial would be wrong.
                how = f" (modes {first[name]} and {m})" if first[name] != m else ""
                raise ConfigError(
                    f"config field 'metric' lists {short(name)} twice{how}; name each "
                    "objective once"
                )
            first[name] = m
        return metric, modes
    if len(modes) != 1:
        raise ConfigError(f"config field 'mode' has {len(modes)} modes for one metric")
    return metric, modes[0]


def _name(name: Any) -> str:
    """The search's name, which names its output folder: one safe path component."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"config field 'name' must be a non-empty string, got {short(name)}")
    if (name in (".", "..") or any(c in name for c in "/\\") or not name.isprintable()
            or len(name.encode(errors="surrogatepass")) > MAX_NAME):
        raise ConfigError(
            f"config field 'name' must be one folder name inside output_dir (no '/', '\\', "
            f"'..' or control characters, at most {MAX_NAME} bytes), got {short(name)}"
        )
    return name


def parse_config(raw: Any, *, default_name: str = "raynas") -> ExperimentConfig:
    """Validate a parsed YAML mapping into an ``ExperimentConfig``."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"a config must be a YAML mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _TOP_LEVEL, key=str)
    if unknown:
        raise ConfigError(
            f"unknown config field {short(unknown[0])}; known: {', '.join(sorted(_TOP_LEVEL))}"
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
        cpus_per_trial=_float(b, "cpus_per_trial", Budget.cpus_per_trial, "budget.",
                              positive=True),
        gpus_per_trial=_float(b, "gpus_per_trial", Budget.gpus_per_trial, "budget."),
        max_failures=_int(b, "max_failures", Budget.max_failures, "budget.", 0),
    )
    t = _mapping(raw.get("tracking"), "tracking", set(Tracking.__dataclass_fields__))
    uri = t.get("uri")
    if uri is not None:
        uri = check_tracking_uri_form(uri, "config field 'tracking.uri'")
    experiment = t.get("experiment", Tracking.experiment)
    if not isinstance(experiment, str) or not experiment:
        raise ConfigError(
            f"config field 'tracking.experiment' must be a name, got {short(experiment)}"
        )
    metric, mode = _objectives(raw.get("metric"), raw.get("mode", "max"))
    constraints = raw.get("constraints") or ()
    if isinstance(constraints, str):
        constraints = (constraints,)
    if not isinstance(constraints, (list, tuple)) or not all(
        isinstance(c, str) for c in constraints
    ):
        raise ConfigError(
            "config field 'constraints' must be a list of strings like 'latency_pixel3 <= 5', "
            f"got {short(constraints)}"
        )
    try:
        from searchers.objectives import parse_constraint

        constraints = tuple(str(parse_constraint(c)) for c in constraints)
    except ValueError as exc:
        raise ConfigError(f"config field 'constraints': {clip(str(exc))}") from None
    name = _name(raw.get("name", default_name))
    output_dir = raw.get("output_dir", ExperimentConfig.output_dir)
    if not isinstance(output_dir, str) or not output_dir:
        raise ConfigError(f"config field 'output_dir' must be a path, got {short(output_dir)}")
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
            max_outage_s=_float(t, "max_outage_s", Tracking.max_outage_s, "tracking.",
                                positive=True),
        ),
        output_dir=output_dir,
        portfolio=members,
        scheduler=_scheduler(raw.get("scheduler")),
    )


def load_config(path: str | os.PathLike[str]) -> ExperimentConfig:
    """Read and validate a YAML config file."""
    p = Path(path)
    shown = short(str(p), 150)
    try:
        if not p.exists():
            raise ConfigError(f"config file {shown} does not exist")
        if p.is_dir():
            raise ConfigError(f"config file {shown} is a directory, not a YAML file")
        if not p.is_file():
            raise ConfigError(f"config file {shown} is not a regular file")
        size = p.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"config file {shown} is {size} bytes; a config is at most {MAX_CONFIG_BYTES}"
            )
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"config file {shown} cannot be read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {shown} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start}); save it as UTF-8"
        ) from None
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader
    except _Refused as exc:
        raise ConfigError(f"config file {shown} {exc}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"config file {shown} is not valid YAML{line}") from None
    except RecursionError:
        raise ConfigError(f"config file {shown} nests too deeply to be read") from None
    if raw is None:
        raise ConfigError(f"config file {shown} is empty")
    return parse_config(raw, default_name=p.stem)


class _Refused(ValueError):
    """A YAML document refused before it is built; the message follows the file's name."""


class _StrictLoader(yaml.SafeLoader):  # type: ignore[misc]
    """``SafeLoader`` that refuses repeated keys and aliases expanding past ``MAX_YAML_VALUES``."""

    def construct_document(self, node: yaml.Node) -> Any:
        """Check the composed node graph, then build it as ``SafeLoader`` does."""
        _check_yaml(node)
        return super().construct_document(node)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_yaml(root: yaml.Node) -> None:
    """Refuse repeated mapping keys, recursive aliases, and more than ``MAX_YAML_VALUES``
    values once aliases are expanded (the composed graph shares aliased nodes, so a
    billion-laughs file is small here and only explodes when something walks the data)."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()  # the nodes on the path from the root: an alias to one is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        kids = _children(node)
        if done:
            open_.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(k)] for k in kids)
            if sizes[id(node)] > MAX_YAML_VALUES:
                raise _Refused(
                    f"holds more than {MAX_YAML_VALUES} values once its YAML aliases are "
                    f"expanded (line {node.start_mark.line + 1}); write the values out"
                )
            continue
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.MappingNode):
            seen: set[tuple[str, str]] = set()
            for key, _ in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    if (key.tag, key.value) in seen:
                        raise _Refused(
                            f"repeats the key {short(key.value, 100)} at line "
                            f"{key.start_mark.line + 1}"
                        )
                    seen.add((key.tag, key.value))
        open_.add(id(node))
        stack.append((node, True))
        for kid in kids:
            if id(kid) in open_:
                raise _Refused(
                    f"has a YAML alias inside its own anchor at line {kid.start_mark.line + 1}"
                )
            if id(kid) not in sizes:
                stack.append((kid, False))


def check_writable(path: str | os.PathLike[str], what: str, *, folder: bool) -> None:
    """``ConfigError`` naming ``path`` if it, or the folder it would be created in, is unwritable.

    Nothing is created. A file needs its folder writable too (sqlite writes a journal there).
    """
    p = Path(path).absolute()  # as the store and the output folder will be opened: no ~
    shown = short(str(p), 150)
    try:
        if p.exists():
            if folder != p.is_dir():
                raise ConfigError(f"{what} {shown} is {'not a' if folder else 'a'} directory")
            for target in dict.fromkeys((p, p if folder else p.parent)):
                mode = os.W_OK | (os.X_OK if target.is_dir() else 0)
                if not os.access(target, mode):
                    why = _why(target, itself=target == p)
                    raise ConfigError(f"{what} {shown} cannot be written: {why}")
            return
        parent = p.parent
        while not parent.exists():
            parent = parent.parent
    except OSError as exc:
        raise ConfigError(f"{what} {shown} cannot be checked: {exc.strerror or exc}") from None
    if not parent.is_dir():
        raise ConfigError(
            f"{what} {shown} cannot be created: {short(str(parent), 150)} is not a directory"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {shown} cannot be created: {_why(parent)}")


def _why(path: Path, *, itself: bool = False) -> str:
    shown = "it" if itself else short(str(path), 150)
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return f"{shown} is on a read-only filesystem"
    except OSError:
        pass
    return f"no permission to write {shown}"
