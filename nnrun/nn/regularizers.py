"""Weight regularizers (added to the training loss) and constraints (applied after each
update), by Keras 3 name: l1, l2, l1_l2; max_norm, min_max_norm, non_neg, unit_norm."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from nnrun.config.errors import ConfigError
from nnrun.config.registry import Registry
from nnrun.config.values import named_call
from nnrun.nn.lazy import jax, jnp
from nnrun.nn.traced import lookup

EPSILON = 1e-7  # keras.backend.epsilon()

REGULARIZERS = Registry("regularizer")
CONSTRAINTS = Registry("constraint")


def _l1_l2(l1: float, l2: float) -> Callable[..., jax.Array]:
    def penalty(w, key: str | None = None):
        """`key` (layer/argument): the factors may be values of the program (traced)."""
        out = jnp.zeros((), w.dtype)
        if l1:
            f1 = l1 if key is None else lookup(f"{key}/l1", l1)
            out = out + f1 * jnp.sum(jnp.abs(w))
        if l2:
            f2 = l2 if key is None else lookup(f"{key}/l2", l2)
            out = out + f2 * jnp.sum(jnp.square(w))
        return out

    return penalty


@REGULARIZERS.register("l1", "L1")
def l1(l1: float = 0.01):
    return _l1_l2(l1, 0.0)


@REGULARIZERS.register("l2", "L2")
def l2(l2: float = 0.01):
    return _l1_l2(0.0, l2)


@REGULARIZERS.register("l1_l2", "l1l2", "L1L2")
def l1_l2(l1: float = 0.0, l2: float = 0.0):
    """Keras 3's L1L2: both factors default to 0 (give them)."""
    return _l1_l2(l1, l2)


def _norms(w, axis):
    return jnp.sqrt(jnp.sum(jnp.square(w), axis=axis, keepdims=True))


@CONSTRAINTS.register("max_norm", "MaxNorm", "maxnorm")
def max_norm(max_value: float = 2.0, axis: int | list = 0):
    def project(w):
        norms = _norms(w, tuple(axis) if isinstance(axis, list) else axis)
        return w * (jnp.clip(norms, 0, max_value) / (EPSILON + norms))

    return project


@CONSTRAINTS.register("min_max_norm", "MinMaxNorm")
def min_max_norm(min_value: float = 0.0, max_value: float = 1.0, rate: float = 1.0,
                 axis: int | list = 0):
    def project(w):
        norms = _norms(w, tuple(axis) if isinstance(axis, list) else axis)
        desired = rate * jnp.clip(norms, min_value, max_value) + (1 - rate) * norms
        return w * (desired / (EPSILON + norms))

    return project


@CONSTRAINTS.register("non_neg", "NonNeg", "nonneg")
def non_neg():
    return lambda w: jnp.maximum(w, 0)


@CONSTRAINTS.register("unit_norm", "UnitNorm", "unitnorm")
def unit_norm(axis: int | list = 0):
    def project(w):
        return w / (EPSILON + _norms(w, tuple(axis) if isinstance(axis, list) else axis))

    return project


def _get(registry: Registry, identifier: Any):
    if identifier is None:
        return None
    if isinstance(identifier, str):
        return registry.get(identifier)()
    if isinstance(identifier, Mapping):
        factory, kwargs = named_call(registry, dict(identifier))
        return factory(**kwargs)
    raise ConfigError(f"cannot interpret {identifier!r} as a {registry.kind}")


def get_regularizer(identifier: Any) -> Callable[[jax.Array], jax.Array] | None:
    """A name, `{l2: 1e-4}`, `{name: l2, l2: 1e-4}` or Keras's `{class_name: L2, config:
    {l2: 1e-4}}` -> penalty(w); None stays None."""
    return _get(REGULARIZERS, identifier)


def get_constraint(identifier: Any) -> Callable[[jax.Array], jax.Array] | None:
    """A name, `{max_norm: 3}`, `{max_norm: {max_value: 3}}`, `{name: max_norm, max_value:
    3}` or Keras's `{class_name: MaxNorm, config: {...}}` -> project(w); None stays None."""
    return _get(CONSTRAINTS, identifier)
