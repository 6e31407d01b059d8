"""Parameter spaces from a Ray Tune ``param_space`` dict or its YAML form, into decisions.

Both forms are nested dicts. A leaf is a search domain (a Tune ``Domain`` such as
``tune.choice([...])``, or in YAML a one-key mapping such as ``{loguniform: [1.0e-4, 0.1]}``)
or a constant. Ray is imported only when a Tune ``Domain`` is met.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from spaces.params.decisions import Categorical, Float, Integer, ParamDecision, short

Path = tuple[str, ...]

# YAML domain keys and their Tune counterparts; all bounds as Tune documents them.
DOMAINS = (
    "choice", "randint", "qrandint", "lograndint", "qlograndint",
    "uniform", "quniform", "loguniform", "qloguniform",
)
CONSTANT = "constant"  # {constant: X} keeps a mapping that looks like a domain as a constant
SUPPORTED = (
    "tune.choice, randint, qrandint, lograndint, qlograndint, uniform, quniform, loguniform, "
    "qloguniform, constants and nested dicts"
)
_UNSUPPORTED = {
    "grid_search": "grid_search (a grid is not a search space: run it with Tune's default "
                   "searcher)",
    "sample_from": "sample_from (arbitrary functions cannot be mutated or encoded)",
    "randn": "randn (unbounded normal; use uniform or loguniform bounds)",
    "qrandn": "qrandn (unbounded normal; use quniform bounds)",
}


def flat_name(path: Path) -> str:
    """The flat key of a nested path, joined with ``/`` as Tune flattens configs."""
    return "/".join(path)


def parse_params(params: Any) -> tuple[list[tuple[Path, ParamDecision]], dict[str, Any]]:
    """Decisions (with their nested paths) and the constants' template of a param space."""
    if not isinstance(params, Mapping):
        raise ValueError(
            f"a param space must be a mapping of names to domains or constants, got "
            f"{type(params).__name__}"
        )
    decisions: list[tuple[Path, ParamDecision]] = []
    template = _walk(params, (), decisions)
    if not decisions:
        raise ValueError(f"the param space has no search domain, only constants; use {SUPPORTED}")
    return decisions, template


def _walk(node: Mapping[Any, Any], path: Path, out: list[tuple[Path, ParamDecision]]) -> Any:
    template: dict[str, Any] = {}
    for key, value in node.items():
        if not isinstance(key, str) or not key:
            raise ValueError(
                f"key {short(key)} under {short(flat_name(path) or 'the top level')} must be a "
                "non-empty string"
            )
        here = (*path, key)
        name = flat_name(here)
        if key == "grid_search":
            raise ValueError(f"key {short(flat_name(path) or key)}: {_UNSUPPORTED['grid_search']}; "
                             f"supported: {SUPPORTED}")
        decision = _domain(name, value)
        if decision is not None:
            out.append((here, decision))
            template[key] = None
        elif isinstance(value, Mapping) and CONSTANT in value and len(value) == 1:
            template[key] = value[CONSTANT]
        elif isinstance(value, Mapping):
            template[key] = _walk(value, here, out)
        else:
            _no_domain_inside(name, value)
            template[key] = value
    return template


def _domain(name: str, value: Any) -> ParamDecision | None:
    """The decision a leaf stands for, or None for a constant or a nested dict."""
    if _is_tune_domain(value):
        return _from_tune(name, value)
    if isinstance(value, Mapping) and len(value) == 1:
        (kind, args), = value.items()
        if kind in DOMAINS:
            return _from_yaml(name, kind, args)
        if kind in _UNSUPPORTED:
            raise ValueError(f"key {short(name)}: {_UNSUPPORTED[kind]}; supported: {SUPPORTED}")
    return None


def _no_domain_inside(name: str, value: Any) -> None:
    """Constants may be lists or tuples, but must not hide search domains (conditional spaces)."""
    if isinstance(value, (list, tuple)):
        for item in value:
            if _is_tune_domain(item) or (
                isinstance(item, Mapping) and any(_contains_domain(v) for v in item.values())
            ):
                raise ValueError(
                    f"key {short(name)}: search domains inside lists are not supported; use a "
                    f"nested dict; supported: {SUPPORTED}"
                )
            _no_domain_inside(name, item)


def _contains_domain(value: Any) -> bool:
    if _is_tune_domain(value):
        return True
    if isinstance(value, Mapping):
        if len(value) == 1 and next(iter(value)) in DOMAINS:
            return True
        return any(_contains_domain(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_contains_domain(v) for v in value)
    return False


# --------------------------------------------------------------------------- YAML form
def _from_yaml(name: str, kind: str, args: Any) -> ParamDecision:
    """A decision from ``{kind: [args]}`` or ``{kind: {lower:, upper:, q:}}``."""
    if kind == "choice":
        if isinstance(args, Mapping):
            args = args.get("categories")
        if not isinstance(args, Sequence) or isinstance(args, (str, bytes)):
            raise ValueError(f"key {short(name)}: choice needs a list of values, got {short(args)}")
        if any(_contains_domain(c) for c in args):
            raise ValueError(
                f"key {short(name)}: a choice among sub-spaces is a conditional space, which "
                f"is not supported; supported: {SUPPORTED}"
            )
        return Categorical(name, list(args))
    quantised = kind.startswith("q")
    if isinstance(args, Mapping):
        unknown = sorted(set(args) - {"lower", "upper", "q", "base"}, key=str)
        if unknown:
            raise ValueError(
                f"key {short(name)}: {kind} takes lower, upper and q, not {short(unknown[0])}"
            )
        args = [args.get("lower"), args.get("upper")] + ([args.get("q")] if quantised else [])
    if not isinstance(args, Sequence) or isinstance(args, (str, bytes)):
        raise ValueError(f"key {short(name)}: {kind} needs a list [lower, upper"
                         f"{', q' if quantised else ''}], got {short(args)}")
    expected = 3 if quantised else 2
    allowed = {expected} | ({2} if kind == "qrandint" else set())
    if len(args) not in allowed:
        raise ValueError(f"key {short(name)}: {kind} needs {expected} values [lower, upper"
                         f"{', q' if quantised else ''}], got {short(args)}")
    lower, upper = args[0], args[1]
    q = args[2] if len(args) > 2 else (1 if kind == "qrandint" else None)
    return _make(name, kind, lower, upper, q)


def _make(name: str, kind: str, lower: Any, upper: Any, q: Any) -> ParamDecision:
    """Tune's bound conventions: randint/lograndint exclude ``upper``; quantised ones include
    it (except q = 1); floats span ``[lower, upper]``."""
    log = "log" in kind
    if "int" in kind:
        for label, v in (("lower", lower), ("upper", upper)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(
                    f"key {short(name)}: {kind} {label} must be an integer, got {short(v)}"
                )
        if q is None or q == 1:
            return Integer(name, lower, int(upper) - 1, log=log)
        return Integer(name, lower, upper, q=q, log=log)
    return Float(name, lower, upper, q=q, log=log)


# --------------------------------------------------------------------------- Tune form
def _is_tune_domain(value: Any) -> bool:
    module = type(value).__module__ or ""
    if not module.startswith("ray.tune"):
        return False
    from ray.tune.search.sample import Domain

    return isinstance(value, Domain)


def _from_tune(name: str, domain: Any) -> ParamDecision:
    """A decision from a Tune ``Domain`` (``tune.choice``, ``tune.loguniform``, ...)."""
    from ray.tune.search import sample

    sampler = domain.get_sampler()
    q = None
    if isinstance(sampler, sample.Quantized):
        q = sampler.q
        sampler = sampler.get_sampler()  # type: ignore[no-untyped-call]
    if isinstance(domain, sample.Function):
        raise ValueError(
            f"key {short(name)}: {_UNSUPPORTED['sample_from']}; supported: {SUPPORTED}"
        )
    if isinstance(sampler, sample.Grid):
        raise ValueError(
            f"key {short(name)}: {_UNSUPPORTED['grid_search']}; supported: {SUPPORTED}"
        )
    if isinstance(sampler, sample.Normal):
        raise ValueError(f"key {short(name)}: {_UNSUPPORTED['randn']}; supported: {SUPPORTED}")
    if isinstance(domain, sample.Categorical):
        if any(_contains_domain(c) for c in domain.categories):
            raise ValueError(
                f"key {short(name)}: a choice among sub-spaces is a conditional space, which "
                f"is not supported; supported: {SUPPORTED}"
            )
        return Categorical(name, list(domain.categories))
    log = isinstance(sampler, sample.LogUniform)
    if isinstance(domain, sample.Integer):
        kind = ("q" if q is not None else "") + ("lograndint" if log else "randint")
        return _make(name, kind, int(domain.lower), int(domain.upper), q)
    if isinstance(domain, sample.Float):
        kind = ("q" if q is not None else "") + ("loguniform" if log else "uniform")
        return _make(name, kind, domain.lower, domain.upper, q)
    raise ValueError(
        f"key {short(name)}: unsupported Tune domain {type(domain).__name__}; "
        f"supported: {SUPPORTED}"
    )
