"""What a trial runs: evaluators by name, and the data they read.

- ``base``: the ``Evaluator`` contract, stand-alone training, table lookups, the registry
  (bundled names, ``raynas.evaluators`` entry points, ``package.module:function``).
- ``function``: your own ``fn(config, report, **options)`` as an evaluator.
- ``data``: datasets (digits, npz, image folders) and their splits.
Supernet and latency evaluators live with their hosts in ``raynas.supernet`` and
``raynas.latency``.
"""

from raynas.evaluators.base import (  # noqa: F401
    EVALUATORS,
    NB201_DATA_HINT,
    Evaluator,
    Report,
    TabularEvaluator,
    TrainingEvaluator,
    create_evaluator,
)

__all__ = [
    "Report",
    "NB201_DATA_HINT",
    "Evaluator",
    "TrainingEvaluator",
    "TabularEvaluator",
    "EVALUATORS",
    "create_evaluator",
]
