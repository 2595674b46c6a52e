"""Keras interop: nnrun -> Keras 3 model JSON -> keras builds it -> back to the same config;
Keras 1/2/3 files in, Lambda and custom layers refused, the CLI end to end."""

import contextlib
import copy
import inspect
import json
import zipfile
from pathlib import Path

import h5py
import jax
import keras
import numpy as np
import pytest
from click.testing import CliRunner

from nnrun import api
from nnrun.cli.main import main
from nnrun.config.errors import ConfigError
from nnrun.config.layer_schemas import LAYERS
from nnrun.config.spec import load_spec, spec_from_dict
from nnrun.keras.model_json import from_keras_json, to_keras_json
from nnrun.keras.names import (
    ACTIVATIONS,
    CONSTRAINTS,
    INITIALIZERS,
    OPTIMIZERS,
    REGULARIZERS,
    compile_from_keras,
    compile_to_keras,
)
from nnrun.nn.builder import build_model

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
DATA = Path(__file__).parent / "data"
LOSS = {"loss": "mse"}


def by_name(model: dict) -> dict:
    """A graph's layers in name order (Keras may list a graph's layers in another
    topological order; nnrun runs them in one anyway)."""
    model = copy.deepcopy(model)
    if "inputs" in model:
        model["layers"].sort(key=lambda item: next(iter(item.values()))["name"])
    return model


@contextlib.contextmanager
def shapes_only(enabled: bool = True):
    """Keras builds models without drawing initial weights (slow on the CPU): the
    parameter counts and to_json() need the shapes only."""
    if not enabled:
        yield
        return
    with keras.StatelessScope(initialize_variables=False):
        yield
    keras.backend.clear_session()   # forget the variables left uninitialized


def round_trip(spec) -> None:
    """Export, build in Keras (parameter counts agree), import both our JSON and Keras's
    own to_json() of the built model: each gives the same resolved model."""
    exported = to_keras_json(spec)
    del exported["compile_config"]   # Keras would build the optimizer too: time
    text = json.dumps(exported)
    with shapes_only('"stateful": true' not in text):   # a stateful RNN makes its states
        k = keras.models.model_from_json(text)
        count, rewritten = k.count_params(), json.loads(k.to_json())
    assert count == api.summary_dict(spec)["total_params"]
    for i, obj in enumerate((exported, rewritten)):
        back = spec_from_dict({"model": from_keras_json(obj), "compile": LOSS})
        want, got = spec.resolved["model"], back.resolved["model"]
        assert (got if i == 0 else by_name(got)) == (want if i == 0 else by_name(want))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_every_example_config_round_trips_through_keras(config):
    spec = load_spec(config)
    round_trip(spec)
    outputs = list(spec.model.outputs or ["output"])
    assert compile_from_keras(to_keras_json(spec)["compile_config"], outputs) == {
        k: v for k, v in spec.resolved["compile"].items() if v != []}


def test_keras_compiles_the_exported_model_with_its_compile_config():
    spec = load_spec(ROOT / "configs" / "two_outputs.yaml")
    k = keras.models.model_from_json(json.dumps(to_keras_json(spec)))
    assert k.compiled and isinstance(k.optimizer, keras.optimizers.Adam)
    assert float(k.optimizer.learning_rate) == pytest.approx(0.01)
    assert k.count_params() == 348


def test_compile_settings_with_parameters_round_trip_through_keras_objects():
    comp = {"optimizer": {"name": "adam", "learning_rate": 0.01, "clipnorm": 1.0},
            "loss": {"name": "binary_crossentropy", "from_logits": True},
            "metrics": ["accuracy", {"name": "top_k_categorical_accuracy", "k": 3}]}
    config = compile_to_keras(comp)
    optimizer = keras.saving.deserialize_keras_object(config["optimizer"])
    assert isinstance(optimizer, keras.optimizers.Adam) and optimizer.clipnorm == 1.0
    loss = keras.saving.deserialize_keras_object(config["loss"])
    assert isinstance(loss, keras.losses.BinaryCrossentropy) and loss.from_logits
    assert compile_from_keras(config, ["out"]) == comp
    keras_made = {"optimizer": keras.saving.serialize_keras_object(optimizer),
                  "loss": keras.saving.serialize_keras_object(loss), "metrics": ["accuracy"]}
    assert compile_from_keras(keras_made, ["out"]) == {**comp, "metrics": ["accuracy"]}


def seq(input_shape, *layers, **model):
    return spec_from_dict({"model": {"input_shape": input_shape, "layers": list(layers),
                                     **model}, "compile": LOSS, "fit": {"batch_size": 4}})


def graph(inputs, layers, outputs):
    return spec_from_dict({"model": {"inputs": inputs, "layers": layers, "outputs": outputs},
                           "compile": LOSS})


LAYER_CASES = [
    ([6], {"Dense": {"units": 4, "activation": "tanh", "use_bias": False,
                     "kernel_initializer": {"name": "variance_scaling", "scale": 2.0,
                                            "mode": "fan_out"},
                     "kernel_regularizer": {"name": "l1_l2", "l1": 0.01, "l2": 0.001},
                     "kernel_constraint": {"name": "max_norm", "max_value": 3.0},
                     "activity_regularizer": "l2"}}),
    ([6], {"Dense": {"units": 3, "activation": "softsign",
                     "bias_initializer": {"name": "constant", "value": 0.1},
                     "bias_regularizer": "l1", "bias_constraint": "non_neg",
                     "kernel_initializer": {"name": "uniform", "minval": -0.1, "seed": 3}}}),
    ([6], {"Activation": "gelu"}), ([6], {"Activation": "linear"}),
    ([6], {"Dropout": {"rate": 0.3, "noise_shape": [None, 1], "seed": 3}}),
    ([2, 3], {"Flatten": {}}),
    ([6], {"LeakyReLU": {"negative_slope": 0.1}}),
    ([4, 3], {"PReLU": {"alpha_initializer": "ones", "shared_axes": [1],
                        "alpha_regularizer": "l2"}}),
    ([6], {"ELU": {"alpha": 0.5}}),
    ([6], {"ReLU": {"max_value": 6.0, "negative_slope": 0.1, "threshold": 0.5}}),
    ([3, 4], {"Softmax": {"axis": 1}}),
    ([5], {"Embedding": {"input_dim": 10, "output_dim": 4, "mask_zero": True,
                         "embeddings_regularizer": "l2", "embeddings_constraint": "unit_norm"}}),
    ([5, 3], {"Masking": {"mask_value": -1.0}}),
    ([5, 2], {"SimpleRNN": {"units": 3, "activation": "relu", "return_sequences": True,
                            "go_backwards": True, "dropout": 0.1, "recurrent_dropout": 0.1}}),
    ([5, 2], {"LSTM": {"units": 3, "unit_forget_bias": False, "unroll": True,
                       "recurrent_activation": "hard_sigmoid", "recurrent_regularizer": "l2",
                       "recurrent_constraint": "max_norm"}}),
    ([5, 2], {"LSTM": {"units": 3, "stateful": True}}),
    ([5, 2], {"GRU": {"units": 3, "reset_after": False,
                      "recurrent_initializer": {"name": "orthogonal", "gain": 0.5}}}),
    ([8, 3], {"Conv1D": {"filters": 2, "kernel_size": 3, "padding": "causal",
                         "dilation_rate": 2}}),
    ([8, 8, 3], {"Conv2D": {"filters": 2, "kernel_size": [3, 2], "strides": 2,
                            "padding": "same", "use_bias": False}}),
    ([4, 4, 4, 1], {"Conv3D": {"filters": 2, "kernel_size": 2}}),
    ([5, 3], {"Conv1DTranspose": {"filters": 2, "kernel_size": 3, "strides": 2,
                                  "output_padding": 1}}),
    ([4, 4, 2], {"Conv2DTranspose": {"filters": 2, "kernel_size": 3, "strides": 2,
                                     "padding": "same"}}),
    ([3, 3, 3, 1], {"Conv3DTranspose": {"filters": 2, "kernel_size": 2}}),
    ([8, 3], {"DepthwiseConv1D": {"kernel_size": 3, "depth_multiplier": 2}}),
    ([6, 6, 3], {"DepthwiseConv2D": {"kernel_size": 3, "depth_multiplier": 2,
                                     "depthwise_regularizer": "l2"}}),
    ([8, 3], {"SeparableConv1D": {"filters": 4, "kernel_size": 3, "depth_multiplier": 2,
                                  "pointwise_initializer": "he_normal"}}),
    ([6, 6, 3], {"SeparableConv2D": {"filters": 4, "kernel_size": 3, "padding": "same"}}),
    ([8, 2], {"MaxPooling1D": {"pool_size": 3, "strides": 1}}),
    ([7, 2], {"AveragePooling1D": {"padding": "same"}}),
    ([6, 6, 1], {"MaxPooling2D": {"pool_size": [2, 3]}}),
    ([6, 6, 1], {"AveragePooling2D": {"strides": [1, 1]}}),
    ([5, 2], {"GlobalMaxPooling1D": {"keepdims": True}}),
    ([5, 2], {"GlobalAveragePooling1D": {}}),
    ([4, 4, 2], {"GlobalMaxPooling2D": {}}),
    ([4, 4, 2], {"GlobalAveragePooling2D": {"keepdims": True}}),
    ([4], {"BatchNormalization": {"momentum": 0.9, "epsilon": 0.01, "center": False,
                                  "gamma_regularizer": "l2"}}),
    ([3, 4], {"BatchNormalization": {"axis": 1, "moving_variance_initializer": "zeros"}}),
    ([3, 4], {"LayerNormalization": {"axis": [1, 2], "epsilon": 1e-5, "scale": False}}),
    ([4], {"GaussianNoise": {"stddev": 0.1, "seed": 2}}),
    ([4], {"GaussianDropout": {"rate": 0.2}}),
    ([4], {"AlphaDropout": {"rate": 0.1, "noise_shape": [None, 4]}}),
    ([5, 3], {"SpatialDropout1D": {"rate": 0.2}}),
    ([4, 4, 3], {"SpatialDropout2D": {"rate": 0.2}}),
    ([6], {"Reshape": {"target_shape": [3, -1]}}),
    ([3, 4], {"Permute": {"dims": [2, 1]}}),
    ([4], {"RepeatVector": {"n": 3}}),
    ([6, 2], {"Cropping1D": {"cropping": [1, 2]}}),
    ([5, 5, 1], {"Cropping2D": {"cropping": [[1, 0], [0, 2]]}}),
    ([4, 2], {"ZeroPadding1D": {"padding": 2}}),
    ([3, 3, 1], {"ZeroPadding2D": {"padding": [[1, 2], [0, 1]]}}),
    ([4, 2], {"UpSampling1D": {"size": 3}}),
    ([3, 3, 1], {"UpSampling2D": {"size": [2, 3], "interpolation": "bilinear"}}),
    ([5, 2], {"Bidirectional": {"layer": {"LSTM": {"units": 3, "return_sequences": True}},
                                "merge_mode": "sum"}}),
    ([5, 2], {"Bidirectional": {"layer": {"GRU": {"units": 2, "name": "gru_inner"}}}}),
    ([5, 2], {"TimeDistributed": {"layer": {"Dense": {"units": 3, "activation": "relu"}}}}),
    ([4, 6, 6, 1], {"TimeDistributed": {"layer": {"Conv2D": {"filters": 2, "kernel_size": 3}}}}),
    ([4], {"Sequential": {"name": "block", "layers": [{"Dense": 3}, {"Dropout": 0.1},
                                                      {"Dense": {"units": 2, "name": "d"}}]}}),
    ([4], {"Model": {"name": "tower", "graph": {
        "inputs": {"x": [4]}, "layers": [{"Dense": {"name": "h", "units": 3}}],
        "outputs": ["h"]}}}),
]


@pytest.mark.parametrize("input_shape, layer", LAYER_CASES,
                         ids=[next(iter(layer)) for _, layer in LAYER_CASES])
def test_each_layer_round_trips_through_keras(input_shape, layer):
    round_trip(seq(input_shape, layer))


def test_every_initializer_regularizer_constraint_and_activation_reaches_keras():
    """One Dense per identifier; Keras deserializes each to the class it names."""
    kinds = [("kernel_initializer", name) for name in INITIALIZERS] + [
        ("kernel_regularizer", name) for name in REGULARIZERS] + [
        ("kernel_constraint", name) for name in CONSTRAINTS] + [
        ("activation", name) for name in ACTIVATIONS]
    spec = seq([4], *({"Dense": {"units": 4, key: name}} for key, name in kinds))
    exported = to_keras_json(spec.resolved["model"])
    assert "compile_config" not in exported   # a model dict alone: no compile
    with shapes_only():
        k = keras.models.model_from_json(json.dumps(exported))
        for layer, (key, name) in zip(k.layers, kinds, strict=True):
            table = {"kernel_initializer": INITIALIZERS, "kernel_regularizer": REGULARIZERS,
                     "kernel_constraint": CONSTRAINTS}.get(key)
            if table:
                assert type(getattr(layer, key)).__name__ == table[name][0]
            else:   # Keras's own name, or the one it has for the same function
                assert keras.activations.get(name) is layer.activation


def test_every_nnrun_layer_type_is_exported_or_refused_by_name():
    covered = {next(iter(layer)) for _, layer in LAYER_CASES}
    merges = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
              "Dot", "Reuse"}
    refused = {"ThresholdedReLU", "ParametricSoftplus", "ThresholdedLinear"}
    assert set(LAYERS) == covered | merges | refused


@pytest.mark.parametrize("layer, kwargs", [
    ("Add", {}), ("Subtract", {}), ("Multiply", {}), ("Average", {}), ("Maximum", {}),
    ("Minimum", {}), ("Concatenate", {"axis": 1}), ("Dot", {"axes": 1, "normalize": True}),
    ("Dot", {"axes": [1, 1]})])
def test_merge_layers_round_trip(layer, kwargs):
    round_trip(graph({"a": [4], "b": [4]}, [
        {"Dense": {"name": "da", "units": 3, "inputs": "a"}},
        {"Dense": {"name": "db", "units": 3, "inputs": "b"}},
        {layer: {"name": "m", "inputs": ["da", "db"], **kwargs}}], ["m"]))


def test_shared_layers_and_nested_models_round_trip():
    """Reuse of a Dense, of a nested graph model (a tower) and of a merge layer; int32
    inputs; two outputs. Keras calls a shared layer again; the import names the later
    calls `<layer>_reuse`, `<layer>_reuse_2`."""
    tower = {"inputs": {"x": [4]}, "layers": [{"Dense": {"name": "h", "units": 3}},
                                              {"Dense": {"name": "o", "units": 2}}],
             "outputs": ["o"]}
    round_trip(graph({"a": [4], "b": [4], "c": [4], "ids": {"shape": [5], "dtype": "int32"}}, [
        {"Dense": {"name": "enc", "units": 4, "activation": "tanh", "inputs": "a"}},
        {"Reuse": {"name": "enc_reuse", "layer": "enc", "inputs": "b"}},
        {"Reuse": {"name": "enc_reuse_2", "layer": "enc", "inputs": "c"}},
        {"Model": {"name": "tower", "graph": tower, "inputs": "enc"}},
        {"Reuse": {"name": "tower_reuse", "layer": "tower", "inputs": "enc_reuse"}},
        {"Add": {"name": "sum", "inputs": ["tower", "tower_reuse"]}},
        {"Reuse": {"name": "sum_reuse", "layer": "sum", "inputs": ["sum", "tower"]}},
        {"Embedding": {"name": "emb", "input_dim": 9, "output_dim": 2, "inputs": "ids"}},
        {"Flatten": {"name": "flat"}},
        {"Concatenate": {"name": "out", "inputs": ["sum_reuse", "flat", "enc_reuse_2"]}}],
        ["out", "sum"]))


def test_a_stack_with_a_shared_layer_is_exported_as_a_functional_model():
    spec = seq([3], {"Dense": {"name": "d", "units": 3}}, {"Reuse": {"layer": "d"}})
    exported = to_keras_json(spec)
    assert exported["class_name"] == "Functional"
    k = keras.models.model_from_json(json.dumps(exported))
    assert k.count_params() == 12
    back = from_keras_json(exported)
    assert back["inputs"] == {"input_layer": [3]} and back["outputs"] == ["d_reuse"]


@pytest.mark.parametrize("layer, needle", [
    ({"ThresholdedReLU": {"theta": 0.5}}, "ThresholdedReLU has no Keras 3 class"),
    ({"ParametricSoftplus": {}}, "ParametricSoftplus has no Keras 3 class"),
    ({"ThresholdedLinear": {}}, "ThresholdedLinear has no Keras 3 class"),
    ({"Dense": {"units": 2, "activation": {"name": "elu", "alpha": 0.5}}},
     "Keras serializes an activation by name only"),
])
def test_layers_keras_3_cannot_express_are_named(layer, needle):
    with pytest.raises(ConfigError, match=needle) as info:
        to_keras_json(seq([4], {"Dense": 3}, layer))
    assert "model.layers[1]" in str(info.value)


# ---------------------------------------------------------------- Keras files in

def test_keras2_sequential_json():
    model = from_keras_json(json.loads((DATA / "keras2_sequential.json").read_text()))
    assert model == {"input_shape": [8], "layers": [
        {"Dense": {"name": "dense_1", "units": 16, "activation": "relu",
                   "kernel_regularizer": {"name": "l1_l2", "l2": 0.001},
                   "kernel_constraint": {"name": "max_norm", "max_value": 3}}},
        {"BatchNormalization": {"name": "batch_normalization_1", "axis": 1}},
        {"LeakyReLU": {"name": "leaky_re_lu_1", "negative_slope": 0.1}},
        {"Dropout": {"name": "dropout_1", "rate": 0.5}},
        {"Dense": {"name": "dense_2", "units": 3, "activation": "softmax"}}]}
    assert api.summary_dict(spec_from_dict({"model": model, "compile": LOSS}))[
        "total_params"] == 259


def test_keras2_functional_json_with_shared_layers():
    model = from_keras_json(json.loads((DATA / "keras2_functional.json").read_text()))
    ids = {"shape": [10], "dtype": "int32"}
    assert model == {"inputs": {"q": ids, "a": ids}, "layers": [
        {"Embedding": {"name": "embed", "input_dim": 100, "output_dim": 8, "inputs": ["q"]}},
        {"Reuse": {"name": "embed_reuse", "layer": "embed", "inputs": ["a"]}},
        {"Bidirectional": {"name": "encoder", "layer": {"LSTM": {"units": 4}},
                           "inputs": ["embed"]}},
        {"Reuse": {"name": "encoder_reuse", "layer": "encoder", "inputs": ["embed_reuse"]}},
        {"Concatenate": {"name": "merged", "inputs": ["encoder", "encoder_reuse"]}},
        {"Dense": {"name": "out", "units": 1, "activation": "sigmoid"}}], "outputs": ["out"]}
    spec = spec_from_dict({"model": model, "compile": LOSS})
    assert api.summary_dict(spec)["total_params"] == 800 + 2 * 4 * (8 + 4 + 1) * 4 + 17
    round_trip(spec)


def test_keras1_sequential_json():
    model = from_keras_json(json.loads((DATA / "keras1_sequential.json").read_text()))
    assert model == {"input_shape": [8, 8, 1], "layers": [
        {"Conv2D": {"name": "convolution2d_1", "filters": 4, "kernel_size": [3, 3],
                    "padding": "same", "activation": "relu"}},
        {"MaxPooling2D": {"name": "maxpooling2d_1"}}, {"Flatten": {"name": "flatten_1"}},
        {"Dropout": {"name": "dropout_1", "rate": 0.5}},
        {"Dense": {"name": "dense_1", "units": 3, "activation": "softmax"}}]}


def keras_params(k, params):
    """nnrun's params of Dense-only models, from the Keras model's layers by name."""
    out = {}
    for name, sub in params.items():
        layer = k.get_layer(name)
        out[name] = ({"kernel": layer.kernel.numpy(), "bias": layer.bias.numpy()}
                     if "kernel" in sub else keras_params(layer, sub))
    return out


def test_a_keras_3_functional_model_with_shared_and_nested_models_equals_nnrun():
    a, b = keras.Input((6,), name="a"), keras.Input((6,), name="b")
    shared = keras.layers.Dense(5, activation="tanh", name="shared")
    head = keras.Sequential([keras.Input((10,)), keras.layers.Dense(4, activation="relu"),
                             keras.layers.Dense(1)], name="head")
    ti = keras.Input((5,), name="ti")
    tower = keras.Model(ti, keras.layers.Dense(3, name="td")(ti), name="tower")
    both = keras.layers.Concatenate(name="both")([shared(a), shared(b)])
    side = keras.layers.Add(name="side")([tower(shared(a)), tower(shared(b))])
    k = keras.Model([a, b], [head(both), side], name="m")
    model = from_keras_json(json.loads(k.to_json()))
    ours = build_model(spec_from_dict({"model": model, "compile": LOSS}).model)
    params, _ = ours.init(jax.random.key(0))
    assert sum(t for t, _ in ours.count_params().values()) == k.count_params()
    rng = np.random.default_rng(0)
    x = {"a": rng.normal(size=(4, 6)).astype(np.float32),
         "b": rng.normal(size=(4, 6)).astype(np.float32)}
    got, _ = ours.apply(keras_params(k, params), {}, x)
    for g, w in zip(got, k([x["a"], x["b"]]), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-6)


def test_a_keras_3_sequential_model_imports_with_its_parameter_count():
    with shapes_only():
        k = keras_cnn()
        count, obj = k.count_params(), json.loads(k.to_json())
    model = from_keras_json(obj)
    assert model["layers"][0]["Conv2D"]["kernel_regularizer"] == {"name": "l2", "l2": 1e-4}
    assert model["layers"][0]["Conv2D"]["kernel_initializer"] == {"name": "he_normal", "seed": 1}
    spec = spec_from_dict({"model": model, "compile": LOSS})
    assert api.summary_dict(spec)["total_params"] == count


def keras_cnn():
    return keras.Sequential([
        keras.Input((12, 12, 3)),
        keras.layers.Conv2D(8, 3, activation="relu", kernel_regularizer=keras.regularizers.L2(
            1e-4), kernel_initializer=keras.initializers.HeNormal(seed=1)),
        keras.layers.BatchNormalization(), keras.layers.MaxPooling2D(),
        keras.layers.SeparableConv2D(8, 3, padding="same"),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dropout(0.25),
        keras.layers.Dense(4, activation="softmax",
                           kernel_constraint=keras.constraints.MaxNorm(2.5))])


def lambda_model_json() -> dict:
    with shapes_only():
        k = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
                              keras.layers.Lambda(lambda x: x * 2)])
        return json.loads(k.to_json())


@pytest.mark.parametrize("mutate, needle", [
    (lambda m: m, "config.layers[2]: layer 'lambda"),
    (lambda m: m["config"]["layers"][1].update(module="my_pkg.layers", class_name="MyDense",
                                                registered_name="my_pkg>MyDense"),
     "config.layers[1]: layer 'dense"),
    (lambda m: m["config"]["layers"][1].update(class_name="MultiHeadAttention"),
     "unknown layer type 'MultiHeadAttention'"),
    (lambda m: m["config"]["layers"][1]["config"].update(kernel_initializer={
        "module": "my_pkg", "class_name": "Mine", "config": {}}),
     "config.layers[1].config.kernel_initializer: Dense: initializer 'Mine' is a custom"),
    (lambda m: m["config"]["layers"][1]["config"].update(lora_rank=4),
     "nnrun's Dense has no argument 'lora_rank'"),
])
def test_code_custom_and_unknown_layers_are_refused_by_location(mutate, needle):
    obj = lambda_model_json()
    mutate(obj)
    with pytest.raises(ConfigError) as info:
        from_keras_json(obj, source="m.json")
    assert needle in str(info.value) and str(info.value).startswith("m.json: config.layers[")


@pytest.mark.parametrize("arg, value, needle", [
    ("data_format", "channels_first", "channels_last"), ("groups", 2, "groups=2"),
    ("dilation_rate", [1, None], "dilation_rate")])
def test_keras_arguments_nnrun_cannot_honour_are_errors(arg, value, needle):
    with shapes_only():
        obj = json.loads(keras.Sequential([keras.Input((6, 6, 4)),
                                           keras.layers.Conv2D(4, 3)]).to_json())
    obj["config"]["layers"][1]["config"][arg] = value
    with pytest.raises(ConfigError, match=needle) as info:
        from_keras_json(obj)
    assert str(info.value).startswith(f"config.layers[1].config.{arg}: Conv2D: ")


def test_graph_features_nnrun_lacks_are_errors():
    with shapes_only():
        x = keras.Input((5, 2))
        _, h, _ = keras.layers.LSTM(3, return_state=True)(x)
        states = json.loads(keras.Model(x, keras.layers.Dense(1)(h)).to_json())
        x = keras.Input((None, 2))
        variable = json.loads(keras.Model(x, keras.layers.LSTM(2)(x)).to_json())
    with pytest.raises(ConfigError, match="one output per layer"):
        from_keras_json(states)
    with pytest.raises(ConfigError, match="variable dimension"):
        from_keras_json(variable)


def test_registry_tables_match_nnrun():
    from nnrun.nn import activations, initializers, regularizers
    from nnrun.nn.optimizer_rules import OPTIMIZERS as RULES

    def defaults(fn):
        return {n: p.default for n, p in inspect.signature(fn).parameters.items()}

    for table, registry in ((INITIALIZERS, initializers.INITIALIZERS),
                            (REGULARIZERS, regularizers.REGULARIZERS),
                            (CONSTRAINTS, regularizers.CONSTRAINTS)):
        assert set(table) == set(registry.names())
        for name, (cls, params) in table.items():
            assert registry.canonical(cls) == name and defaults(registry.get(name)) == params
    assert set(ACTIVATIONS) == set(activations.ACTIVATIONS.names(aliases=True))
    assert {n: d for n, (_, d) in OPTIMIZERS.items()} == {
        n: RULES.get(n).defaults for n in RULES.names()}
    for name in ACTIVATIONS:
        keras.activations.get(name)


# ---------------------------------------------------------------- the CLI

def run(*args):
    result = CliRunner().invoke(main, [*map(str, args)])
    assert "Traceback" not in result.output
    return result


def test_cli_export_then_import_keras_round_trips(tmp_path):
    config = ROOT / "configs" / "two_outputs.yaml"
    out = tmp_path / "m.json"
    result = run("export", config, "--format", "keras-json", "-o", out)
    assert result.exit_code == 0 and "wrote" in result.output
    assert keras.models.model_from_json(out.read_text()).count_params() == 348
    assert json.loads(run("export", config).output) == json.loads(out.read_text())
    result = run("import-keras", out, "-o", tmp_path / "m.yaml")
    assert result.exit_code == 0, result.output
    text = (tmp_path / "m.yaml").read_text()
    assert text.startswith("# Imported from") and "# data:" in text
    back = load_spec(tmp_path / "m.yaml")
    original = load_spec(config)
    assert back.resolved["model"] == original.resolved["model"]
    assert back.resolved["compile"] == original.resolved["compile"]
    assert run("check", tmp_path / "m.yaml").exit_code == 0


def test_cli_exports_a_run_directory(tmp_path):
    run_dir = tmp_path / "runs" / "x-20240101-000000"
    run_dir.mkdir(parents=True)
    spec = load_spec(ROOT / "configs" / "mlp.yaml")
    resolved = copy.deepcopy(spec.resolved)
    del resolved["model"]["input_shape"]   # as when the data gave the shape
    (run_dir / "config.yaml").write_text(json.dumps(resolved))
    (run_dir / "model.json").write_text(json.dumps({"model": spec.resolved["model"]}))
    result = run("export", run_dir, "--json", "-o", tmp_path / "k.json")
    assert result.exit_code == 0 and json.loads(result.output)["format"] == "keras-json"
    k = keras.models.model_from_json((tmp_path / "k.json").read_text())
    assert k.count_params() == 21


def test_cli_imports_a_keras_file_with_its_compile_config(tmp_path):
    k = keras.Sequential([keras.Input((3,)),
                          keras.layers.Dense(2, activation="softmax", name="dense")])
    k.compile(optimizer=keras.optimizers.Adam(0.01), loss="categorical_crossentropy",
              metrics=["mae", keras.metrics.AUC()])
    k.save(tmp_path / "m.keras")
    result = run("import-keras", tmp_path / "m.keras", "--json")
    assert result.exit_code == 0, result.output
    config = json.loads(result.output)
    assert config["compile"] == {"optimizer": {"name": "adam", "learning_rate": 0.01},
                                 "loss": "categorical_crossentropy", "metrics": ["mae"]}
    assert config["model"] == {"input_shape": [3], "layers": [
        {"Dense": {"units": 2, "activation": "softmax"}}]}
    text = run("import-keras", tmp_path / "m.keras").output
    assert "# Keras metrics nnrun does not have were left out:" in text


def test_cli_imports_a_keras2_h5_file_and_writes_a_model_file(tmp_path):
    training = {"loss": "categorical_crossentropy", "metrics": [[{
        "class_name": "MeanMetricWrapper",
        "config": {"name": "accuracy", "dtype": "float32", "fn": "categorical_accuracy"}}]],
        "loss_weights": None, "optimizer_config": {"class_name": "Adam", "config": {
            "name": "Adam", "learning_rate": 0.0020000000949949026, "decay": 0.0,
            "beta_1": 0.8999999761581421, "beta_2": 0.9990000128746033, "epsilon": 1e-07,
            "amsgrad": False}}}
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f.attrs["model_config"] = (DATA / "keras2_sequential.json").read_text()
        f.attrs["training_config"] = json.dumps(training)
    result = run("import-keras", tmp_path / "m.h5", "--json")
    assert json.loads(result.output)["compile"] == {
        "optimizer": {"name": "adam", "learning_rate": 0.002},
        "loss": "categorical_crossentropy", "metrics": ["accuracy"]}
    result = run("import-keras", tmp_path / "m.h5", "--model-only", "-o", tmp_path / "arch.yaml")
    assert result.exit_code == 0, result.output
    (tmp_path / "c.yaml").write_text("model: arch.yaml\ncompile: {loss: mse}\n")
    assert "Total params: 259" in run("summary", tmp_path / "c.yaml").output


def test_cli_refuses_lambda_and_bad_files_with_exit_2(tmp_path):
    (tmp_path / "l.json").write_text(json.dumps(lambda_model_json()))
    result = run("import-keras", tmp_path / "l.json")
    assert result.exit_code == 2
    assert "l.json: config.layers[2]: layer 'lambda" in result.output
    assert "holds Python code, which nnrun never runs" in result.output
    (tmp_path / "bad.json").write_text('{"class_name": "Sequential",\n "config": [}')
    result = run("import-keras", tmp_path / "bad.json")
    assert result.exit_code == 2 and "bad.json:2:" in result.output
    with zipfile.ZipFile(tmp_path / "z.keras", "w") as z:
        z.writestr("weights.h5", b"")
    assert run("import-keras", tmp_path / "z.keras").exit_code == 2
    (tmp_path / "n.json").write_text(json.dumps({"model": {"layers": []}}))
    result = run("import-keras", tmp_path / "n.json")
    assert result.exit_code == 2 and "nnrun's own architecture file" in result.output
