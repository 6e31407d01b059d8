"""The plug-in passes raynas' searcher conformance suite: run ``pytest`` in this folder."""

from __future__ import annotations

from typing import Any

from raynas_hill_climb import HillClimbSearch

from searchers.testing import SearcherConformance
from spaces import SearchSpace


class TestHillClimb(SearcherConformance):
    @staticmethod
    def make_searcher(space: SearchSpace, **kwargs: Any) -> HillClimbSearch:
        return HillClimbSearch(space, **kwargs)
