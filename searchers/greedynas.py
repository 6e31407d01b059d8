"""GreedyNAS search: aging evolution seeded from a supernet's candidate pool (CVPR 2020)."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from numbers import Real
from typing import Any

from searchers.protocols import CandidateFn, CandidateSource
from searchers.regularized_evolution import RegularizedEvolutionSearch
from spaces import Arch, SearchSpace

logger = logging.getLogger(__name__)

PoolEntry = tuple[str, float | None]


def parse_pool(
    space: SearchSpace, entries: Iterable[Any], *, origin: str, limit: int | None = None
) -> list[PoolEntry]:
    """Validate candidate entries into ``(arch_string, loss)`` pairs, in the given order.

    An entry is an architecture (its string, or anything ``space.validate`` accepts) or a
    pair ``(architecture, loss)`` with ``loss`` a number or ``None``. Entries computing the
    same function as an earlier one (same ``space.canonical``) are dropped; at most
    ``limit`` are kept. Non-finite losses become ``None``. Raises ``ValueError`` naming
    ``origin`` and the offending entry.
    """
    out: list[PoolEntry] = []
    keys: set[str] = set()
    for i, entry in enumerate(entries):  # all validated, even those beyond ``limit``
        arch, loss = entry, None
        if (
            isinstance(entry, (tuple, list))
            and len(entry) == 2
            and (entry[1] is None or isinstance(entry[1], Real))
            and not isinstance(entry[1], bool)
        ):
            arch, loss = entry
        try:
            text = space.to_string(space.validate(arch))
        except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
            raise ValueError(
                f"{origin} entry {i} ({entry!r}) is not an architecture of space "
                f"{space.name!r}: {exc}"
            ) from None
        key = space.canonical(text)
        if key in keys or (limit is not None and len(out) >= limit):
            continue
        keys.add(key)
        value = None if loss is None or not math.isfinite(float(loss)) else float(loss)
        out.append((text, value))
    return out


class GreedyNASSearch(RegularizedEvolutionSearch):
    """Regularized evolution whose first population comes from a GreedyNAS candidate pool.

    GreedyNAS trains the supernet greedily and keeps a pool of the paths with the lowest
    validation loss; its search then starts from that pool instead of random paths. Here
    the pool is ``candidates`` (architecture strings, best first) and/or what
    ``candidate_source`` returns (a ``searchers.protocols.CandidateSource``, e.g. a raynas
    object asking the ``SupernetHost`` actor, or a plain function ``k -> [(arch, loss)]``),
    queried once, at the first suggestion, for ``pool_k`` entries. Given candidates come
    first; isomorphic duplicates are dropped and the pool is cut to ``pool_k``.

    Until the population is full, suggestions are the pool's entries in order (those
    already seen are skipped); once the pool is used up, uniform samples; afterwards
    aging evolution as in ``RegularizedEvolutionSearch``. Pool losses only order the pool:
    the population is scored by the search metric. Without a pool this is plain
    regularized evolution with a random start. The fetched pool and the position in it
    are part of the state; the source itself never is, and is not queried after a
    restore of a state that already holds the pool.

    Paper: S. You, T. Huang, M. Yang, F. Wang, C. Qian, C. Zhang, "GreedyNAS: Towards Fast
    One-Shot NAS with Greedy Supernet", CVPR 2020.

    Args:
        space: the search space.
        candidates: architecture strings (or ``(string, loss)`` pairs), best first.
        candidate_source: a ``CandidateSource`` or a callable ``k -> [(arch_string, loss)]``.
        pool_k: how many pool entries to use; defaults to ``population_size``.
        population_size: population of the aging evolution.
        tournament_size: tournament size, default ``min(5, population_size)``.
        **kwargs: ``metric``, ``mode``, ``seed``, ... as for ``NASSearch``.

    Example:
        >>> from spaces import create_space
        >>> good = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
        ...         "+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")
        >>> s = GreedyNASSearch(create_space("nb201"), candidates=[good], metric="val_acc",
        ...                     mode="max", population_size=10, seed=0)
        >>> s.space.from_config(s.suggest("t1")) == good
        True
    """

    def __init__(
        self,
        space: SearchSpace | Mapping[str, Any] | None = None,
        *,
        candidates: Sequence[Any] | None = None,
        candidate_source: CandidateSource | CandidateFn | None = None,
        pool_k: int | None = None,
        population_size: int = 20,
        tournament_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        self._candidates = candidates
        self._pool: list[PoolEntry] = []
        super().__init__(
            space, population_size=population_size, tournament_size=tournament_size, **kwargs
        )
        if pool_k is None:
            pool_k = self.population_size
        if isinstance(pool_k, bool) or not isinstance(pool_k, int) or pool_k < 1:
            raise ValueError(f"pool_k must be a positive integer or None, got {pool_k!r}")
        if candidate_source is not None and not (
            isinstance(candidate_source, CandidateSource) or callable(candidate_source)
        ):
            raise TypeError(
                "candidate_source must have a candidates(k) method or be callable as "
                f"source(k), got {type(candidate_source).__name__}"
            )
        if isinstance(candidates, (str, bytes)):
            raise TypeError("candidates must be a list of architecture strings, got one string")
        self.pool_k = pool_k
        self._source = candidate_source
        if self.space is not None:
            self._space_ready()
        self._fetched = candidate_source is None
        self._position = 0
        self._logged_pool = False

    # ------------------------------------------------------------------ hooks
    def _space_ready(self) -> None:
        if not hasattr(self, "pool_k"):
            return  # called from the base's __init__; validated once pool_k is known
        self._pool = parse_pool(
            self.space, self._candidates or (), origin="candidates", limit=self.pool_k
        )

    def _propose(self) -> Arch:
        if len(self._population) < self.population_size:
            arch = self._next_candidate()
            if arch is not None:
                return arch
        return super()._propose()

    def _get_state(self) -> dict[str, Any]:
        return {
            **super()._get_state(),
            "pool_k": self.pool_k,
            "pool": [[text, loss] for text, loss in self._pool],
            "pool_fetched": self._fetched,
            "pool_position": self._position,
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        super()._set_state(state)
        self.pool_k = int(state["pool_k"])
        self._pool = parse_pool(self.space, state["pool"], origin="state pool")
        self._fetched = bool(state["pool_fetched"])
        self._position = int(state["pool_position"])

    # ------------------------------------------------------------ conveniences
    @property
    def pool(self) -> list[tuple[Arch, float | None]]:
        """The candidate pool (fetched so far), best first, with the source's losses."""
        return [(self.space.from_string(text), loss) for text, loss in self._pool]

    @property
    def pool_position(self) -> int:
        """How many pool entries were handed out (or skipped as already seen)."""
        return self._position

    # ---------------------------------------------------------------- internal
    def _next_candidate(self) -> Arch | None:
        if not self._fetched:
            self._fetch()
        if self._position < len(self._pool):
            text = self._pool[self._position][0]
            self._position += 1
            return self.space.from_string(text)
        if not self._logged_pool:
            self._logged_pool = True
            if self._pool:
                logger.info(
                    "%s: candidate pool of %d used up; sampling uniformly until the "
                    "population is full", self, len(self._pool),
                )
            else:
                logger.info(
                    "%s: no candidate pool; random initial population (plain regularized "
                    "evolution)", self,
                )
        return None

    def _fetch(self) -> None:
        source = self._source
        if source is None:
            # A state saved before the first suggestion, restored without a source.
            logger.warning("%s: state expects a candidate_source, none given; no pool", self)
            self._fetched = True
            return
        raw: object = (
            source.candidates(self.pool_k)
            if isinstance(source, CandidateSource)
            else source(self.pool_k)
        )
        if isinstance(raw, (str, bytes)) or not isinstance(raw, Iterable):
            raise ValueError(
                f"candidate_source returned {type(raw).__name__}, expected a list of "
                "(arch_string, loss) pairs"
            )
        fetched = parse_pool(self.space, raw, origin="candidate_source")
        if not fetched:
            logger.warning("%s: candidate_source returned no candidates", self)
        self._pool = parse_pool(
            self.space, [*self._pool, *fetched], origin="candidates", limit=self.pool_k
        )
        self._fetched = True
        logger.info("%s: candidate pool of %d architectures", self, len(self._pool))
