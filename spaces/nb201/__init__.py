"""The NAS-Bench-201 cell space."""

from spaces.nb201.space import NB201_OPS, NB201Space

__all__ = ["NB201_OPS", "NB201Space"]
