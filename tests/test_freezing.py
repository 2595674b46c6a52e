"""Issue 7's fine-tuning and freezing: `trainable: false` keeps a layer's weights (a
nested model's too) through training and counts them as non-trainable, as Keras does;
`model.weights` starts from another run's checkpoint, layers matched by name."""

import io
import json

import h5py
import numpy as np
import pytest

from nnrun import api
from nnrun.config.errors import ConfigError
from nnrun.config.spec import spec_from_dict
from nnrun.keras.importer import from_keras_json
from nnrun.keras.model_json import to_keras_json
from nnrun.train.fitter import Fitter

FROZEN = {
    "name": "frozen", "seed": 0,
    "data": {"train": {"builtin": "xor", "samples": 64}},
    "model": {"input_shape": [2], "layers": [
        {"Dense": {"units": 8, "activation": "relu", "trainable": False}},
        {"BatchNormalization": {"trainable": False}},
        {"Dense": {"units": 6, "activation": "relu"}},
        {"Sequential": {"name": "head", "layers": [
            {"Dense": {"units": 4, "activation": "relu", "trainable": False}},
            {"Dense": {"units": 1, "activation": "sigmoid"}}]}}]},
    "compile": {"optimizer": {"name": "adam", "learning_rate": 0.05}, "loss": "mse"},
    "fit": {"batch_size": 16, "epochs": 3},
}


def read_group(group):
    return {k: read_group(v) if isinstance(v, h5py.Group) else v[()] for k, v in group.items()}


def test_frozen_weights_do_not_change_and_the_others_do(tmp_path):
    spec = spec_from_dict(FROZEN)
    result = api.train(spec, runs_root=tmp_path, stream=io.StringIO(), quiet=True)
    assert result.status == "finished"
    splits = api.load_data(spec)
    model = api.build(spec)
    fitter = Fitter(model, api.objective_for(spec, model, splits.train.y),
                    spec.compile.optimizer, seed=spec.seed, batch_size=16, shuffle=True,
                    x=splits.train.x, y=splits.train.y)
    params, state, _ = fitter.initial_state()   # the run's initial weights, exactly
    with h5py.File(result.run_dir / "checkpoints" / "last.h5") as f:
        trained, trained_state = read_group(f["params"]), read_group(f["state"])
    for name in ("dense", "batch_normalization"):
        for key, value in params[name].items():
            np.testing.assert_array_equal(trained[name][key], np.asarray(value))
    for key, value in state["batch_normalization"].items():   # inference mode: no updates
        np.testing.assert_array_equal(trained_state["batch_normalization"][key],
                                      np.asarray(value))
    np.testing.assert_array_equal(trained["head"]["dense"]["kernel"],
                                  np.asarray(params["head"]["dense"]["kernel"]))
    assert not np.allclose(trained["dense_1"]["kernel"], np.asarray(params["dense_1"]["kernel"]))
    assert not np.allclose(trained["head"]["dense_1"]["kernel"],
                           np.asarray(params["head"]["dense_1"]["kernel"]))


def test_summary_counts_equal_keras_with_frozen_layers():
    keras = pytest.importorskip("keras")
    layers = keras.layers
    head = keras.Sequential([layers.Dense(4, activation="relu", trainable=False),
                             layers.Dense(1, activation="sigmoid")], name="head")
    k = keras.Sequential([keras.Input((2,)), layers.Dense(8, activation="relu", trainable=False),
                          layers.BatchNormalization(trainable=False),
                          layers.Dense(6, activation="relu"), head])
    k_trainable = sum(int(np.prod(w.shape)) for w in k.trainable_weights)
    k_fixed = sum(int(np.prod(w.shape)) for w in k.non_trainable_weights)
    keras.backend.clear_session()
    ours = api.summary_dict(spec_from_dict(FROZEN))
    assert ours["total_params"] == k_trainable + k_fixed
    assert ours["non_trainable_params"] == k_fixed
    text = api.summary(spec_from_dict(FROZEN))
    assert f"Trainable params: {k_trainable:,}" in text
    assert f"Non-trainable params: {k_fixed:,}" in text


def test_a_frozen_nested_model_freezes_all_its_weights():
    raw = json.loads(json.dumps(FROZEN))
    raw["model"]["layers"][3]["Sequential"]["trainable"] = False
    counts = api.build(spec_from_dict(raw)).count_params()
    assert counts["head"] == (0, 6 * 4 + 4 + 4 * 1 + 1)


BASE = {
    "name": "base", "seed": 0,
    "data": {"train": {"builtin": "xor", "samples": 200}, "validation_split": 0.2,
             "test": {"builtin": "xor", "samples": 100, "seed": 1}},
    "model": {"input_shape": [2], "layers": [{"Dense": {"units": 5, "activation": "relu"}},
                                             {"Dense": {"units": 1, "activation": "sigmoid"}}]},
    "compile": {"optimizer": {"name": "sgd", "learning_rate": 0.5}, "loss": "mse"},
    "fit": {"batch_size": 10, "epochs": 3},
}


def fine_tune_config(weights, **model):
    return {"name": "tuned", "seed": 7,
            "data": {"train": {"builtin": "xor", "samples": 100, "seed": 1}},
            "model": {"input_shape": [2], "weights": str(weights), **model,
                      "layers": model.get("layers", BASE["model"]["layers"])},
            "compile": {"optimizer": {"name": "sgd", "learning_rate": 0.1}, "loss": "mse"},
            "fit": {"batch_size": 100, "epochs": 1, "shuffle": False}}


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    spec = spec_from_dict(BASE)
    run = api.train(spec, runs_root=root, stream=io.StringIO(), quiet=True).run_dir
    return run, api.evaluate(spec, run)["loss"]


def test_fine_tuning_starts_from_the_checkpoint(base_run, tmp_path):
    run, eval_loss = base_run
    best = run / "checkpoints" / "best.h5"
    spec = spec_from_dict(fine_tune_config(best))
    result = api.train(spec, runs_root=tmp_path, stream=io.StringIO(), quiet=True)
    # one batch of the whole test set: the first step's loss is at the loaded weights
    assert result.history["loss"][0] == pytest.approx(eval_loss, rel=1e-5)
    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["initial_weights"]["loaded"] == ["dense", "dense_1"]
    # a run directory stands for its best.h5
    again = api.train(spec_from_dict(fine_tune_config(run)), runs_root=tmp_path,
                      stream=io.StringIO(), quiet=True)
    assert again.history["loss"][0] == pytest.approx(eval_loss, rel=1e-5)


def test_layers_missing_from_the_checkpoint_keep_their_init_with_a_note(base_run, tmp_path):
    run, _ = base_run
    layers = [{"Dense": {"units": 5, "activation": "relu"}},
              {"Dense": {"units": 3, "name": "extra"}},
              {"Dense": {"units": 1, "activation": "sigmoid", "name": "out"}}]
    out = io.StringIO()
    result = api.train(spec_from_dict(fine_tune_config(run, layers=layers)),
                       runs_root=tmp_path, stream=out)
    assert "no weights for layers extra, out" in out.getvalue()
    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["initial_weights"]["initialized"] == ["extra", "out"]


def test_weights_of_another_shape_are_a_located_error_naming_the_layer(base_run, tmp_path):
    run, _ = base_run
    layers = [{"Dense": {"units": 6, "activation": "relu"}},
              {"Dense": {"units": 1, "activation": "sigmoid"}}]
    with pytest.raises(ConfigError) as info:
        api.train(spec_from_dict(fine_tune_config(run, layers=layers)), runs_root=tmp_path,
                  stream=io.StringIO(), quiet=True)
    message = str(info.value.message)
    assert "'dense'" in message and "(2, 5)" in message and "(2, 6)" in message
    assert "'dense_1'" in message
    assert not list(tmp_path.glob("tuned-*"))   # refused before a run directory is made


def test_trainable_and_weights_are_validated():
    raw = json.loads(json.dumps(FROZEN))
    raw["model"]["layers"][0]["Dense"]["trainable"] = "no"
    raw["model"]["weights"] = 3
    with pytest.raises(ConfigError) as info:
        spec_from_dict(raw)
    paths = " ".join(str(w) for w, _ in info.value.problems)
    assert "trainable" in paths and "weights" in paths


def test_trainable_false_crosses_keras_json_both_ways():
    raw = {k: v for k, v in FROZEN.items() if k != "data"}
    exported = to_keras_json(spec_from_dict(raw))
    text = json.dumps(exported)
    assert text.count('"trainable": false') == 3   # dense, batch_normalization, head/dense
    imported = from_keras_json(exported)
    layers = imported["layers"]
    assert layers[0]["Dense"]["trainable"] is False
    assert layers[1]["BatchNormalization"]["trainable"] is False
    assert "trainable" not in layers[2]["Dense"]
    assert layers[3]["Sequential"]["layers"][0]["Dense"]["trainable"] is False
