"""Activation functions by Keras 3 name: pure `fn(x) -> y` on jax arrays.

Each formula is the one Keras 3 uses on its JAX backend (`keras/src/activations/
activations.py` and `keras/src/backend/jax/nn.py`), so a model built here computes
what the same Keras model computes. `get(identifier)` accepts a name, None (linear),
a mapping (`{leaky_relu: 0.1}`, `{leaky_relu: {negative_slope: 0.1}}` or
`{name: leaky_relu, negative_slope: 0.1}`) or a callable.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from nnrun.config.errors import ConfigError
from nnrun.config.registry import Registry
from nnrun.config.values import named_call
from nnrun.nn.lazy import Array, jax, jnp

Activation = Callable[[Array], Array]

ACTIVATIONS = Registry("activation")


@ACTIVATIONS.register("linear")
def linear(x: jax.Array) -> jax.Array:
    """Identity."""
    return x


@ACTIVATIONS.register("relu")
def relu(
    x: jax.Array, negative_slope: float = 0.0, max_value: float | None = None,
    threshold: float = 0.0,
) -> jax.Array:
    """Keras `relu` with its optional leak, cap and threshold (defaults: plain max(x, 0))."""
    x = jnp.asarray(x)
    if negative_slope != 0.0 and max_value is None and threshold == 0:
        return jax.nn.leaky_relu(x, negative_slope=negative_slope)
    negative_part = jax.nn.relu(threshold - x) if negative_slope != 0.0 else 0.0
    if threshold != 0:
        x = jnp.where(x > threshold, x, 0)
    else:
        x = jax.nn.relu(x)
    if max_value is not None:
        x = jnp.clip(x, 0.0, max_value)
    return x - negative_slope * negative_part if negative_slope != 0.0 else x


@ACTIVATIONS.register("relu6")
def relu6(x: jax.Array) -> jax.Array:
    """min(max(x, 0), 6)."""
    return jax.nn.relu6(x)


@ACTIVATIONS.register("leaky_relu")
def leaky_relu(x: jax.Array, negative_slope: float = 0.2) -> jax.Array:
    """x for x >= 0, negative_slope * x otherwise (Keras 3 default slope 0.2)."""
    return jax.nn.leaky_relu(x, negative_slope=negative_slope)


@ACTIVATIONS.register("sigmoid")
def sigmoid(x: jax.Array) -> jax.Array:
    """1 / (1 + exp(-x))."""
    return jax.nn.sigmoid(x)


@ACTIVATIONS.register("hard_sigmoid")
def hard_sigmoid(x: jax.Array) -> jax.Array:
    """relu6(x + 3) / 6 (Keras 3; Keras 2 used clip(0.2 x + 0.5, 0, 1))."""
    return jax.nn.relu6(x + 3.0) / 6.0


@ACTIVATIONS.register("hard_swish", "hard_silu")
def hard_silu(x: jax.Array) -> jax.Array:
    """x * hard_sigmoid(x)."""
    return x * hard_sigmoid(x)


@ACTIVATIONS.register("tanh")
def tanh(x: jax.Array) -> jax.Array:
    """Hyperbolic tangent."""
    return jnp.tanh(x)


@ACTIVATIONS.register("hard_tanh")
def hard_tanh(x: jax.Array) -> jax.Array:
    """clip(x, -1, 1)."""
    return jnp.clip(x, -1.0, 1.0)


@ACTIVATIONS.register("tanh_shrink")
def tanh_shrink(x: jax.Array) -> jax.Array:
    """x - tanh(x)."""
    return x - jnp.tanh(x)


@ACTIVATIONS.register("softplus")
def softplus(x: jax.Array) -> jax.Array:
    """log(1 + exp(x)), computed stably."""
    return jax.nn.softplus(x)


@ACTIVATIONS.register("softsign")
def softsign(x: jax.Array) -> jax.Array:
    """x / (1 + |x|)."""
    return x / (1.0 + jnp.abs(x))


@ACTIVATIONS.register("softmax")
def softmax(x: jax.Array, axis: int = -1) -> jax.Array:
    """exp(x) / sum(exp(x)) along `axis`."""
    return jax.nn.softmax(x, axis=axis)


@ACTIVATIONS.register("log_softmax")
def log_softmax(x: jax.Array, axis: int = -1) -> jax.Array:
    """x - logsumexp(x) along `axis`."""
    return jax.nn.log_softmax(x, axis=axis)


@ACTIVATIONS.register("elu")
def elu(x: jax.Array, alpha: float = 1.0) -> jax.Array:
    """x for x > 0, alpha * (exp(x) - 1) otherwise."""
    return jax.nn.elu(x, alpha=alpha)


@ACTIVATIONS.register("celu")
def celu(x: jax.Array, alpha: float = 1.0) -> jax.Array:
    """max(x, 0) + alpha * min(exp(x / alpha) - 1, 0)."""
    return jax.nn.celu(x, alpha=alpha)


@ACTIVATIONS.register("selu")
def selu(x: jax.Array) -> jax.Array:
    """scale * elu(x, alpha) with the self-normalising constants."""
    return jax.nn.selu(x)


@ACTIVATIONS.register("gelu")
def gelu(x: jax.Array, approximate: bool = False) -> jax.Array:
    """Gaussian error linear unit; exact (erf) form by default, as Keras 3."""
    return jax.nn.gelu(x, approximate=approximate)


@ACTIVATIONS.register("swish", "silu")
def silu(x: jax.Array) -> jax.Array:
    """x * sigmoid(x)."""
    return jax.nn.silu(x)


@ACTIVATIONS.register("mish")
def mish(x: jax.Array) -> jax.Array:
    """x * tanh(softplus(x))."""
    return x * jnp.tanh(jax.nn.softplus(x))


@ACTIVATIONS.register("exponential")
def exponential(x: jax.Array) -> jax.Array:
    """exp(x)."""
    return jnp.exp(x)


@ACTIVATIONS.register("log_sigmoid")
def log_sigmoid(x: jax.Array) -> jax.Array:
    """log(sigmoid(x)), computed stably."""
    return jax.nn.log_sigmoid(x)


@ACTIVATIONS.register("squareplus")
def squareplus(x: jax.Array, b: float = 4) -> jax.Array:
    """(x + sqrt(x^2 + b)) / 2."""
    return (x + jnp.sqrt(jnp.square(x) + b)) / 2.0


@ACTIVATIONS.register("sparse_plus")
def sparse_plus(x: jax.Array) -> jax.Array:
    """0 for x <= -1, (x + 1)^2 / 4 for -1 < x < 1, x for x >= 1."""
    return jnp.where(x <= -1.0, 0.0, jnp.where(x >= 1.0, x, jnp.square(x + 1.0) / 4.0))


@ACTIVATIONS.register("sparse_sigmoid")
def sparse_sigmoid(x: jax.Array) -> jax.Array:
    """0 for x <= -1, (x + 1) / 2 for -1 < x < 1, 1 for x >= 1."""
    return jnp.where(x <= -1.0, 0.0, jnp.where(x >= 1.0, 1.0, (x + 1.0) / 2.0))


@ACTIVATIONS.register("soft_shrink")
def soft_shrink(x: jax.Array, threshold: float = 0.5) -> jax.Array:
    """x - threshold above threshold, x + threshold below -threshold, else 0."""
    return jnp.where(x > threshold, x - threshold, jnp.where(x < -threshold, x + threshold, 0.0))


@ACTIVATIONS.register("hard_shrink")
def hard_shrink(x: jax.Array, threshold: float = 0.5) -> jax.Array:
    """x where |x| > threshold, else 0."""
    return jnp.where(jnp.abs(x) > threshold, x, 0.0)


def get(identifier: str | Mapping[str, Any] | Callable[..., Any] | None) -> Activation:
    """Resolve an activation: a name, None (linear), a mapping (`{name: ..., **kwargs}`,
    or one key as a layer: `{elu: {alpha: 0.5}}`) or a callable."""
    if identifier is None:
        return linear
    if isinstance(identifier, str):
        return ACTIVATIONS.get(identifier)
    if isinstance(identifier, Mapping):
        return _from_mapping(identifier)
    if callable(identifier):
        return identifier
    raise ConfigError(f"cannot interpret {identifier!r} as an activation")


def _from_mapping(spec: Mapping[str, Any]) -> Activation:
    fn, kwargs = named_call(ACTIVATIONS, dict(spec), skip=1)
    return functools.partial(fn, **kwargs) if kwargs else fn
