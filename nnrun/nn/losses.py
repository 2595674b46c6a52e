"""Loss functions by Keras 3 name, as per-sample values the trainer can mask.

A `Loss` holds `per_sample(y_true, y_pred) -> (batch,)` and `finalize(scalar)`. The
trainer's batch loss is `finalize(sum(w * per_sample) / sum(w))` with `w` the 0/1 mask
of real (unpadded) rows; that equals Keras 3's loss ("sum_over_batch_size") on the
unpadded batch. Each formula is Keras 3's (`keras/src/losses/losses.py`, JAX backend
ops), with its 1e-7 epsilon: the Keras function reduces the last axis, then
`per_sample` averages any remaining non-batch axes (Keras divides by their size).

Shapes are aligned first as Keras's `squeeze_or_expand_to_same_rank` does ((b,) against
(b, 1) becomes (b, 1) against (b, 1)); two rank-1 arrays are read as (b, 1) columns,
where Keras would reduce over the batch axis itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, NamedTuple

from nnrun.config.errors import ConfigError
from nnrun.config.registry import Registry, split_identifier
from nnrun.nn.lazy import Array, jax, jnp

EPSILON = 1e-7

LossFn = Callable[[Array, Array], Array]


def _identity(x: Array) -> Array:
    return x


class Loss(NamedTuple):
    """A loss as the trainer uses it: `finalize(weighted mean of per_sample)`."""

    per_sample: LossFn
    finalize: Callable[[Array], Array] = _identity
    name: str = "loss"


LOSSES = Registry("loss")


# ---- shape handling shared with metrics -------------------------------------------


def align(y_true: Array, y_pred: Array) -> tuple[Array, Array]:
    """Keras's `squeeze_or_expand_to_same_rank`, plus rank-1 pairs read as columns."""
    t_rank, p_rank = y_true.ndim, y_pred.ndim
    if t_rank == p_rank + 1 and y_true.shape[-1] == 1:
        if p_rank == 1:
            y_pred = y_pred[:, None]
        else:
            y_true = jnp.squeeze(y_true, -1)
    if p_rank == t_rank + 1 and y_pred.shape[-1] == 1:
        if t_rank == 1:
            y_true = y_true[:, None]
        else:
            y_pred = jnp.squeeze(y_pred, -1)
    if y_true.ndim == 1 and y_pred.ndim == 1:
        y_true, y_pred = y_true[:, None], y_pred[:, None]
    return y_true, y_pred


def mean_over_samples(values: Array) -> Array:
    """Average every axis but the first: (batch, ...) -> (batch,)."""
    return jnp.mean(values, axis=tuple(range(1, values.ndim))) if values.ndim > 1 else values


def _as_float(y_pred: Array) -> Array:
    y_pred = jnp.asarray(y_pred)
    return y_pred if jnp.issubdtype(y_pred.dtype, jnp.floating) else y_pred.astype(jnp.float32)


def per_sample_of(fn: LossFn, cast_true: bool = True) -> LossFn:
    """Wrap a Keras-style `fn(y_true, y_pred)` (last axis reduced) into (batch,) values."""

    def per_sample(y_true: Array, y_pred: Array) -> Array:
        y_pred = _as_float(y_pred)
        y_true = jnp.asarray(y_true)
        if cast_true:
            y_true = y_true.astype(y_pred.dtype)
        y_true, y_pred = align(y_true, y_pred)
        return mean_over_samples(fn(y_true, y_pred))

    return per_sample


# ---- Keras 3 loss functions (reduce the last axis) --------------------------------


def mean_squared_error(y_true: Array, y_pred: Array) -> Array:
    """mean((y_true - y_pred)^2) over the last axis."""
    return jnp.mean(jnp.square(y_true - y_pred), axis=-1)


def mean_absolute_error(y_true: Array, y_pred: Array) -> Array:
    """mean(|y_true - y_pred|) over the last axis."""
    return jnp.mean(jnp.abs(y_true - y_pred), axis=-1)


def mean_absolute_percentage_error(y_true: Array, y_pred: Array) -> Array:
    """100 * mean(|y_true - y_pred| / max(|y_true|, eps)) over the last axis."""
    diff = jnp.abs((y_true - y_pred) / jnp.maximum(jnp.abs(y_true), EPSILON))
    return 100.0 * jnp.mean(diff, axis=-1)


def mean_squared_logarithmic_error(y_true: Array, y_pred: Array) -> Array:
    """mean((log(max(y_pred, eps) + 1) - log(max(y_true, eps) + 1))^2) over the last axis."""
    first = jnp.log(jnp.maximum(y_pred, EPSILON) + 1.0)
    second = jnp.log(jnp.maximum(y_true, EPSILON) + 1.0)
    return jnp.mean(jnp.square(first - second), axis=-1)


def hinge_labels(y_true: Array) -> Array:
    """Keras: labels that are all 0/1 in the batch become -1/1; others pass unchanged."""
    is_binary = jnp.all((y_true == 0) | (y_true == 1))
    return jnp.where(is_binary, 2.0 * y_true - 1.0, y_true)


def hinge(y_true: Array, y_pred: Array) -> Array:
    """mean(max(1 - y_true * y_pred, 0)) over the last axis, labels as `hinge_labels`."""
    return jnp.mean(jnp.maximum(1.0 - hinge_labels(y_true) * y_pred, 0.0), axis=-1)


def squared_hinge(y_true: Array, y_pred: Array) -> Array:
    """mean(max(1 - y_true * y_pred, 0)^2) over the last axis, labels as `hinge_labels`."""
    margin = jnp.maximum(1.0 - hinge_labels(y_true) * y_pred, 0.0)
    return jnp.mean(jnp.square(margin), axis=-1)


def categorical_hinge(y_true: Array, y_pred: Array) -> Array:
    """max(max((1 - y_true) * y_pred) - sum(y_true * y_pred) + 1, 0) over the last axis."""
    pos = jnp.sum(y_true * y_pred, axis=-1)
    neg = jnp.max((1.0 - y_true) * y_pred, axis=-1)
    return jnp.maximum(neg - pos + 1.0, 0.0)


def kl_divergence(y_true: Array, y_pred: Array) -> Array:
    """sum(y_true * log(y_true / y_pred)) over the last axis, both clipped to [eps, 1]."""
    y_true = jnp.clip(y_true, EPSILON, 1.0)
    y_pred = jnp.clip(y_pred, EPSILON, 1.0)
    return jnp.sum(y_true * jnp.log(y_true / y_pred), axis=-1)


def poisson(y_true: Array, y_pred: Array) -> Array:
    """mean(y_pred - y_true * log(y_pred + eps)) over the last axis."""
    return jnp.mean(y_pred - y_true * jnp.log(y_pred + EPSILON), axis=-1)


def log_cosh(y_true: Array, y_pred: Array) -> Array:
    """mean(log(cosh(y_pred - y_true))) over the last axis, computed stably."""
    x = y_pred - y_true
    return jnp.mean(x + jax.nn.softplus(-2.0 * x) - math.log(2.0), axis=-1)


def huber(y_true: Array, y_pred: Array, delta: float = 1.0) -> Array:
    """mean over the last axis of 0.5 e^2 for |e| <= delta, else delta |e| - 0.5 delta^2."""
    error = y_pred - y_true
    abs_error = jnp.abs(error)
    quadratic = 0.5 * jnp.square(error)
    linear = delta * abs_error - 0.5 * delta**2
    return jnp.mean(jnp.where(abs_error <= delta, quadratic, linear), axis=-1)


def l2_normalize(x: Array, axis: int = -1) -> Array:
    """Keras's `normalize`: x * min(rsqrt(sum(x^2)), 1 / epsilon)."""
    inv_norm = jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
    return x * jnp.minimum(inv_norm, 1.0 / EPSILON)


def cosine_similarity(y_true: Array, y_pred: Array, axis: int = -1) -> Array:
    """The loss: minus the cosine similarity (the Keras metric has the opposite sign)."""
    return -jnp.sum(l2_normalize(y_true, axis) * l2_normalize(y_pred, axis), axis=axis)


def _log_probs(y_pred: Array, from_logits: bool, axis: int) -> Array:
    if from_logits:
        return jax.nn.log_softmax(y_pred, axis=axis)
    probs = y_pred / jnp.sum(y_pred, axis=axis, keepdims=True)
    return jnp.log(jnp.clip(probs, EPSILON, 1.0 - EPSILON))


def binary_crossentropy(
    y_true: Array, y_pred: Array, from_logits: bool = False, label_smoothing: float = 0.0,
    axis: int = -1,
) -> Array:
    """Mean binary crossentropy over `axis`; probabilities clipped to [eps, 1 - eps]."""
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:
        bce = -y_true * jax.nn.log_sigmoid(y_pred) - (1.0 - y_true) * jax.nn.log_sigmoid(-y_pred)
    else:
        p = jnp.clip(y_pred, EPSILON, 1.0 - EPSILON)
        bce = -(y_true * jnp.log(p) + (1.0 - y_true) * jnp.log(1.0 - p))
    return jnp.mean(bce, axis=axis)


def categorical_crossentropy(
    y_true: Array, y_pred: Array, from_logits: bool = False, label_smoothing: float = 0.0,
    axis: int = -1,
) -> Array:
    """-sum(y_true * log p) over `axis`; p renormalised and clipped unless from logits."""
    if label_smoothing:
        # Keras counts classes on the last axis whatever `axis` is.
        y_true = y_true * (1.0 - label_smoothing) + label_smoothing / y_true.shape[-1]
    return -jnp.sum(y_true * _log_probs(y_pred, from_logits, axis), axis=axis)


def sparse_categorical_crossentropy(
    y_true: Array, y_pred: Array, from_logits: bool = False, axis: int = -1
) -> Array:
    """Categorical crossentropy against integer labels ((batch,) or (batch, 1))."""
    if y_true.ndim == y_pred.ndim and y_true.shape[axis] == 1:
        y_true = jnp.squeeze(y_true, axis=axis)
    log_probs = _log_probs(y_pred, from_logits, axis)
    one_hot = jax.nn.one_hot(
        y_true.astype(jnp.int32), y_pred.shape[axis], axis=axis, dtype=log_probs.dtype
    )
    return -jnp.sum(one_hot * log_probs, axis=axis)


# ---- the registry: factories taking Keras's constructor arguments ------------------


def _sqrt(x: Array) -> Array:
    return jnp.sqrt(x)


def _plain(name: str, fn: LossFn, *aliases: str, finalize: Callable = _identity) -> None:
    def factory() -> Loss:
        return Loss(per_sample_of(fn), finalize, name)

    factory.__doc__ = f"Keras 3 `{name}`."
    LOSSES.add(name, factory, *aliases)


_plain("mean_squared_error", mean_squared_error, "MSE", "mse", "MeanSquaredError")
_plain("mean_absolute_error", mean_absolute_error, "MAE", "mae", "MeanAbsoluteError")
_plain("mean_absolute_percentage_error", mean_absolute_percentage_error,
       "MAPE", "mape", "MeanAbsolutePercentageError")
_plain("mean_squared_logarithmic_error", mean_squared_logarithmic_error,
       "MSLE", "msle", "MeanSquaredLogarithmicError")
# Keras 3 has no RMSE loss, only the metric: sqrt of the mean over the whole batch.
_plain("root_mean_squared_error", mean_squared_error, "RMSE", "rmse", "RootMeanSquaredError",
       finalize=_sqrt)
_plain("hinge", hinge, "Hinge")
_plain("squared_hinge", squared_hinge, "SquaredHinge")
_plain("categorical_hinge", categorical_hinge, "CategoricalHinge")
_plain("kl_divergence", kl_divergence, "KLD", "kld", "kullback_leibler_divergence",
       "KLDivergence")
_plain("poisson", poisson, "Poisson")
_plain("log_cosh", log_cosh, "logcosh", "LogCosh")


def _check_axis(axis: int) -> None:
    if isinstance(axis, bool) or not isinstance(axis, int) or axis == 0:
        raise ConfigError(f"axis must be a non-batch axis (an int other than 0), got {axis!r}")


@LOSSES.register("huber", "huber_loss", "Huber")
def huber_loss(delta: float = 1.0) -> Loss:
    """Keras 3 `Huber`: quadratic within `delta`, linear outside."""
    return Loss(per_sample_of(partial(huber, delta=delta)), name="huber")


@LOSSES.register("cosine_similarity", "CosineSimilarity")
def cosine_similarity_loss(axis: int = -1) -> Loss:
    """Keras 3 `CosineSimilarity` loss (negative cosine similarity along `axis`)."""
    _check_axis(axis)
    return Loss(per_sample_of(partial(cosine_similarity, axis=axis)), name="cosine_similarity")


@LOSSES.register("binary_crossentropy", "BCE", "bce", "BinaryCrossentropy")
def binary_crossentropy_loss(
    from_logits: bool = False, label_smoothing: float = 0.0, axis: int = -1
) -> Loss:
    """Keras 3 `BinaryCrossentropy`."""
    _check_axis(axis)
    fn = partial(binary_crossentropy, from_logits=from_logits,
                 label_smoothing=label_smoothing, axis=axis)
    return Loss(per_sample_of(fn), name="binary_crossentropy")


@LOSSES.register("categorical_crossentropy", "CategoricalCrossentropy")
def categorical_crossentropy_loss(
    from_logits: bool = False, label_smoothing: float = 0.0, axis: int = -1
) -> Loss:
    """Keras 3 `CategoricalCrossentropy` (one-hot or soft labels)."""
    _check_axis(axis)
    fn = partial(categorical_crossentropy, from_logits=from_logits,
                 label_smoothing=label_smoothing, axis=axis)
    return Loss(per_sample_of(fn), name="categorical_crossentropy")


@LOSSES.register("sparse_categorical_crossentropy", "SparseCategoricalCrossentropy")
def sparse_categorical_crossentropy_loss(from_logits: bool = False, axis: int = -1) -> Loss:
    """Keras 3 `SparseCategoricalCrossentropy`: integer labels, (batch,) or (batch, 1)."""
    _check_axis(axis)
    fn = partial(sparse_categorical_crossentropy, from_logits=from_logits, axis=axis)
    return Loss(per_sample_of(fn, cast_true=False), name="sparse_categorical_crossentropy")


# ---- get ---------------------------------------------------------------------------

Identifier = str | Mapping[str, Any] | Loss | Callable[..., Any]

# Keys of a Keras `{class_name, config}` loss config that carry no maths.
_KERAS_CONFIG_KEYS = ("name", "dtype", "reduction")


def get(identifier: Identifier) -> Loss:
    """Resolve a loss from a name, `{name: ..., **kwargs}`, Keras's
    `{class_name: ..., config: {...}}`, a Loss, or a Keras-style `fn(y_true, y_pred)`."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str):
        return LOSSES.get(identifier)()
    if isinstance(identifier, Mapping):
        return build(LOSSES, *split_mapping(identifier, "loss"))
    if callable(identifier):
        name = getattr(identifier, "__name__", "loss")
        return Loss(per_sample_of(identifier), name=name)
    raise ConfigError(f"cannot interpret {identifier!r} as a loss")


def resolve_loss(identifier: Identifier, y_true_shape: tuple, y_pred_shape: tuple) -> Loss:
    """`get`, plus Keras's "crossentropy"/"ce" picked from the target and output shapes."""
    if isinstance(identifier, str) and identifier.lower() in ("crossentropy", "ce"):
        is_binary, is_sparse = is_binary_or_sparse_categorical(y_true_shape, y_pred_shape)
        if is_binary:
            return get("binary_crossentropy")
        return get("sparse_categorical_crossentropy" if is_sparse else "categorical_crossentropy")
    return get(identifier)


def is_binary_or_sparse_categorical(y_true_shape: tuple, y_pred_shape: tuple) -> tuple[bool, bool]:
    """Keras 3 `compile_utils.is_binary_or_sparse_categorical` on full shapes (batch first)."""
    is_binary = y_pred_shape[-1] == 1
    is_sparse = len(y_true_shape) < len(y_pred_shape) or (
        y_true_shape[-1] == 1 and y_pred_shape[-1] > 1
    )
    return is_binary, is_sparse


def split_mapping(spec: Mapping[str, Any], kind: str) -> tuple[str, dict[str, Any]]:
    """`split_identifier`, dropping the keys of a Keras loss config that carry no maths."""
    name, kwargs = split_identifier(spec, kind)
    if "class_name" in spec:
        reduction = kwargs.get("reduction", "sum_over_batch_size")
        if reduction not in ("sum_over_batch_size", "mean", None):
            raise ConfigError(f"{kind} reduction {reduction!r} is not supported")
        for key in _KERAS_CONFIG_KEYS:
            kwargs.pop(key, None)
    return name, kwargs


def build(registry: Registry, name: str, kwargs: Mapping[str, Any], kind: str = "") -> Any:
    """Call `registry`'s factory for `name` with `kwargs`, naming any unknown argument."""
    return registry.checked(name, kwargs, kind=kind)(**kwargs)
