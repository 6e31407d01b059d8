"""Name -> space factory registry, extended by the ``raynas.spaces`` entry-point group."""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any, TypeVar

from spaces._base import SearchSpace

logger = logging.getLogger(__name__)

_SPACES: dict[str, Callable[..., SearchSpace]] = {}
# Built-in spaces are imported on first use so `import spaces` stays cheap.
_BUILTIN: dict[str, str] = {
    "nb201": "spaces.nb201.space",
    "mobilenet": "spaces.mobilenet.space",
    "params": "spaces.params.space",
}

F = TypeVar("F", bound=Callable[..., SearchSpace])


def register_space(name: str) -> Callable[[F], F]:
    """Class decorator registering a space factory under a lowercase name."""

    def wrap(factory: F) -> F:
        key = name.lower()
        _SPACES[key] = factory
        return factory

    return wrap


def _load_entry_points() -> None:
    for ep in entry_points(group="raynas.spaces"):
        if ep.name.lower() not in _SPACES:
            _SPACES[ep.name.lower()] = ep.load()


def list_spaces() -> list[str]:
    """Names of every available space, built-in and from entry points."""
    names = set(_BUILTIN) | set(_SPACES)
    names |= {ep.name.lower() for ep in entry_points(group="raynas.spaces")}
    return sorted(names)


def space_from_spec(spec: Any) -> SearchSpace:
    """The space a ``SearchSpace.spec()`` dict describes (``{"name": ..., "options": {...}}``)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ValueError(f"a space spec is a mapping with a 'name', got {spec!r:.200}")
    options = spec.get("options") or {}
    if not isinstance(options, dict):
        raise ValueError(f"space spec options must be a mapping, got {options!r:.200}")
    return create_space(spec["name"], **options)


def create_space(name: str, **options: Any) -> SearchSpace:
    """Build the space registered under ``name`` with its keyword options."""
    if not isinstance(name, str):
        raise TypeError(f"space name must be a string, got {type(name).__name__}")
    key = name.lower()
    if key not in _SPACES and key in _BUILTIN:
        import_module(_BUILTIN[key])
    if key not in _SPACES:
        _load_entry_points()
    if key not in _SPACES:
        raise ValueError(f"unknown space {name!r}; available: {', '.join(list_spaces())}")
    try:
        return _SPACES[key](**options)
    except TypeError as exc:
        raise ValueError(f"bad options for space {name!r}: {exc}") from None
