"""Metrics by Keras 3 name, as per-sample values accumulated over an epoch.

A `Metric` has the shape of a `Loss`: `per_sample(y_true, y_pred) -> (batch,)` and
`finalize`. The trainer adds up `sum(w * per_sample)` and `sum(w)` over the epoch on
the device and reports `finalize(total / count)`; this is what Keras 3's `Mean`-based
metrics compute (`keras/src/metrics/reduction_metrics.py`), RMSE's sqrt included.
Any loss name is a metric too. `resolve_metric` turns "accuracy"/"acc" into binary,
sparse-categorical or categorical accuracy from the shapes, as Keras's
`compile_utils.get_metric` does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from nnrun.config.errors import ConfigError
from nnrun.config.registry import Registry, unknown_name_message
from nnrun.nn import losses
from nnrun.nn.lazy import Array, jnp
from nnrun.nn.losses import align, mean_over_samples, per_sample_of


def _identity(x: Array) -> Array:
    return x


class Metric(NamedTuple):
    """A metric as the trainer uses it: `finalize(weighted mean of per_sample)`."""

    per_sample: Callable[[Array, Array], Array]
    finalize: Callable[[Array], Array] = _identity
    name: str = "metric"


METRICS = Registry("metric")


def binary_accuracy(y_true: Array, y_pred: Array, threshold: float = 0.5) -> Array:
    """1.0 where (y_pred > threshold) equals y_true, elementwise."""
    y_true, y_pred = align(jnp.asarray(y_true), jnp.asarray(y_pred))
    return (y_true == (y_pred > threshold).astype(y_true.dtype)).astype(jnp.float32)


def categorical_accuracy(y_true: Array, y_pred: Array) -> Array:
    """1.0 where argmax(y_true) equals argmax(y_pred) over the last axis."""
    return (jnp.argmax(y_true, axis=-1) == jnp.argmax(y_pred, axis=-1)).astype(jnp.float32)


def _sparse_labels(y_true: Array, y_pred: Array) -> Array:
    y_true = jnp.asarray(y_true)
    if y_true.ndim == y_pred.ndim and y_true.shape[-1] == 1:
        y_true = jnp.squeeze(y_true, -1)
    return y_true


def sparse_categorical_accuracy(y_true: Array, y_pred: Array) -> Array:
    """1.0 where the integer label equals argmax(y_pred) over the last axis."""
    y_pred = jnp.asarray(y_pred)
    labels = _sparse_labels(y_true, y_pred).astype(y_pred.dtype)
    return (labels == jnp.argmax(y_pred, axis=-1).astype(y_pred.dtype)).astype(jnp.float32)


def in_top_k(labels: Array, y_pred: Array, k: int) -> Array:
    """Keras's JAX `in_top_k`: the label's score is beaten by fewer than k scores (NaN loses)."""
    at_label = jnp.take_along_axis(y_pred, labels[..., None].astype(jnp.int32), axis=-1)
    at_label = jnp.where(jnp.isnan(at_label), -jnp.inf, at_label)
    return 1 + jnp.sum(y_pred > at_label, axis=-1) <= k


def top_k_categorical_accuracy(y_true: Array, y_pred: Array, k: int = 5) -> Array:
    """1.0 where argmax(y_true) is among the k highest scores."""
    y_pred = jnp.asarray(y_pred)
    return in_top_k(jnp.argmax(y_true, axis=-1), y_pred, k).astype(jnp.float32)


def sparse_top_k_categorical_accuracy(y_true: Array, y_pred: Array, k: int = 5) -> Array:
    """1.0 where the integer label is among the k highest scores."""
    y_pred = jnp.asarray(y_pred)
    labels = _sparse_labels(y_true, y_pred).astype(jnp.int32)
    return in_top_k(labels, y_pred, k).astype(jnp.float32)


def _per_sample(fn: Callable[..., Array], **kwargs: Any) -> Callable[[Array, Array], Array]:
    return lambda y_true, y_pred: mean_over_samples(fn(y_true, y_pred, **kwargs))


@METRICS.register("binary_accuracy", "BinaryAccuracy")
def binary_accuracy_metric(threshold: float = 0.5) -> Metric:
    """Keras 3 `BinaryAccuracy`."""
    return Metric(_per_sample(binary_accuracy, threshold=threshold), name="binary_accuracy")


@METRICS.register("categorical_accuracy", "CategoricalAccuracy")
def categorical_accuracy_metric() -> Metric:
    """Keras 3 `CategoricalAccuracy` (one-hot targets)."""
    return Metric(_per_sample(categorical_accuracy), name="categorical_accuracy")


@METRICS.register("sparse_categorical_accuracy", "SparseCategoricalAccuracy")
def sparse_categorical_accuracy_metric() -> Metric:
    """Keras 3 `SparseCategoricalAccuracy` (integer targets)."""
    return Metric(_per_sample(sparse_categorical_accuracy), name="sparse_categorical_accuracy")


@METRICS.register("top_k_categorical_accuracy", "TopKCategoricalAccuracy")
def top_k_categorical_accuracy_metric(k: int = 5) -> Metric:
    """Keras 3 `TopKCategoricalAccuracy`."""
    return Metric(_per_sample(top_k_categorical_accuracy, k=k), name="top_k_categorical_accuracy")


@METRICS.register("sparse_top_k_categorical_accuracy", "SparseTopKCategoricalAccuracy")
def sparse_top_k_categorical_accuracy_metric(k: int = 5) -> Metric:
    """Keras 3 `SparseTopKCategoricalAccuracy`."""
    fn = _per_sample(sparse_top_k_categorical_accuracy, k=k)
    return Metric(fn, name="sparse_top_k_categorical_accuracy")


@METRICS.register("cosine_similarity", "CosineSimilarity")
def cosine_similarity_metric(axis: int = -1) -> Metric:
    """Keras 3 `CosineSimilarity` metric: +cosine similarity (the loss is its negative)."""
    fn = per_sample_of(lambda t, p: -losses.cosine_similarity(t, p, axis))
    return Metric(fn, name="cosine_similarity")


@METRICS.register("log_cosh_error", "LogCoshError")
def log_cosh_error_metric() -> Metric:
    """Keras 3 `LogCoshError` (the log_cosh loss as a metric)."""
    return Metric(per_sample_of(losses.log_cosh), name="log_cosh")


_ACCURACY = ("accuracy", "acc")

Identifier = str | Mapping[str, Any] | Metric | Callable[..., Any]


def resolve_metric(
    identifier: Identifier, y_true_shape: tuple, y_pred_shape: tuple
) -> tuple[str, Metric]:
    """(history key, Metric) for a compile `metrics:` entry.

    Shapes are full shapes, batch axis first (any batch size). The key is the string as
    given (`'acc'` -> `'acc'`), a mapping's `name:`, or a Keras config's `config.name`.
    """
    if isinstance(identifier, Metric):
        return identifier.name, identifier
    if isinstance(identifier, str):
        return identifier, _lookup(identifier, {}, y_true_shape, y_pred_shape)
    if isinstance(identifier, Mapping):
        name, kwargs = losses.split_mapping(identifier, "metric")
        key = (identifier.get("config") or {}).get("name") if "class_name" in identifier else None
        metric = _lookup(name, kwargs, y_true_shape, y_pred_shape)
        return key or name, metric
    if callable(identifier):
        name = getattr(identifier, "__name__", "metric")
        return name, Metric(per_sample_of(identifier), name=name)
    raise ConfigError(f"cannot interpret {identifier!r} as a metric")


def _lookup(name: str, kwargs: dict[str, Any], y_true_shape: tuple, y_pred_shape: tuple) -> Metric:
    if name.lower() in _ACCURACY:
        name = accuracy_for(y_true_shape, y_pred_shape)
    if name in METRICS:
        return losses.build(METRICS, name, kwargs)
    if name in losses.LOSSES:
        loss = losses.build(losses.LOSSES, name, kwargs, kind="metric")
        return Metric(loss.per_sample, loss.finalize, loss.name)
    choices = METRICS.names(aliases=True) + losses.LOSSES.names(aliases=True) + list(_ACCURACY)
    raise ConfigError(unknown_name_message("metric", name, choices))


def accuracy_for(y_true_shape: tuple, y_pred_shape: tuple) -> str:
    """Which accuracy Keras 3 picks for "accuracy"/"acc" given the target and output shapes."""
    is_binary, is_sparse = losses.is_binary_or_sparse_categorical(y_true_shape, y_pred_shape)
    if is_binary:
        return "binary_accuracy"
    return "sparse_categorical_accuracy" if is_sparse else "categorical_accuracy"
