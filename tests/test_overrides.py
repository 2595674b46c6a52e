"""`--set` paths (nnrun/config/overrides.py): list items by index or by their layer's
name (explicit or automatic), the layer class left out, shorthands gone into, and the
errors, located at the --set. No training."""

from __future__ import annotations

import copy

import pytest
import yaml

from nnrun.config.errors import ConfigError
from nnrun.config.overrides import apply_override, parse_override_path, resolve_path
from nnrun.config.spec import load_spec
from nnrun.config.yamlsrc import LayerName, Origins, format_path

CONFIG = """\
name: t
data:
  train: {builtin: xor, samples: 100}
model:
  layers:
    - Dense: {units: 5, input_dim: 2, activation: relu, name: hidden}
    - Dropout: 0.1
    - Dense: {units: 4}
    - Activation: relu
    - Dense: 1
compile:
  loss: mse
  optimizer: adam
"""

GRAPH = """\
name: g
model:
  inputs: {left: [4], right: [4]}
  layers:
    - Dense: {units: 8, name: l, inputs: left}
    - Dense: {units: 8, name: r, inputs: right}
    - Concatenate: {inputs: [l, r]}
    - Sequential:
        name: head
        inputs: concatenate
        layers: [{Dense: 6}, {Dense: {units: 1, name: out}}]
  outputs: [head]
compile: {loss: mse}
"""


def load(tmp_path, *sets, text=CONFIG):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_spec(path, list(sets))


def units(spec, i):
    return spec.model.layers[i].args["units"]


def test_a_bracketed_name_parses_as_a_layer_name_and_formats_back():
    path = parse_override_path("model.layers[hidden].Dense.units")
    assert path == ("model", "layers", LayerName("hidden"), "Dense", "units")
    assert format_path(path) == "model.layers[hidden].Dense.units"
    assert parse_override_path("model.layers[ 2 ].units") == ("model", "layers", 2, "units")
    for bad in ("model.layers[].units", "model.layers[-1].units", "a..b", "a[0]b"):
        with pytest.raises(ConfigError, match="cannot parse override path"):
            parse_override_path(bad)


def test_by_index_by_explicit_name_and_with_the_class_left_out(tmp_path):
    assert units(load(tmp_path, "model.layers[0].Dense.units=32"), 0) == 32
    assert units(load(tmp_path, "model.layers[hidden].Dense.units=33"), 0) == 33
    spec = load(tmp_path, "model.layers[hidden].units=34")
    assert units(spec, 0) == 34 and spec.model.layers[0].name == "hidden"
    assert spec.origins.value(("model", "layers", 0, "Dense", "units")).startswith("--set")


def test_automatic_names_as_validation_gives_them(tmp_path):
    spec = load(tmp_path)
    assert [x.name for x in spec.model.layers] == [
        "hidden", "dropout", "dense", "activation", "dense_1"]
    spec = load(tmp_path, "model.layers[dense].units=7", "model.layers[dense_1].units=2")
    assert (units(spec, 2), units(spec, 4)) == (7, 2)
    # a scalar shorthand (`Dropout: 0.1`, `Activation: relu`) is gone into as its mapping
    spec = load(tmp_path, "model.layers[dropout].rate=0.3",
                "model.layers[activation].activation=tanh")
    assert spec.model.layers[1].args["rate"] == 0.3
    assert spec.model.layers[3].args["activation"] == "tanh"
    # and the item itself can be replaced by name
    spec = load(tmp_path, "model.layers[dense]={Dense: {units: 9, name: middle}}")
    assert spec.model.layers[2].name == "middle" and units(spec, 2) == 9


def test_an_optimizer_given_by_name_takes_parameters(tmp_path):
    spec = load(tmp_path, "compile.optimizer.learning_rate=0.01")
    assert spec.compile.optimizer == {"name": "adam", "learning_rate": 0.01}


def test_unknown_name_is_located_at_the_set_and_lists_the_names(tmp_path):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, "model.layers[hiden].units=3")
    assert err.value.where == "--set model.layers[hiden].units=3"
    assert err.value.message == (
        "model.layers: unknown layer name 'hiden' (did you mean 'hidden' or 'dense'?); "
        "allowed: activation, dense, dense_1, dropout, hidden")
    with pytest.raises(ConfigError, match=r"model.layers\[9\]: no such list item"):
        load(tmp_path, "model.layers[9].Dense.units=3")
    with pytest.raises(ConfigError, match="compile is not a list of layers"):
        load(tmp_path, "compile[adam].x=3")


def test_a_name_used_twice_asks_for_the_index(tmp_path):
    text = CONFIG.replace("{units: 4}", "{units: 4, name: hidden}")
    with pytest.raises(ConfigError, match=r"'hidden' is used more than once \(items 0, 2\)"):
        load(tmp_path, "model.layers[hidden].units=3", text=text)


def test_names_inside_a_graph_model_and_a_nested_model(tmp_path):
    spec = load(tmp_path, "model.layers[r].units=3", "model.layers[head].layers[out].units=2",
                "model.layers[head].layers[dense].units=5", text=GRAPH)
    assert units(spec, 1) == 3 and units(spec, 0) == 8
    inner = spec.model.layers[3].args["layers"]
    assert (inner[0].args["units"], inner[1].args["units"]) == (5, 2)
    with pytest.raises(ConfigError) as err:
        load(tmp_path, "model.layers[head].layers[outt].units=2", text=GRAPH)
    assert "model.layers[3].Sequential.layers: unknown layer name 'outt' (did you mean " \
           "'out'?); allowed: dense, out" == err.value.message


def test_resolve_path_turns_names_into_indices_and_changes_nothing(tmp_path):
    raw = yaml.safe_load(CONFIG)
    before = copy.deepcopy(raw)
    assert resolve_path(raw, "model.layers[hidden].units") == (
        "model", "layers", 0, "Dense", "units")
    assert resolve_path(raw, ("model", "layers", LayerName("dense_1"))) == ("model", "layers", 4)
    assert resolve_path(raw, "model.layers[dropout].rate") == (
        "model", "layers", 1, "Dropout", "rate")
    assert resolve_path(raw, "compile.optimizer.learning_rate") == (
        "compile", "optimizer", "learning_rate")
    assert resolve_path(raw, "fit.callbacks") == ("fit", "callbacks")   # a new key
    assert raw == before
    with pytest.raises(ConfigError) as err:
        resolve_path(raw, "model.layers[nope].units", where="here")
    assert err.value.where == "here" and "unknown layer name 'nope'" in err.value.message


def test_apply_override_keeps_the_origins_of_a_shorthand(tmp_path):
    raw = {"model": {"layers": [{"Dense": 3}, "Flatten"]}}
    origins = Origins()
    origins.values[("model", "layers", 0, "Dense")] = "c.yaml:3:14"
    apply_override(raw, "model.layers[dense].use_bias=false", origins)
    apply_override(raw, "model.layers[flatten].data_format=channels_last", origins)
    assert raw["model"]["layers"] == [{"Dense": {"units": 3, "use_bias": False}},
                                      {"Flatten": {"data_format": "channels_last"}}]
    assert origins.value(("model", "layers", 0, "Dense", "units")) == "c.yaml:3:14"
