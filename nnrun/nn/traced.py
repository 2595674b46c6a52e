"""Hyperparameters that are values in a compiled program rather than constants in it.

`nnrun tune` and `nnrun sweep` train variants of one config as one vmapped program. A
variant's dropout rate or regularizer factor is a number in the config, which a layer
would bake into the program as a constant; while a program is traced inside
`traced_values({...})`, the layers read such numbers from that mapping instead, so one
compiled program serves every variant (each with its own values, along the vmapped
axis).

Keys name a layer and what is read (`<layer>/keep`, `<layer>/threshold` for dropout,
`<layer>/<argument>/l1` or `/l2` for a weight regularizer); the values are computed on
the host exactly as the layer would compute its constants, so a traced variant does
what its single run does. Outside `traced_values` every lookup gives the default.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

_NONE: Mapping[str, Any] = MappingProxyType({})
_VALUES: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "nnrun_traced_values", default=_NONE)


@contextlib.contextmanager
def traced_values(values: Mapping[str, Any]) -> Iterator[None]:
    """While tracing inside this block, `lookup(key, default)` gives `values[key]`."""
    token = _VALUES.set(values)
    try:
        yield
    finally:
        _VALUES.reset(token)


def lookup(key: str, default: Any) -> Any:
    return _VALUES.get().get(key, default)


def dropout_threshold(keep_prob: float) -> int:
    """The 16-bit threshold a keep mask compares its draws with (see keep_mask)."""
    return min(round(keep_prob * 65536), 65536)


def dropout_values(layer: str, rate: float) -> dict[str, np.ndarray]:
    """The traced values of a dropout layer with this rate, as its constants would be."""
    return {f"{layer}/keep": np.float32(1.0 - rate),
            f"{layer}/threshold": np.uint32(dropout_threshold(1.0 - rate))}


def regularizer_key(layer: str, arg: str, factor: str) -> str:
    return f"{layer}/{arg}/{factor}"
