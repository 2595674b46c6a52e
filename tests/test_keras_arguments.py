"""Layer arguments as Keras 3 takes them (issue 18): a layer's initializer, regularizer,
constraint or activation written as a one-key mapping, as a layer is (`{l2: 0.01}`), or as
Keras's `{class_name, config}`; and the arguments Keras 3 accepts and refuses — the
depthwise and separable convolutions compute strides > 1 with dilation > 1 (numbers and
gradients equal to Keras's), while Keras refuses Conv* with both, Conv*Transpose's
output_padding >= strides and negative ReLU / LeakyReLU arguments, and so does nnrun,
located."""

from __future__ import annotations

import json
import textwrap

import jax
import jax.numpy as jnp
import jsonschema
import keras
import numpy as np
import pytest
from click.testing import CliRunner

from nnrun.cli.config_cmds import config_schema
from nnrun.cli.main import main
from nnrun.config.errors import ConfigError
from nnrun.config.spec import spec_from_dict
from nnrun.config.yamlsrc import Origins, format_path, parse_yaml
from nnrun.keras.model_json import to_keras_json
from nnrun.nn import activations, initializers
from nnrun.nn.builder import build_model
from nnrun.nn.regularizers import get_constraint, get_regularizer

W = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)


def spec_of(layers, input_shape=(3,)):
    return spec_from_dict({"model": {"input_shape": list(input_shape), "layers": layers},
                           "compile": {"loss": "mse"}})


def check(tmp_path, text: str):
    """`nnrun check` on a config file: (exit code, output)."""
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent(text))
    result = CliRunner().invoke(main, ["check", str(path)])
    return result.exit_code, result.output


# ---------------------------------------------------------------- item 14: the forms

L2 = keras.regularizers.L2(0.01)(W)


@pytest.mark.parametrize("form", [
    {"l2": 0.01}, {"L2": 0.01}, {"l2": {"l2": 0.01}}, {"name": "l2", "l2": 0.01},
    {"class_name": "L2", "config": {"l2": 0.01}},
    {"module": "keras.regularizers", "class_name": "L2", "config": {"l2": 0.01},
     "registered_name": None},
])
def test_regularizer_forms_equal_keras(form):
    assert float(get_regularizer(form)(W)) == pytest.approx(float(L2), rel=1e-6)


def test_l1_l2_constraint_and_activation_forms_equal_keras():
    keras_l1l2 = float(keras.regularizers.L1L2(l1=0.01, l2=0.02)(W))
    for form in ({"l1_l2": {"l1": 0.01, "l2": 0.02}}, {"L1L2": {"l1": 0.01, "l2": 0.02}}):
        assert float(get_regularizer(form)(W)) == pytest.approx(keras_l1l2, rel=1e-6)
    expected = np.asarray(keras.constraints.MaxNorm(0.5)(W))
    for form in ({"max_norm": 0.5}, {"MaxNorm": {"max_value": 0.5}},
                 {"class_name": "MaxNorm", "config": {"max_value": 0.5}}):
        np.testing.assert_allclose(np.asarray(get_constraint(form)(W)), expected, rtol=1e-6)
    x = jnp.linspace(-2, 2, 9)
    for form in ({"leaky_relu": 0.1}, {"leaky_relu": {"negative_slope": 0.1}}):
        np.testing.assert_allclose(np.asarray(activations.get(form)(x)),
                                   np.asarray(keras.activations.leaky_relu(x, 0.1)))


@pytest.mark.parametrize("form", [
    {"RandomNormal": {"stddev": 0.05, "seed": 1}},
    {"random_normal": {"stddev": 0.05, "seed": 1}},
    {"name": "RandomNormal", "stddev": 0.05, "seed": 1},
    {"class_name": "RandomNormal", "config": {"stddev": 0.05, "seed": 1}},
])
def test_initializer_forms_draw_what_keras_draws(form):
    expected = keras.initializers.RandomNormal(stddev=0.05, seed=1)((5, 4))
    drawn = initializers.get(form)(jax.random.key(0), (5, 4))
    np.testing.assert_array_equal(np.asarray(drawn), np.asarray(expected))


def test_an_empty_or_null_one_key_form_takes_the_defaults():
    key = jax.random.PRNGKey(3)
    plain = np.asarray(initializers.get("glorot_uniform")(key, (4, 4)))
    for form in ({"glorot_uniform": {}}, {"GlorotUniform": None}):
        np.testing.assert_array_equal(np.asarray(initializers.get(form)(key, (4, 4))), plain)


def test_a_layer_takes_every_form_and_keras1_names(tmp_path):
    """The config's forms reach the layer: the penalties of `{l2: 0.01}` written in each
    way (Keras 1's W_regularizer too) are one penalty each, equal to Keras's."""
    forms = [{"l2": 0.01}, {"name": "l2", "l2": 0.01},
             {"class_name": "L2", "config": {"l2": 0.01}}]
    layers = [{"Dense": {"units": 3, "kernel_regularizer": f}} for f in forms]
    layers.append({"Dense": {"output_dim": 3, "W_regularizer": {"l2": 0.01},
                             "init": {"RandomNormal": {"stddev": 0.05}},
                             "W_constraint": {"max_norm": 3},
                             "activation": {"leaky_relu": 0.1}}})
    model = build_model(spec_of(layers).model)
    params, _ = model.init(jax.random.key(0))
    one = {n: {"kernel": jnp.asarray(W[:3, :])} for n in params}
    assert float(model.regularization(one)) == pytest.approx(
        4 * float(keras.regularizers.L2(0.01)(W[:3, :])), rel=1e-6)
    code, out = check(tmp_path, """\
        model:
          input_shape: [3]
          layers:
            - Dense: {output_dim: 3, W_regularizer: {l2: 0.01}, b_constraint: {non_neg: null}}
            - Dense:
                units: 1
                kernel_initializer:
                  RandomNormal: {stddev: 0.05}
                kernel_regularizer: {class_name: L2, config: {l2: 0.01}}
        compile: {loss: mse}
        """)
    assert code == 0, out


@pytest.mark.parametrize("value, where, needle", [
    ("{l1_l3: 0.01}", "3:51: model.layers[0].Dense.kernel_regularizer",
     "unknown regularizer 'l1_l3' (did you mean 'l1_l2'"),
    ("{name: l1_l3}", "3:51: model.layers[0].Dense.kernel_regularizer",
     "did you mean 'l1_l2'"),
    ("{class_name: L1L3}", "3:51: model.layers[0].Dense.kernel_regularizer",
     "unknown regularizer 'L1L3' (did you mean 'l1l2'"),
    ("{l2: {l3: 1}}", "3:51: model.layers[0].Dense.kernel_regularizer",
     "regularizer 'l2' has no argument 'l3'"),
    ("{non_neg: 1}", "3:51: model.layers[0].Dense.kernel_regularizer",
     "unknown regularizer 'non_neg'"),
    ("{l1: 0.1, l2: 0.1}", "3:51: model.layers[0].Dense.kernel_regularizer",
     "a mapping of 2 keys (l1, l2) without 'name:'"),
    ("{}", "3:51: model.layers[0].Dense.kernel_regularizer", "got an empty mapping"),
])
def test_wrong_forms_and_names_are_located(tmp_path, value, where, needle):
    code, out = check(tmp_path, f"""\
        model:
          input_shape: [3]
          layers: [{{Dense: {{units: 1, kernel_regularizer: {value}}}}}]
        compile: {{loss: mse}}
        """)
    assert code == 2
    assert where in out and needle in out, out
    assert "Traceback" not in out


def test_an_unknown_initializer_is_located_at_its_key(tmp_path):
    code, out = check(tmp_path, """\
        model:
          input_shape: [3]
          layers:
            - Dense:
                units: 1
                kernel_initializer:
                  RandomNormall: {stddev: 0.05}
        compile: {loss: mse}
        """)
    assert code == 2
    assert "7:11: model.layers[0].Dense.kernel_initializer: unknown initializer " \
           "'RandomNormall' (did you mean 'RandomNormal'" in out, out


def test_parameters_without_a_name_say_how_to_name_it():
    with pytest.raises(ConfigError, match="names the initializer as its one key or with "
                                          "'name:'"):
        initializers.get({"minval": 0.0})
    with pytest.raises(ConfigError, match="'non_neg' takes no parameters"):
        get_constraint({"non_neg": 1})


def test_the_json_schema_takes_the_forms():
    validator = jsonschema.Draft7Validator(config_schema())
    text = """\
        model:
          layers:
            - Dense: {units: 2, kernel_regularizer: {l2: 0.01}, W_constraint: {max_norm: 3},
                      kernel_initializer: {RandomNormal: {stddev: 0.05}},
                      bias_initializer: {class_name: Zeros}, activation: {leaky_relu: 0.1}}
        compile: {loss: mse}
        """
    value = parse_yaml(textwrap.dedent(text), "<test>", Origins())
    assert list(validator.iter_errors(value)) == []
    bad = parse_yaml(textwrap.dedent(text).replace("{l2: 0.01}", "{l3: 0.01}"), "<test>",
                     Origins())
    paths = [".".join(map(str, e.absolute_path)) for e in validator.iter_errors(bad)]
    assert any(p.endswith("Dense.kernel_regularizer") for p in paths), paths


def test_one_key_forms_export_to_keras():
    spec = spec_of([{"Dense": {"units": 2, "kernel_regularizer": {"l2": 0.01},
                               "bias_regularizer": {"l1_l2": {"l1": 0.01, "l2": 0.02}},
                               "kernel_initializer": {"RandomNormal": {"stddev": 0.05}},
                               "kernel_constraint": {"max_norm": 3}}}])
    k = keras.models.model_from_json(json.dumps(to_keras_json(spec.resolved["model"])))
    dense = k.layers[-1]
    assert dense.kernel_regularizer.get_config() == {"l2": 0.01}
    assert dense.bias_regularizer.get_config() == pytest.approx({"l1": 0.01, "l2": 0.02})
    assert type(dense.kernel_initializer).__name__ == "RandomNormal"
    assert dense.kernel_initializer.get_config()["stddev"] == 0.05
    assert dense.kernel_constraint.get_config()["max_value"] == 3


# ---------------------------------------------------------------- item 15: valid arguments

STRIDED_DILATED = [
    ("DepthwiseConv1D", {"kernel_size": 3, "strides": 2, "dilation_rate": 2}, (2, 11, 3)),
    ("DepthwiseConv2D", {"kernel_size": 3, "strides": 2, "dilation_rate": 2,
                         "depth_multiplier": 2}, (2, 9, 10, 2)),
    ("DepthwiseConv2D", {"kernel_size": [2, 3], "strides": [2, 3], "dilation_rate": [3, 2],
                         "padding": "same"}, (2, 9, 10, 2)),
    ("SeparableConv1D", {"filters": 3, "kernel_size": 2, "strides": 2, "dilation_rate": 2,
                         "padding": "same"}, (2, 9, 2)),
    ("SeparableConv2D", {"filters": 3, "kernel_size": 3, "strides": 2, "dilation_rate": 2},
     (2, 9, 10, 2)),
    ("SeparableConv2D", {"filters": 3, "kernel_size": 3, "strides": 2, "dilation_rate": 2,
                         "padding": "same", "depth_multiplier": 2}, (2, 8, 9, 2)),
]


@pytest.mark.parametrize("layer, kwargs, shape", STRIDED_DILATED,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(STRIDED_DILATED)])
def test_strided_dilated_depthwise_and_separable_equal_keras(layer, kwargs, shape):
    """Keras 3 computes these (its check is on Conv* only): the same outputs and the same
    gradients with respect to the input and every weight, given the same weights."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=shape).astype(np.float32))
    klayer = getattr(keras.layers, layer)(**kwargs)
    klayer.build(shape)
    for w in klayer.weights:
        w.assign(rng.normal(0, 0.5, size=w.shape).astype(np.float32))
    weights = [jnp.asarray(w.numpy()) for w in klayer.trainable_variables]
    names = [w.name for w in klayer.trainable_variables]
    model = build_model(spec_of([{layer: kwargs}], shape[1:]).model)
    params = {model.layers[0].name: dict(zip(names, weights))}
    out_w = jnp.asarray(rng.normal(size=(shape[0], *model.output_shape)).astype(np.float32))

    def theirs(ws, inputs):
        y, _ = klayer.stateless_call(ws, [], inputs)
        return jnp.sum(y * out_w), y

    def ours(p, inputs):
        y, _ = model.apply(p, {}, inputs, training=False, key=None)
        return jnp.sum(y * out_w), y

    (_, expected), (dk_w, dk_x) = jax.jit(jax.value_and_grad(theirs, (0, 1), has_aux=True))(
        weights, x)
    (_, got), (dp, dx) = jax.jit(jax.value_and_grad(ours, (0, 1), has_aux=True))(params, x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(dx), np.asarray(dk_x), rtol=1e-5, atol=1e-5)
    for name, g in zip(names, dk_w):
        np.testing.assert_allclose(np.asarray(dp[model.layers[0].name][name]), np.asarray(g),
                                   rtol=1e-4, atol=1e-5)


# (layer, arguments, input shape, the argument nnrun names)
REFUSED = [
    ("Conv1D", {"filters": 2, "kernel_size": 2, "strides": 2, "dilation_rate": 2},
     (9, 3), "dilation_rate"),
    ("Conv2D", {"filters": 2, "kernel_size": 3, "strides": 2, "dilation_rate": 2},
     (9, 9, 3), "dilation_rate"),
    ("Conv2DTranspose", {"filters": 2, "kernel_size": 3, "strides": 2, "dilation_rate": 2},
     (5, 5, 3), "dilation_rate"),
    ("Conv2DTranspose", {"filters": 2, "kernel_size": 3, "strides": 2, "output_padding": 2},
     (5, 5, 3), "output_padding"),
    ("Conv1DTranspose", {"filters": 2, "kernel_size": 3, "output_padding": 1},
     (5, 3), "output_padding"),
    ("LeakyReLU", {"negative_slope": -0.1}, (4,), "negative_slope"),
    ("ReLU", {"threshold": -0.5}, (4,), "threshold"),
    ("ReLU", {"negative_slope": -1.0}, (4,), "negative_slope"),
    ("ReLU", {"max_value": -2.0}, (4,), "max_value"),
]
ACCEPTED = [
    ("Conv2D", {"filters": 2, "kernel_size": 3, "dilation_rate": 2}, (9, 9, 3)),
    ("Conv2DTranspose", {"filters": 2, "kernel_size": 3, "strides": 2, "output_padding": 1},
     (5, 5, 3)),
    ("LeakyReLU", {"negative_slope": 0.0}, (4,)),
    ("ReLU", {"threshold": 0.0, "negative_slope": 0.0, "max_value": 0.0}, (4,)),
    *((layer, kwargs, shape[1:]) for layer, kwargs, shape in STRIDED_DILATED),
]


def keras_refuses(layer, kwargs, shape) -> bool:
    try:
        getattr(keras.layers, layer)(**kwargs).compute_output_shape((2, *shape))
    except ValueError:
        return True
    return False


@pytest.mark.parametrize("layer, kwargs, shape, arg", REFUSED,
                         ids=[f"{c[0]}-{c[3]}" for c in REFUSED])
def test_what_keras_refuses_nnrun_refuses_at_the_argument(layer, kwargs, shape, arg):
    assert keras_refuses(layer, kwargs, shape)
    with pytest.raises(ConfigError) as err:   # by the spec, or when the layer is made
        build_model(spec_of([{layer: kwargs}], shape).model, where=format_path)
    assert f"model.layers[0].{layer}.{arg}: " in str(err.value)
    assert "Keras 3" in str(err.value)


@pytest.mark.parametrize("layer, kwargs, shape", ACCEPTED,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(ACCEPTED)])
def test_what_keras_accepts_nnrun_accepts(layer, kwargs, shape):
    assert not keras_refuses(layer, kwargs, shape)
    model = build_model(spec_of([{layer: kwargs}], shape).model)
    assert model.output_shape == tuple(
        getattr(keras.layers, layer)(**kwargs).compute_output_shape((2, *shape))[1:])


def test_check_reports_every_refused_argument_located(tmp_path):
    code, out = check(tmp_path, """\
        model:
          input_shape: [9, 9, 3]
          layers:
            - Conv2D: {filters: 2, kernel_size: 3, strides: 2, dilation_rate: 2}
            - Conv2DTranspose: {filters: 2, kernel_size: 3, strides: 2, output_padding: 2}
            - LeakyReLU: {alpha: -0.2}
            - ReLU: {threshold: -0.5}
        compile: {loss: mse}
        """)
    assert code == 2
    for line in ("4:71: model.layers[0].Conv2D.dilation_rate: strides > 1 is not supported "
                 "with dilation_rate > 1",
                 "5:81: model.layers[1].Conv2DTranspose.output_padding: output_padding must "
                 "be less than strides",
                 "6:26: model.layers[2].LeakyReLU.alpha: expected a number >= 0",
                 "7:25: model.layers[3].ReLU.threshold: expected a number >= 0"):
        assert line in out, out
