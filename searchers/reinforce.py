"""REINFORCE over a policy of the space's decisions (Zoph & Le 2017; ENAS, Pham et al. 2018)."""

from __future__ import annotations

import bisect
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from searchers._base import NASSearch
from spaces import Arch, SearchSpace
from spaces._base import positive_int

logger = logging.getLogger(__name__)

POLICIES = ("factorized", "lstm")
REWARDS = ("rank", "raw")
# Per-policy defaults, chosen by best-by-validation accuracy after 300 queries on the
# NAS-Bench-201 CIFAR-10 table (seeds 1000-1029). The few independent factorized logits
# take large Adam steps; the LSTM shares its weights across decisions, so it takes small
# ones, with ENAS's squashed logits (temperature 5, tanh constant 2.5).
POLICY_DEFAULTS: dict[str, dict[str, float]] = {
    "factorized": {"lr": 0.15, "temperature": 1.0, "tanh_constant": 0.0},
    "lstm": {"lr": 0.005, "temperature": 5.0, "tanh_constant": 2.5},
}
_INIT_RANGE = 0.1  # ENAS: every controller weight uniform in [-0.1, 0.1]
_STD_FLOOR = 1e-8
_FLATTEN_PER_MISS = 0.1  # after the base's 100 tries, draws are from p ** (1 / 11)


def inverse_cdf(probs: np.ndarray, u: float) -> int:
    """Categorical draw from a uniform ``u`` in [0, 1): the first index whose CDF exceeds it."""
    cdf = np.cumsum(probs)
    return int(min(np.searchsorted(cdf, u * cdf[-1], side="right"), len(cdf) - 1))


def mid_rank(ordered: Sequence[float], x: float) -> float:
    """Where ``x`` falls among the sorted ``ordered`` values, in [0, 1]: ties count half."""
    below = bisect.bisect_left(ordered, x)
    return (below + bisect.bisect_right(ordered, x)) / 2 / len(ordered)


def welford(stats: Sequence[float], x: float) -> list[float]:
    """Running ``[count, mean, m2]`` after one more value ``x`` (Welford's update)."""
    count, mean, m2 = stats[0] + 1, stats[1], stats[2]
    delta = x - mean
    mean += delta / count
    return [count, mean, m2 + delta * (x - mean)]


def _number(name: str, value: Any, *, low: float, high: float = math.inf, open_low: bool) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = math.isfinite(value) and (value > low if open_low else value >= low) and value < high
    if not ok:
        bounds = f"{'(' if open_low else '['}{low:g}, {high:g})"
        raise ValueError(f"{name} must be a finite number in {bounds}, got {value!r}")
    return float(value)


CATEGORICAL_LIMIT = 256  # integer decisions with more values get a Gaussian head
_LOGIT_SIGMA = 1.7  # a logit-normal with this spread is close to uniform on (0, 1)
_U_EPS = 1e-6


def gene_heads(space: SearchSpace) -> tuple[int, ...]:
    """Per gene: its number of choices (a categorical head), or 0 (a logit-normal head).

    Categorical decisions and integers with at most ``CATEGORICAL_LIMIT`` values are
    categorical; continuous decisions and wider integer ranges are continuous.
    """
    integral, upper = space.gene_integral, space.gene_upper
    return tuple(
        int(u) + 1 if i and u + 1 <= CATEGORICAL_LIMIT else 0
        for i, u in zip(integral, upper, strict=True)
    )


class _Controller:
    """The torch side: the policy's parameters, its Adam optimiser, one episode's log-prob.

    ``factorized``: one vector of logits per categorical decision, zero-initialised (uniform
    policy); for a continuous decision a mean and a log standard deviation of ``z``, whose
    logistic ``sigmoid(z)`` is the position in the decision's normalised range (a
    logit-normal policy, starting near uniform). ``lstm``: NASNet/ENAS controller; step ``i``
    feeds the embedding of decision ``i - 1``'s choice (a learned start token first; for a
    continuous decision its own token plus a projection of ``z``) to an LSTM cell and reads
    decision ``i``'s logits (or mean and log-std) from its own linear head. Logits are
    divided by ``temperature`` and, with a nonzero ``tanh_constant``, squashed to
    ``tanh_constant * tanh(logits)``. Float64 throughout, so weights round-trip through JSON
    exactly.
    """

    def __init__(self, heads: Sequence[int], options: dict[str, Any], init_seed: int) -> None:
        import torch

        self.dims = tuple(int(n) for n in heads)  # 0 marks a continuous head
        self.lstm = options["policy"] == "lstm"
        self.temperature = float(options["temperature"])
        self.tanh_constant = float(options["tanh_constant"])
        rows = [n if n else 1 for n in self.dims]  # a continuous decision has one token
        self.offsets = np.concatenate([[1], 1 + np.cumsum(rows)[:-1]]).astype(int)
        self.continuous = any(n == 0 for n in self.dims)
        hidden = int(options["hidden_size"])
        log_sigma = math.log(_LOGIT_SIGMA)
        with torch.random.fork_rng(devices=[]):  # leave the global torch RNG untouched
            torch.manual_seed(init_seed)
            if self.lstm:
                modules: dict[str, Any] = {
                    "embed": torch.nn.Embedding(1 + sum(rows), hidden),
                    "cell": torch.nn.LSTMCell(hidden, hidden),
                    "heads": torch.nn.ModuleList(
                        torch.nn.Linear(hidden, n if n else 2) for n in self.dims
                    ),
                }
                if self.continuous:
                    modules["project"] = torch.nn.Linear(1, hidden, bias=False)
                self.net: Any = torch.nn.ModuleDict(modules).double()
                for p in self.net.parameters():
                    torch.nn.init.uniform_(p, -_INIT_RANGE, _INIT_RANGE)
                with torch.no_grad():
                    for i, n in enumerate(self.dims):
                        if not n:  # start near the uniform-like logit-normal
                            self.net["heads"][i].bias[1] += log_sigma  # type: ignore[index]
            else:
                self.net = torch.nn.ParameterList(
                    torch.nn.Parameter(
                        torch.zeros(n, dtype=torch.float64) if n
                        else torch.tensor([0.0, log_sigma], dtype=torch.float64)
                    )
                    for n in self.dims
                )
        self.opt = torch.optim.Adam(self.net.parameters(), lr=float(options["lr"]))
        self._cache: dict[tuple[float, ...], tuple[np.ndarray, Any]] = {}

    @property
    def torch(self) -> Any:
        """The torch module (imported on use, so the controller pickles)."""
        import torch

        return torch

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state

    @contextmanager
    def serial(self) -> Iterator[None]:
        """Run torch single-threaded for the block, then restore the caller's thread count.

        The controller's tensors are tiny: worker threads only add synchronisation, which
        costs ~20x on a node whose cores are busy with trials; one thread is also
        bit-reproducible whatever the machine.
        """
        threads = self.torch.get_num_threads()
        if threads == 1:
            yield
            return
        self.torch.set_num_threads(1)
        try:
            yield
        finally:
            self.torch.set_num_threads(threads)

    def step(self, i: int, previous: float | None, state: Any) -> tuple[Any, Any]:
        """Decision ``i``'s log-probabilities (categorical) or ``[mean, log_std]`` of ``z``."""
        torch = self.torch
        if self.lstm:
            if previous is None:
                x = self.net["embed"].weight[0:1]
            elif self.dims[i - 1]:
                row = int(self.offsets[i - 1]) + int(previous)
                x = self.net["embed"].weight[row : row + 1]
            else:
                row = int(self.offsets[i - 1])
                z = torch.tensor([[float(previous)]], dtype=torch.float64)
                x = self.net["embed"].weight[row : row + 1] + self.net["project"](z)
            state = self.net["cell"](x, state)
            out = self.net["heads"][i](state[0])[0]
        else:
            out = self.net[i]
        if not self.dims[i]:
            return out, state
        logits = out / self.temperature
        if self.tanh_constant:
            logits = self.tanh_constant * torch.tanh(logits)
        return torch.log_softmax(logits, dim=-1), state

    def log_prob(self, i: int, dist: Any, choice: float) -> tuple[Any, Any]:
        """Log-probability of ``choice`` under decision ``i``'s distribution, and its entropy."""
        torch = self.torch
        if self.dims[i]:
            return dist[int(choice)], -(dist.exp() * dist).sum()
        mean, log_std = dist[0], dist[1]
        z = (float(choice) - mean) / log_std.exp()
        logp = -0.5 * z * z - log_std - 0.5 * math.log(2 * math.pi)
        entropy = log_std + 0.5 * math.log(2 * math.pi * math.e)
        return logp, entropy + torch.zeros((), dtype=torch.float64)

    def walk(self, choose: Callable[[int, Any], float]) -> tuple[Any, Any, list[float]]:
        """One episode: ``choose(i, distribution)`` picks decision ``i``.

        Returns the summed log-probability of the choices, the summed entropy of the
        distributions met on the way, and the choices.
        """
        logp_sum: Any = 0.0
        entropy: Any = 0.0
        vector: list[float] = []
        state = None
        for i in range(len(self.dims)):
            dist, state = self.step(i, vector[-1] if vector else None, state)
            j = choose(i, dist)
            vector.append(j)
            logp, ent = self.log_prob(i, dist, j)
            logp_sum = logp_sum + logp
            entropy = entropy + ent
        return logp_sum, entropy, vector

    def sample(self, rng: np.random.Generator, flatten: float = 1.0) -> list[float]:
        """Choices drawn with uniforms (inverse CDF) and normals from ``rng``.

        ``flatten > 1`` samples from ``p ** (1 / flatten)`` instead of the policy's ``p``
        (for a continuous decision: a standard deviation ``sqrt(flatten)`` times wider).
        """
        # A converged policy proposes many seen architectures that the base redraws;
        # distributions are memoised per prefix until the next update.
        vector: list[float] = []
        state = None
        with self.torch.no_grad(), self.serial():
            for i in range(len(self.dims)):
                key = tuple(vector) if self.lstm else (i,)
                hit = self._cache.get(key)
                if hit is None:
                    dist, state = self.step(i, vector[-1] if vector else None, state)
                    values = dist.exp().numpy() if self.dims[i] else dist.numpy().copy()
                    hit = self._cache[key] = (values, state)
                values, state = hit
                if self.dims[i]:
                    probs = values ** (1.0 / flatten) if flatten != 1.0 else values
                    vector.append(inverse_cdf(probs, rng.random()))
                else:
                    std = math.exp(float(values[1])) * math.sqrt(flatten)
                    vector.append(float(values[0]) + std * float(rng.standard_normal()))
        return vector

    def update(self, vector: Sequence[float], advantage: float, entropy_weight: float) -> None:
        """One Adam step on ``-(advantage * log p(vector) + entropy_weight * entropy)``."""
        self._cache.clear()
        with self.serial():
            self.opt.zero_grad()
            logp, entropy, _ = self.walk(lambda i, _: vector[i])
            loss = -(advantage * logp) - entropy_weight * entropy
            loss.backward()
            self.opt.step()

    def get_state(self) -> dict[str, Any]:
        """Weights by parameter name and Adam's moments, as nested lists of floats."""
        params = list(self.net.parameters())
        adam = []
        for p in params:
            s = self.opt.state.get(p)
            adam.append(
                None
                if not s
                else {
                    "step": float(s["step"]),
                    "exp_avg": s["exp_avg"].tolist(),
                    "exp_avg_sq": s["exp_avg_sq"].tolist(),
                }
            )
        weights = {name: p.detach().tolist() for name, p in self.net.named_parameters()}
        return {"weights": weights, "adam": adam}

    def set_state(self, state: dict[str, Any]) -> None:
        """Load what ``get_state`` wrote (same policy and sizes)."""
        torch = self.torch
        self._cache.clear()
        named = dict(self.net.named_parameters())
        if set(named) != set(state["weights"]):
            raise ValueError("controller weights do not match the policy's parameters")
        with torch.no_grad():
            for name, p in named.items():
                value = torch.tensor(state["weights"][name], dtype=torch.float64)
                if value.shape != p.shape:
                    raise ValueError(f"controller weight {name!r} has shape {tuple(value.shape)}")
                p.copy_(value)
        adam: dict[int, Any] = {}
        for i, s in enumerate(state["adam"]):
            if s is not None:
                adam[i] = {
                    "step": torch.tensor(float(s["step"])),
                    "exp_avg": torch.tensor(s["exp_avg"], dtype=torch.float64),
                    "exp_avg_sq": torch.tensor(s["exp_avg_sq"], dtype=torch.float64),
                }
        groups = self.opt.state_dict()["param_groups"]
        self.opt.load_state_dict({"state": adam, "param_groups": groups})


class ReinforceSearch(NASSearch):
    """A controller policy over the space's decisions, trained with REINFORCE.

    Each suggestion samples one choice per decision (``space.dims``) from the policy with
    the searcher's own ``numpy`` generator (inverse CDF: seeded runs repeat exactly and
    torch's global RNG is never touched). A sample already suggested is redrawn from a
    slightly flattened policy, so a peaked policy moves on to its next most likely unseen
    architectures. Each successful result performs one policy-gradient (Adam) step on
    ``-(advantage * log p(arch) + entropy_weight * entropy)``; the advantage is
    ``reward - baseline``, divided by the running standard deviation of the rewards
    (``normalize_rewards``), and the baseline is an exponential moving average of the
    rewards (``baseline_decay``), updated after the step. With ``reward="rank"`` (the
    default) the reward is the score's rank among all successful scores so far, scaled to
    [0, 1]; ``"raw"`` uses the score itself. Ranks keep a few broken architectures (NB201's
    cells with no path score 10%) from inflating the scale and drowning the differences
    between good ones: on the NAS-Bench-201 table (seeds 1000-1059, not the benchmark's)
    the mean test accuracy of the returned architecture after 100 queries rose from 93.94
    to 94.12, after 300 from 94.24 to 94.29. Results may arrive late and in
    any order, as with the papers' asynchronous workers; failed trials teach nothing.
    Results told with ``add_evaluated_point`` train the controller too (pre-training on
    recorded rewards).

    ``policy="factorized"``: independent categorical logits per decision, starting
    uniform. ``policy="lstm"``: the autoregressive LSTM controller of NASNet/ENAS, with
    ``hidden_size`` units, the previous choice's embedding as input, one linear head per
    decision and logits squashed to ``tanh_constant * tanh(logits / temperature)``.
    Torch is imported when a searcher is built, never by importing this module.

    Papers: B. Zoph, Q. V. Le, "Neural Architecture Search with Reinforcement Learning",
    ICLR 2017; H. Pham, M. Guan, B. Zoph, Q. V. Le, J. Dean, "Efficient Neural Architecture
    Search via Parameter Sharing", ICML 2018; R. J. Williams, "Simple statistical
    gradient-following algorithms for connectionist reinforcement learning", MLJ 1992.

    Example:
        >>> from spaces import create_space
        >>> s = ReinforceSearch(create_space("nb201"), metric="val_acc", mode="max", seed=0)
        >>> config = s.suggest("t1")
        >>> s.on_trial_complete("t1", {"val_acc": 90.0})
        >>> lstm = ReinforceSearch(create_space("nb201"), policy="lstm", hidden_size=32,
        ...                        metric="val_acc", mode="max", seed=0)
        >>> isinstance(lstm.suggest("t1"), dict)
        True

    Args:
        space: the search space.
        policy: ``"factorized"`` or ``"lstm"``.
        lr: Adam learning rate, > 0; default 0.15 (factorized) or 0.005 (lstm).
        baseline_decay: weight of the old baseline in its moving average, in [0, 1).
        entropy_weight: weight of the entropy bonus, >= 0.
        hidden_size: LSTM units (``policy="lstm"`` only).
        temperature: logits are divided by it, > 0; default 1 (factorized) or 5 (lstm).
        tanh_constant: logits ``x`` become ``tanh_constant * tanh(x)``; 0 turns that off;
            default 0 (factorized) or 2.5 (lstm).
        normalize_rewards: divide advantages by the running standard deviation of rewards.
        reward: ``"rank"`` (the score's rank among those seen, in [0, 1]) or ``"raw"``.
        **kwargs: ``metric``, ``mode``, ``seed``, ``max_trials`` and the rest of
            ``NASSearch``'s options.
    """

    def __init__(
        self,
        space: SearchSpace | Mapping[str, Any] | None = None,
        *,
        policy: str = "factorized",
        lr: float | None = None,
        baseline_decay: float = 0.9,
        entropy_weight: float = 0.0,
        hidden_size: int = 64,
        temperature: float | None = None,
        tanh_constant: float | None = None,
        normalize_rewards: bool = True,
        reward: str = "rank",
        **kwargs: Any,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {', '.join(REWARDS)}, got {reward!r}")
        if not isinstance(normalize_rewards, bool):
            raise ValueError(f"normalize_rewards must be True or False, got {normalize_rewards!r}")
        default = POLICY_DEFAULTS[policy]
        options: dict[str, Any] = {
            "policy": policy,
            "lr": _number("lr", default["lr"] if lr is None else lr, low=0, open_low=True),
            "baseline_decay": _number(
                "baseline_decay", baseline_decay, low=0, high=1, open_low=False
            ),
            "entropy_weight": _number("entropy_weight", entropy_weight, low=0, open_low=False),
            "hidden_size": positive_int("hidden_size", hidden_size),
            "temperature": _number(
                "temperature",
                default["temperature"] if temperature is None else temperature,
                low=0,
                open_low=True,
            ),
            "tanh_constant": _number(
                "tanh_constant",
                default["tanh_constant"] if tanh_constant is None else tanh_constant,
                low=0,
                open_low=False,
            ),
            "normalize_rewards": normalize_rewards,
            "reward": reward,
        }
        self.options = options
        self._controller: _Controller | None = None
        self._baseline: float | None = None
        self._stats = [0.0, 0.0, 0.0]  # count, mean, m2 of the rewards
        self._scores: list[float] = []  # successful scores, sorted (for rank rewards)
        self._vectors: dict[str, list[float]] = {}  # suggested, not yet observed
        self._misses = 0  # proposals already seen, in the current suggest
        super().__init__(space, **kwargs)

    def _space_ready(self) -> None:
        self._heads = gene_heads(self.space)
        self._controller = _Controller(self._heads, self.options, int(self._rng.integers(2**31)))

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """As ``NASSearch.suggest``; proposals start from the unflattened policy."""
        self._misses = 0
        return super().suggest(trial_id)

    def _propose(self) -> Arch:
        # A peaked policy keeps proposing architectures already suggested, which the base
        # redraws; each miss flattens the next draw a little, so the search moves to the
        # policy's next most likely unseen architectures instead of to the base's uniform
        # fallback.
        assert self._controller is not None
        vector = self._controller.sample(self._rng, 1.0 + _FLATTEN_PER_MISS * self._misses)
        arch = self.space.decode(np.asarray(self._genes(vector)))
        if self.is_seen(arch):
            self._misses += 1
        else:  # the base suggests it
            self._vectors[self.space.to_string(arch)] = vector
        return arch

    def _observe(self, arch: Arch, score: float | None) -> None:
        vector = self._vectors.pop(self.space.to_string(arch), None)
        if score is None:
            return
        if vector is None:  # found elsewhere (add_evaluated_point) or a fallback sample
            vector = self._choices(self.space.encode(arch))
        advantage = self._advantage(float(score))
        assert self._controller is not None
        self._controller.update(vector, advantage, self.options["entropy_weight"])

    def _genes(self, vector: Sequence[float]) -> list[float]:
        """The space's genes of a policy sample (``z`` of continuous heads -> ``sigmoid(z)``)."""
        upper = self.space.gene_upper
        return [
            int(v) if n else float(upper[i]) / (1.0 + math.exp(-min(700.0, max(-700.0, v))))
            for i, (n, v) in enumerate(zip(self._heads, vector, strict=True))
        ]

    def _choices(self, genes: Sequence[float] | np.ndarray) -> list[float]:
        """Inverse of ``_genes``: categorical indices, and ``z = logit(u)`` of continuous ones."""
        upper = self.space.gene_upper
        out: list[float] = []
        for i, (n, g) in enumerate(zip(self._heads, genes, strict=True)):
            if n:
                out.append(int(g))
            else:
                u = min(1.0 - _U_EPS, max(_U_EPS, float(g) / max(float(upper[i]), _U_EPS)))
                out.append(math.log(u / (1.0 - u)))
        return out

    def _advantage(self, score: float) -> float:
        """``(reward - baseline) / std``, then the baseline and the statistics move on."""
        if self.options["reward"] == "rank":
            bisect.insort(self._scores, score)
            score = mid_rank(self._scores, score)
        self._stats = welford(self._stats, score)
        if self._baseline is None:
            self._baseline = score
            return 0.0
        advantage = score - self._baseline
        if self.options["normalize_rewards"]:
            count, _, m2 = self._stats
            advantage /= max(math.sqrt(m2 / count), _STD_FLOOR)
        decay = self.options["baseline_decay"]
        self._baseline = decay * self._baseline + (1 - decay) * score
        return advantage

    def probabilities(self) -> list[np.ndarray]:
        """Choice probabilities of each decision along the policy's most likely path.

        The marginals for ``factorized``; for ``lstm``, conditional on the greedy prefix.
        A continuous decision gives ``[mean, std]`` of its logit ``z`` instead.
        """
        self._require_ready()
        assert self._controller is not None
        torch = self._controller.torch
        out: list[np.ndarray] = []

        def greedy(i: int, dist: Any) -> float:
            if self._heads[i]:
                out.append(dist.exp().numpy().copy())
                return int(torch.argmax(dist))
            out.append(np.array([float(dist[0]), math.exp(float(dist[1]))]))
            return float(dist[0])

        with torch.no_grad():
            self._controller.walk(greedy)
        return out

    def _get_state(self) -> dict[str, Any]:
        return {
            "options": dict(self.options),
            "controller": self._controller.get_state() if self._controller else None,
            "baseline": self._baseline,
            "reward_stats": list(self._stats),
            "scores": list(self._scores),
            "vectors": {text: list(v) for text, v in self._vectors.items()},
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        options = dict(state["options"])
        options.setdefault("reward", "raw")  # states saved before rank rewards existed
        if options.get("policy") not in POLICIES:
            raise ValueError(f"unknown policy {options.get('policy')!r}")
        if options != self.options or self._controller is None:
            self._controller = _Controller(gene_heads(self.space), options, 0)
        self.options = options
        self._controller.set_state(state["controller"])
        baseline = state["baseline"]
        self._baseline = None if baseline is None else float(baseline)
        self._stats = [float(x) for x in state["reward_stats"]]
        self._scores = sorted(float(x) for x in state.get("scores", []))
        self._vectors = {
            str(t): [int(x) if n else float(x) for n, x in zip(self._heads, v, strict=True)]
            for t, v in state["vectors"].items()
        }
