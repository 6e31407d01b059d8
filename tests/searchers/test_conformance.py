"""Every registered searcher passes the conformance suite."""

from __future__ import annotations

from typing import Any

import pytest

from searchers import create_searcher, list_searchers
from searchers.testing import SearcherConformance


@pytest.fixture(params=list_searchers())
def searcher_name(request: pytest.FixtureRequest) -> str:
    return request.param


# The contract, not the search quality, is under test: the predictor's ensemble is kept small.
LIGHT: dict[str, dict[str, Any]] = {
    "predictor": {"ensemble_size": 2, "hidden_size": 8, "mutation_candidates": 20,
                  "random_candidates": 20},
}


class TestRegisteredSearchers(SearcherConformance):
    @pytest.fixture(autouse=True)
    def _bind(self, searcher_name: str) -> None:
        self.name = searcher_name

    def make_searcher(self, space: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return create_searcher(self.name, space, **{**LIGHT.get(self.name, {}), **kwargs})
