"""extends: (deep merge, relative paths, errors in the included file), ${...}
interpolation (config values, vars, env) and `nnrun config --origin`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from nnrun.cli.main import main
from nnrun.config.errors import ConfigError
from nnrun.config.spec import load_spec

BASE = """\
name: base
vars: {width: 32}
data:
  train: {builtin: xor, samples: 200}
model:
  input_shape: [2]
  layers:
    - Dense: {units: "${vars.width}", activation: relu}
    - Dense: {units: 1, activation: sigmoid}
compile: {optimizer: {name: adam, learning_rate: 0.01}, loss: binary_crossentropy}
fit: {batch_size: 16, epochs: 2}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return write(tmp_path, "common/base.yaml", BASE)


def test_extends_deep_merges_mappings_and_replaces_lists(tmp_path, base):
    child = write(tmp_path, "exp/child.yaml", """\
        extends: ../common/base.yaml
        compile: {optimizer: {learning_rate: 0.001}, metrics: [accuracy]}
        fit: {epochs: 5}
        """)
    spec = load_spec(child)
    assert spec.compile.optimizer == {"name": "adam", "learning_rate": 0.001}  # merged
    assert spec.compile.metrics == ("accuracy",)
    assert (spec.fit.epochs, spec.fit.batch_size) == (5, 16)
    assert [layer.args["units"] for layer in spec.model.layers] == [32, 1]
    # a list replaces the base's list whole
    other = write(tmp_path, "exp/other.yaml", """\
        extends: ../common/base.yaml
        model: {layers: [Dense: {units: 1, activation: sigmoid}]}
        """)
    assert len(load_spec(other).model.layers) == 1


def test_extends_a_list_later_files_win_and_bases_extend_bases(tmp_path, base):
    write(tmp_path, "common/long.yaml", "extends: base.yaml\nfit: {epochs: 50, shuffle: false}\n")
    write(tmp_path, "common/wide.yaml", "vars: {width: 128}\nfit: {epochs: 7}\n")
    child = write(tmp_path, "child.yaml", "extends: [common/long.yaml, common/wide.yaml]\n")
    spec = load_spec(child)
    assert (spec.fit.epochs, spec.fit.shuffle) == (7, False)
    assert spec.model.layers[0].args["units"] == 128


def test_an_error_in_an_included_file_names_that_files_line(tmp_path, base):
    bad = base.read_text().replace("activation: sigmoid", "activation: sigmoid, unitz: 3")
    write(tmp_path, "common/base.yaml", bad)
    write(tmp_path, "common/mid.yaml", "extends: base.yaml\nfit: {epochs: -1}\n")
    child = write(tmp_path, "child.yaml", "extends: common/mid.yaml\n")
    result = CliRunner().invoke(main, ["check", str(child), "--json"])
    assert result.exit_code == 2, result.output
    problems = json.loads(result.output)[0]["problems"]
    wheres = [p["where"] for p in problems]
    assert f"{tmp_path}/common/mid.yaml:2:15: fit.epochs" in wheres
    assert f"{tmp_path}/common/base.yaml:9:46: model.layers[1].Dense.unitz" in wheres
    assert any("did you mean 'units'" in p["message"] for p in problems), problems


@pytest.mark.parametrize("text, needle, line", [
    ("extends: nowhere.yaml\n", "no such file", 1),
    ("extends: [child.yaml]\n", "the files extend each other", 1),
    ("extends: 3\n", "expected a file name or a list of file names", 1),
    ("extends: common/base.yaml\nfit: {epochs: '${fit.epochs}'}\n", "make a loop", 2),
    ("extends: common/base.yaml\nfit: {epochs: '${fit.epoch}'}\n",
     "fit has no 'epoch' (did you mean 'epochs'?)", 2),
    ("extends: common/base.yaml\nfit: {epochs: '${env:NNRUN_TEST_UNSET}'}\n",
     "environment variable NNRUN_TEST_UNSET is not set", 2),
    ("extends: common/base.yaml\nvars: {unused: 3}\n", "vars.unused is never used", 2),
    ("extends: common/base.yaml\nname: 'x-${model.layers}'\n",
     "is a list; only a whole value can be one", 2),
    ("extends: common/base.yaml\nname: '${ nope[ }'\n", "cannot read the reference", 2),
])
def test_composition_errors_are_located(tmp_path, base, text, needle, line):
    child = write(tmp_path, "child.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_spec(child)
    assert needle in str(err.value)
    assert str(err.value).startswith(f"{child}:{line}:"), str(err.value)


def test_interpolation_keeps_types_and_formats_text(tmp_path, base, monkeypatch):
    monkeypatch.setenv("NNRUN_EPOCHS", "9")
    monkeypatch.setenv("NNRUN_LR", "3e-4")
    monkeypatch.delenv("NNRUN_TEST_UNSET", raising=False)
    child = write(tmp_path, "child.yaml", """\
        extends: common/base.yaml
        vars: {width: 8, tag: wide}
        name: "xor-${vars.tag}-${vars.width}-$${literal}"
        seed: ${env:NNRUN_TEST_UNSET,42}
        compile: {optimizer: {learning_rate: "${env:NNRUN_LR}"}}
        fit: {epochs: "${env:NNRUN_EPOCHS}", batch_size: "${model.layers[0].Dense.units}"}
        """)
    spec = load_spec(child)
    assert spec.name == "xor-wide-8-${literal}"
    assert spec.seed == 42
    assert spec.compile.optimizer["learning_rate"] == 3e-4
    assert (spec.fit.epochs, spec.fit.batch_size) == (9, 8)
    assert "vars" not in spec.resolved


def test_set_overrides_apply_before_interpolation(tmp_path, base):
    spec = load_spec(base, ["vars.width=5"])
    assert spec.model.layers[0].args["units"] == 5


def test_a_bad_interpolated_value_points_at_where_it_was_written(tmp_path, base):
    child = write(tmp_path, "child.yaml", "extends: common/base.yaml\nvars: {width: -4}\n")
    with pytest.raises(ConfigError) as err:
        load_spec(child)
    message = str(err.value)
    assert message.startswith(f"{child}:2:15 (from ${{vars.width}} at {base}:8:")
    assert "model.layers[0].Dense.units: expected a positive integer, got -4" in message


def test_config_origin_tags_every_value(tmp_path, base):
    child = write(tmp_path, "child.yaml", """\
        extends: common/base.yaml
        model:
          input_shape: [2]
          layers:
            - Dense: {output_dim: 4, init: he_normal}
            - Dense: {units: 1, activation: sigmoid}
        """)
    result = CliRunner().invoke(main, ["config", str(child), "--origin", "--json",
                                       "--set", "fit.epochs=3"])
    assert result.exit_code == 0, result.output
    origins = json.loads(result.output)["origins"]
    assert origins["model.layers[0].Dense.units"] == f"{child}:5:27"  # written as output_dim
    assert origins["model.layers[0].Dense.kernel_initializer"] == f"{child}:5:36"  # as init
    assert origins["model.layers[0].Dense.use_bias"] == "default"
    assert origins["model.layers[0].Dense.name"] == "default"
    assert origins["fit.epochs"] == "--set fit.epochs=3"
    assert origins["fit.batch_size"] == f"{base}:11:19"
    assert origins["fit.shuffle"] == "default"
    assert origins["compile.loss"].startswith(f"{base}:10:")
    assert origins["data.train.builtin"] == f"{base}:4:20"
    text = CliRunner().invoke(main, ["config", str(child), "--origin"]).output
    assert f"units: 4  # {child}:5:27" in text
    assert "use_bias: true  # default" in text


def test_config_origin_yaml_loads_back_to_the_resolved_config(tmp_path):
    import yaml

    source = Path(__file__).parent.parent / "configs" / "autoencoder.yaml"
    runner = CliRunner()
    tagged = runner.invoke(main, ["config", str(source), "--origin"])
    plain = runner.invoke(main, ["config", str(source), "--json"])
    assert tagged.exit_code == 0, tagged.output
    assert yaml.safe_load(tagged.output) == json.loads(plain.output)
