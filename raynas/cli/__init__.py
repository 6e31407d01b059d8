"""The command line and its subcommands.

- ``main``: ``raynas run``, ``resume``, ``demo``, ``report``, ``spaces``, ``searchers``.
- ``latency``: ``raynas latency`` (measure, build tables, train predictors).
- ``submit``: ``raynas submit`` and ``jobs``, the Ray Jobs client behind it.
"""

from raynas.cli.main import (  # noqa: F401
    main,
)

__all__ = [
    "main",
]
