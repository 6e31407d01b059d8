"""Name -> searcher class table with lazy imports, entry points and ``module:Class`` specs."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

from searchers._base import NASSearch
from spaces import SearchSpace

logger = logging.getLogger(__name__)

# As Ray's tune/search/__init__.py: names resolve to "module:Class" and import on first use.
SEARCHER_IMPORT: dict[str, str] = {
    "random": "searchers.random_search:RandomSearch",
    "regularized_evolution": "searchers.regularized_evolution:RegularizedEvolutionSearch",
    "reinforce": "searchers.reinforce:ReinforceSearch",
    "greedynas": "searchers.greedynas:GreedyNASSearch",
    "nsga2": "searchers.nsga2:NSGA2Search",
    "genetic": "searchers.genetic:GeneticSearch",
    "predictor": "searchers.predictor:PredictorSearch",
    "zero_cost_warm_start": "searchers.warm_start:ZeroCostWarmStart",
}
ALIASES: dict[str, str] = {"rea": "regularized_evolution", "evolution": "regularized_evolution",
                           "bananas": "predictor"}
ENTRY_POINT_GROUP = "raynas.searchers"


def list_searchers() -> list[str]:
    """Names of every available searcher: built-in and from the entry-point group."""
    names = set(SEARCHER_IMPORT) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names)


def _load(spec: str) -> type:
    module_name, _, attr = spec.partition(":")
    try:
        obj = getattr(import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import searcher {spec!r}: {exc}") from None
    return obj  # type: ignore[no-any-return]


def get_searcher_class(name: str) -> type[NASSearch]:
    """The searcher class for a registered name, an entry-point name or ``module:Class``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"searcher must be a non-empty string, got {name!r}")
    key = ALIASES.get(name.lower(), name.lower())
    if key in SEARCHER_IMPORT:
        cls = _load(SEARCHER_IMPORT[key])
    elif ":" in name:
        cls = _load(name)
    else:
        matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        if not matches:
            raise ValueError(
                f"unknown searcher {name!r}; available: {', '.join(list_searchers())} "
                "(or 'package.module:ClassName')"
            )
        try:
            cls = matches[0].load()
        except Exception as exc:  # a broken plug-in: name it instead of a raw traceback
            raise ValueError(
                f"searcher {name!r} (entry point {matches[0].value!r}) failed to load: {exc}"
            ) from None
    if not (isinstance(cls, type) and issubclass(cls, NASSearch)):
        raise ValueError(f"searcher {name!r} is {cls!r}, not a subclass of searchers.NASSearch")
    return cls


def create_searcher(
    name: str, space: SearchSpace | Mapping[str, Any] | None = None, **options: Any
) -> NASSearch:
    """Build searcher ``name`` over ``space`` (a space, a Tune param-space dict, or None)."""
    cls = get_searcher_class(name)
    try:
        return cls(space, **options)
    except TypeError as exc:
        raise ValueError(f"bad options for searcher {name!r}: {exc}") from None
