"""Ray Tune trial schedulers for multi-fidelity evaluators, built from the config."""

from __future__ import annotations

import inspect
from typing import Any

from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule, TrialScheduler

from raynas.run.config import Component, ConfigError, clip, short

# ``hyperband`` is asynchronous HyperBand: ASHA with several brackets (Li et al., 2020).
# Tune's synchronous HyperBandScheduler pauses trials, which needs trial checkpoints that
# evaluators do not write; the asynchronous form never pauses and loses no work.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "asha": {"brackets": 1},
    "hyperband": {"brackets": 3},
    "median": {},
}


def create_scheduler(component: Component | None) -> TrialScheduler | None:
    """The Tune scheduler a config names (``None`` for ``fifo`` or no scheduler)."""
    if component is None:
        return None
    name = component.name
    if name == "fifo":
        if component.options:
            first = sorted(component.options, key=str)[0]
            raise ConfigError(
                f"config field {short(f'scheduler.{first}', 100)} is not an option of fifo, "
                "which takes none"
            )
        return None
    if name not in _DEFAULTS:
        raise ConfigError(
            f"config field 'scheduler.name' is {name!r}; known: fifo, {', '.join(_DEFAULTS)}"
        )
    cls = MedianStoppingRule if name == "median" else ASHAScheduler
    options = {**_DEFAULTS[name], **component.options}
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self", "metric", "mode"}
    unknown = sorted(set(options) - allowed, key=str)
    if unknown:
        raise ConfigError(
            f"config field {short(f'scheduler.{unknown[0]}', 100)} is not an option of {name}; "
            f"options: {', '.join(sorted(allowed))}"
        )
    try:
        # Tune gives the scheduler TuneConfig's metric and mode (it refuses both set).
        return cls(**options)  # type: ignore[no-any-return]
    except (TypeError, ValueError, AssertionError) as exc:
        raise ConfigError(
            f"config field 'scheduler': {clip(str(exc)) or type(exc).__name__}"
        ) from None
