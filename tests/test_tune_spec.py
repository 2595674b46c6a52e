"""The `tune:` section (nnrun/config/tune_spec.py): its grammar, defaults and located
errors, and the `--set` each trial value becomes. No training, no optuna."""

from __future__ import annotations

import pytest

from nnrun.config.errors import ConfigError
from nnrun.config.spec import load_spec
from nnrun.config.tune_spec import dimension_override

BASE = """\
name: t
seed: 7
data:
  train: {builtin: xor, samples: 100}
  validation_split: 0.2
model:
  layers:
    - Dense: {units: 5, input_dim: 2, activation: relu, name: hidden}
    - Dropout: 0.1
    - Dense: 1
compile:
  loss: mse
  optimizer: adam
tune:
"""


def load(tmp_path, tune: str):
    path = tmp_path / "c.yaml"
    path.write_text(BASE + "".join(f"  {line}\n" for line in tune.strip().splitlines()))
    return load_spec(path)


def problems(tmp_path, tune: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, tune)
    return [f"{w}: {m}" for w, m in err.value.problems]


def test_defaults_mode_from_the_metric_and_the_paths_resolved(tmp_path):
    spec = load(tmp_path, """
metric: val_accuracy
space:
  compile.optimizer.learning_rate: {loguniform: [1.0e-4, 1.0e-1]}
  model.layers[hidden].units: {int: [4, 64], step: 4}
  model.layers[1].Dropout.rate: {uniform: [0.0, 0.5]}
  fit.batch_size: {choice: [16, 32, 64]}
""")
    t = spec.tune
    assert (t.metric, t.mode, t.trials, t.batch, t.sampler, t.pruner, t.seed) == (
        "val_accuracy", "max", 20, 16, "tpe", "none", 7)
    assert [d.path for d in t.space] == [
        ("compile", "optimizer", "learning_rate"), ("model", "layers", 0, "Dense", "units"),
        ("model", "layers", 1, "Dropout", "rate"), ("fit", "batch_size")]
    assert [(d.kind, d.values, d.step) for d in t.space] == [
        ("loguniform", (1e-4, 0.1), None), ("int", (4, 64), 4), ("uniform", (0.0, 0.5), None),
        ("choice", (16, 32, 64), None)]
    assert t.space[1].where.endswith("c.yaml:18:5: tune.space.model.layers[hidden].units")
    assert spec.resolved["tune"]["space"]["model.layers[hidden].units"] == {
        "int": [4, 64], "step": 4}
    # training ignores it: the model is the config's own
    assert spec.model.layers[0].args["units"] == 5
    low = load(tmp_path, "metric: val_loss\nmode: auto\nseed: 3\nspace: {fit.epochs: "
                         "{choice: [1, 2]}}")
    assert (low.tune.mode, low.tune.seed) == ("min", 3)


def test_each_problem_is_located_and_all_are_reported_at_once(tmp_path):
    found = problems(tmp_path, """
metrc: val_loss
sampler: bayes
trials: 0
space:
  compile.optimizer.learning_rate: {loguniform: [0.0, 0.1]}
  model.layers[hiden].units: {int: [4, 64]}
  model.layers[0].Dense.units: {int: [4, 64], step: 7}
  fit.batch_size: {choice: [16, 16]}
  fit.epochs: {uniform: [3, 1]}
  fit.shuffle: {normal: [0, 1]}
  seed: {choice: [1, 2]}
  fit.seed: {choice: [1, 2]}
  name: {choice: [a, b]}
  compile.loss: [mse, mae]
""")
    text = "\n".join(found)
    assert "c.yaml:15:3: tune.metrc: unknown key in tune 'metrc' (did you mean 'metric'?)" in text
    assert "tune: missing required key 'metric'" in text
    assert "tune.sampler: " in text and "bayes" in text
    assert "tune.trials: " in text
    assert "loguniform: expected 0 < lo" in text
    assert "unknown layer name 'hiden' (did you mean 'hidden'" in text
    assert "step 7 does not divide the range 4..64" in text
    assert "choice: the value 16 is given twice (items 0 and 1)" in text
    assert "c.yaml:23:27: tune.space.fit.epochs.uniform: uniform: expected lo < hi, got " \
        "[3, 1]" in text
    assert "unknown distribution 'normal'" in text
    assert text.count("the seed cannot be tuned") == 2
    assert "not name" in text
    assert "tune.space.compile.loss: expected one distribution" in text
    # every line carries the file:line:col of its entry
    assert all(line.startswith(str(tmp_path / "c.yaml")) for line in found), found


def test_a_choice_with_a_number_as_mapping_key_is_located_not_a_crash(tmp_path):
    """Found by tests/test_config_fuzz.py: a choice {Dense: null, 0: null} made json.dumps
    fail to sort its keys (an unexpected TypeError in `nnrun check` and `nnrun tune`)."""
    found = problems(tmp_path, """
metric: loss
space:
  fit.batch_size: {choice: [{Dense: null, 0: null}, 32]}
  model.layers[hidden].units: {choice: [[{a: {1: b}}], 8]}
""")
    text = "\n".join(found)
    assert "tune.space.fit.batch_size.choice[0]: choice: a mapping key must be text, " \
        "got 0" in text
    assert "tune.space.model.layers[hidden].units.choice[0]: choice: a mapping key must " \
        "be text, got 1" in text


def test_missing_space_a_grid_of_ranges_and_the_same_value_twice(tmp_path):
    assert any("missing required key 'space'" in p for p in problems(tmp_path,
                                                                    "metric: loss"))
    found = problems(tmp_path, """
metric: loss
sampler: grid
space:
  compile.optimizer.learning_rate: {uniform: [0.001, 0.1]}
""")
    assert "sampler grid tries every combination of choice: values" in found[0]
    found = problems(tmp_path, """
metric: loss
space:
  model.layers[hidden].units: {choice: [4, 8]}
  model.layers[0].Dense.units: {choice: [4, 8]}
""")
    assert "is the same config value as 'model.layers[hidden].units'" in found[0]
    assert any("step: goes with int: only" in p for p in problems(
        tmp_path, "metric: loss\nspace: {fit.epochs: {choice: [1, 2], step: 1}}"))


def test_a_trial_value_is_the_set_that_trains_it(tmp_path):
    spec = load(tmp_path, """
metric: loss
space:
  model.layers[hidden].units: {choice: [4, 8]}
  compile.optimizer: {choice: [adam, {name: sgd, momentum: 0.9}]}
  model.layers[dropout].rate: {uniform: [0.0, 0.5]}
""")
    units, opt, rate = spec.tune.space
    assert dimension_override(units, 8) == "model.layers[hidden].units=8"
    assert dimension_override(opt, {"name": "sgd", "momentum": 0.9}) == \
        "compile.optimizer={name: sgd, momentum: 0.9}"
    assert dimension_override(rate, 0.25) == "model.layers[dropout].rate=0.25"
    trial = load_spec(tmp_path / "c.yaml", [dimension_override(units, 8),
                                            dimension_override(opt, {"name": "sgd",
                                                                     "momentum": 0.9}),
                                            dimension_override(rate, 0.25)])
    assert trial.model.layers[0].args["units"] == 8
    assert trial.model.layers[1].args["rate"] == 0.25
    assert trial.compile.optimizer["name"] == "sgd"


def test_an_extending_file_drops_the_base_distribution_with_null(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(BASE + "  metric: loss\n  space:\n    fit.batch_size: {int: [8, 64]}\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\ntune:\n  space:\n    fit.batch_size: "
                     "{choice: [8, 16]}\n")
    with pytest.raises(ConfigError, match=r"one distribution per entry, got 2: int, choice "
                                          r"\(extends: merges"):
        load_spec(child)
    child.write_text("extends: base.yaml\ntune:\n  space:\n    fit.batch_size: "
                     "{int: null, choice: [8, 16]}\n")
    (dim,) = load_spec(child).tune.space
    assert (dim.kind, dim.values) == ("choice", (8, 16))
