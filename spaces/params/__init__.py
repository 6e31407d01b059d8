"""Parameter spaces: any Ray Tune param space (or its YAML form) as a search space."""

from spaces.params.decisions import Categorical, Float, Integer, ParamDecision
from spaces.params.space import ParamSpace

__all__ = ["Categorical", "Float", "Integer", "ParamDecision", "ParamSpace"]
