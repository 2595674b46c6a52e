"""The layers' pure-Python shape rules (what `nnrun check` and summary use) against
their init: for every example config and a broad table of layer cases, the output
shapes, the weights' shapes and the parameter counts the rules give equal those of an
abstract trace of `init`. And `nnrun check` imports neither jax nor optax."""

import math
import subprocess
import sys
from pathlib import Path

import jax
import pytest
from test_layers import GRAD_CASES, KERAS_CASES

from nnrun.config.errors import NnrunError
from nnrun.config.spec import load_spec, spec_from_dict
from nnrun.nn.builder import build_model
from nnrun.nn.layers import LAYER_TYPES
from nnrun.nn.trees import shape_tree

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def _count(tree) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree))


def assert_rules_equal_init(model) -> None:
    shapes: dict = {}
    params, state = jax.eval_shape(lambda k: model._init(k, shapes), jax.random.key(0))
    assert model.node_shapes == shapes
    assert model.output_shapes == [shapes[n] for n in model.output_names]
    assert shape_tree(model.weight_shapes) == shape_tree((params, state))
    assert model.count_params() == {
        layer.name: (_count(params.get(layer.name, {})),
                     _count(layer.counted_state(state.get(layer.name, {}))))
        for layer in model.layers}
    model.param_shapes()   # the same comparison, as training makes it


def seq(layers: list, input_shape, **model) -> dict:
    return {"model": {"input_shape": list(input_shape), "layers": layers, **model},
            "compile": {"loss": "mse"}}


def graph(inputs: dict, layers: list, outputs: list) -> dict:
    return {"model": {"inputs": inputs, "layers": layers, "outputs": outputs},
            "compile": {"loss": "mse"}}


def conv(type_: str, shape, **args) -> dict:
    return seq([{type_: args}], shape)


TOWER = {"inputs": {"x": [8], "z": [2]}, "layers": [
    {"Dense": {"name": "h", "units": 4, "activation": "relu", "inputs": "x"}},
    {"Concatenate": {"name": "hz", "inputs": ["h", "z"]}},
    {"BatchNormalization": {"name": "bn"}},
    {"Dense": {"name": "o", "units": 3}}], "outputs": ["o"]}

CASES = {
    "dense-rank3": seq([{"Dense": {"units": 4}}, {"Dense": {"units": 2, "use_bias": False}}],
                       [5, 3]),
    "dropout-noise-shape": seq([{"Dropout": {"rate": 0.5, "noise_shape": [None, 1, 4]}},
                                {"Flatten": {}}], [6, 4]),
    "embedding-mask-lstm": seq([{"Embedding": {"input_dim": 9, "output_dim": 4,
                                               "mask_zero": True}},
                                {"LSTM": {"units": 3, "return_sequences": True}},
                                {"GlobalAveragePooling1D": {}}], [7], input_dtype="int32"),
    "masking-gru": seq([{"Masking": {"mask_value": -1.0}},
                        {"GRU": {"units": 3, "reset_after": False}}], [5, 2]),
    "recurrent": seq([{"SimpleRNN": {"units": 4, "return_sequences": True}},
                      {"GRU": {"units": 3, "use_bias": False, "return_sequences": True}},
                      {"LSTM": {"units": 2, "unit_forget_bias": False}}], [6, 3]),
    "stateful": seq([{"LSTM": {"units": 3, "stateful": True, "return_sequences": True}},
                     {"GRU": {"units": 2, "stateful": True}}], [5, 2]),
    "bidirectional": seq([{"Bidirectional": {"layer": {"LSTM": {"units": 3,
                                                                "return_sequences": True}}}},
                          {"Bidirectional": {"layer": {"GRU": {"units": 2}},
                                             "merge_mode": "sum"}}], [5, 2]),
    "time-distributed": seq([{"TimeDistributed": {"layer": {"Conv2D": {"filters": 2,
                                                                       "kernel_size": 3}}}},
                             {"TimeDistributed": {"layer": {"Flatten": {}}}},
                             {"TimeDistributed": {"layer": {"Dense": 3}}},
                             {"TimeDistributed": {"layer": {"BatchNormalization": {}}}}],
                            [4, 6, 6, 1]),
    "conv1d-valid-dilated": conv("Conv1D", [12, 3], filters=4, kernel_size=3, dilation_rate=2),
    "conv1d-same-strided": conv("Conv1D", [9, 3], filters=4, kernel_size=3, strides=2,
                                padding="same"),
    "conv1d-causal": conv("Conv1D", [9, 3], filters=2, kernel_size=4, padding="causal"),
    "conv2d-same-strided": conv("Conv2D", [7, 8, 3], filters=5, kernel_size=[3, 2],
                                strides=[2, 3], padding="same"),
    "conv3d": conv("Conv3D", [5, 5, 4, 2], filters=3, kernel_size=[3, 2, 2], strides=2,
                   padding="same", use_bias=False),
    "conv1d-transpose": conv("Conv1DTranspose", [5, 3], filters=2, kernel_size=4, strides=2,
                             padding="same"),
    "conv2d-transpose-output-padding": conv("Conv2DTranspose", [4, 5, 2], filters=3,
                                            kernel_size=3, strides=2, output_padding=1),
    "conv2d-transpose-same-output-padding": conv("Conv2DTranspose", [4, 5, 2], filters=3,
                                                 kernel_size=3, strides=2, padding="same",
                                                 output_padding=0),
    "conv2d-transpose-dilated": conv("Conv2DTranspose", [4, 5, 2], filters=2, kernel_size=3,
                                     dilation_rate=2),
    "conv3d-transpose": conv("Conv3DTranspose", [3, 2, 3, 2], filters=2, kernel_size=2,
                             strides=2),
    "depthwise": seq([{"DepthwiseConv1D": {"kernel_size": 3, "depth_multiplier": 2}},
                      {"Reshape": [7, 2, 3]},
                      {"DepthwiseConv2D": {"kernel_size": 2, "strides": 2, "padding": "same",
                                           "use_bias": False}}], [9, 3]),
    "separable": seq([{"SeparableConv1D": {"filters": 4, "kernel_size": 2,
                                           "depth_multiplier": 3}}], [6, 3]),
    "separable2d": conv("SeparableConv2D", [6, 7, 3], filters=4, kernel_size=3,
                        padding="same", strides=2),
    "pooling": seq([{"MaxPooling2D": {"pool_size": 3, "strides": 2, "padding": "same"}},
                    {"AveragePooling2D": {"pool_size": [2, 1], "padding": "same"}},
                    {"MaxPooling2D": {}},
                    {"GlobalMaxPooling2D": {"keepdims": True}}], [13, 9, 3]),
    "pooling1d": seq([{"MaxPooling1D": {"pool_size": 3, "strides": 2, "padding": "same"}},
                      {"AveragePooling1D": {"pool_size": 2}},
                      {"GlobalAveragePooling1D": {"keepdims": True}},
                      {"GlobalMaxPooling1D": {}}], [11, 3]),
    "global2d": conv("GlobalAveragePooling2D", [5, 4, 3]),
    "spatial-2d": seq([{"Cropping2D": {"cropping": [[1, 0], [2, 1]]}},
                       {"ZeroPadding2D": {"padding": [[1, 0], [2, 1]]}},
                       {"UpSampling2D": {"size": [2, 3]}},
                       {"SpatialDropout2D": {"rate": 0.3}}], [6, 7, 3]),
    "spatial-1d": seq([{"Cropping1D": {"cropping": [1, 2]}}, {"ZeroPadding1D": {"padding": 2}},
                       {"UpSampling1D": {"size": 3}}, {"SpatialDropout1D": {"rate": 0.3}}],
                      [7, 3]),
    "reshape-permute-repeat": seq([{"Reshape": {"target_shape": [2, -1]}},
                                   {"Permute": {"dims": [2, 1]}}, {"Flatten": {}},
                                   {"RepeatVector": {"n": 3}}], [3, 4]),
    "activations": seq([{"LeakyReLU": {}}, {"PReLU": {"shared_axes": [1]}}, {"ELU": {}},
                        {"ThresholdedReLU": {"theta": 0.5}}, {"ThresholdedLinear": {}},
                        {"ReLU": {"max_value": 6.0}}, {"Softmax": {"axis": 1}},
                        {"ParametricSoftplus": {}}, {"Activation": "tanh"}], [3, 5]),
    "normalization": seq([{"LayerNormalization": {"axis": [1, 2], "center": False}},
                          {"LayerNormalization": {"axis": 1, "scale": False}},
                          {"BatchNormalization": {"axis": 1, "scale": False}},
                          {"BatchNormalization": {"center": False}}], [3, 4, 5]),
    "noise": seq([{"GaussianNoise": {"stddev": 0.1}}, {"GaussianDropout": {"rate": 0.2}},
                  {"AlphaDropout": {"rate": 0.2}}], [5]),
    "nested-sequential": seq([{"Sequential": {"name": "encoder", "layers": [
        {"Dense": {"units": 16, "activation": "relu"}}, {"BatchNormalization": {}},
        {"Sequential": {"name": "inner", "layers": [{"Dense": 8}, {"Dropout": 0.1}]}}]}},
        {"Sequential": {"name": "decoder", "layers": [{"Dense": 32}]}}], [32]),
    "merges": graph({"a": [4, 5], "b": [1, 5], "c": [4, 5]}, [
        {"Add": {"name": "add", "inputs": ["a", "b", "c"]}},
        {"Subtract": {"name": "sub", "inputs": ["a", "c"]}},
        {"Multiply": {"name": "mul", "inputs": ["add", "sub"]}},
        {"Average": {"name": "avg", "inputs": ["mul", "b"]}},
        {"Maximum": {"name": "max", "inputs": ["avg", "a"]}},
        {"Minimum": {"name": "min", "inputs": ["max", "c"]}},
        {"Concatenate": {"name": "cat", "inputs": ["min", "a"], "axis": 1}},
        {"Dot": {"name": "dot", "inputs": ["cat", "a"], "axes": [2, 2], "normalize": True}},
        {"Dot": {"name": "dot1", "inputs": ["sub", "add"], "axes": 1}}], ["dot", "dot1"]),
    "siamese": graph({"a": [6], "b": [6]}, [
        {"Dense": {"name": "enc", "units": 4, "inputs": "a"}},
        {"Reuse": {"layer": "enc", "name": "enc_b", "inputs": "b"}},
        {"Concatenate": {"name": "both", "inputs": ["enc", "enc_b"]}},
        {"Sequential": {"name": "head", "layers": [{"Dense": 3}, {"Dense": 1}]}},
        {"Dense": {"name": "side", "units": 2, "inputs": "both"}}], ["head", "side"]),
    "tower": graph({"left": [8], "right": [8], "extra": [2]}, [
        {"Model": {"name": "tower", "graph": TOWER, "inputs": ["left", "extra"]}},
        {"Reuse": {"layer": "tower", "name": "tower_r", "inputs": ["right", "extra"]}},
        {"Add": {"name": "sum", "inputs": ["tower", "tower_r"]}}], ["sum"]),
    "one-input-tower": graph({"x": [8]}, [
        {"Model": {"name": "t", "graph": {"inputs": {"y": [8]}, "layers": [
            {"Dense": {"name": "d", "units": 2, "inputs": "y"}}], "outputs": ["d"]},
            "inputs": "x"}}], ["t"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_shape_rules_equal_init(name):
    spec = spec_from_dict(CASES[name])
    assert_rules_equal_init(build_model(spec.model, batch_size=4))


@pytest.mark.parametrize("layer, kwargs, shape", KERAS_CASES + [
    (next(iter(layers[0])), layers[0][next(iter(layers[0]))], shape)
    for layers, shape in GRAD_CASES if len(layers) == 1])
def test_shape_rules_of_the_layer_test_cases(layer, kwargs, shape):
    spec = spec_from_dict(seq([{layer: kwargs}], shape[1:],
                              **({"input_dtype": "int32"} if layer == "Embedding" else {})))
    assert_rules_equal_init(build_model(spec.model))


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_shape_rules_of_the_example_configs(config):
    spec = load_spec(config)
    assert spec.model.input_shape is not None or spec.model.is_graph
    assert_rules_equal_init(build_model(spec.model, where=spec.where,
                                        batch_size=spec.fit.batch_size))


def _layer_types(value) -> set[str]:
    """Every layer type named anywhere in a config (nested and wrapped layers too)."""
    found = set()
    if isinstance(value, dict):
        found |= {k for k in value if k in LAYER_TYPES}
        for v in value.values():
            found |= _layer_types(v)
    elif isinstance(value, list):
        for v in value:
            found |= _layer_types(v)
    return found


def test_every_layer_type_has_a_shape_rule_case():
    covered = _layer_types(list(CASES.values()))
    covered |= {layer for layer, _, _ in KERAS_CASES}
    assert set(LAYER_TYPES.names()) - covered == set()


def test_a_rule_that_disagrees_with_init_is_reported_before_training(monkeypatch):
    from nnrun.nn.layers.core import Dense

    monkeypatch.setattr(Dense, "param_shapes", lambda self, shape: ({"kernel": (2, 7)}, {}))
    model = build_model(spec_from_dict(seq([{"Dense": 3}], [2])).model)
    assert model.count_params() == {"dense": (14, 0)}
    with pytest.raises(NnrunError, match=r"internal error: layer 'dense'.s params by its "
                                         r"shape rules are \{'kernel': \(2, 7\)\}, by its "
                                         r"init \{'bias': \(3,\), 'kernel': \(2, 3\)\}"):
        model.param_shapes()


TYPO = """\
model:
  input_shape: [8, 8, 1]
  layers: [{Conv2D: {filters: 4, kernel_size: 3, activaton: relu}}, {Flatten: {}},
           {Dense: {units: 3, activation: sofmax}}]
compile: {optimizer: adamm, loss: categorical_crossentropy, metrics: [acc]}
"""


def test_check_imports_neither_jax_nor_optax(tmp_path):
    """`nnrun check` resolves every name and infers every shape in pure Python: on the
    example configs, and on a config with mistakes (every problem still reported)."""
    typo = tmp_path / "typo.yaml"
    typo.write_text(TYPO)
    configs = [str(c.relative_to(ROOT)) for c in CONFIGS]
    code = f"""
import sys
from click.testing import CliRunner
from nnrun.cli.main import main
ok = CliRunner().invoke(main, ['check', *{configs!r}])
assert ok.exit_code == 0, ok.output
assert ok.output.count(': ok (') == {len(configs)}, ok.output
bad = CliRunner().invoke(main, ['check', {str(typo)!r}])
assert bad.exit_code == 2, bad.output
assert '3 problem(s)' in bad.output and 'adamm' in bad.output, bad.output
loaded = {{'jax', 'jaxlib', 'optax'}} & set(sys.modules)
assert not loaded, loaded
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
