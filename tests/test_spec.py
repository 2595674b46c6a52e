"""Config loading: Keras 1 and 3 names, defaults, located errors, --set overrides."""

import subprocess
import sys
from pathlib import Path

import pytest

from nnrun.config.errors import ConfigError
from nnrun.config.overrides import parse_override_path
from nnrun.config.spec import dump_yaml, load_spec, spec_from_dict

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


BASE = """\
name: t
data:
  train: {builtin: xor, samples: 100}
model:
  layers:
    - Dense: {units: 5, input_dim: 2, activation: relu}
    - Dense: 1
compile:
  loss: mse
"""


def test_founding_example_with_keras1_names():
    spec = load_spec(ROOT / "configs" / "mlp.yaml")
    first = spec.model.layers[0]
    assert first.type == "Dense" and first.args["units"] == 5
    assert first.args["kernel_initializer"] == "glorot_uniform"
    assert spec.model.input_shape == (2,)
    assert [layer.name for layer in spec.model.layers] == [
        "dense", "activation", "dense_1", "activation_1"]
    assert spec.model.layers[1].args["activation"] == "relu"  # scalar fills the first arg


def test_keras1_and_keras3_names_give_the_same_spec(tmp_path):
    k1 = spec_from_dict({"model": {"layers": [{"Dense": {"output_dim": 4, "input_dim": 3,
                                                         "init": "he_normal", "bias": False}},
                                              {"Dropout": {"p": 0.5}}]},
                         "compile": {"loss": "mse"}})
    k3 = spec_from_dict({"model": {"input_shape": [3], "layers": [
        {"Dense": {"units": 4, "kernel_initializer": "he_normal", "use_bias": False}},
        {"Dropout": 0.5}]}, "compile": {"loss": "mse"}})
    assert k1.resolved["model"] == k3.resolved["model"]


def test_defaults_are_resolved():
    spec = load_spec(ROOT / "configs" / "mlp.yaml")
    assert spec.resolved["fit"] == {"batch_size": 10, "epochs": 100, "shuffle": True}
    assert spec.resolved["version"] == 1
    assert spec.compile.metrics == ("accuracy",)


@pytest.mark.parametrize("text, line, col, needle", [
    (BASE.replace("units: 5", "units: -3"), 6, 22, "expected a positive integer, got -3"),
    (BASE.replace("activation: relu", "activaton: relu"), 6, 39, "did you mean 'activation'"),
    (BASE.replace("Dense: 1", "Dnese: 1"), 7, 7, "did you mean 'Dense'"),
    (BASE.replace("loss: mse", "loss: mse\n  optimzer: sgd"), 10, 3, "did you mean 'optimizer'"),
    (BASE + "fit: {batch_size: 0}\n", 10, 19, "fit.batch_size"),
    (BASE + "fitt: {}\n", 10, 1, "did you mean 'fit'"),
    (BASE.replace("  loss: mse\n", "  metrics: [accuracy]\n"), 9, 3, "missing required key 'loss'"),
    (BASE + "data2: [\n", 11, 1, "invalid YAML"),
])
def test_errors_name_file_line_and_path(tmp_path, text, line, col, needle):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    message = str(err.value)
    assert f"{path}:{line}:{col}:" in message
    assert needle in message


def test_every_problem_is_reported_at_once(tmp_path):
    text = BASE.replace("units: 5", "units: 0").replace("loss: mse", "loss: mse\n  bogus: 1")
    with pytest.raises(ConfigError) as err:
        load_spec(write(tmp_path, text))
    assert len(err.value.problems) == 2


def test_override_paths():
    assert parse_override_path("model.layers[0].Dense.units") == (
        "model", "layers", 0, "Dense", "units")
    with pytest.raises(ConfigError):
        parse_override_path("a..b")


def test_set_overrides_values_lists_and_mappings(tmp_path):
    path = write(tmp_path, BASE)
    spec = load_spec(path, ["fit.epochs=7", "model.layers[0].Dense.units=64",
                            "compile.optimizer={name: adam, learning_rate: 3e-4}",
                            "compile.metrics=[accuracy, mae]"])
    assert spec.fit.epochs == 7
    assert spec.model.layers[0].args["units"] == 64
    assert spec.compile.optimizer == {"name": "adam", "learning_rate": 3e-4}
    assert spec.compile.metrics == ("accuracy", "mae")


def test_bad_override_is_located_at_the_flag(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_spec(write(tmp_path, BASE), ["fit.epochs=abc"])
    assert str(err.value).startswith("--set fit.epochs=abc: fit.epochs: expected a positive")


def test_override_into_missing_list_item(tmp_path):
    with pytest.raises(ConfigError, match="no such list item"):
        load_spec(write(tmp_path, BASE), ["model.layers[9].Dense.units=3"])


def test_saved_architecture_loads_as_model_section(tmp_path):
    spec = load_spec(write(tmp_path, BASE))
    (tmp_path / "model.yaml").write_text(dump_yaml({"model": spec.resolved["model"]}))
    again = load_spec(write(tmp_path, BASE.split("model:")[0] +
                            "model: model.yaml\ncompile:\n  loss: mse\n", "c2.yaml"))
    assert again.resolved["model"] == spec.resolved["model"]


def test_input_shape_given_twice_is_an_error(tmp_path):
    text = BASE.replace("model:\n", "model:\n  input_shape: [2]\n")
    with pytest.raises(ConfigError, match="may only be given once"):
        load_spec(write(tmp_path, text))


def test_duplicate_layer_names(tmp_path):
    text = BASE.replace("Dense: 1", "Dense: {units: 1, name: dense}")
    with pytest.raises(ConfigError, match="used more than once"):
        load_spec(write(tmp_path, text))


def test_importing_spec_does_not_import_jax():
    code = ("import sys; import nnrun.config.spec, nnrun.data.sources; "
            "sys.exit(1 if 'jax' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_reading_composing_and_validating_a_config_imports_no_jax():
    """What `nnrun check` does before the shape check (parse, extends, ${...}, --set,
    validation) and the CLI's own import load neither jax nor keras."""
    config = Path(__file__).parent.parent / "configs" / "mlp_wide.yaml"
    code = ("import sys; import nnrun.cli.main; from nnrun.config.spec import load_spec; "
            f"load_spec({str(config)!r}, ['vars.width=8']); "
            "sys.exit(1 if {'jax', 'keras'} & set(sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
