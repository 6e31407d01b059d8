"""One gradient search as a Tune trial: every epoch a report, so schedulers can stop it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ray import tune

from raynas.evaluators.data import load_dataset
from raynas.gradient.methods import GradientOptions, options_from_mapping
from raynas.gradient.paths import SampledPathSearch
from raynas.gradient.search import EpochRecord, GradientSearch
from spaces import SearchSpace, space_from_spec

logger = logging.getLogger(__name__)

ARCH_KEY = "arch"  # the derived architecture after the epoch (a string in the result)
DERIVED_KEY = "derived_arch"  # the search's answer, in its last result
PROBABILITIES_KEY = "probabilities"  # per decision, per choice (a nested list, not a metric)


def alpha_metrics(space: SearchSpace, alpha: list[list[float]]) -> dict[str, float]:
    """``alpha/<decision>/<choice>`` of one alpha matrix, flat for Tune and MLflow."""
    return {f"alpha/{d.name}/{choice}": float(alpha[k][j])
            for k, d in enumerate(space.decisions) for j, choice in enumerate(d.choices)}


def make_search(space: SearchSpace, options: GradientOptions, *, num_classes: int,
                in_channels: int) -> GradientSearch | SampledPathSearch:
    """The search object of ``options.method``: a differentiable or a single-path one."""
    if options.spec.sampling is not None:
        return SampledPathSearch(space, options, num_classes=num_classes,
                                 in_channels=in_channels)
    return GradientSearch(space, options, num_classes=num_classes, in_channels=in_channels)


def gradient_trial(config: dict[str, Any], *, space_spec: Mapping[str, Any],
                   dataset: Any, data_seed: int) -> None:
    """Tune function trainable: run the configured gradient search, reporting each epoch."""
    space = space_from_spec(dict(space_spec))
    data = load_dataset(dataset, seed=data_seed)
    options = options_from_mapping(config)
    search = make_search(space, options, num_classes=data.num_classes,
                         in_channels=data.in_channels)

    def report(record: EpochRecord) -> None:
        metrics = {**record.metrics(), **alpha_metrics(space, record.alpha),
                   ARCH_KEY: record.arch, PROBABILITIES_KEY: record.probabilities,
                   "method": options.method}
        if record.derived_arch is not None:  # the last epoch: the search's answer
            metrics[DERIVED_KEY] = record.derived_arch
            if search.peak_memory_mb() is not None:
                metrics["peak_memory_mb"] = search.peak_memory_mb()
        tune.report(metrics)

    search.run(data, report=report)
