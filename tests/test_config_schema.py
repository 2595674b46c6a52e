"""`nnrun schema`: a valid draft-07 JSON Schema that accepts what `nnrun check` accepts
(every example config, Keras 1 names, interpolation) and flags the usual mistakes."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from nnrun.cli.config_cmds import config_schema as build_schema
from nnrun.cli.main import main
from nnrun.config.layer_schemas import LAYERS, TYPE_ALIASES
from nnrun.config.spec import load_spec
from nnrun.config.yamlsrc import Origins, parse_yaml

ROOT = Path(__file__).parent.parent
EXAMPLES = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = build_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def errors(validator, text: str) -> list[str]:
    value = parse_yaml(textwrap.dedent(text), "<test>", Origins())
    return [".".join(map(str, e.absolute_path)) for e in validator.iter_errors(value)]


def test_the_shipped_schema_is_up_to_date():
    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0
    shipped = (ROOT / "schema" / "config.schema.json").read_text()
    assert json.loads(result.output) == json.loads(shipped), \
        "run: nnrun schema -o schema/config.schema.json"


@pytest.mark.parametrize("config", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_config_is_valid(validator, config):
    assert errors(validator, config.read_text()) == []


def test_every_layer_type_and_argument_is_in_the_schema():
    layer_types = build_schema()["definitions"]["layer"]["else"]["properties"]
    assert set(LAYERS) | set(TYPE_ALIASES) | {"Merge"} == set(layer_types)
    for type_, spec in LAYERS.items():
        props = layer_types[type_]["then"]["properties"]
        assert set(spec.names()) <= set(props), type_
        usable = {alias for alias, target in spec.aliases.items() if spec.arg(target)}
        assert usable <= set(props), type_


GOOD = """\
    extends: base.yaml
    vars: {width: 16}
    version: 1
    data: {train: {builtin: xor, samples: 100}, validation_split: 0.25}
    model:
      layers:
        - Dense: {output_dim: "${vars.width}", input_dim: 2, init: he_normal,
                  W_regularizer: {name: l2, l2: 0.01}}
        - Dropout: 0.5
        - Convolution1D: {nb_filter: 4, filter_length: 3, border_mode: same}
        - Flatten
        - LSTM: 4
        - Bidirectional: {layer: {LSTM: {units: 4}}, merge_mode: sum}
        - Dense: {units: 1, activation: sigmoid}
    compile: {optimizer: {name: Adam, learning_rate: 0.001}, loss: binary_crossentropy,
              metrics: [accuracy, auc]}
    fit: {batch_size: "${env:BATCH,32}", epochs: 3, shuffle: false}
    """


def test_keras1_names_shorthands_and_interpolation_are_valid(validator):
    assert errors(validator, GOOD) == []


@pytest.mark.parametrize("old, new, where", [
    ("output_dim:", "output_dimm:", "model.layers.0.Dense"),
    ("- Flatten", "- Flaten", "model.layers.3"),
    ("Dropout: 0.5", "Dropout: 1.5", "model.layers.1.Dropout"),
    ("init: he_normal", "init: he_normle", "model.layers.0.Dense.init"),
    ("loss: binary_crossentropy", "loss: binary_crossentopy", "compile.loss"),
    ("epochs: 3", "epochs: 0", "fit.epochs"),
    ("shuffle: false", "shuffle: nope", "fit.shuffle"),
    ("builtin: xor", "builtin: xxor", "data.train"),
    ("validation_split: 0.25", "validation_split: 1.5", "data.validation_split"),
    ("version: 1", "version: 2", "version"),
    ("merge_mode: sum", "merge_mode: add",
     "model.layers.5.Bidirectional.merge_mode"),
    ("fit:", "fitt:", ""),
    ("- LSTM: 4", "- LSTM: null", "model.layers.4.LSTM"),
])
def test_common_mistakes_are_flagged_where_they_are(validator, old, new, where):
    assert old in GOOD
    assert where in errors(validator, GOOD.replace(old, new))


def test_what_the_schema_accepts_nnrun_accepts(tmp_path, monkeypatch):
    monkeypatch.delenv("BATCH", raising=False)
    (tmp_path / "base.yaml").write_text("name: from-base\n")
    config = tmp_path / "good.yaml"
    config.write_text(textwrap.dedent(GOOD))
    spec = load_spec(config)
    assert (spec.name, spec.fit.batch_size, spec.model.layers[0].args["units"]) == (
        "from-base", 32, 16)


def test_schema_writes_a_file(tmp_path):
    out = tmp_path / "nnrun.schema.json"
    result = CliRunner().invoke(main, ["schema", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["title"] == "nnrun config"
    bad = CliRunner().invoke(main, ["schema", "-o", str(tmp_path / "no" / "dir.json")])
    assert bad.exit_code == 2 and "cannot write" in bad.output
