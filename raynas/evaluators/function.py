"""Your own model as an evaluator: a ``module:function`` (or an entry point) called per trial."""

from __future__ import annotations

import importlib
import inspect
import logging
import math
import os
import sys
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any

from raynas.evaluators.base import Evaluator, Report
from raynas.run.config import clip
from raynas.run.config import short as _short
from spaces import Arch, SearchSpace

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "raynas.evaluators"


def resolve_target(spec: str) -> Callable[..., Any]:
    """The callable named by ``package.module:function`` (dots after ``:`` walk attributes)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"evaluator {_short(spec)} must read 'package.module:function'")
    # As uvicorn and gunicorn do: a module in the working directory is found (Ray's local
    # workers run in the driver's working directory too).
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or the user's module failing at import
        raise ValueError(
            f"evaluator {_short(spec, 100)}: cannot import {_short(module_name, 80)}: "
            f"{type(exc).__name__}: {clip(str(exc), 150)}"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(
                f"evaluator {_short(spec, 100)}: {_short(module_name, 80)} has no attribute "
                f"{_short(attr, 80)}"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"evaluator {_short(spec)} is a {type(obj).__name__}, not a function")
    return obj  # type: ignore[no-any-return]


def entry_point_target(name: str) -> str | None:
    """``module:attr`` of the ``raynas.evaluators`` entry point called ``name``, if any."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return str(ep.value)
    return None


def entry_point_names() -> list[str]:
    """Names in the ``raynas.evaluators`` entry-point group."""
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


class FunctionEvaluator(Evaluator):
    """Calls ``fn(config, report, **options)`` inside each trial: your training code, searched.

    ``config`` is the architecture's config as the space gives it (for a ``params`` space,
    the nested dict of the YAML, constants included). ``report(metrics)`` forwards a dict
    of numbers to ``ray.tune.report`` at once, so Tune schedulers (ASHA, HyperBand, median)
    can stop the trial early; call it once per epoch. The function returns its final
    metrics (a dict of numbers), or ``None`` when everything was reported. A function
    without a ``report`` parameter is called as ``fn(config, **options)``.

    The function is named by ``target`` (``package.module:function``, importable on every
    node: an installed package, or a module in the working directory of a local run) and
    checked on the driver before anything starts; Ray workers import it by name. Which
    metrics it reports is not known in advance: the search's ``metric`` must be given.

    Example:
        >>> from spaces import create_space
        >>> space = create_space("params", params={"x": {"uniform": [0.0, 1.0]}})
        >>> ev = FunctionEvaluator(space, target="math:sqrt")  # doctest: +SKIP
    """

    declares_metrics = False

    def __init__(
        self, space: SearchSpace, *, target: str, options: Mapping[str, Any] | None = None
    ) -> None:
        self.space = space
        self.target = target
        self.options = dict(options or {})
        fn = resolve_target(target)
        self._takes_report = _takes_report(fn)
        try:
            args = ({}, _no_report) if self._takes_report else ({},)
            inspect.signature(fn).bind(*args, **self.options)
        except TypeError as exc:
            raise ValueError(
                f"evaluator {_short(target, 100)} cannot take options "
                f"{_short(sorted(self.options, key=str), 100)}: {clip(str(exc), 150)}"
            ) from None
        except ValueError:
            pass  # builtins without a signature: called as they are
        self._fn: Callable[..., Any] | None = fn

    @property
    def metrics(self) -> tuple[str, ...]:
        """Unknown before the first trial: the function decides what it reports."""
        return ()

    @property
    def default_metric(self) -> tuple[str, str]:
        """None: a function evaluator needs the config's ``metric`` and ``mode``."""
        raise ValueError(
            f"evaluator {_short(self.target)} does not say which metric to optimise: set the "
            "config's 'metric' (and 'mode')"
        )

    def evaluate(self, arch: Arch, *, report: Report | None = None) -> dict[str, float]:
        """Run the function on the architecture's config; its final metrics."""
        fn = self._fn if self._fn is not None else resolve_target(self.target)
        self._fn = fn
        config = self.space.to_config(self.space.validate(arch))
        forward = report if report is not None else _no_report

        def checked(metrics: Mapping[str, Any]) -> None:
            forward(_numbers(metrics, self.target, "report"))

        if self._takes_report:
            out = fn(config, checked, **self.options)
        else:
            out = fn(config, **self.options)
        return {} if out is None else _numbers(out, self.target, "return value")

    def __getstate__(self) -> dict[str, Any]:
        # Workers import the function by name; a pickled function would pin driver paths.
        state = self.__dict__.copy()
        state["_fn"] = None
        return state


def _no_report(metrics: Mapping[str, Any]) -> None:
    return None


def _takes_report(fn: Callable[..., Any]) -> bool:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except ValueError:
        return False
    if any(p.name == "report" for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    # fn(config, report) under another name: a second positional parameter without default
    return (len(positional) >= 2 and positional[1].default is inspect.Parameter.empty) or any(
        p.kind == p.VAR_POSITIONAL for p in params
    )


def _numbers(metrics: Any, target: str, what: str) -> dict[str, float]:
    """The metrics as floats; a non-numeric value is an error naming the function."""
    if not isinstance(metrics, Mapping):
        raise TypeError(
            f"evaluator {_short(target)}: {what} must be a dict of metric name -> number, got "
            f"{_short(metrics)}"
        )
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(
            value, "__float__"
        ):
            raise TypeError(
                f"evaluator {_short(target)}: {what} metric {str(key)!r} must be a number, got "
                f"{_short(value)}"
            )
        number = float(value)
        if not math.isfinite(number):
            logger.warning("evaluator %s: %s metric %s is %s", target, what, key, number)
        out[str(key)] = number
    return out
