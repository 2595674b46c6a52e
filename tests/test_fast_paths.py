"""The hand-written gradients that make the CNN and the LSTM fast (issue 3) compute what
plain autodiff of the straightforward formulation computes.

- LSTM: nnrun/layers/lstm_scan.py (custom VJP) against the general `lax.scan` path of
  the same layer (`_Recurrent.recur`), outputs and gradients of every weight and input;
- convolution: `correlate`'s custom VJP (patch product for the kernel, XLA's convolution
  for the input) against autodiff of patches @ kernel, over strides, dilations and
  paddings in 1, 2 and 3 dimensions;
- max pooling: `first_max` over the window's cells, against a reference that routes
  each window's gradient to its first maximum by index.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nnrun.config.spec import spec_from_dict
from nnrun.nn.builder import build_model
from nnrun.nn.layers import conv_ops as conv
from nnrun.nn.layers.recurrent import LSTM, _Recurrent


def _lstm_model(args, input_shape=(6, 3)):
    spec = spec_from_dict({"model": {"input_shape": list(input_shape),
                                     "layers": [{"LSTM": {"units": 4, **args}}]},
                           "compile": {"loss": "mse"}})
    return build_model(spec.model)


def _general_path(monkeypatch):
    """Make LSTM take the general lax.scan path (what the fast path replaces)."""
    monkeypatch.setattr(LSTM, "recur", _Recurrent.recur)


def _outputs_and_grads(model, params, state, x):
    def loss(params, x):   # training: input dropout draws its mask from the same key
        y, _ = model.apply(params, state, x, training=True, key=jax.random.key(7))
        ys = list(y) if isinstance(y, (list, tuple)) else [y]
        weights = [jnp.cos(jnp.arange(v.size, dtype=v.dtype)).reshape(v.shape) for v in ys]
        return sum(jnp.sum(v * w) for v, w in zip(ys, weights)), ys

    # jitted, as training runs it (and one compile instead of one per eager op); the
    # model is traced anew on each call, so a changed fast path or order is seen
    (_, ys), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
        params, x)
    return ys, grads


LSTM_CASES = [
    {},
    {"return_sequences": True},
    {"go_backwards": True},
    {"return_sequences": True, "go_backwards": True},
    {"use_bias": False},
    {"unit_forget_bias": False, "bias_initializer": "random_uniform"},
    {"dropout": 0.3},   # input dropout keeps the fast path (masks the input only)
]


@pytest.mark.parametrize("args", LSTM_CASES, ids=lambda a: ",".join(a) or "default")
def test_lstm_fast_path_equals_the_general_scan(args, monkeypatch):
    model = _lstm_model(args)
    params, state = model.init(jax.random.key(1))
    x = jax.random.normal(jax.random.key(2), (5, 6, 3))
    fast_y, fast_g = _outputs_and_grads(model, params, state, x)
    _general_path(monkeypatch)
    slow_y, slow_g = _outputs_and_grads(model, params, state, x)
    for a, b in zip(fast_y, slow_y):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    flat_fast, tree = jax.tree_util.tree_flatten(fast_g)
    flat_slow = tree.flatten_up_to(slow_g)
    assert len(flat_fast) == len(flat_slow) > 2
    for a, b in zip(flat_fast, flat_slow):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_lstm_fast_path_is_taken_only_for_the_default_cell(monkeypatch):
    """A non-default activation, recurrent dropout or unroll goes the general way (the
    fast path would be wrong for the first two); counted through the module function."""
    from nnrun.nn.layers import recurrent
    calls = []
    real = recurrent.lstm_scan
    monkeypatch.setattr(recurrent, "lstm_scan", lambda *a: calls.append(1) or real(*a))
    x = jnp.ones((2, 6, 3))
    for args, expected in (({}, 1), ({"activation": "relu"}, 0),
                           ({"recurrent_activation": "hard_sigmoid"}, 0),
                           ({"unroll": True}, 0)):
        calls.clear()
        model = _lstm_model(args)
        params, state = model.init(jax.random.key(0))
        model.apply(params, state, x)
        assert len(calls) == expected, args
    calls.clear()
    model = _lstm_model({"recurrent_dropout": 0.5})
    params, state = model.init(jax.random.key(0))
    model.apply(params, state, x, training=True, key=jax.random.key(3))
    assert calls == []


def _plain_correlate(x, kernel, strides, dilation, padding):
    p = conv.patches(x, kernel.shape[:-2], strides, dilation, padding)
    return p.reshape(*p.shape[:-2], -1) @ kernel.reshape(-1, kernel.shape[-1])


CONV_CASES = [(rank, size, k, st, d, pad) for rank, size, k, st, d, pad in itertools.product(
    (1, 2, 3), (7, 10), (1, 3), (1, 2, 3), (1, 2), ("valid", "same", "causal"))
    if not (pad == "causal" and rank != 1) and not (st > 1 and d > 1)
    and not (rank == 3 and size == 10)]


def _conv_case(rank, size, k, st, d, pad):
    """-> (inputs, a function of them giving the fast and the reference outputs and
    gradients) for one case."""
    kx, kk, kg = jax.random.split(jax.random.key(rank * 100 + size + k + st + d), 3)
    x = jax.random.normal(kx, (2,) + (size,) * rank + (3,))
    kernel = jax.random.normal(kk, (k,) * rank + (3, 4))
    strides, dilation = (st,) * rank, (d,) * rank

    def both(x, kernel):
        y, vjp = jax.vjp(lambda a, b: conv.correlate(a, b, strides, dilation, pad), x, kernel)
        y_ref, vjp_ref = jax.vjp(lambda a, b: _plain_correlate(a, b, strides, dilation, pad),
                                 x, kernel)
        g = jax.random.normal(kg, y.shape)
        return y, y_ref, vjp(g), vjp_ref(g)

    return (x, kernel), both


CONV_GROUPS = sorted({(c[0], c[5]) for c in CONV_CASES})


@pytest.mark.parametrize("rank,pad", CONV_GROUPS, ids=[f"{r}d-{p}" for r, p in CONV_GROUPS])
def test_conv_gradient_equals_autodiff_of_the_patch_product(rank, pad):
    """Every case of CONV_CASES with this rank and padding (sizes, kernel sizes, strides,
    dilations), all in one compiled program: a program per case spent most of the
    suite's time in XLA's per-program compile cost (about 1 s a case, 0.4 s together)."""
    cases = [c for c in CONV_CASES if c[0] == rank and c[5] == pad]
    built = [_conv_case(*c) for c in cases]
    results = jax.jit(lambda args: [fn(*a) for (_, fn), a in zip(built, args)])(
        [inputs for inputs, _ in built])
    for case, (y, y_ref, grads, grads_ref) in zip(cases, results):
        where = "rank={}, size={}, kernel={}, stride={}, dilation={}, padding={}".format(*case)
        np.testing.assert_array_equal(np.asarray(y), np.asarray(y_ref), err_msg=where)
        for a, b in zip(grads, grads_ref):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=2e-4,
                                       err_msg=where)


@pytest.mark.parametrize("shape,axes", [((3, 4, 2, 5, 2, 3), (2, 4)),   # 2x2 tiles
                                        ((3, 4, 3, 2), (2,)),             # 1D, pool 3
                                        ((9, 3, 4, 2), (0,))])            # stacked windows
def test_first_max_routes_the_gradient_to_the_first_maximum(shape, axes):
    t = jnp.round(jax.random.normal(jax.random.key(0), shape) * 1.5)   # many ties
    y, vjp = jax.vjp(lambda v: conv.first_max(v, axes), t)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(jnp.max(t, axis=axes)))
    g = jax.random.normal(jax.random.key(1), y.shape)
    (got,) = vjp(g)
    # reference: the window's cells flattened row-major; argmax takes the first maximum
    tn, gn = np.asarray(t), np.asarray(g)
    rest = [a for a in range(tn.ndim) if a not in axes]
    moved = np.transpose(tn, rest + list(axes)).reshape(*[tn.shape[a] for a in rest], -1)
    first = moved.argmax(-1)
    onehot = np.eye(moved.shape[-1], dtype=np.float32)[first] * gn[..., None]
    expected = onehot.reshape(*[tn.shape[a] for a in rest], *[tn.shape[a] for a in axes])
    order = rest + list(axes)
    expected = np.transpose(expected, [order.index(a) for a in range(tn.ndim)])
    np.testing.assert_array_equal(np.asarray(got), expected)


# ------------------------------------------------- convolution epilogue after max pooling

def _conv_pool_model(conv_args=None, pool="MaxPooling2D", pool_args=None, input_shape=(10, 12, 2)):
    layers = [{"Conv2D": {"name": "conv", "filters": 6, "kernel_size": 3,
                          "activation": "relu", **(conv_args or {})}},
              {pool: {"name": "pool", **(pool_args or {})}},
              {"Conv2D": {"name": "conv2", "filters": 4, "kernel_size": 2, "activation": "relu"}},
              {"MaxPooling2D": {"name": "pool2", "padding": "same", "strides": 1}},
              {"Flatten": {}}, {"Dense": {"units": 3}}]
    spec = spec_from_dict({"model": {"input_shape": list(input_shape), "layers": layers},
                           "compile": {"loss": "mse"}})
    return build_model(spec.model)


@pytest.mark.parametrize("conv_args,pool_args", [
    ({}, {}),                                                  # 8x10 in 2x2 tiles
    ({"bias_initializer": "random_normal"}, {"pool_size": [4, 5]}),
    ({"activation": "linear", "bias_initializer": "ones"}, {"pool_size": [1, 2]}),
    ({"use_bias": False}, {"pool_size": [2, 5], "strides": [2, 5]}),
], ids=["relu", "bias", "linear", "no-bias"])
def test_pooling_before_the_epilogue_gives_the_same_values_and_gradients(conv_args,
                                                                         pool_args):
    model = _conv_pool_model(conv_args, pool_args=pool_args)
    assert model._deferred == {0: 1}     # the 'same' pooling keeps conv2's epilogue in place
    params, state = model.init(jax.random.key(0))
    params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(3), p.shape),
                          params)              # nonzero biases
    x = jax.random.normal(jax.random.key(1), (5, 10, 12, 2))
    ys, grads = _outputs_and_grads(model, params, state, x)
    values = model._run(params, state, x, False, None, None)[0]
    proper = model.layer("conv").compute(params["conv"], x)    # before bias and activation
    np.testing.assert_array_equal(np.asarray(values["conv"]), np.asarray(proper))
    model._deferred = {}                       # every layer in its own order
    ref_ys, ref_grads = _outputs_and_grads(model, params, state, x)
    np.testing.assert_array_equal(np.asarray(ys[0]), np.asarray(ref_ys[0]))   # bit for bit
    for got, ref in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5, atol=1e-6)


def test_the_epilogue_stays_in_place_where_pooling_first_would_change_something():
    assert _conv_pool_model()._deferred == {0: 1}
    assert _conv_pool_model({"activation": "tanh"})._deferred == {}     # not exact in floats
    assert _conv_pool_model({"activation": {"name": "relu", "max_value": 1.0}})._deferred == {}
    assert _conv_pool_model({"activity_regularizer": "l2"})._deferred == {}
    assert _conv_pool_model(pool="AveragePooling2D")._deferred == {}
    # windows that leave cells out (9 rows in 2x2 tiles), overlap, or pad: measured slower
    assert _conv_pool_model(input_shape=(11, 12, 2))._deferred == {}
    assert _conv_pool_model(pool_args={"strides": 1})._deferred == {}
    assert _conv_pool_model(pool_args={"padding": "same"})._deferred == {}
    # graph: the convolution's output also taken by another layer, or a model output
    layers = [{"Conv2D": {"name": "c", "filters": 2, "kernel_size": 3, "activation": "relu",
                          "inputs": "img"}},
              {"MaxPooling2D": {"name": "p", "inputs": "c"}},
              {"Conv2D": {"name": "c2", "filters": 2, "kernel_size": 3, "activation": "relu",
                          "inputs": "img"}},
              {"MaxPooling2D": {"name": "p2", "inputs": "c2"}},
              {"GlobalAveragePooling2D": {"name": "g", "inputs": "c"}},
              {"Conv2D": {"name": "c3", "filters": 2, "kernel_size": 3, "activation": "relu",
                          "inputs": "img"}},
              {"MaxPooling2D": {"name": "p3", "inputs": "c3"}}]
    spec = spec_from_dict({"model": {"inputs": {"img": [8, 8, 1]}, "layers": layers,
                                     "outputs": ["p", "g", "p2", "c2", "p3"]},
                           "compile": {"loss": "mse"}})
    assert build_model(spec.model)._deferred == {5: 6}


def test_a_pooled_first_convolution_read_by_name_has_its_epilogue():
    """predict --output conv: the layer's own output, after bias and activation."""
    model = _conv_pool_model({"bias_initializer": "random_normal"})
    params, state = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (3, 10, 12, 2))
    (conv_out, pooled), _ = model.outputs_of(params, state, x, ("conv", "pool"))
    layer = model.layer("conv")
    expected, _ = layer.apply(params["conv"], {}, x, training=False, key=None)
    np.testing.assert_array_equal(np.asarray(conv_out), np.asarray(expected))
    assert float(jnp.min(conv_out)) >= 0.0
    y, _ = model.apply(params, state, x)
    (y_named,), _ = model.outputs_of(params, state, x, (model.output_names[0],))
    np.testing.assert_array_equal(np.asarray(y), np.asarray(y_named))
