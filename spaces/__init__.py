"""Search spaces: what an architecture is. Imports numpy only; supernets load torch lazily."""

from spaces._base import Arch, Decision, SearchSpace
from spaces._registry import create_space, list_spaces, register_space, space_from_spec
from spaces.params import ParamSpace

__all__ = [
    "Arch",
    "Decision",
    "ParamSpace",
    "SearchSpace",
    "create_space",
    "list_spaces",
    "register_space",
    "space_from_spec",
]
