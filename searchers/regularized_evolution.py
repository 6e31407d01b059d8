"""Regularized evolution (aging evolution), Real et al., AAAI 2019."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping
from typing import Any

from searchers._base import NASSearch, renamed_option
from spaces import Arch, SearchSpace

logger = logging.getLogger(__name__)


def tournament(scores: list[float], sample_size: int, rng: Any) -> int:
    """Index of the best of ``sample_size`` members drawn without replacement."""
    picks = rng.choice(len(scores), size=min(sample_size, len(scores)), replace=False)
    return int(max(picks, key=lambda i: scores[i]))


class RegularizedEvolutionSearch(NASSearch):
    """Aging evolution: tournament-select a parent, mutate it, retire the oldest member.

    ``tournament_size`` (the paper's sample size S; ``sample_size`` is its deprecated
    name) defaults to ``min(5, population_size)``.
    Until ``population_size`` trials have succeeded, architectures are sampled uniformly.
    Then each suggestion draws ``tournament_size`` members of the population, mutates the best
    (one decision changed, ``space.mutate``) and, when the child reports, the child joins
    and the oldest member leaves. Results arrive asynchronously under concurrency, as in
    the paper's distributed setting. Failed trials never join the population.

    Paper: E. Real, A. Aggarwal, Y. Huang, Q. V. Le, "Regularized Evolution for Image
    Classifier Architecture Search", AAAI 2019.

    Example:
        >>> from spaces import create_space
        >>> s = RegularizedEvolutionSearch(create_space("nb201"), metric="val_acc",
        ...                                mode="max", population_size=10, tournament_size=3)
        >>> config = s.suggest("t1")
        >>> s.on_trial_complete("t1", {"val_acc": 90.0})
    """

    def __init__(
        self,
        space: SearchSpace | Mapping[str, Any] | None = None,
        *,
        population_size: int = 20,
        tournament_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        tournament_size = renamed_option(
            kwargs, "sample_size", "tournament_size", tournament_size, owner
        )
        if isinstance(population_size, bool) or not isinstance(population_size, int) or (
            population_size < 2
        ):
            raise ValueError(f"population_size must be an integer >= 2, got {population_size!r}")
        if tournament_size is None:
            tournament_size = min(5, population_size)
        if isinstance(tournament_size, bool) or not isinstance(tournament_size, int) or not (
            1 <= tournament_size <= population_size
        ):
            raise ValueError(
                f"tournament_size must be an integer in [1, population_size={population_size}], "
                f"got {tournament_size!r}"
            )
        self.population_size = population_size
        self.tournament_size = tournament_size
        self._population: deque[tuple[str, float]] = deque()
        super().__init__(space, **kwargs)

    def _propose(self) -> Arch:
        if len(self._population) < self.population_size:
            return self.space.sample(self._rng)
        scores = [score for _, score in self._population]
        parent = self._population[tournament(scores, self.tournament_size, self._rng)][0]
        return self.space.mutate(self.space.from_string(parent), self._rng)

    def _observe(self, arch: Arch, score: float | None) -> None:
        if score is None:
            return
        self._population.append((self.space.to_string(arch), score))
        if len(self._population) > self.population_size:
            self._population.popleft()

    @property
    def population(self) -> list[tuple[Arch, float]]:
        """Current members, oldest first, with their scores (higher is better)."""
        return [(self.space.from_string(t), s) for t, s in self._population]

    def _get_state(self) -> dict[str, Any]:
        return {
            "population_size": self.population_size,
            "tournament_size": self.tournament_size,
            "population": [[t, s] for t, s in self._population],
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        self.population_size = int(state["population_size"])
        # states saved before the option was renamed call it sample_size
        self.tournament_size = int(state.get("tournament_size") or state["sample_size"])
        self._population = deque((str(t), float(s)) for t, s in state["population"])
