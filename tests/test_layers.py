"""Core layers: hand-computable outputs, parity with Keras 3, gradients, dropout statistics."""

import jax
import jax.numpy as jnp
import keras  # noqa: E402  (a test dependency; conftest selects the JAX backend)
import numpy as np
import pytest
from jax.test_util import check_grads

from nnrun.config.spec import spec_from_dict
from nnrun.nn.builder import build_model


def model_of(layers, input_shape):
    spec = spec_from_dict({"model": {"input_shape": list(input_shape), "layers": layers},
                           "compile": {"loss": "mse"}})
    return build_model(spec.model)


def test_dense_with_ones_is_hand_computable():
    model = model_of([{"Dense": {"units": 3, "kernel_initializer": "ones",
                                 "bias_initializer": "ones"}}], [4])
    params, state = model.init(jax.random.key(0))
    y, _ = model.apply(params, state, jnp.ones((2, 4)))
    np.testing.assert_array_equal(np.asarray(y), np.full((2, 3), 5.0))


KERAS_CASES = [
    ("Dense", {"units": 5, "activation": "relu"}, (7, 3)),
    ("Dense", {"units": 2, "use_bias": False, "activation": "tanh"}, (7, 3)),
    ("Dense", {"units": 4, "activation": "softmax"}, (5, 6, 3)),   # applied on the last axis
    ("Activation", {"activation": "sigmoid"}, (4, 3)),
    ("Flatten", {}, (4, 3, 2)),
    ("LeakyReLU", {}, (4, 5)),
    ("LeakyReLU", {"negative_slope": 0.1}, (4, 5)),
    ("PReLU", {"alpha_initializer": "random_uniform"}, (4, 3, 5)),
    ("PReLU", {"alpha_initializer": "random_uniform", "shared_axes": [1]}, (4, 3, 5)),
    ("ELU", {"alpha": 0.5}, (4, 5)),
    ("ReLU", {"max_value": 1.5, "negative_slope": 0.1, "threshold": 0.2}, (4, 5)),
    ("Softmax", {"axis": 1}, (4, 3, 5)),
    ("Reshape", {"target_shape": [2, -1]}, (4, 3, 4)),
    ("Permute", {"dims": [2, 1]}, (4, 3, 5)),
    ("RepeatVector", {"n": 3}, (4, 5)),
    ("Cropping1D", {"cropping": [1, 2]}, (2, 7, 3)),
    ("Cropping2D", {"cropping": [[1, 0], [2, 1]]}, (2, 6, 7, 3)),
    ("ZeroPadding1D", {"padding": 2}, (2, 5, 3)),
    ("ZeroPadding2D", {"padding": [[1, 0], [2, 1]]}, (2, 4, 5, 3)),
    ("UpSampling1D", {"size": 3}, (2, 4, 3)),
    ("UpSampling2D", {"size": [2, 3]}, (2, 3, 4, 2)),
    ("UpSampling2D", {"size": 2, "interpolation": "bilinear"}, (2, 3, 4, 2)),
    ("Conv1D", {"filters": 4, "kernel_size": 3}, (2, 9, 3)),
    ("Conv1D", {"filters": 4, "kernel_size": 3, "padding": "same", "strides": 2}, (2, 9, 3)),
    ("Conv1D", {"filters": 2, "kernel_size": 2, "padding": "causal", "dilation_rate": 2},
     (2, 9, 3)),
    ("Conv2D", {"filters": 5, "kernel_size": 3, "activation": "relu"}, (2, 7, 8, 3)),
    ("Conv2D", {"filters": 5, "kernel_size": [3, 2], "strides": [2, 1], "padding": "same"},
     (2, 7, 8, 3)),
    ("Conv2D", {"filters": 3, "kernel_size": 3, "dilation_rate": 2, "use_bias": False},
     (2, 9, 9, 2)),
    ("Conv3D", {"filters": 3, "kernel_size": 2}, (2, 4, 5, 3, 2)),
    ("Conv3D", {"filters": 3, "kernel_size": [3, 2, 2], "padding": "same", "strides": 2},
     (2, 5, 5, 4, 2)),
    ("Conv1DTranspose", {"filters": 2, "kernel_size": 4, "strides": 2, "padding": "same"},
     (2, 5, 3)),
    ("Conv2DTranspose", {"filters": 3, "kernel_size": 3}, (2, 4, 5, 2)),
    ("Conv2DTranspose", {"filters": 3, "kernel_size": 3, "strides": 2}, (2, 4, 5, 2)),
    ("Conv2DTranspose", {"filters": 3, "kernel_size": [2, 3], "strides": [2, 3],
                         "padding": "same"}, (2, 4, 5, 2)),
    ("Conv2DTranspose", {"filters": 3, "kernel_size": 3, "strides": 2, "output_padding": 1},
     (2, 4, 5, 2)),
    ("Conv2DTranspose", {"filters": 3, "kernel_size": 3, "strides": 2, "padding": "same",
                         "output_padding": 0}, (2, 4, 5, 2)),
    ("Conv2DTranspose", {"filters": 2, "kernel_size": 3, "dilation_rate": 2,
                         "activation": "relu"}, (2, 4, 5, 2)),
    ("Conv2DTranspose", {"filters": 2, "kernel_size": 2, "strides": 3}, (2, 4, 5, 2)),
    ("Conv3DTranspose", {"filters": 2, "kernel_size": 2, "strides": 2}, (2, 3, 2, 3, 2)),
    ("DepthwiseConv1D", {"kernel_size": 3, "depth_multiplier": 2, "dilation_rate": 2},
     (2, 9, 3)),
    ("DepthwiseConv2D", {"kernel_size": 3}, (2, 6, 7, 3)),
    ("DepthwiseConv2D", {"kernel_size": 3, "depth_multiplier": 2, "strides": 2,
                         "padding": "same"}, (2, 6, 7, 3)),
    ("SeparableConv1D", {"filters": 4, "kernel_size": 2}, (2, 6, 3)),
    ("SeparableConv2D", {"filters": 4, "kernel_size": 3, "depth_multiplier": 2}, (2, 6, 7, 3)),
    ("SeparableConv2D", {"filters": 4, "kernel_size": 3, "padding": "same", "strides": 2,
                         "activation": "relu"}, (2, 6, 7, 3)),
    ("MaxPooling1D", {"pool_size": 3, "strides": 2, "padding": "same"}, (2, 9, 3)),
    ("AveragePooling1D", {"pool_size": 2}, (2, 9, 3)),
    ("MaxPooling2D", {}, (2, 6, 8, 3)),
    ("MaxPooling2D", {"pool_size": 3, "strides": 2, "padding": "same"}, (2, 7, 8, 3)),
    ("AveragePooling2D", {"pool_size": 3, "strides": 2, "padding": "same"}, (2, 7, 8, 3)),
    ("AveragePooling2D", {"pool_size": [2, 3]}, (2, 7, 8, 3)),
    ("GlobalMaxPooling1D", {}, (2, 9, 3)),
    ("GlobalAveragePooling2D", {"keepdims": True}, (2, 5, 4, 3)),
    ("LayerNormalization", {"gamma_initializer": "random_uniform",
                            "beta_initializer": "random_uniform"}, (4, 6)),
    ("LayerNormalization", {"axis": [1, 2], "gamma_initializer": "random_uniform"}, (3, 4, 5)),
    ("LayerNormalization", {"axis": 1, "center": False, "epsilon": 0.1}, (3, 4, 5)),
    ("GaussianNoise", {"stddev": 0.5}, (4, 5)),          # inference: identity
    ("GaussianDropout", {"rate": 0.3}, (4, 5)),
    ("AlphaDropout", {"rate": 0.3}, (4, 5)),
    ("SpatialDropout1D", {"rate": 0.3}, (2, 4, 5)),
    ("SpatialDropout2D", {"rate": 0.3}, (2, 3, 4, 5)),
]


@pytest.mark.parametrize("layer, kwargs, shape", KERAS_CASES)
def test_parity_with_keras(layer, kwargs, shape):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(np.float32)
    klayer = getattr(keras.layers, layer)(**kwargs)
    klayer.build(shape)
    for w in klayer.weights:   # random values in every weight (biases too)
        w.assign(rng.normal(0, 0.5, size=w.shape).astype(np.float32))
    expected = np.asarray(klayer(x))
    model = model_of([{layer: kwargs}], shape[1:])
    params, state = model.init(jax.random.key(0))
    if klayer.weights:   # the same weights in both, by Keras's variable names
        params = {model.layers[0].name: {w.name: jnp.asarray(w.numpy()) for w in klayer.weights}}
        assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
            model.init(jax.random.key(0))[0])
    y, _ = model.apply(params, state, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-6)
    assert model.output_shape == tuple(expected.shape[1:])
    keras_count = sum(int(np.prod(w.shape)) for w in klayer.weights)
    assert sum(sum(c) for c in model.count_params().values()) == keras_count


@pytest.mark.parametrize("layer, kwargs, reference", [
    ("ThresholdedReLU", {"theta": 0.5}, lambda x: np.where(x > 0.5, x, 0.0)),
    ("ThresholdedLinear", {"theta": 0.5}, lambda x: np.where(np.abs(x) >= 0.5, x, 0.0)),
    ("ParametricSoftplus", {}, lambda x: 0.2 * np.log1p(np.exp(5.0 * x))),
])
def test_keras1_activation_layers(layer, kwargs, reference):
    x = np.random.default_rng(1).normal(size=(6, 4))
    model = model_of([{layer: kwargs}], [4])
    params, state = model.init(jax.random.key(0))
    y, _ = model.apply(params, state, jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(np.asarray(y), reference(x), rtol=1e-5, atol=1e-6)


def test_layer_schemas_and_implementations_agree():
    from nnrun.config.layer_schemas import LAYERS
    from nnrun.nn.layers import LAYER_TYPES

    assert sorted(LAYERS) == sorted(LAYER_TYPES.names())


@pytest.mark.parametrize("layers, shape, needle", [
    ([{"Reshape": [4, 4]}], [3, 5], "cannot reshape 15 values"),
    ([{"Permute": [1, 3]}], [3, 5], "must be a permutation of 1..2"),
    ([{"Cropping1D": [3, 3]}], [5, 2], "leaves nothing"),
    ([{"RepeatVector": 2}], [3, 5], "expects a rank-2 input (batch, features)"),
    ([{"PReLU": {"shared_axes": [3]}}], [3, 5], "out of range"),
])
def test_shape_errors_name_the_layer(layers, shape, needle):
    from nnrun.config.errors import ConfigError

    spec = spec_from_dict({"model": {"input_shape": shape, "layers": layers},
                           "compile": {"loss": "mse"}})
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        build_model(spec.model)


# One case per layer type with parameters (a test below checks none is missing):
# check_grads compares reverse-mode gradients with finite differences, for every
# parameter and for a float input.
GRAD_CASES = [
    ([{"Dense": {"units": 3, "activation": "tanh"}}], (5, 4)),
    ([{"PReLU": {"alpha_initializer": "random_uniform"}}], (5, 4)),
    ([{"ParametricSoftplus": {}}], (5, 4)),
    ([{"Embedding": {"input_dim": 7, "output_dim": 3}}], (4, 5)),
    ([{"SimpleRNN": {"units": 3}}], (3, 5, 2)),
    ([{"LSTM": {"units": 3, "return_sequences": True}}], (3, 5, 2)),
    ([{"GRU": {"units": 3}}], (3, 5, 2)),
    ([{"GRU": {"units": 3, "reset_after": False}}], (3, 5, 2)),
    ([{"Bidirectional": {"layer": {"LSTM": {"units": 2}}}}], (3, 4, 2)),
    ([{"TimeDistributed": {"layer": {"Dense": 3}}}], (3, 4, 2)),
    ([{"Conv1D": {"filters": 2, "kernel_size": 3, "padding": "causal"}}], (2, 6, 2)),
    ([{"Conv2D": {"filters": 2, "kernel_size": 3, "padding": "same"}}, {"MaxPooling2D": {}}],
     (2, 6, 6, 2)),
    ([{"Conv3D": {"filters": 2, "kernel_size": 2}}], (2, 3, 3, 3, 2)),
    ([{"Conv1DTranspose": {"filters": 2, "kernel_size": 3, "strides": 2}}], (2, 4, 2)),
    ([{"Conv2DTranspose": {"filters": 2, "kernel_size": 3, "strides": 2, "padding": "same"}}],
     (2, 3, 4, 2)),
    ([{"Conv3DTranspose": {"filters": 2, "kernel_size": 2, "strides": 2}}], (2, 2, 2, 2, 2)),
    ([{"DepthwiseConv1D": {"kernel_size": 2, "depth_multiplier": 2}}], (2, 5, 2)),
    ([{"DepthwiseConv2D": {"kernel_size": 2, "depth_multiplier": 2}}], (2, 4, 4, 2)),
    ([{"SeparableConv1D": {"filters": 3, "kernel_size": 2}}], (2, 5, 2)),
    ([{"SeparableConv2D": {"filters": 3, "kernel_size": 2}}], (2, 4, 4, 2)),
    ([{"BatchNormalization": {}}], (6, 3)),   # training mode: batch statistics
    ([{"LayerNormalization": {}}], (4, 5)),
]


@pytest.mark.parametrize("layers, shape", GRAD_CASES,
                         ids=[next(iter(c[0][0])) for c in GRAD_CASES])
def test_layer_gradients(layers, shape):
    model = model_of(layers, shape[1:])
    params, state = model.init(jax.random.key(1))
    params = jax.tree_util.tree_map(   # random values everywhere, biases too
        lambda p: p + 0.3 * jax.random.normal(jax.random.key(p.size), p.shape), params)
    if model.input_dtype == jnp.int32:
        x = jax.random.randint(jax.random.key(2), shape, 0, 7)
    else:
        x = jax.random.normal(jax.random.key(2), shape)
    out_w = jax.random.normal(jax.random.key(3), (shape[0], *model.output_shape))

    @jax.jit
    def f(p, inputs):
        y, _ = model.apply(p, state, inputs, training=True, key=jax.random.key(4))
        return jnp.sum(y * out_w)

    if model.input_dtype == jnp.int32:
        check_grads(lambda p: f(p, x), (params,), order=1, modes=["rev"], atol=1e-2,
                    rtol=1e-2)
    else:
        check_grads(f, (params, x), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)


def test_every_layer_with_parameters_has_a_gradient_check():
    from nnrun.config.layer_schemas import LAYERS
    from nnrun.nn.layers import LAYER_TYPES

    covered = {next(iter(layers[0])) for layers, _ in GRAD_CASES}
    with_params = set()
    for name in LAYER_TYPES.names():
        schema = LAYERS[name]
        if schema.arg("layer") is None and any(
                a.name.endswith("initializer") for a in schema.args):
            with_params.add(name)
    with_params |= {"ParametricSoftplus", "Bidirectional", "TimeDistributed"}
    assert with_params - covered == set()


def test_dropout_inverted_and_training_only():
    model = model_of([{"Dropout": 0.25}], [1000])
    params, state = model.init(jax.random.key(0))
    x = jnp.ones((20, 1000))
    y_infer, _ = model.apply(params, state, x, training=False)
    np.testing.assert_array_equal(np.asarray(y_infer), np.asarray(x))
    y, _ = model.apply(params, state, x, training=True, key=jax.random.key(3))
    y = np.asarray(y)
    kept = y != 0
    assert abs(1 - kept.mean() - 0.25) < 0.01
    np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)
    assert abs(y.mean() - 1.0) < 0.02   # expectation preserved


def test_dropout_noise_shape_shares_the_mask():
    model = model_of([{"Dropout": {"rate": 0.5, "noise_shape": [None, 1, 4]}}], [6, 4])
    params, state = model.init(jax.random.key(0))
    y, _ = model.apply(params, state, jnp.ones((3, 6, 4)), training=True, key=jax.random.key(1))
    y = np.asarray(y)
    assert (y == y[:, :1, :]).all()


def test_model_init_is_deterministic_and_seeded():
    model = model_of([{"Dense": 8}, {"Dense": 2}], [3])
    a, _ = model.init(jax.random.key(0))
    b, _ = model.init(jax.random.key(0))
    c, _ = model.init(jax.random.key(1))
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not np.array_equal(np.asarray(a["dense"]["kernel"]), np.asarray(c["dense"]["kernel"]))


def test_unknown_activation_is_a_located_config_error():
    from nnrun.config.errors import ConfigError

    spec = spec_from_dict({"model": {"input_shape": [2], "layers": [
        {"Dense": {"units": 2, "activation": "rleu"}}]}, "compile": {"loss": "mse"}})
    with pytest.raises(ConfigError, match="did you mean 'relu'"):
        build_model(spec.model)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.8, 0.999])
def test_keep_mask_statistics(keep):
    from nnrun.nn.layers.core import keep_mask

    a = np.asarray(keep_mask(jax.random.key(0), (500, 401), keep))   # odd size: 200,500 draws
    b = np.asarray(keep_mask(jax.random.key(1), (500, 401), keep))
    n = a.size
    sd = np.sqrt(keep * (1 - keep) / n)
    assert abs(a.mean() - keep) < 5 * sd + 1e-5
    assert abs((a == b).mean() - (keep ** 2 + (1 - keep) ** 2)) < 5 * sd + 1e-5  # independent keys
    flat = a.ravel().astype(float)
    if 0 < flat.mean() < 1:
        assert abs(np.corrcoef(flat[:-1], flat[1:])[0, 1]) < 0.02  # neighbours unrelated


def train_mode(layer, kwargs, shape, x=None, seed=3):
    model = model_of([{layer: kwargs}], shape[1:])
    params, state = model.init(jax.random.key(0))
    x = jnp.ones(shape) if x is None else x
    return np.asarray(model.apply(params, state, x, training=True, key=jax.random.key(seed))[0])


def test_gaussian_noise_and_dropout_statistics():
    x = jnp.full((400, 500), 2.0)
    noise = train_mode("GaussianNoise", {"sigma": 0.5}, x.shape, x) - 2.0   # Keras 1 name
    assert abs(noise.mean()) < 0.01 and abs(noise.std() - 0.5) < 0.01
    factor = train_mode("GaussianDropout", {"p": 0.2}, x.shape, x) / 2.0
    assert abs(factor.mean() - 1) < 0.01 and abs(factor.std() - np.sqrt(0.2 / 0.8)) < 0.01


def test_alpha_dropout_keeps_selu_moments():
    x = jax.random.normal(jax.random.key(5), (400, 500))
    y = train_mode("AlphaDropout", {"rate": 0.2}, x.shape, x)
    assert abs(y.mean()) < 0.02 and abs(y.var() - 1) < 0.03
    alpha_p = -1.6732632423543772 * 1.0507009873554805
    a = ((1 - 0.2) * (1 + 0.2 * alpha_p ** 2)) ** -0.5
    dropped = a * alpha_p - a * alpha_p * 0.2                     # Keras's a * alpha_p + b
    assert abs(np.isclose(y, dropped, rtol=1e-6).mean() - 0.2) < 0.01


@pytest.mark.parametrize("layer, shape", [("SpatialDropout1D", (50, 7, 40)),
                                          ("SpatialDropout2D", (50, 3, 4, 40))])
def test_spatial_dropout_drops_whole_channels(layer, shape):
    y = train_mode(layer, {"rate": 0.25}, shape)
    per_channel = y.reshape(shape[0], -1, shape[-1])
    assert (per_channel == per_channel[:, :1, :]).all()          # one draw per channel
    assert set(np.unique(per_channel)) <= {0.0, np.float32(1 / 0.75)}
    assert abs((per_channel[:, 0, :] == 0).mean() - 0.25) < 0.05


@pytest.mark.parametrize("kwargs, shape", [({}, (6, 5)), ({"momentum": 0.9, "epsilon": 0.01},
                                                            (4, 3, 5)),
                                           ({"axis": 1, "center": False}, (4, 3, 5))])
def test_batch_normalization_equals_keras(kwargs, shape):
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, size=shape).astype(np.float32)
    klayer = keras.layers.BatchNormalization(**kwargs)
    klayer.build(shape)
    for w in klayer.weights:   # non-trivial statistics and parameters
        w.assign(rng.uniform(0.5, 1.5, size=w.shape).astype(np.float32))
    weights = {w.name: jnp.asarray(w.numpy()) for w in klayer.weights}
    model = model_of([{"BatchNormalization": kwargs}], shape[1:])
    name = model.layers[0].name
    params = {name: {k: v for k, v in weights.items() if k in ("gamma", "beta")}}
    state = {name: {k: weights[k] for k in ("moving_mean", "moving_variance")}}
    infer, _ = model.apply(params, state, jnp.asarray(x), training=False)
    np.testing.assert_allclose(np.asarray(infer), np.asarray(klayer(x, training=False)),
                               rtol=1e-5, atol=1e-5)
    train, new_state = model.apply(params, state, jnp.asarray(x), training=True,
                                   key=jax.random.key(0))
    np.testing.assert_allclose(np.asarray(train), np.asarray(klayer(x, training=True)),
                               rtol=1e-4, atol=1e-5)
    for k in ("moving_mean", "moving_variance"):   # Keras updated its variables in place
        kvar = next(w for w in klayer.weights if w.name == k)
        np.testing.assert_allclose(np.asarray(new_state[name][k]), kvar.numpy(), rtol=1e-5)
    trainable, fixed = model.count_params()[name]
    assert (trainable, fixed) == (sum(int(np.prod(w.shape)) for w in klayer.trainable_weights),
                                  sum(int(np.prod(w.shape)) for w in
                                      klayer.non_trainable_weights))


def test_batch_normalization_skips_masked_rows():
    model = model_of([{"BatchNormalization": {}}], [3])
    params, state = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (8, 3))
    mask = jnp.array([1, 1, 1, 1, 1, 0, 0, 0], jnp.float32)
    padded = x.at[5:].set(x[0])       # what the trainer's padding looks like
    y_masked, s_masked = model.apply(params, state, padded, training=True, mask=mask)
    y_real, s_real = model.apply(params, state, x[:5], training=True)
    np.testing.assert_allclose(np.asarray(y_masked[:5]), np.asarray(y_real), rtol=1e-5,
                               atol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(s_masked), jax.tree_util.tree_leaves(s_real)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


def test_embedding_equals_keras_and_reads_keras1_arguments():
    spec = spec_from_dict({"model": {"layers": [
        {"Embedding": {"input_dim": 50, "output_dim": 8, "input_length": 6, "init": "normal"}},
        {"Flatten": {}}]}, "compile": {"loss": "mse"}})
    assert spec.model.input_shape == (6,) and spec.model.input_dtype == "int32"
    assert spec.model.layers[0].args["embeddings_initializer"] == "normal"
    model = build_model(spec.model)
    assert model.output_shape == (48,)
    klayer = keras.layers.Embedding(50, 8)
    ids = np.random.default_rng(0).integers(0, 50, size=(4, 6)).astype(np.int32)
    expected = np.asarray(klayer(ids)).reshape(4, -1)
    params = {"embedding": {"embeddings": jnp.asarray(klayer.embeddings.numpy())}}
    y, _ = model.apply(params, {}, jnp.asarray(ids))
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-6)
    assert model.count_params()["embedding"] == (400, 0)


@pytest.mark.parametrize("layer, kwargs", [
    ("SimpleRNN", {"units": 4}),
    ("SimpleRNN", {"units": 4, "return_sequences": True, "activation": "relu"}),
    ("LSTM", {"units": 5}),
    ("LSTM", {"units": 5, "return_sequences": True, "go_backwards": True}),
    ("GRU", {"units": 3}),
    ("GRU", {"units": 3, "reset_after": False, "return_sequences": True}),
    ("GRU", {"units": 3, "go_backwards": True, "use_bias": False}),
])
def test_recurrent_equals_keras(layer, kwargs):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 7, 6)).astype(np.float32)
    klayer = getattr(keras.layers, layer)(**kwargs)
    klayer.build(x.shape)
    for w in klayer.weights:   # random biases too, so every term is exercised
        w.assign(rng.normal(0, 0.4, size=w.shape).astype(np.float32))
    expected = np.asarray(klayer(x))
    model = model_of([{layer: kwargs}], x.shape[1:])
    ours, _ = model.init(jax.random.key(0))
    params = {model.layers[0].name: {w.name: jnp.asarray(w.numpy()) for w in klayer.weights}}
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(ours)
    assert jax.tree_util.tree_map(jnp.shape, params) == jax.tree_util.tree_map(jnp.shape, ours)
    y, _ = model.apply(params, {}, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-5)
    assert model.output_shape == expected.shape[1:]


def test_lstm_keras1_arguments_and_forget_bias():
    spec = spec_from_dict({"model": {"layers": [
        {"LSTM": {"output_dim": 8, "input_dim": 3, "input_length": 10, "inner_init": "orthogonal",
                  "consume_less": "gpu"}}]}, "compile": {"loss": "mse"}})
    assert spec.model.input_shape == (10, 3)
    model = build_model(spec.model)
    params, _ = model.init(jax.random.key(0))
    bias = np.asarray(params["lstm"]["bias"])
    np.testing.assert_array_equal(bias, np.r_[np.zeros(8), np.ones(8), np.zeros(16)])
    q = np.asarray(params["lstm"]["recurrent_kernel"])          # (8, 32): orthonormal rows
    np.testing.assert_allclose(q @ q.T, np.eye(8), atol=1e-5)


def test_keras1_convolution_arguments():
    spec = spec_from_dict({"model": {"input_shape": [28, 28, 1], "layers": [
        {"Convolution2D": {"nb_filter": 8, "nb_row": 3, "nb_col": 5, "border_mode": "same",
                           "subsample": [2, 2]}},
        {"MaxPooling2D": {"pool_size": [2, 2]}}]}, "compile": {"loss": "mse"}})
    conv = spec.model.layers[0]
    assert conv.type == "Conv2D" and conv.name == "conv2d"
    assert (conv.args["filters"], conv.args["kernel_size"], conv.args["padding"],
            conv.args["strides"]) == (8, (3, 5), "same", (2, 2))
    assert build_model(spec.model).output_shape == (7, 7, 8)


def test_keras1_convolution3d_and_deconvolution_names():
    spec = spec_from_dict({"model": {"input_shape": [8, 8, 8, 1], "layers": [
        {"Convolution3D": {"nb_filter": 4, "kernel_dim1": 3, "kernel_dim2": 2,
                           "kernel_dim3": 1, "dim_ordering": "tf"}},
        {"Deconvolution3D": {"nb_filter": 2, "kernel_size": 2, "subsample": 2}}]},
        "compile": {"loss": "mse"}})
    conv, deconv = spec.model.layers
    assert (conv.type, conv.args["kernel_size"]) == ("Conv3D", (3, 2, 1))
    assert (deconv.type, deconv.args["strides"]) == ("Conv3DTranspose", (2, 2, 2))
    assert build_model(spec.model).output_shape == (12, 14, 16, 2)


@pytest.mark.parametrize("args, needle", [
    ({"filters": 2, "kernel_size": 3, "data_format": "channels_first"},
     "nnrun's layers are channels_last"),
    ({"nb_filter": 2, "nb_row": 3, "nb_col": 3, "dim_ordering": "th"},
     "nnrun's layers are channels_last"),
    ({"nb_filter": 2, "nb_row": 3}, "give all of nb_row, nb_col"),
])
def test_convolution_argument_errors(args, needle):
    from nnrun.config.errors import ConfigError

    with pytest.raises(ConfigError, match=needle):
        spec_from_dict({"model": {"input_shape": [8, 8, 1], "layers": [{"Conv2D": args}]},
                        "compile": {"loss": "mse"}})


@pytest.mark.parametrize("inner, kwargs", [
    ({"LSTM": {"units": 4}}, {}),
    ({"GRU": {"units": 3, "return_sequences": True}}, {"merge_mode": "sum"}),
    ({"SimpleRNN": {"units": 2, "return_sequences": True}}, {"merge_mode": "ave"}),
])
def test_bidirectional_equals_keras(inner, kwargs):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 6, 5)).astype(np.float32)
    ((type_, inner_args),) = inner.items()
    klayer = keras.layers.Bidirectional(getattr(keras.layers, type_)(**inner_args), **kwargs)
    klayer.build(x.shape)
    for w in klayer.weights:
        w.assign(rng.normal(0, 0.4, size=w.shape).astype(np.float32))
    expected = np.asarray(klayer(x))
    model = model_of([{"Bidirectional": {"layer": inner, **kwargs}}], x.shape[1:])
    params = {"bidirectional": {
        "forward": {w.name: jnp.asarray(w.numpy()) for w in klayer.forward_layer.weights},
        "backward": {w.name: jnp.asarray(w.numpy()) for w in klayer.backward_layer.weights}}}
    ours, _ = model.init(jax.random.key(0))
    assert jax.tree_util.tree_map(jnp.shape, params) == jax.tree_util.tree_map(jnp.shape, ours)
    y, _ = model.apply(params, {}, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-5)
    assert model.output_shape == expected.shape[1:]


def test_time_distributed_equals_keras():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 6, 5)).astype(np.float32)
    klayer = keras.layers.TimeDistributed(keras.layers.Dense(4, activation="tanh"))
    expected = np.asarray(klayer(x))
    model = model_of([{"TimeDistributed": {"layer": {"Dense": {"units": 4,
                                                                "activation": "tanh"}}}}],
                     x.shape[1:])
    params = {"time_distributed": {w.name: jnp.asarray(w.numpy()) for w in klayer.weights}}
    y, _ = model.apply(params, {}, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-6)
    assert model.output_shape == (6, 4)


def test_wrapped_layer_errors_are_located(tmp_path):
    from nnrun.config.errors import ConfigError
    from nnrun.config.spec import load_spec

    path = tmp_path / "c.yaml"
    path.write_text("model:\n  input_shape: [5, 3]\n  layers:\n"
                    "    - Bidirectional: {layer: {LSMT: {units: 4}}}\n"
                    "compile: {loss: mse}\n")
    with pytest.raises(ConfigError, match=r"c.yaml:4:31: model.layers\[0\].Bidirectional.layer"
                                          r".LSMT: unknown layer type 'LSMT' \(did you mean "
                                          r"'LSTM'"):
        load_spec(path)
    spec = spec_from_dict({"model": {"input_shape": [5, 3], "layers": [
        {"Bidirectional": {"layer": {"Dense": 3}}}]}, "compile": {"loss": "mse"}})
    with pytest.raises(ConfigError, match="wraps a recurrent layer"):
        build_model(spec.model)


@pytest.mark.parametrize("layer", ["SimpleRNN", "LSTM", "GRU"])
def test_recurrent_dropout_masks_are_per_sequence(layer):
    x = jax.random.normal(jax.random.key(3), (4, 6, 5))
    model = model_of([{layer: {"units": 3, "dropout": 0.4}}], [6, 5])
    params, state = model.init(jax.random.key(0))
    rnn, key = model.layers[0], jax.random.key(9)
    inference, _ = model.apply(params, state, x)
    plain = model_of([{layer: {"units": 3}}], [6, 5])
    np.testing.assert_allclose(np.asarray(inference), np.asarray(plain.apply(params, state, x)[0]),
                               rtol=1e-6)
    trained, _ = model.apply(params, state, x, training=True, key=key)
    in_mask, rec_mask = rnn.dropout_masks(jax.random.fold_in(key, 0), 4, 5)
    assert rec_mask is None and set(np.unique(np.asarray(in_mask))) <= {0.0, np.float32(1 / 0.6)}
    # the same input mask at every step: training == inference on the masked inputs
    masked, _ = model.apply(params, state, x * in_mask[:, None, :])
    np.testing.assert_allclose(np.asarray(trained), np.asarray(masked), rtol=1e-5, atol=1e-6)
    recurrent = model_of([{layer: {"units": 3, "recurrent_dropout": 0.4}}], [6, 5])
    a, _ = recurrent.apply(params, state, x, training=True, key=key)
    b, _ = recurrent.apply(params, state, x, training=True, key=key)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(inference))


def _keras_twin(klayers, shape, dtype="float32"):
    """A Keras Sequential of `klayers` on random weights; returns (model, params by layer)."""
    rng = np.random.default_rng(0)
    k = keras.Sequential([keras.Input(shape[1:], dtype=dtype), *klayers])
    for w in k.weights:
        w.assign(rng.normal(0, 0.5, size=w.shape).astype(np.float32))
    return k


def _keras_params(layer, nnrun_layer):
    if isinstance(layer, keras.layers.Bidirectional):
        return {"forward": {w.name: jnp.asarray(w.numpy()) for w in layer.forward_layer.weights},
                "backward": {w.name: jnp.asarray(w.numpy())
                             for w in layer.backward_layer.weights}}
    return {w.name: jnp.asarray(w.numpy()) for w in layer.weights}


def _padded_ids(shape):
    """Token ids with trailing (and one leading, one inner) zero padding."""
    ids = np.random.default_rng(1).integers(1, 9, size=shape).astype(np.int32)
    for i, length in enumerate([7, 4, 2, 6][: shape[0]]):
        ids[i, length:] = 0
    ids[3, 0] = ids[3, 3] = 0
    return ids


@pytest.mark.parametrize("rnn", [
    {"LSTM": {"units": 3}},
    {"GRU": {"units": 3, "return_sequences": True}},
    {"SimpleRNN": {"units": 2, "go_backwards": True}},
    {"LSTM": {"units": 2, "go_backwards": True, "return_sequences": True}},
    {"GRU": {"units": 2, "reset_after": False, "unroll": True}},
    {"Bidirectional": {"layer": {"LSTM": {"units": 2, "return_sequences": True}}}},
    {"Bidirectional": {"layer": {"GRU": {"units": 2}}, "merge_mode": "sum"}},
])
def test_mask_zero_reaches_recurrent_layers_as_keras(rnn):
    ((type_, args),) = rnn.items()
    if type_ == "Bidirectional":
        ((inner_type, inner_args),) = args["layer"].items()
        klayer = keras.layers.Bidirectional(getattr(keras.layers, inner_type)(**inner_args),
                                            merge_mode=args.get("merge_mode", "concat"))
    else:
        klayer = getattr(keras.layers, type_)(**args)
    ids = _padded_ids((4, 7))
    k = _keras_twin([keras.layers.Embedding(9, 4, mask_zero=True), klayer], ids.shape, "int32")
    expected = np.asarray(k(ids))
    model = model_of([{"Embedding": {"input_dim": 9, "output_dim": 4, "mask_zero": True}},
                      rnn], [7])
    names = [layer.name for layer in model.layers]
    params = {name: _keras_params(kl, None) for name, kl in zip(names, k.layers)}
    y, _ = model.apply(params, {}, jnp.asarray(ids))
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-5)
    unmasked = model_of([{"Embedding": {"input_dim": 9, "output_dim": 4}}, rnn], [7])
    assert not np.allclose(np.asarray(unmasked.apply(params, {}, jnp.asarray(ids))[0]),
                           expected, atol=1e-3)   # the mask matters here


def test_mask_passes_through_dense_and_pooling_averages_unmasked_steps():
    ids = _padded_ids((4, 7))
    k = _keras_twin([keras.layers.Embedding(9, 4, mask_zero=True),
                     keras.layers.Dense(5, activation="tanh"), keras.layers.Dropout(0.3),
                     keras.layers.LSTM(3, return_sequences=True),
                     keras.layers.GlobalAveragePooling1D()], ids.shape, "int32")
    model = model_of([{"Embedding": {"input_dim": 9, "output_dim": 4, "mask_zero": True}},
                      {"Dense": {"units": 5, "activation": "tanh"}}, {"Dropout": 0.3},
                      {"LSTM": {"units": 3, "return_sequences": True}},
                      {"GlobalAveragePooling1D": {}}], [7])
    params = {layer.name: _keras_params(kl, None) for layer, kl in zip(model.layers, k.layers)
              if kl.weights}
    y, _ = model.apply(params, {}, jnp.asarray(ids))
    np.testing.assert_allclose(np.asarray(y), np.asarray(k(ids)), rtol=1e-5, atol=1e-5)


def test_masking_layer_equals_keras():
    x = np.random.default_rng(0).normal(size=(3, 6, 2)).astype(np.float32)
    x[0, 4:] = -1.0
    x[2, 1] = -1.0
    k = _keras_twin([keras.layers.Masking(mask_value=-1.0), keras.layers.SimpleRNN(3)], x.shape)
    model = model_of([{"Masking": {"mask_value": -1.0}}, {"SimpleRNN": 3}], [6, 2])
    params = {"simple_rnn": _keras_params(k.layers[1], None)}
    y, _ = model.apply(params, {}, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(y), np.asarray(k(x)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layer", ["SimpleRNN", "LSTM", "GRU"])
def test_return_state_equals_keras_and_sequential_refuses_it(layer):
    from nnrun.config.errors import ConfigError

    x = np.random.default_rng(0).normal(size=(3, 5, 2)).astype(np.float32)
    klayer = getattr(keras.layers, layer)(3, return_state=True, return_sequences=True)
    expected = [np.asarray(v) for v in klayer(x)]
    ours = model_of([{layer: {"units": 3, "return_sequences": True}}], [5, 2]).layers[0]
    ours.args["return_state"] = True
    params = {w.name: jnp.asarray(w.numpy()) for w in klayer.weights}
    outputs, _ = ours.apply(params, {}, jnp.asarray(x), training=False, key=None)
    assert len(outputs) == len(expected) == (3 if layer == "LSTM" else 2)
    for a, b in zip(outputs, expected):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="return_state gives several outputs"):
        model_of([{layer: {"units": 3, "return_state": True}}], [5, 2])


@pytest.mark.parametrize("layer", ["SimpleRNN", "LSTM", "GRU"])
def test_unroll_gives_the_same_numbers(layer):
    x = jax.random.normal(jax.random.key(0), (3, 6, 2))
    rolled = model_of([{layer: {"units": 4, "return_sequences": True}}], [6, 2])
    unrolled = model_of([{layer: {"units": 4, "return_sequences": True, "unroll": True}}],
                        [6, 2])
    params, state = rolled.init(jax.random.key(1))
    np.testing.assert_allclose(np.asarray(unrolled.apply(params, state, x)[0]),
                               np.asarray(rolled.apply(params, state, x)[0]), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("layer", ["SimpleRNN", "LSTM", "GRU"])
def test_stateful_carries_state_across_batches(layer):
    spec = spec_from_dict({"model": {"input_shape": [4, 2], "layers": [
        {layer: {"units": 3, "stateful": True, "return_sequences": True}}]},
        "compile": {"loss": "mse"}})
    model = build_model(spec.model, batch_size=5)
    params, state = model.init(jax.random.key(0))
    assert model.count_params()[layer.lower() if layer != "SimpleRNN" else "simple_rnn"][1] == 0
    long = jax.random.normal(jax.random.key(1), (5, 8, 2))   # 8 steps = two 4-step batches
    first, state = model.apply(params, state, long[:, :4])
    second, state = model.apply(params, state, long[:, 4:])
    plain = model_of([{layer: {"units": 3, "return_sequences": True}}], [8, 2])
    whole, _ = plain.apply(params, {}, long)
    np.testing.assert_allclose(np.asarray(jnp.concatenate([first, second], axis=1)),
                               np.asarray(whole), rtol=1e-5, atol=1e-6)
    reset = model.reset_states(state)
    assert all(not np.asarray(v).any() for v in jax.tree_util.tree_leaves(reset))
    again, _ = model.apply(params, reset, long[:, :4])
    np.testing.assert_array_equal(np.asarray(again), np.asarray(first))


def test_stateful_predict_continues_across_batches_and_training_runs():
    from nnrun.train.epoch import make_predict, resolve_objective
    from nnrun.train.fitter import Fitter

    spec = spec_from_dict({"model": {"input_shape": [3, 2], "layers": [
        {"LSTM": {"units": 4, "stateful": True}}, {"Dense": 1}]}, "compile": {"loss": "mse"}})
    model = build_model(spec.model, batch_size=4)
    params, state = model.init(jax.random.key(0))
    long = np.asarray(jax.random.normal(jax.random.key(1), (4, 6, 2)))
    rows = np.concatenate([long[:, :3], long[:, 3:]])   # batch 2 continues batch 1's rows
    preds = np.asarray(make_predict(model, 8, 4)(params, state, jnp.asarray(rows)))
    plain = model_of([{"LSTM": {"units": 4}}, {"Dense": 1}], [6, 2])
    np.testing.assert_allclose(preds[4:], np.asarray(plain.apply(params, {}, long)[0]),
                               rtol=1e-5, atol=1e-6)
    y = np.ones((8, 1), np.float32)
    obj = resolve_objective("mse", (), y.shape, (8, 1))
    fitter = Fitter(model, obj, "sgd", seed=0, batch_size=4, shuffle=False, x=rows, y=y)
    ts = fitter.initial_state()
    losses = []
    for _ in range(3):
        ts, res = fitter.run_epoch(ts)
        losses.append(res.logs["loss"])
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert np.abs(np.asarray(ts.state["lstm"]["h"])).sum() > 0   # carried, reset next epoch


@pytest.mark.parametrize("layer, kwargs, shape", [
    ("MaxPooling2D", {}, (2, 4, 4, 1)),
    ("MaxPooling2D", {"pool_size": [2, 3]}, (2, 5, 7, 2)),
    ("MaxPooling2D", {"pool_size": 3, "strides": 2, "padding": "same"}, (2, 5, 5, 2)),
    ("MaxPooling1D", {"pool_size": 3, "strides": 1}, (2, 7, 2)),
])
def test_max_pooling_gradient_goes_to_the_first_maximum_as_keras(layer, kwargs, shape):
    """With ties (small integers) Keras's max pooling routes each window's gradient to
    its first maximum; jnp.max would split it among the ties."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(0, 3, size=shape).astype(np.float32))
    klayer = getattr(keras.layers, layer)(**kwargs)
    w = rng.normal(size=klayer(x).shape).astype(np.float32)
    model = model_of([{layer: kwargs}], shape[1:])
    ours = jax.grad(lambda x: jnp.sum(model.apply({}, {}, x)[0] * w))(x)
    theirs = jax.grad(lambda x: jnp.sum(klayer(x) * w))(x)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
