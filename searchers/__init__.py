"""Ray Tune searchers over raynas search spaces."""

from searchers._base import NASSearch
from searchers._registry import create_searcher, get_searcher_class, list_searchers

__all__ = ["NASSearch", "create_searcher", "get_searcher_class", "list_searchers"]
