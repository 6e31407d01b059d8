"""Gradient-based (differentiable) architecture search: DARTS and its fixes, run as Tune trials."""

from raynas.gradient.methods import METHODS, GradientOptions, options_from_mapping
from raynas.gradient.search import EpochRecord, GradientResult, GradientSearch

__all__ = ["METHODS", "EpochRecord", "GradientOptions", "GradientResult", "GradientSearch",
           "options_from_mapping"]
