"""Tests for nnrun.nn.metrics: epoch accumulation against numpy and Keras 3 metric objects,
accuracy resolution, history keys and errors."""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nnrun.config.errors import ConfigError
from nnrun.nn import metrics

os.environ.setdefault("KERAS_BACKEND", "jax")
import keras  # noqa: E402
from keras.src.trainers.compile_utils import get_metric as keras_get_metric  # noqa: E402

RTOL, ATOL = 1e-5, 1e-6
N, BATCH = 11, 4  # three batches; the last has 3 real rows and 1 padding row

# ---------------------------------------------------------------- data makers: rng -> (t, p)


def binary(labels_rank1=False):
    def make(rng):
        t = rng.integers(0, 2, (N, 1)).astype(np.float32)
        return (t[:, 0] if labels_rank1 else t), rng.uniform(0.02, 0.98, (N, 1))

    return make


def logits(rng):
    return rng.integers(0, 2, (N, 3)).astype(np.float32), rng.normal(0, 2, (N, 3))


def one_hot(classes=6):
    def make(rng):
        return np.eye(classes)[rng.integers(0, classes, N)], rng.uniform(0.01, 1, (N, classes))

    return make


def labels(classes=6, shape="flat"):
    def make(rng):
        y = rng.integers(0, classes, N)
        y = {"flat": y, "column": y[:, None], "float": y.astype(np.float32)}[shape]
        p = rng.uniform(0.01, 1, (N, classes))
        return y, p / p.sum(-1, keepdims=True)

    return make


def regression(shape=(3,), positive=False):
    def make(rng):
        t = rng.uniform(0.5, 2.0, (N, *shape))
        p = t + rng.normal(0, 0.5, (N, *shape))
        return t, (np.abs(p) + 0.1 if positive else p)

    return make


def distributions(rng):
    t, p = rng.uniform(0.05, 1, (N, 4)), rng.uniform(0.05, 1, (N, 4))
    return t / t.sum(-1, keepdims=True), p / p.sum(-1, keepdims=True)


# ---------------------------------------------------------------- numpy per-sample references


def cols(t, p):
    t = np.asarray(t, np.float64)
    return (t[:, None] if t.ndim == 1 else t), np.asarray(p, np.float64)


def rows_mean(v):
    return v.reshape(len(v), -1).mean(1)


def np_binary_accuracy(threshold=0.5):
    return lambda t, p: rows_mean((p > threshold) == cols(t, p)[0])


def np_categorical_accuracy(t, p):
    return (t.argmax(-1) == p.argmax(-1)).astype(float)


def np_sparse_accuracy(t, p):
    return (np.asarray(t).reshape(-1) == p.argmax(-1)).astype(float)


def np_top_k(k, sparse=False):
    def ref(t, p):
        y = np.asarray(t).reshape(-1).astype(int) if sparse else t.argmax(-1)
        at_label = p[np.arange(len(p)), y]
        return ((p > at_label[:, None]).sum(-1) < k).astype(float)

    return ref


def np_mse(t, p):
    t, p = cols(t, p)
    return rows_mean((t - p) ** 2)


def np_cosine(t, p):
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    return np.sum(unit(t) * unit(p), -1)


def np_bce_logits(t, p):
    return rows_mean(np.maximum(p, 0) - p * t + np.log1p(np.exp(-np.abs(p))))


def np_cce(t, p):
    return -np.sum(t * np.log(p / p.sum(-1, keepdims=True)), -1)


def np_sparse_cce(t, p):
    return np_cce(np.eye(p.shape[-1])[np.asarray(t).reshape(-1).astype(int)], p)


def np_hinge(t, p):
    return rows_mean(np.maximum(1 - (2 * t - 1) * p, 0))


SQRT = np.sqrt

# (id, identifier, data maker, numpy per-sample reference, finalize, Keras metric factory)
CASES = [
    ("acc-binary", "accuracy", binary(), np_binary_accuracy(), None,
     lambda: keras.metrics.BinaryAccuracy()),
    ("binary_accuracy-rank1-threshold", {"name": "binary_accuracy", "threshold": 0.7},
     binary(labels_rank1=True), np_binary_accuracy(0.7), None,
     lambda: keras.metrics.BinaryAccuracy(threshold=0.7)),
    ("acc-categorical", "acc", one_hot(), np_categorical_accuracy, None,
     lambda: keras.metrics.CategoricalAccuracy()),
    ("acc-sparse", "Accuracy", labels(), np_sparse_accuracy, None,
     lambda: keras.metrics.SparseCategoricalAccuracy()),
    ("sparse_categorical_accuracy-column", "sparse_categorical_accuracy", labels(shape="column"),
     np_sparse_accuracy, None, lambda: keras.metrics.SparseCategoricalAccuracy()),
    ("sparse_categorical_accuracy-float", "SparseCategoricalAccuracy", labels(shape="float"),
     np_sparse_accuracy, None, lambda: keras.metrics.SparseCategoricalAccuracy()),
    ("top_k-2", {"name": "top_k_categorical_accuracy", "k": 2}, one_hot(), np_top_k(2), None,
     lambda: keras.metrics.TopKCategoricalAccuracy(k=2)),
    ("top_k-default", "top_k_categorical_accuracy", one_hot(7), np_top_k(5), None,
     lambda: keras.metrics.TopKCategoricalAccuracy()),
    ("sparse_top_k-3", {"name": "SparseTopKCategoricalAccuracy", "k": 3}, labels(shape="column"),
     np_top_k(3, sparse=True), None, lambda: keras.metrics.SparseTopKCategoricalAccuracy(k=3)),
    ("mse", "mse", regression(), np_mse, None, lambda: keras.metrics.MeanSquaredError()),
    ("mse-seq", "mean_squared_error", regression((5, 2)), np_mse, None,
     lambda: keras.metrics.MeanSquaredError()),
    ("mae", "mae", regression(), lambda t, p: rows_mean(np.abs(t - p)), None,
     lambda: keras.metrics.MeanAbsoluteError()),
    ("mape", "mape", regression(), lambda t, p: rows_mean(100 * np.abs((t - p) / t)), None,
     lambda: keras.metrics.MeanAbsolutePercentageError()),
    ("msle", "msle", regression(positive=True),
     lambda t, p: rows_mean((np.log1p(p) - np.log1p(t)) ** 2),
     None, lambda: keras.metrics.MeanSquaredLogarithmicError()),
    ("rmse", "rmse", regression(), np_mse, SQRT, lambda: keras.metrics.RootMeanSquaredError()),
    ("rmse-seq", "RootMeanSquaredError", regression((5, 2)), np_mse, SQRT,
     lambda: keras.metrics.RootMeanSquaredError()),
    ("cosine", "cosine_similarity", regression(), np_cosine, None,
     lambda: keras.metrics.CosineSimilarity()),
    ("log_cosh", "log_cosh_error", regression(), lambda t, p: rows_mean(np.log(np.cosh(p - t))),
     None, lambda: keras.metrics.LogCoshError()),
    ("bce-logits", {"name": "binary_crossentropy", "from_logits": True}, logits, np_bce_logits,
     None, lambda: keras.metrics.BinaryCrossentropy(from_logits=True)),
    ("cce", "categorical_crossentropy", one_hot(), np_cce, None,
     lambda: keras.metrics.CategoricalCrossentropy()),
    ("sparse_cce", "sparse_categorical_crossentropy", labels(), np_sparse_cce, None,
     lambda: keras.metrics.SparseCategoricalCrossentropy()),
    ("kld", "kl_divergence", distributions, lambda t, p: np.sum(t * np.log(t / p), -1), None,
     lambda: keras.metrics.KLDivergence()),
    ("poisson", "poisson", regression(positive=True),
     lambda t, p: rows_mean(p - t * np.log(p)), None, lambda: keras.metrics.Poisson()),
    ("hinge", "hinge", logits, np_hinge, None, lambda: keras.metrics.Hinge()),
    ("huber", "huber", regression(),
     lambda t, p: rows_mean(np.where(abs(t - p) <= 1, 0.5 * (t - p) ** 2, abs(t - p) - 0.5)),
     None, lambda: keras.metrics.MeanMetricWrapper(keras.losses.huber)),
]
IDS = [c[0] for c in CASES]


def batches(t, p):
    """The trainer's view: batches of BATCH rows, the last padded (copies) and masked."""
    pad = -N % BATCH
    t, p = np.concatenate([t, t[:pad]]), np.concatenate([p, p[:pad]])
    w = np.concatenate([np.ones(N), np.zeros(pad)]).astype(np.float32)
    for i in range(0, len(t), BATCH):
        yield t[i:i + BATCH], p[i:i + BATCH], w[i:i + BATCH]


def epoch_value(metric: metrics.Metric, t, p) -> float:
    total = count = 0.0
    step = jax.jit(lambda t, p, w: (jnp.sum(metric.per_sample(t, p) * w), jnp.sum(w)))
    for tb, pb, wb in batches(t, p):
        s, c = step(tb, pb, wb)
        total, count = total + s, count + c
    return float(metric.finalize(total / count))


def keras_epoch_value(make_keras, t, p) -> float:
    """Keras's Mean-based metrics keep (total, count): one update over the N real rows gives
    the same result as one per batch, and compiles Keras's eager ops for one shape only."""
    obj = make_keras()
    obj.update_state(t, p)
    return float(obj.result())


def f32(a):
    return a.astype(np.float32) if a.dtype == np.float64 else a


@functools.cache
def case_data(case_id):
    t, p = CASES[IDS.index(case_id)][2](np.random.default_rng(0))
    return f32(t), f32(p)


@pytest.mark.parametrize("case_id, identifier, make, ref, finalize, make_keras", CASES, ids=IDS)
def test_epoch_value_matches_numpy_and_keras(case_id, identifier, make, ref, finalize,
                                             make_keras):
    t, p = case_data(case_id)
    _, metric = metrics.resolve_metric(identifier, t.shape, p.shape)
    ours = epoch_value(metric, t, p)
    t64, p64 = make(np.random.default_rng(0))
    expected = np.mean(ref(t64, np.asarray(p64, np.float64)))
    np.testing.assert_allclose(ours, (finalize or float)(expected), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(ours, keras_epoch_value(make_keras, t, p), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("y_true_shape, y_pred_shape, expected", [
    ((8, 1), (8, 1), "binary_accuracy"),
    ((8,), (8, 1), "binary_accuracy"),
    ((8, 1), (8,), "sparse_categorical_accuracy"),  # Keras reads (8,) as 8 classes
    ((8,), (8, 5), "sparse_categorical_accuracy"),
    ((8, 1), (8, 5), "sparse_categorical_accuracy"),
    ((8, 7), (8, 7, 5), "sparse_categorical_accuracy"),
    ((8, 5), (8, 5), "categorical_accuracy"),
    ((8, 7, 5), (8, 7, 5), "categorical_accuracy"),
])
def test_accuracy_resolution_as_keras(y_true_shape, y_pred_shape, expected):
    assert metrics.accuracy_for(y_true_shape, y_pred_shape) == expected
    for name in ("accuracy", "acc", "Accuracy"):
        key, metric = metrics.resolve_metric(name, y_true_shape, y_pred_shape)
        assert (key, metric.name) == (name, expected)
    keras_obj = keras_get_metric("acc", np.zeros(y_true_shape), np.zeros(y_pred_shape))
    assert keras_obj.__class__.__name__ == "".join(w.title() for w in expected.split("_"))
    assert keras_obj.name == "acc"


@pytest.mark.parametrize("identifier, key, name", [
    ("acc", "acc", "sparse_categorical_accuracy"),
    ("mse", "mse", "mean_squared_error"),
    ("MeanSquaredError", "MeanSquaredError", "mean_squared_error"),
    ("rmse", "rmse", "root_mean_squared_error"),
    ({"name": "top_k_categorical_accuracy", "k": 3}, "top_k_categorical_accuracy",
     "top_k_categorical_accuracy"),
    ({"class_name": "TopKCategoricalAccuracy", "config": {"k": 3, "name": "top3"}}, "top3",
     "top_k_categorical_accuracy"),
    ({"class_name": "SparseCategoricalAccuracy", "config": {}}, "SparseCategoricalAccuracy",
     "sparse_categorical_accuracy"),
    (metrics.Metric(lambda t, p: t, name="custom"), "custom", "custom"),
])
def test_history_keys(identifier, key, name):
    got_key, metric = metrics.resolve_metric(identifier, (4,), (4, 6))
    assert (got_key, metric.name) == (key, name)


def test_mapping_arguments_take_effect():
    t = np.array([2, 0])
    p = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]], np.float32)
    top1 = metrics.resolve_metric({"name": "sparse_top_k_categorical_accuracy", "k": 1}, t.shape,
                                  p.shape)[1]
    top3 = metrics.resolve_metric("sparse_top_k_categorical_accuracy", t.shape, p.shape)[1]
    np.testing.assert_array_equal(top1.per_sample(t, p), [0.0, 0.0])
    np.testing.assert_array_equal(top3.per_sample(t, p), [1.0, 1.0])


def test_callable_metric():
    def error_sum(y_true, y_pred):
        return jnp.sum(y_pred - y_true, axis=-1)

    key, metric = metrics.resolve_metric(error_sum, (2, 3), (2, 3))
    assert key == "error_sum"
    np.testing.assert_allclose(metric.per_sample(np.zeros((2, 3)), np.ones((2, 3))), [3.0, 3.0])


@pytest.mark.parametrize("identifier, fragment", [
    ("acuracy", "did you mean"),
    ("top_k_categorical_acuracy", "did you mean 'top_k_categorical_accuracy'"),
    ("mean_squared_eror", "did you mean"),
    ({"name": "top_k_categorical_accuracy", "kk": 3}, "'kk'"),
    ({"name": "binary_crossentropy", "from_logit": True}, "did you mean 'from_logits'"),
    ({"name": "binary_crossentropy", "from_logit": True}, "metric 'binary_crossentropy'"),
    ({"k": 3}, "'name:'"),
    (7, "cannot interpret"),
])
def test_errors(identifier, fragment):
    with pytest.raises(ConfigError) as err:
        metrics.resolve_metric(identifier, (4, 1), (4, 1))
    assert fragment in str(err.value)
