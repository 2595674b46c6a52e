"""A named registry with `get(identifier)` and "did you mean" for unknown names."""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from nnrun.config.errors import ConfigError


def did_you_mean(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """Return ' (did you mean X?)' for the closest choice, or '' when none is close."""
    lowered: dict[str, str] = {}
    for c in choices:   # of two spellings (mse, MSE), the lower-case one
        if c == c.lower() or c.lower() not in lowered:
            lowered[c.lower()] = c
    close = difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(lowered[c]) for c in close) + "?)"


def unknown_name_message(kind: str, name: Any, choices: list[str], hint: str = "") -> str:
    """The one message for an unknown name of a kind, with close matches and the allowed set.

    `hint` (such as " (it belongs in fit:)") replaces the close matches when given."""
    hint = hint or did_you_mean(str(name), choices)
    allowed = ", ".join(sorted(map(str, choices))) or "none (there is nothing of that name)"
    return f"unknown {kind} {name!r}{hint}; allowed: {allowed}"


def split_identifier(spec: Mapping[str, Any], kind: str) -> tuple[str, dict[str, Any]]:
    """`{name: x, **kw}` or Keras's `{class_name: x, config: kw}` -> (x, kw)."""
    if "class_name" in spec:
        return spec["class_name"], dict(spec.get("config") or {})
    kwargs = dict(spec)
    name = kwargs.pop("name", None)
    if not isinstance(name, str):
        raise ConfigError(f"a {kind} mapping needs a 'name:' string, got {dict(spec)!r}")
    return name, kwargs


def _expected_like(name: str, default: Any, value: Any) -> str:
    """What a parameter takes, judged by its default (a bool, a number, a string, an
    axis), if `value` is not that; '' when it fits or the default says nothing."""
    if isinstance(default, bool):
        return "" if isinstance(value, bool) else "true or false"
    if isinstance(default, str):
        return "" if isinstance(value, str) else "a string"
    if isinstance(default, int) and "axis" in name:   # an axis, or Keras's list of axes
        items = value if isinstance(value, list) and value else [value]
        ok = all(isinstance(v, int) and not isinstance(v, bool) for v in items)
        return "" if ok else "an axis or a list of axes"
    if isinstance(default, (int, float)):
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value))
        return "" if ok else "a finite number"
    return ""


class Registry:
    """Maps names (and aliases) to objects of one kind: layers, losses, optimizers..."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Any] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, *aliases: str) -> Callable[[Any], Any]:
        """Decorator: `@REGISTRY.register("mse", "mean_squared_error")`."""

        def add(obj: Any) -> Any:
            self.add(name, obj, *aliases)
            return obj

        return add

    def add(self, name: str, obj: Any, *aliases: str) -> None:
        if name in self._items or name in self._aliases:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._items[name] = obj
        for alias in aliases:
            self._aliases[alias] = name

    def canonical(self, name: str) -> str:
        """The canonical name for `name` or an alias; ConfigError if unknown."""
        if name in self._items:
            return name
        if name in self._aliases:
            return self._aliases[name]
        raise ConfigError(unknown_name_message(self.kind, name, self.names(aliases=True)))

    def get(self, name: str) -> Any:
        return self._items[self.canonical(name)]

    def checked(self, name: str, kwargs: Mapping[str, Any], *, skip: int = 0,
                kind: str = "") -> Any:
        """The entry for `name`, after checking `kwargs` against its signature.

        `skip` leading parameters are not arguments a config gives (an activation's x).
        Unknown arguments are a ConfigError naming them, with close matches.
        """
        factory = self.get(name)
        params = list(inspect.signature(factory).parameters.values())[skip:]
        allowed = [p.name for p in params]
        unknown = [k for k in kwargs if k not in allowed]
        if unknown:
            hints = "".join(did_you_mean(str(k), allowed) for k in unknown)
            raise ConfigError(
                f"{kind or self.kind} {self.canonical(name)!r} has no argument"
                f" {', '.join(map(repr, unknown))}{hints}; allowed: {', '.join(allowed) or 'none'}"
            )
        for param in params:
            if param.name in kwargs:
                expected = _expected_like(param.name, param.default, kwargs[param.name])
                if expected:
                    raise ConfigError(f"{kind or self.kind} {self.canonical(name)!r}: "
                                      f"{param.name} expected {expected}, got "
                                      f"{kwargs[param.name]!r}", where=param.name)
        return factory

    def aliases(self) -> dict[str, str]:
        """Every alias and the canonical name it stands for."""
        return dict(self._aliases)

    def names(self, aliases: bool = False) -> list[str]:
        out = list(self._items)
        if aliases:
            out += list(self._aliases)
        return out

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)
