"""Weight initializers by Keras 3 name: factories returning `init(key, shape, dtype)`.

Each factory takes the Keras 3 constructor arguments (same names, same defaults) and
returns a pure `init(key, shape, dtype=jnp.float32) -> array`. Fans follow Keras's
`compute_fans`, and the random draws are the ones Keras's JAX backend makes, so that
`seed: s` reproduces Keras's `Initializer(seed=s)` bit for bit. Without a seed the
`key` passed to `init` decides the values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from nnrun.config.errors import ConfigError
from nnrun.config.registry import Registry, did_you_mean
from nnrun.config.values import named_call
from nnrun.nn.lazy import Array, jax, jnp

Initializer = Callable[..., Array]
Shape = Sequence[int]

INITIALIZERS = Registry("initializer")

# Keras's standard deviation of a unit normal truncated to [-2, 2].
TRUNCATION_STDDEV = 0.87962566103423978


def keras_seed_key(seed: int) -> jax.Array:
    """The raw JAX key Keras 3 draws from for an integer `seed` ([seed, 0] as uint32)."""
    return jnp.array([seed & 0xFFFFFFFF, 0], dtype=jnp.uint32)


def _key(key: jax.Array, seed: int | None) -> jax.Array:
    return key if seed is None else keras_seed_key(seed)


def compute_fans(
    shape: Shape, input_axes: Sequence[int] | None = None,
    output_axes: Sequence[int] | None = None,
) -> tuple[int, int]:
    """(fan_in, fan_out) exactly as Keras 3: conv kernels multiply in the receptive field."""
    shape = tuple(shape)
    if input_axes is not None and output_axes is not None:
        return math.prod(shape[a] for a in input_axes), math.prod(shape[a] for a in output_axes)
    if len(shape) < 1:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive_field = math.prod(shape[:-2])
    return shape[-2] * receptive_field, shape[-1] * receptive_field


@INITIALIZERS.register("zeros", "Zeros", "zero")
def zeros() -> Initializer:
    """All zeros."""

    def init(key: jax.Array, shape: Shape, dtype: Any = np.float32) -> jax.Array:
        return jnp.zeros(shape, dtype)

    return init


@INITIALIZERS.register("ones", "Ones", "one")
def ones() -> Initializer:
    """All ones."""

    def init(key: jax.Array, shape: Shape, dtype: Any = np.float32) -> jax.Array:
        return jnp.ones(shape, dtype)

    return init


@INITIALIZERS.register("constant", "Constant")
def constant(value: float = 0.0) -> Initializer:
    """Every entry equal to `value` (a scalar, or an array broadcastable to the shape)."""

    def init(key: jax.Array, shape: Shape, dtype: Any = np.float32) -> jax.Array:
        return jnp.asarray(value, dtype) * jnp.ones(shape, dtype)

    return init


@INITIALIZERS.register("identity", "Identity", "IdentityInitializer")
def identity(gain: float = 1.0) -> Initializer:
    """`gain` times the identity matrix (2-D shapes only)."""

    def check_shape(shape: Shape) -> None:
        if len(shape) != 2:
            raise ConfigError(f"the identity initializer needs a 2-D shape, got {tuple(shape)}")

    def init(key: jax.Array, shape: Shape, dtype: Any = np.float32) -> jax.Array:
        check_shape(shape)
        return gain * jnp.eye(*shape, dtype=dtype)

    init.check_shape = check_shape
    return init


@INITIALIZERS.register("uniform", "random_uniform", "RandomUniform")
def random_uniform(
    minval: float = -0.05, maxval: float = 0.05, seed: int | None = None
) -> Initializer:
    """Uniform on [minval, maxval)."""

    def init(key: jax.Array, shape: Shape, dtype: Any = np.float32) -> jax.Array:
        return jax.random.uniform(
            _key(key, seed), tuple(shape), dtype, minval=minval, maxval=maxval
        )

    return init


@INITIALIZERS.register("normal", "random_normal", "RandomNormal")
def random_normal(mean: float = 0.0, stddev: float = 0.05, seed: int | None = None) -> Initializer:
    """Normal with the given mean and standard deviation."""

    def init(key: jax.Array, shape: Shape, dtype: Any = np.float32) -> jax.Array:
        return jax.random.normal(_key(key, seed), tuple(shape), dtype) * stddev + mean

    return init


@INITIALIZERS.register("truncated_normal", "TruncatedNormal")
def truncated_normal(
    mean: float = 0.0, stddev: float = 0.05, seed: int | None = None
) -> Initializer:
    """Normal cut at two standard deviations (stddev is of the untruncated normal)."""

    def init(key: jax.Array, shape: Shape, dtype: Any = np.float32) -> jax.Array:
        sample = jax.random.truncated_normal(_key(key, seed), -2.0, 2.0, tuple(shape), dtype)
        return sample * stddev + mean

    return init


_MODES = ("fan_in", "fan_out", "fan_avg")
_DISTRIBUTIONS = ("uniform", "truncated_normal", "untruncated_normal", "normal")


@INITIALIZERS.register("variance_scaling", "VarianceScaling")
def variance_scaling(
    scale: float = 1.0, mode: str = "fan_in", distribution: str = "truncated_normal",
    seed: int | None = None, input_axes: Sequence[int] | None = None,
    output_axes: Sequence[int] | None = None,
) -> Initializer:
    """Keras VarianceScaling: variance `scale / fan`; "normal" means truncated normal."""
    distribution = str(distribution).lower()
    _check_variance_scaling(scale, mode, distribution)

    def check_shape(shape: Shape) -> None:
        if input_axes is None or output_axes is None:   # compute_fans reads both or none
            return
        for name, axes in (("input_axes", input_axes), ("output_axes", output_axes)):
            if not all(-len(shape) <= a < len(shape) for a in axes):
                raise ConfigError(f"variance_scaling: {name} {list(axes)} out of range for a "
                                  f"weight of shape {tuple(shape)}")

    def init(key: jax.Array, shape: Shape, dtype: Any = np.float32) -> jax.Array:
        check_shape(shape)
        fan_in, fan_out = compute_fans(shape, input_axes, output_axes)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]
        variance = scale / max(1.0, fan)
        key, shape = _key(key, seed), tuple(shape)
        if distribution in ("truncated_normal", "normal"):
            stddev = math.sqrt(variance) / TRUNCATION_STDDEV
            return jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype) * stddev
        if distribution == "untruncated_normal":
            return jax.random.normal(key, shape, dtype) * math.sqrt(variance)
        limit = math.sqrt(3.0 * variance)
        return jax.random.uniform(key, shape, dtype, minval=-limit, maxval=limit)

    init.check_shape = check_shape
    return init


def _check_variance_scaling(scale: float, mode: str, distribution: str) -> None:
    if not scale > 0.0:
        raise ConfigError(f"variance_scaling: scale must be positive, got {scale!r}")
    if mode not in _MODES:
        raise ConfigError(
            f"variance_scaling: unknown mode {mode!r}{did_you_mean(str(mode), _MODES)};"
            f" allowed: {', '.join(_MODES)}"
        )
    if distribution not in _DISTRIBUTIONS:
        raise ConfigError(
            f"variance_scaling: unknown distribution {distribution!r}"
            f"{did_you_mean(distribution, _DISTRIBUTIONS)}; allowed: {', '.join(_DISTRIBUTIONS)}"
        )


def _scaled(scale: float, mode: str, distribution: str, doc: str) -> Callable[..., Initializer]:
    def factory(
        seed: int | None = None, input_axes: Sequence[int] | None = None,
        output_axes: Sequence[int] | None = None,
    ) -> Initializer:
        return variance_scaling(scale, mode, distribution, seed, input_axes, output_axes)

    factory.__doc__ = doc
    return factory


for _name, _camel, _args in [
    ("glorot_uniform", "GlorotUniform", (1.0, "fan_avg", "uniform")),
    ("glorot_normal", "GlorotNormal", (1.0, "fan_avg", "truncated_normal")),
    ("he_uniform", "HeUniform", (2.0, "fan_in", "uniform")),
    ("he_normal", "HeNormal", (2.0, "fan_in", "truncated_normal")),
    ("lecun_uniform", "LecunUniform", (1.0, "fan_in", "uniform")),
    ("lecun_normal", "LecunNormal", (1.0, "fan_in", "truncated_normal")),
]:
    _doc = "VarianceScaling(scale={}, mode={!r}, distribution={!r}).".format(*_args)
    INITIALIZERS.add(_name, _scaled(*_args, _doc), _camel)


@INITIALIZERS.register("orthogonal", "Orthogonal", "OrthogonalInitializer")
def orthogonal(gain: float = 1.0, seed: int | None = None) -> Initializer:
    """`gain` times a random orthogonal matrix (QR of a normal draw, Keras's sign fix)."""

    def check_shape(shape: Shape) -> None:
        if len(shape) < 2:
            raise ConfigError(f"the orthogonal initializer needs rank >= 2, got {tuple(shape)}")

    def init(key: jax.Array, shape: Shape, dtype: Any = np.float32) -> jax.Array:
        check_shape(shape)
        rows, cols = math.prod(shape[:-1]), shape[-1]
        a = jax.random.normal(_key(key, seed), (max(rows, cols), min(rows, cols)), dtype)
        q, r = jnp.linalg.qr(a)
        q = q * jnp.sign(jnp.diag(r))
        if rows < cols:
            q = q.T
        return gain * jnp.reshape(q, tuple(shape))

    init.check_shape = check_shape
    return init


def weight_shape(init: Initializer, shape: Shape) -> tuple[int, ...]:
    """`shape` as a tuple, once the checks `init` makes of a shape passed (the identity
    initializer takes matrices only...), without drawing anything: a layer's
    `param_shapes` gives each weight's shape so."""
    check = getattr(init, "check_shape", None)
    if check is not None:
        check(tuple(shape))
    return tuple(shape)


def get(identifier: str | Mapping[str, Any] | Callable[..., Any]) -> Initializer:
    """Resolve an initializer from a name, `{name: ..., **kwargs}`, one key as a layer
    (`{RandomNormal: {stddev: 0.05}}`), Keras's `{class_name: ..., config: {...}}`, or an
    `init(key, shape, dtype)` callable."""
    if isinstance(identifier, str):
        return INITIALIZERS.get(identifier)()
    if isinstance(identifier, Mapping):
        factory, kwargs = named_call(INITIALIZERS, dict(identifier))
        return factory(**kwargs)
    if callable(identifier):
        return identifier
    raise ConfigError(f"cannot interpret {identifier!r} as an initializer")


