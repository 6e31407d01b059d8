"""Search spaces: what an architecture is. Imports numpy only; supernets load torch lazily."""

from spaces._base import Arch, Decision, SearchSpace
from spaces._registry import create_space, list_spaces, register_space

__all__ = ["Arch", "Decision", "SearchSpace", "create_space", "list_spaces", "register_space"]
