"""Tests for nnrun.nn.losses: every loss against numpy (float64) and Keras 3, gradients, masking."""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from nnrun.config.errors import ConfigError
from nnrun.nn import losses

os.environ.setdefault("KERAS_BACKEND", "jax")
import keras  # noqa: E402

EPS = 1e-7
RTOL, ATOL = 1e-5, 1e-6


# ---------------------------------------------------------------- data makers: rng, n -> (t, p)


def regression(shape=(3,), positive=False):
    def make(rng, n):
        sign = 1 if positive else rng.choice([-1, 1], (n, *shape))
        t = rng.uniform(0.5, 2.0, (n, *shape)) * sign
        p = t + rng.normal(0, 0.7, (n, *shape))
        return t, np.abs(p) + 0.1 if positive else p

    return make


def binary(width=1, labels_rank1=False, logits=False, signed=False):
    def make(rng, n):
        t = rng.integers(0, 2, (n, width)).astype(np.float64)
        if signed:
            t = 2 * t - 1
        p = rng.normal(0, 2, (n, width)) if logits else rng.uniform(0.05, 0.95, (n, width))
        return (t[:, 0] if labels_rank1 else t), p

    return make


def categorical(classes=4, logits=False, soft=False, axis=-1, extra=None):
    def make(rng, n):
        shape = (n, classes) if extra is None else (n, classes, extra)
        cls_axis = 1 if axis == 1 else -1
        if soft:
            t = rng.uniform(0.05, 1, shape)
            t = t / t.sum(cls_axis, keepdims=True)
        else:
            t = np.moveaxis(np.eye(classes)[rng.integers(0, classes, np.delete(shape, cls_axis))],
                            -1, cls_axis)
        p = rng.normal(0, 2, shape) if logits else rng.uniform(0.05, 1, shape)
        if not logits:
            p = p / p.sum(cls_axis, keepdims=True)
        return t, p

    return make


def sparse(classes=4, label_shape="flat", logits=False):
    def make(rng, n):
        labels = rng.integers(0, classes, n)
        p = rng.normal(0, 2, (n, classes)) if logits else rng.uniform(0.05, 1, (n, classes))
        if not logits:
            p = p / p.sum(-1, keepdims=True)
        t = {"flat": labels, "column": labels[:, None],
             "float": labels.astype(np.float64)}[label_shape]
        return t, p

    return make


# ---------------------------------------------------------------- numpy references (float64)


def as_cols(t, p):
    t, p = np.asarray(t, np.float64), np.asarray(p, np.float64)
    if t.ndim == p.ndim - 1:
        t = t[..., None]
    return t, p


def np_mse(t, p):
    t, p = as_cols(t, p)
    return np.mean((t - p) ** 2)


def np_mae(t, p):
    t, p = as_cols(t, p)
    return np.mean(np.abs(t - p))


def np_mape(t, p):
    t, p = as_cols(t, p)
    return 100 * np.mean(np.abs(t - p) / np.maximum(np.abs(t), EPS))


def np_msle(t, p):
    t, p = as_cols(t, p)
    return np.mean((np.log1p(np.maximum(p, EPS)) - np.log1p(np.maximum(t, EPS))) ** 2)


def np_rmse(t, p):
    return np.sqrt(np_mse(t, p))


def hinge_t(t):
    return 2 * t - 1 if np.all((t == 0) | (t == 1)) else t


def np_hinge(t, p):
    t, p = as_cols(t, p)
    return np.mean(np.maximum(1 - hinge_t(t) * p, 0))


def np_squared_hinge(t, p):
    t, p = as_cols(t, p)
    return np.mean(np.maximum(1 - hinge_t(t) * p, 0) ** 2)


def np_categorical_hinge(t, p):
    pos = np.sum(t * p, -1)
    neg = np.max((1 - t) * p, -1)
    return np.mean(np.maximum(neg - pos + 1, 0))


def np_log_softmax(x, axis=-1):
    m = x.max(axis, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis, keepdims=True))


def np_bce(from_logits=False, label_smoothing=0.0):
    def ref(t, p):
        t, p = as_cols(t, p)
        t = t * (1 - label_smoothing) + 0.5 * label_smoothing
        if from_logits:
            return np.mean(np.maximum(p, 0) - p * t + np.log1p(np.exp(-np.abs(p))))
        p = np.clip(p, EPS, 1 - EPS)
        return -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))

    return ref


def np_cce(from_logits=False, label_smoothing=0.0, axis=-1):
    def ref(t, p):
        t = t * (1 - label_smoothing) + label_smoothing / t.shape[-1]
        if from_logits:
            logp = np_log_softmax(p, axis)
        else:
            logp = np.log(np.clip(p / p.sum(axis, keepdims=True), EPS, 1 - EPS))
        return np.mean(-np.sum(t * logp, axis))

    return ref


def np_sparse_cce(from_logits=False):
    def ref(t, p):
        one_hot = np.eye(p.shape[-1])[np.asarray(t).reshape(-1).astype(int)]
        return np_cce(from_logits)(one_hot, p)

    return ref


def np_kld(t, p):
    t, p = np.clip(t, EPS, 1), np.clip(p, EPS, 1)
    return np.mean(np.sum(t * np.log(t / p), -1))


def np_poisson(t, p):
    return np.mean(p - t * np.log(p + EPS))


def np_cosine(t, p):
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    return np.mean(-np.sum(unit(t) * unit(p), -1))


def np_huber(delta=1.0):
    def ref(t, p):
        e = np.abs(p - t)
        return np.mean(np.where(e <= delta, 0.5 * e**2, delta * e - 0.5 * delta**2))

    return ref


def np_log_cosh(t, p):
    return np.mean(np.log(np.cosh(p - t)))


# ---------------------------------------------------------------- the table

# (id, identifier, data maker, numpy reference, Keras object factory)
CASES = [
    ("mse", "mse", regression(), np_mse, lambda: keras.losses.MeanSquaredError()),
    ("mse-seq", "mean_squared_error", regression((5, 3)), np_mse,
     lambda: keras.losses.MeanSquaredError()),
    ("mse-col-vs-flat", "MeanSquaredError", lambda r, n: (r.normal(size=n), r.normal(size=(n, 1))),
     np_mse, lambda: keras.losses.MeanSquaredError()),
    ("mae", "mae", regression(), np_mae, lambda: keras.losses.MeanAbsoluteError()),
    ("mape", "mape", regression(), np_mape, lambda: keras.losses.MeanAbsolutePercentageError()),
    ("msle", "msle", regression(positive=True), np_msle,
     lambda: keras.losses.MeanSquaredLogarithmicError()),
    ("rmse", "rmse", regression(), np_rmse, lambda: keras.metrics.RootMeanSquaredError()),
    ("hinge-01", "hinge", binary(), np_hinge, lambda: keras.losses.Hinge()),
    ("hinge-pm1", "hinge", binary(3, signed=True, logits=True), np_hinge,
     lambda: keras.losses.Hinge()),
    ("squared_hinge", "squared_hinge", binary(2, logits=True), np_squared_hinge,
     lambda: keras.losses.SquaredHinge()),
    ("categorical_hinge", "categorical_hinge", categorical(logits=True), np_categorical_hinge,
     lambda: keras.losses.CategoricalHinge()),
    ("bce", "binary_crossentropy", binary(), np_bce(), lambda: keras.losses.BinaryCrossentropy()),
    ("bce-rank1-labels", "bce", binary(labels_rank1=True), np_bce(),
     lambda: keras.losses.BinaryCrossentropy()),
    ("bce-logits-smooth", {"name": "BinaryCrossentropy", "from_logits": True,
                           "label_smoothing": 0.1},
     binary(3, logits=True), np_bce(True, 0.1),
     lambda: keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.1)),
    ("cce", "categorical_crossentropy", categorical(), np_cce(),
     lambda: keras.losses.CategoricalCrossentropy()),
    ("cce-soft-smooth", {"name": "categorical_crossentropy", "label_smoothing": 0.2},
     categorical(soft=True), np_cce(label_smoothing=0.2),
     lambda: keras.losses.CategoricalCrossentropy(label_smoothing=0.2)),
    ("cce-logits", {"name": "categorical_crossentropy", "from_logits": True},
     categorical(logits=True), np_cce(True), lambda: keras.losses.CategoricalCrossentropy(
         from_logits=True)),
    ("cce-axis1", {"name": "categorical_crossentropy", "axis": 1}, categorical(axis=1, extra=2),
     np_cce(axis=1), lambda: keras.losses.CategoricalCrossentropy(axis=1)),
    ("scce-flat", "sparse_categorical_crossentropy", sparse(), np_sparse_cce(),
     lambda: keras.losses.SparseCategoricalCrossentropy()),
    ("scce-column", "SparseCategoricalCrossentropy", sparse(label_shape="column"),
     np_sparse_cce(), lambda: keras.losses.SparseCategoricalCrossentropy()),
    ("scce-float-logits", {"name": "sparse_categorical_crossentropy", "from_logits": True},
     sparse(label_shape="float", logits=True), np_sparse_cce(True),
     lambda: keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
    ("kld", "kld", categorical(soft=True), np_kld, lambda: keras.losses.KLDivergence()),
    ("poisson", "poisson", regression(positive=True), np_poisson, lambda: keras.losses.Poisson()),
    ("cosine", "cosine_similarity", regression(), np_cosine,
     lambda: keras.losses.CosineSimilarity()),
    ("huber", "huber", regression(), np_huber(), lambda: keras.losses.Huber()),
    ("huber-delta", {"name": "Huber", "delta": 0.4}, regression(), np_huber(0.4),
     lambda: keras.losses.Huber(delta=0.4)),
    ("log_cosh", "logcosh", regression(), np_log_cosh, lambda: keras.losses.LogCosh()),
]
IDS = [c[0] for c in CASES]


def batch_loss(loss: losses.Loss, t, p, w=None) -> jax.Array:
    """What the trainer computes for one (possibly padded) batch."""
    values = loss.per_sample(t, p)
    w = jnp.ones(values.shape[0]) if w is None else w
    return loss.finalize(jnp.sum(values * w) / jnp.sum(w))


@functools.cache
def keras_reference(case_id: str) -> float:
    """Keras 3's value for a case on its 6 real rows (computed once per case)."""
    _, _, make, _, make_keras = CASES[IDS.index(case_id)]
    t, p = f32(*make(np.random.default_rng(0), 6))
    obj = make_keras()
    if isinstance(obj, keras.metrics.Metric):
        obj.update_state(t, p)
        return float(obj.result())
    return float(obj(t, p))


def f32(*arrays):
    return [a.astype(np.float32) if a.dtype == np.float64 else a for a in arrays]


@functools.cache
def our_values(case_id: str) -> tuple[float, float, tuple]:
    """(loss on the 6 real rows, masked loss on them plus 3 padding rows, per_sample shape),
    from one jitted computation per case."""
    identifier, make = CASES[IDS.index(case_id)][1:3]
    loss = losses.get(identifier)
    t, p = f32(*make(np.random.default_rng(0), 6))
    t_pad = np.concatenate([t, t[:3]])  # padding rows: copies of real rows, perturbed
    p_pad = np.concatenate([p, p[:3] * np.float32(1.7)])
    w = jnp.array([1.0] * 6 + [0.0] * 3)

    @jax.jit
    def both(t, p, t_pad, p_pad, w):
        return batch_loss(loss, t, p), batch_loss(loss, t_pad, p_pad, w)

    plain, masked = both(t, p, t_pad, p_pad, w)
    return float(plain), float(masked), jax.eval_shape(loss.per_sample, t, p).shape


@pytest.mark.parametrize("case_id, identifier, make, ref, make_keras", CASES, ids=IDS)
def test_loss_matches_numpy_and_keras(case_id, identifier, make, ref, make_keras):
    ours, _, shape = our_values(case_id)
    assert shape == (6,)
    np.testing.assert_allclose(ours, ref(*make(np.random.default_rng(0), 6)), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(ours, keras_reference(case_id), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("case_id", IDS)
def test_masked_padded_batch_equals_keras_on_real_rows(case_id):
    _, masked, _ = our_values(case_id)
    np.testing.assert_allclose(masked, keras_reference(case_id), rtol=RTOL, atol=ATOL)


# One case per distinct loss computation (the other cases differ only in shapes).
GRADIENT_CASES = [c for c in CASES if c[0] not in {
    "mse-col-vs-flat", "hinge-pm1", "bce-rank1-labels", "scce-column", "huber-delta"}]


@pytest.mark.parametrize("case_id, identifier, make, ref, make_keras", GRADIENT_CASES,
                         ids=[c[0] for c in GRADIENT_CASES])
def test_gradients(case_id, identifier, make, ref, make_keras):
    t, p = make(np.random.default_rng(2), 6)
    loss = losses.get(identifier)
    with jax.enable_x64(True):
        t64, p64 = jnp.asarray(t), jnp.asarray(p, dtype=jnp.float64)
        check_grads(jax.jit(lambda p: batch_loss(loss, t64, p)), (p64,), order=1, modes=("rev",),
                    atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- get / names

KERAS_NAMES = ["mse", "MSE", "mae", "mape", "msle", "bce", "kld", "hinge", "squared_hinge",
               "categorical_hinge", "binary_crossentropy", "categorical_crossentropy",
               "kl_divergence", "poisson", "sparse_categorical_crossentropy",
               "cosine_similarity", "huber", "log_cosh", "MeanSquaredError", "Huber",
               "BinaryCrossentropy", "LogCosh", "KLDivergence", "CategoricalHinge"]


@pytest.mark.parametrize("name", KERAS_NAMES)
def test_keras_names_resolve_to_the_same_loss(name):
    obj = keras.losses.get(name)
    fn = getattr(obj, "fn", obj)  # a Keras Loss object wraps its function
    assert losses.LOSSES.canonical(name) == fn.__name__


def test_keras_config_form():
    loss = losses.get({"class_name": "BinaryCrossentropy",
                       "config": {"name": "bce", "reduction": "sum_over_batch_size",
                                  "from_logits": True, "label_smoothing": 0.0, "axis": -1}})
    t, p = f32(*binary(logits=True)(np.random.default_rng(4), 5))
    np.testing.assert_allclose(float(batch_loss(loss, t, p)), np_bce(True)(t, p), rtol=RTOL)


def test_callable_and_loss_passthrough():
    loss = losses.get(losses.mean_absolute_error)
    t, p = f32(*regression()(np.random.default_rng(5), 4))
    np.testing.assert_allclose(float(batch_loss(loss, t, p)), np_mae(t, p), rtol=RTOL)
    assert losses.get(loss) is loss


@pytest.mark.parametrize("identifier, fragment", [
    ("mean_squared_eror", "did you mean"),
    ({"name": "categorical_crossentropy", "from_logit": True}, "'from_logit'"),
    ({"name": "categorical_crossentropy", "from_logit": True}, "did you mean 'from_logits'"),
    ({"name": "huber", "delta": 1.0, "reduction": "sum"}, "'reduction'"),
    ({"from_logits": True}, "'name:'"),
    ({"name": "bce", "axis": 0}, "axis"),
    ({"class_name": "Huber", "config": {"reduction": "sum"}}, "reduction"),
    (42, "cannot interpret"),
])
def test_errors(identifier, fragment):
    with pytest.raises(ConfigError) as err:
        losses.get(identifier)
    assert fragment in str(err.value)


@pytest.mark.parametrize("y_true_shape, y_pred_shape, expected", [
    ((8, 1), (8, 1), "binary_crossentropy"),
    ((8,), (8, 1), "binary_crossentropy"),
    ((8,), (8, 5), "sparse_categorical_crossentropy"),
    ((8, 1), (8, 5), "sparse_categorical_crossentropy"),
    ((8, 5), (8, 5), "categorical_crossentropy"),
])
def test_crossentropy_resolution(y_true_shape, y_pred_shape, expected):
    for name in ("crossentropy", "CE"):
        assert losses.resolve_loss(name, y_true_shape, y_pred_shape).name == expected
