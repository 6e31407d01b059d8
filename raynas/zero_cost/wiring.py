"""Zero-cost options of a searcher's config: proxy features and a proxy warm start.

``searcher: {name: predictor, zero_cost: {proxies: [synflow, naswot], dataset: digits}}`` gives
the searcher a scorer; ``warm_start: {proxies: [...], screen: 1000, top: 10}`` on any searcher
wraps it in ``searchers.warm_start.ZeroCostWarmStart``. Either may name a ``table`` from
``raynas zero-cost score`` to read scores instead of computing them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from raynas.run.config import ConfigError, short
from raynas.zero_cost.scorer import ProxyScorer
from spaces import SearchSpace

SCORER_KEYS = ("proxies", "dataset", "batch_size", "seed", "device", "in_channels", "table")
# Options the wrapper keeps; everything else belongs to the searcher it wraps.
WRAPPER_KEYS = ("metric", "mode", "seed", "max_trials", "constraints", "scalarization",
                "penalty")


def build_scorer(space: SearchSpace, spec: Any, where: str) -> Any:
    """A ``ProxyScorer`` (or a ``TableScorer`` over ``table``) from a config mapping."""
    if not isinstance(spec, Mapping):
        raise ConfigError(f"config field '{where}' must be a mapping, got {short(spec)}")
    unknown = [k for k in spec if k not in SCORER_KEYS]
    if unknown:
        raise ConfigError(f"config field '{where}' has unknown key {unknown[0]!r}; "
                          f"allowed: {', '.join(SCORER_KEYS)}")
    options = {k: v for k, v in spec.items() if k != "table"}
    options.setdefault("proxies", ["synflow"])
    proxies = options.pop("proxies")
    try:
        scorer = ProxyScorer(space, proxies, **options)
        if spec.get("table") is not None:
            from raynas.zero_cost.table import TableScorer

            return TableScorer(space, spec["table"], scorer.names, fallback=scorer)
        return scorer
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config field '{where}': {exc}") from None


def apply_zero_cost(name: str, options: dict[str, Any], space: SearchSpace, where: str,
                    accepts_scorer: bool) -> tuple[str, dict[str, Any]]:
    """The searcher name and options once ``zero_cost`` / ``warm_start`` are turned into objects."""
    options = dict(options)
    zc = options.pop("zero_cost", None)
    warm = options.pop("warm_start", None)
    if zc is not None:
        if not accepts_scorer:
            raise ConfigError(f"config field '{where}.zero_cost': searcher {name!r} takes no "
                              "proxy scorer; use 'warm_start' to screen by proxies")
        options["scorer"] = build_scorer(space, zc, f"{where}.zero_cost")
    if warm is None:
        return name, options
    if not isinstance(warm, Mapping):
        raise ConfigError(f"config field '{where}.warm_start' must be a mapping, "
                          f"got {short(warm)}")
    warm = dict(warm)
    wrapper = {k: warm.pop(k) for k in ("screen", "top") if k in warm}
    wrapper["scorer"] = build_scorer(space, warm, f"{where}.warm_start")
    for key in WRAPPER_KEYS:
        if key in options:
            wrapper[key] = options.pop(key)
    if "seed" in wrapper:
        options["seed"] = wrapper["seed"]
    return "zero_cost_warm_start", {**wrapper, "searcher": name, "searcher_options": options}
