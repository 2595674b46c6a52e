"""Graph models: named inputs, layers wired by name, merge layers, outputs (issue 4)."""

import copy

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

from nnrun.config.errors import ConfigError
from nnrun.config.spec import model_to_dict, spec_from_dict
from nnrun.nn.builder import build_model

TWO_INPUTS = {"model": {"inputs": {"left": [16], "right": [16]}, "layers": [
    {"Dense": {"name": "l", "units": 8, "activation": "relu", "inputs": "left"}},
    {"Dense": {"name": "r", "units": 8, "activation": "relu", "inputs": "right"}},
    {"Concatenate": {"name": "merged", "inputs": ["l", "r"]}},
    {"Dense": {"name": "out", "units": 1, "activation": "sigmoid", "inputs": "merged"}}],
    "outputs": ["out"]}, "compile": {"loss": "mse"}}


def graph(inputs: dict, layers: list, outputs: list) -> dict:
    return {"model": {"inputs": inputs, "layers": layers, "outputs": outputs},
            "compile": {"loss": "mse"}}


@pytest.mark.parametrize("layer, kwargs, shapes", [
    ("Add", {}, [(4, 5), (4, 5), (4, 5)]),
    ("Subtract", {}, [(4, 5), (4, 5)]),
    ("Multiply", {}, [(4, 3, 5), (4, 3, 5)]),
    ("Average", {}, [(4, 5), (4, 5), (4, 5)]),
    ("Maximum", {}, [(4, 5), (4, 5)]),
    ("Minimum", {}, [(4, 5), (4, 5)]),
    ("Add", {}, [(4, 1, 5), (4, 3, 5)]),       # broadcast over a size-1 axis, as Keras
    ("Concatenate", {}, [(4, 2), (4, 3)]),
    ("Concatenate", {"axis": 1}, [(4, 2, 3), (4, 5, 3)]),
    ("Dot", {"axes": 1}, [(4, 5), (4, 5)]),
    ("Dot", {"axes": 1, "normalize": True}, [(4, 5), (4, 5)]),
    ("Dot", {"axes": [2, 2]}, [(4, 3, 5), (4, 6, 5)]),
    ("Dot", {"axes": [1, 2]}, [(4, 5, 3), (4, 2, 5)]),
])
def test_merge_layers_equal_keras(layer, kwargs, shapes):
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=s).astype(np.float32) for s in shapes]
    expected = np.asarray(getattr(keras.layers, layer)(**kwargs)(xs))
    names = [f"in{i}" for i in range(len(xs))]
    spec = spec_from_dict(graph({n: list(s[1:]) for n, s in zip(names, shapes)},
                                [{layer: {"name": "m", "inputs": names, **kwargs}}], ["m"]))
    model = build_model(spec.model)
    y, _ = model.apply({}, {}, {n: jnp.asarray(x) for n, x in zip(names, xs)})
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-6)
    assert model.output_shape == expected.shape[1:]


def test_two_input_model_equals_keras_functional_model():
    spec = spec_from_dict(TWO_INPUTS)
    model = build_model(spec.model)
    left, right = keras.Input((16,), name="left"), keras.Input((16,), name="right")
    dl, dr = keras.layers.Dense(8, activation="relu"), keras.layers.Dense(8, activation="relu")
    out = keras.layers.Dense(1, activation="sigmoid")
    k = keras.Model([left, right], out(keras.layers.Concatenate()([dl(left), dr(right)])))
    params = {name: {"kernel": jnp.asarray(layer.kernel.numpy()),
                     "bias": jnp.asarray(layer.bias.numpy())}
              for name, layer in (("l", dl), ("r", dr), ("out", out))}
    rng = np.random.default_rng(1)
    a, b = (rng.normal(size=(5, 16)).astype(np.float32) for _ in range(2))
    y, _ = model.apply(params, {}, {"left": a, "right": b})
    np.testing.assert_allclose(np.asarray(y), np.asarray(k([a, b])), rtol=1e-5, atol=1e-6)
    assert sum(t for t, _ in model.count_params().values()) == k.count_params()
    assert [(i.name, i.inbound) for i in model.infos] == [
        ("l", ("left",)), ("r", ("right",)), ("merged", ("l", "r")), ("out", ("merged",))]


def test_layers_may_be_listed_before_their_inputs_and_round_trip():
    raw = copy.deepcopy(TWO_INPUTS)
    raw["model"]["layers"] = raw["model"]["layers"][::-1]   # any order: a DAG
    model = build_model(spec_from_dict(raw).model)
    assert [model.layers[i].name for i in model.order] == ["r", "l", "merged", "out"]
    written = model_to_dict(spec_from_dict(TWO_INPUTS).model)   # model.yaml / model.json
    again = spec_from_dict({"model": written, "compile": {"loss": "mse"}})
    assert model_to_dict(again.model) == written
    assert written["inputs"] == {"left": [16], "right": [16]} and written["outputs"] == ["out"]


def test_keras1_merge_modes():
    spec = spec_from_dict(graph({"a": [4], "b": [4]}, [
        {"Merge": {"name": "s", "mode": "sum", "inputs": ["a", "b"]}},
        {"Merge": {"name": "c", "mode": "concat", "concat_axis": -1, "inputs": ["s", "a"]}},
        {"Merge": {"name": "cos", "mode": "cos", "dot_axes": 1, "inputs": ["c", "c"]}}],
        ["cos"]))
    assert [(x.type, x.args) for x in spec.model.layers] == [
        ("Add", {}), ("Concatenate", {"axis": -1}), ("Dot", {"axes": 1, "normalize": True})]
    model = build_model(spec.model)
    y, _ = model.apply({}, {}, {"a": jnp.ones((2, 4)), "b": jnp.arange(8.0).reshape(2, 4)})
    np.testing.assert_allclose(np.asarray(y), 1.0, rtol=1e-6)   # cosine of c with itself


def _problems(raw):
    with pytest.raises(ConfigError) as info:
        spec = spec_from_dict(raw)
        build_model(spec.model, where=spec.where)
    return [f"{where}: {message}" for where, message in info.value.problems] or \
        [str(info.value)]


@pytest.mark.parametrize("mutate, needle", [
    (lambda m: m["layers"][0]["Dense"].update(inputs="lft"),
     "model.layers[0].Dense.inputs: unknown input or layer 'lft' (did you mean 'left'?)"),
    (lambda m: m["layers"][0]["Dense"].update(inputs="out"),
     "the layers form a cycle (each takes the next one's output): l <- out <- merged <- l"),
    (lambda m: m.update(outputs=["merged", "nope"]), "model.outputs[1]: unknown layer 'nope'"),
    (lambda m: m["layers"].append({"Dense": {"name": "extra", "units": 2, "inputs": "out"}}),
     "model.layers[4]: the output of layer 'extra' is not used"),
    (lambda m: m["layers"][2].update(Add=m["layers"][2].pop("Concatenate")),
     "Add needs inputs of one shape, got [(None, 8), (None, 4)]"),
    (lambda m: m["layers"][3]["Dense"].update(inputs=["merged", "l"]),
     "model.layers[3].Dense.inputs: Dense takes one input, got 2 (merged, l); merge them"),
    (lambda m: m["layers"][0]["Dense"].pop("inputs"),
     "model.layers[0]: say which input this layer takes"),
])
def test_graph_errors_name_the_layer(mutate, needle):
    raw = copy.deepcopy(TWO_INPUTS)
    if "Add" in needle:
        raw["model"]["layers"][1]["Dense"]["units"] = 4
    mutate(raw["model"])
    messages = _problems(raw)
    assert any(needle in m for m in messages), messages


def test_two_input_model_trains_evaluates_and_predicts_from_npz(tmp_path):
    """Data map the model's inputs to arrays (x: {input: array}); predict reads a .npz
    with one array per input name; a missing mapping is a data error naming the inputs."""
    from click.testing import CliRunner

    from nnrun.cli.main import main

    rng = np.random.default_rng(0)
    a, b = (rng.normal(size=(200, 8)).astype(np.float32) for _ in range(2))
    y = ((a[:, 0] + b[:, 0]) > 0).astype(np.float32)[:, None]
    np.savez(tmp_path / "d.npz", a=a, b=b, y=y)
    np.savez(tmp_path / "in.npz", left=a[:7], right=b[:7])
    raw = copy.deepcopy(TWO_INPUTS)
    raw["model"]["inputs"] = {"left": [8], "right": [8]}
    config = {**raw, "data": {"train": {"path": "d.npz", "x": {"left": "a", "right": "b"},
                                        "y": "y"}, "validation_split": 0.25},
              "compile": {"optimizer": "adam", "loss": "binary_crossentropy",
                          "metrics": ["accuracy"]}, "fit": {"epochs": 2, "batch_size": 16}}
    import yaml
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    runner = CliRunner()
    runs = str(tmp_path / "runs")
    result = runner.invoke(main, ["train", str(tmp_path / "c.yaml"), "--runs-dir", runs])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "latest"
    assert runner.invoke(main, ["evaluate", str(run)]).exit_code == 0
    result = runner.invoke(main, ["predict", str(run), "-i", str(tmp_path / "in.npz"),
                                  "-o", str(tmp_path / "p.npy")])
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "p.npy").shape == (7, 1)
    config["data"]["train"]["x"] = "a"   # one unnamed array for two inputs
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = runner.invoke(main, ["train", str(tmp_path / "c.yaml"), "--runs-dir", runs])
    assert result.exit_code == 3
    assert "the model's inputs are left, right; the data give one unnamed array" in result.output


SIAMESE = graph({"a": [6], "b": [6]}, [
    {"Dense": {"name": "enc", "units": 4, "activation": "tanh", "inputs": "a"}},
    {"Reuse": {"layer": "enc", "name": "enc_b", "inputs": "b"}},
    {"Subtract": {"name": "diff", "inputs": ["enc", "enc_b"]}},
    {"Dense": {"name": "out", "units": 1, "activation": "sigmoid"}}], ["out"])


def test_a_shared_layer_has_one_set_of_weights_as_keras():
    model = build_model(spec_from_dict(SIAMESE).model)
    params, _ = model.init(jax.random.key(0))
    assert sorted(params) == ["enc", "out"]
    counts = model.count_params()
    assert counts["enc"] == (28, 0) and counts["enc_b"] == (0, 0)
    a, b = keras.Input((6,)), keras.Input((6,))
    enc, out = keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1, activation="sigmoid")
    k = keras.Model([a, b], out(keras.layers.Subtract()([enc(a), enc(b)])))
    assert k.count_params() == sum(t for t, _ in counts.values())
    params = {"enc": {"kernel": enc.kernel.numpy(), "bias": enc.bias.numpy()},
              "out": {"kernel": out.kernel.numpy(), "bias": out.bias.numpy()}}
    rng = np.random.default_rng(0)
    xa, xb = (rng.normal(size=(5, 6)).astype(np.float32) for _ in range(2))
    y, _ = model.apply(params, {}, {"a": xa, "b": xb})
    np.testing.assert_allclose(np.asarray(y), np.asarray(k([xa, xb])), rtol=1e-5, atol=1e-6)
    grads = jax.grad(lambda p: jnp.sum(model.apply(p, {}, {"a": xa, "b": xb})[0]))(params)
    assert sorted(grads) == ["enc", "out"]   # both applications train the one kernel


@pytest.mark.parametrize("mutate, needle", [
    (lambda m: m["layers"][1]["Reuse"].update(layer="enk"),
     "model.layers[1].Reuse.layer: unknown layer to reuse 'enk' (did you mean 'enc'?)"),
    (lambda m: m["inputs"].update(b=[5]),
     "'enc' cannot be applied to this input with the same weights"),
])
def test_shared_layer_errors(mutate, needle):
    raw = copy.deepcopy(SIAMESE)
    mutate(raw["model"])
    messages = _problems(raw)
    assert any(needle in m for m in messages), messages


AUTOENCODER = {"model": {"input_shape": [32], "layers": [
    {"Sequential": {"name": "encoder", "layers": [
        {"Dense": {"units": 16, "activation": "relu"}}, {"Dropout": 0.5}, {"Dense": 8}]}},
    {"Sequential": {"name": "decoder", "layers": [
        {"Dense": {"units": 16, "activation": "relu"}}, {"Dense": 32}]}}]},
    "compile": {"loss": "mse"}}


def test_nested_sequential_models_equal_keras():
    """The founding notes' autoencoder: an encoder and a decoder model as layers."""
    model = build_model(spec_from_dict(AUTOENCODER).model)
    enc = keras.Sequential([keras.Input((32,)), keras.layers.Dense(16, activation="relu"),
                            keras.layers.Dropout(0.5), keras.layers.Dense(8)])
    dec = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                            keras.layers.Dense(32)])
    k = keras.Sequential([keras.Input((32,)), enc, dec])
    params = {"encoder": {"dense": {"kernel": enc.layers[0].kernel.numpy(),
                                    "bias": enc.layers[0].bias.numpy()},
                          "dense_1": {"kernel": enc.layers[2].kernel.numpy(),
                                      "bias": enc.layers[2].bias.numpy()}},
              "decoder": {"dense": {"kernel": dec.layers[0].kernel.numpy(),
                                    "bias": dec.layers[0].bias.numpy()},
                          "dense_1": {"kernel": dec.layers[1].kernel.numpy(),
                                      "bias": dec.layers[1].bias.numpy()}}}
    x = np.random.default_rng(0).normal(size=(4, 32)).astype(np.float32)
    y, _ = model.apply(params, {}, x)
    np.testing.assert_allclose(np.asarray(y), np.asarray(k(x)), rtol=1e-5, atol=1e-5)
    counts = model.count_params()
    assert (counts["encoder"][0], counts["decoder"][0]) == (enc.count_params(),
                                                           dec.count_params())
    assert [(i.name, i.type, i.output_shape) for i in model.infos] == [
        ("encoder", "Sequential", (8,)), ("decoder", "Sequential", (32,))]
    trained, _ = model.apply(params, {}, x, training=True, key=jax.random.key(0))
    assert not np.allclose(np.asarray(trained), np.asarray(y))   # the inner Dropout is on


def test_two_input_two_output_model_with_shared_layer_and_nested_model_equals_keras():
    """The issue's parity case: two inputs, a shared Dense, a Concatenate, a nested
    Sequential, two outputs — the same weights give Keras's outputs and parameter count."""
    spec = spec_from_dict(graph({"a": [6], "b": [6]}, [
        {"Dense": {"name": "shared", "units": 5, "activation": "tanh", "inputs": "a"}},
        {"Reuse": {"layer": "shared", "name": "shared_b", "inputs": "b"}},
        {"Concatenate": {"name": "both", "inputs": ["shared", "shared_b"]}},
        {"Sequential": {"name": "head", "layers": [{"Dense": {"units": 4, "activation": "relu"}},
                                                   {"Dense": 1}]}},
        {"Dense": {"name": "side", "units": 3, "activation": "softmax", "inputs": "both"}}],
        ["head", "side"]))
    model = build_model(spec.model)
    a, b = keras.Input((6,)), keras.Input((6,))
    shared = keras.layers.Dense(5, activation="tanh")
    head = keras.Sequential([keras.Input((10,)), keras.layers.Dense(4, activation="relu"),
                             keras.layers.Dense(1)])
    side = keras.layers.Dense(3, activation="softmax")
    both = keras.layers.Concatenate()([shared(a), shared(b)])
    k = keras.Model([a, b], [head(both), side(both)])
    params = {"shared": {"kernel": shared.kernel.numpy(), "bias": shared.bias.numpy()},
              "head": {"dense": {"kernel": head.layers[0].kernel.numpy(),
                                 "bias": head.layers[0].bias.numpy()},
                       "dense_1": {"kernel": head.layers[1].kernel.numpy(),
                                   "bias": head.layers[1].bias.numpy()}},
              "side": {"kernel": side.kernel.numpy(), "bias": side.bias.numpy()}}
    rng = np.random.default_rng(2)
    xa, xb = (rng.normal(size=(5, 6)).astype(np.float32) for _ in range(2))
    ours, _ = model.apply(params, {}, {"a": xa, "b": xb})
    for got, want in zip(ours, k([xa, xb]), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
    assert sum(t for t, _ in model.count_params().values()) == k.count_params()
    assert model.output_shapes == [(1,), (3,)]


def test_errors_inside_a_nested_model_are_located_at_the_inner_layer():
    raw = copy.deepcopy(AUTOENCODER)
    raw["model"]["layers"][0]["Sequential"]["layers"][2] = {"Dense": {"units": 8,
                                                                      "activation": "sigmod"}}
    with pytest.raises(ConfigError, match=r"model.layers\[0\].Sequential.layers\[2\].Dense"
                                          r".activation: unknown activation 'sigmod'"):
        spec = spec_from_dict(raw)
        build_model(spec.model, where=spec.where)
    raw["model"]["layers"][0]["Sequential"]["layers"][2] = {"Dense": {"units": 8,
                                                                      "inputs": "x"}}
    with pytest.raises(ConfigError, match="a nested Sequential is a chain"):
        spec_from_dict(raw)


def test_plot_writes_png_svg_and_dot(tmp_path):
    from click.testing import CliRunner

    from nnrun.cli.main import main

    config = tmp_path / "two.yaml"
    import yaml
    config.write_text(yaml.safe_dump(TWO_INPUTS))
    runner = CliRunner()
    for name, extra in (("m.png", []), ("m.svg", ["--rankdir", "LR"]), ("m.dot", [])):
        result = runner.invoke(main, ["plot", str(config), "-o", str(tmp_path / name), *extra])
        assert result.exit_code == 0, result.output
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "m.png").stat().st_size > 10_000
    assert "<svg" in (tmp_path / "m.svg").read_text()
    dot = (tmp_path / "m.dot").read_text()
    for edge in ('"left" -> "l"', '"l" -> "merged"', '"r" -> "merged"', '"merged" -> "out"'):
        assert edge in dot
    assert 'label="merged: Concatenate\\ninput: (None, 8), (None, 8)\\noutput: (None, 16)"' \
        in dot
    result = runner.invoke(main, ["plot", str(config), "-o", str(tmp_path / "m.jpg")])
    assert result.exit_code == 2 and "unsupported diagram format '.jpg'" in result.output


def test_two_output_fit_equals_keras():
    """Per-output losses with loss weights and per-output metrics: two epochs of SGD equal
    Keras's fit (the total and each output's unweighted loss, history keys as Keras's,
    the weights), a partial last batch included."""
    from nnrun import api
    from nnrun.train.fitter import Fitter

    rng = np.random.default_rng(0)
    x = rng.normal(size=(25, 4)).astype(np.float32)
    y = {"cls": (x[:, :1] > 0).astype(np.float32), "reg": x[:, 1:3].copy()}
    spec = spec_from_dict({
        "model": {"inputs": {"features": [4]}, "layers": [
            {"Dense": {"name": "trunk", "units": 5, "activation": "tanh"}},
            {"Dense": {"name": "cls", "units": 1, "activation": "sigmoid", "inputs": "trunk"}},
            {"Dense": {"name": "reg", "units": 2, "inputs": "trunk"}}],
            "outputs": ["cls", "reg"]},
        "compile": {"optimizer": {"name": "sgd", "learning_rate": 0.3},
                    "loss": {"cls": "binary_crossentropy", "reg": "mse"},
                    "loss_weights": {"cls": 1.0, "reg": 0.5},
                    "metrics": {"cls": ["accuracy"], "reg": ["mae"]}},
        "fit": {"batch_size": 10, "shuffle": False}})
    model = api.build(spec)
    obj = api.objective_for(spec, model, y)
    fitter = Fitter(model, obj, spec.compile.optimizer, seed=0, batch_size=10, shuffle=False,
                    x=x, y=y)
    ts = fitter.initial_state()
    p = jax.device_get(ts.params)
    inp = keras.Input((4,), name="features")
    trunk = keras.layers.Dense(5, activation="tanh", name="trunk")(inp)
    k = keras.Model(inp, [keras.layers.Dense(1, activation="sigmoid", name="cls")(trunk),
                          keras.layers.Dense(2, name="reg")(trunk)])
    order = [(n, w) for n in ("trunk", "cls", "reg") for w in ("kernel", "bias")]
    k.set_weights([np.asarray(p[n][w]) for n, w in order])
    k.compile(optimizer=keras.optimizers.SGD(learning_rate=0.3),
              loss={"cls": "binary_crossentropy", "reg": "mse"},
              loss_weights={"cls": 1.0, "reg": 0.5},
              metrics={"cls": ["accuracy"], "reg": ["mae"]})
    history = k.fit(x, y, batch_size=10, epochs=2, shuffle=False, verbose=0).history
    for epoch in range(2):
        ts, res = fitter.run_epoch(ts)
        assert set(res.logs) == set(history)
        for key, values in history.items():
            assert res.logs[key] == pytest.approx(values[epoch], rel=1e-5), key
    for (n, w), theirs in zip(order, k.get_weights()):
        np.testing.assert_allclose(np.asarray(ts.params[n][w]), theirs, rtol=1e-5, atol=1e-6)


def test_per_output_compile_errors_are_located():
    raw = {"model": {"inputs": {"f": [4]}, "layers": [
        {"Dense": {"name": "a", "units": 1, "inputs": "f"}},
        {"Dense": {"name": "b", "units": 1, "inputs": "f"}}], "outputs": ["a", "b"]},
        "compile": {"loss": {"a": "mse", "c": "mae"}, "loss_weights": [1.0],
                    "metrics": {"b": ["mea"]}}}
    with pytest.raises(ConfigError) as info:
        spec = spec_from_dict(raw)
    messages = [f"{w}: {m}" for w, m in info.value.problems]
    assert any("compile.loss.c: unknown output 'c'" in m for m in messages), messages
    assert any("compile.loss: no loss for output 'b'" in m for m in messages), messages
    assert any("compile.loss_weights: loss_weights weighs" in m for m in messages), messages
    raw["compile"] = {"loss": {"a": "mse", "b": "msee"}}
    spec = spec_from_dict(raw)
    from nnrun import api
    with pytest.raises(ConfigError, match=r"compile.loss.b: unknown loss 'msee'"):
        api.check_compile(spec)


def test_predict_writes_a_named_layer_or_nested_model_output(tmp_path):
    """`--output encoder --output codes.npy` gives the autoencoder's codes; several names
    go to a .npz; an unknown name or no file is a located error, exit 2."""
    import yaml
    from click.testing import CliRunner

    from nnrun.cli.main import main

    raw = copy.deepcopy(AUTOENCODER)
    raw.update(data={"train": {"builtin": "blobs", "samples": 64, "features": 32, "y": "x"}},
               fit={"epochs": 1, "batch_size": 16})
    (tmp_path / "ae.yaml").write_text(yaml.safe_dump(raw))
    runner = CliRunner()
    result = runner.invoke(main, ["train", str(tmp_path / "ae.yaml"), "--runs-dir",
                                  str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    run = str(tmp_path / "runs" / "latest")
    x = np.random.default_rng(0).normal(size=(5, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = runner.invoke(main, ["predict", run, "-i", str(tmp_path / "x.npy"),
                                  "--output", "encoder", "--output", str(tmp_path / "c.npy")])
    assert result.exit_code == 0, result.output
    codes = np.load(tmp_path / "c.npy")
    assert codes.shape == (5, 8)
    result = runner.invoke(main, ["predict", run, "-i", str(tmp_path / "x.npy"), "-o",
                                  "encoder", "-o", "decoder", "-o", str(tmp_path / "b.npz")])
    assert result.exit_code == 0, result.output
    both = np.load(tmp_path / "b.npz")
    np.testing.assert_allclose(both["encoder"], codes, rtol=1e-6)
    assert both["decoder"].shape == (5, 32)
    for args, needle in ((["-o", "encodr", "-o", str(tmp_path / "d.npy")],
                          "unknown layer 'encodr' (did you mean 'encoder'"),
                         (["-o", "encoder"], "give one output file")):
        result = runner.invoke(main, ["predict", run, "-i", str(tmp_path / "x.npy"), *args])
        assert result.exit_code == 2 and needle in result.output, result.output


@pytest.mark.parametrize("mutate, needle", [
    (lambda m: m["layers"][0]["Dense"].update(inputs="out"), "form a cycle"),
    (lambda m: m["layers"][0]["Dense"].update(inputs="lft"), "unknown input or layer 'lft'"),
    (lambda m: m["layers"][2].update(Add=m["layers"][2].pop("Concatenate")),
     "Add needs inputs of one shape"),
    (lambda m: m.update(outputs=["nope"]), "unknown layer 'nope'"),
])
def test_graph_errors_exit_2_with_a_located_line(tmp_path, mutate, needle):
    import yaml
    from click.testing import CliRunner

    from nnrun.cli.main import main

    raw = copy.deepcopy(TWO_INPUTS)
    raw["model"]["layers"][1]["Dense"]["units"] = 4
    mutate(raw["model"])
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    result = CliRunner().invoke(main, ["summary", str(tmp_path / "g.yaml")])
    assert result.exit_code == 2
    located = [line for line in result.output.splitlines() if needle in line]
    assert located and f"{tmp_path / 'g.yaml'}:" in located[0], result.output   # file:line


def test_summary_shows_a_nested_model_as_one_row_or_expanded(tmp_path):
    import yaml
    from click.testing import CliRunner

    from nnrun.cli.main import main

    (tmp_path / "ae.yaml").write_text(yaml.safe_dump(AUTOENCODER))
    runner = CliRunner()
    plain = runner.invoke(main, ["summary", str(tmp_path / "ae.yaml")]).output
    expanded = runner.invoke(main, ["summary", str(tmp_path / "ae.yaml"), "--expand-nested"])
    assert expanded.exit_code == 0
    assert "encoder (Sequential)" in plain and "dense_1 (Dense)" not in plain
    rows = [line for line in expanded.output.splitlines() if "│   └" in line]
    assert len(rows) == 5 and "└ dense (Dense)" in rows[0] and "528" in rows[0]
    total = [line for line in plain.splitlines() if "Total params" in line]
    assert total and total[0] in expanded.output   # the totals count each weight once


def test_csv_columns_map_to_several_inputs_and_outputs(tmp_path):
    from nnrun import api
    from nnrun.config.spec import load_spec

    rng = np.random.default_rng(0)
    rows = ["a,b,c,label,value"] + [f"{a:.4f},{b:.4f},{c:.4f},{int(a > 0)},{b + c:.4f}"
                                    for a, b, c in rng.normal(size=(40, 3))]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    import yaml
    config = {"data": {"train": {"path": "t.csv", "features": {"left": ["a"],
                                                               "right": ["b", "c"]},
                                 "target": {"cls": "label", "reg": "value"}}},
              "model": {"inputs": {"left": [1], "right": [2]}, "layers": [
                  {"Dense": {"name": "l", "units": 4, "inputs": "left"}},
                  {"Dense": {"name": "r", "units": 4, "inputs": "right"}},
                  {"Concatenate": {"name": "m", "inputs": ["l", "r"]}},
                  {"Dense": {"name": "cls", "units": 1, "activation": "sigmoid",
                             "inputs": "m"}},
                  {"Dense": {"name": "reg", "units": 1, "inputs": "m"}}],
                  "outputs": ["cls", "reg"]},
              "compile": {"optimizer": "adam", "loss": {"cls": "binary_crossentropy",
                                                        "reg": "mse"}},
              "fit": {"epochs": 2, "batch_size": 8}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    spec = load_spec(tmp_path / "c.yaml")
    train = api.load_data(spec).train
    assert {k: v.shape for k, v in train.x.items()} == {"left": (40, 1), "right": (40, 2)}
    assert {k: v.shape for k, v in train.y.items()} == {"cls": (40, 1), "reg": (40, 1)}
    result = api.train(spec, runs_root=tmp_path / "runs", quiet=True)
    assert result.status == "finished"
    assert {"cls_loss", "reg_loss"} <= set(result.history)


def test_nested_graph_model_shared_as_a_tower_equals_keras():
    tower = {"inputs": {"x": [8], "z": [2]}, "layers": [
        {"Dense": {"name": "h", "units": 4, "activation": "relu", "inputs": "x"}},
        {"Concatenate": {"name": "hz", "inputs": ["h", "z"]}},
        {"Dense": {"name": "o", "units": 3}}], "outputs": ["o"]}
    spec = spec_from_dict(graph({"left": [8], "right": [8], "extra": [2]}, [
        {"Model": {"name": "tower", "graph": tower, "inputs": ["left", "extra"]}},
        {"Reuse": {"layer": "tower", "name": "tower_r", "inputs": ["right", "extra"]}},
        {"Add": {"name": "sum", "inputs": ["tower", "tower_r"]}}], ["sum"]))
    model = build_model(spec.model)
    x, z = keras.Input((8,)), keras.Input((2,))
    h, o = keras.layers.Dense(4, activation="relu"), keras.layers.Dense(3)
    ktower = keras.Model([x, z], o(keras.layers.Concatenate()([h(x), z])))
    left, right, extra = keras.Input((8,)), keras.Input((8,)), keras.Input((2,))
    k = keras.Model([left, right, extra],
                    keras.layers.Add()([ktower([left, extra]), ktower([right, extra])]))
    params = {"tower": {"h": {"kernel": h.kernel.numpy(), "bias": h.bias.numpy()},
                        "o": {"kernel": o.kernel.numpy(), "bias": o.bias.numpy()}}}
    rng = np.random.default_rng(3)
    xs = [rng.normal(size=(4, d)).astype(np.float32) for d in (8, 8, 2)]
    y, _ = model.apply(params, {}, dict(zip(["left", "right", "extra"], xs)))
    np.testing.assert_allclose(np.asarray(y), np.asarray(k(xs)), rtol=1e-5, atol=1e-6)
    assert sum(t for t, _ in model.count_params().values()) == k.count_params()
    bad = copy.deepcopy(tower)
    bad["layers"][2]["Dense"]["activation"] = "sigmod"
    with pytest.raises(ConfigError, match=r"model.layers\[0\].Model.graph.layers\[2\].Dense"
                                          r".activation: unknown activation"):
        raw = graph({"left": [8], "extra": [2]}, [
            {"Model": {"name": "tower", "graph": bad, "inputs": ["left", "extra"]}}], ["tower"])
        s = spec_from_dict(raw)
        build_model(s.model, where=s.where)
    with pytest.raises(ConfigError, match=r"the nested model takes \[\(None, 8\), \(None, 2\)\], "
                                          r"got \[\(None, 2\), \(None, 8\)\]"):
        build_model(spec_from_dict(graph({"left": [8], "extra": [2]}, [
            {"Model": {"name": "tower", "graph": tower, "inputs": ["extra", "left"]}}],
            ["tower"])).model)


def test_hdf5_dataset_paths_map_to_inputs_and_outputs(tmp_path):
    import h5py

    from nnrun.data.sources import load_source

    rng = np.random.default_rng(0)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["inputs/a"] = rng.normal(size=(30, 3)).astype(np.float32)
        f["inputs/b"] = rng.normal(size=(30, 2)).astype(np.float32)
        f["targets/cls"] = (rng.random((30, 1)) > 0.5).astype(np.float32)
    ds = load_source({"path": "d.h5", "x": {"left": "inputs/a", "right": "inputs/b"},
                      "y": {"cls": "targets/cls"}}, seed=0, base_dir=tmp_path)
    assert {k: v.shape for k, v in ds.x.items()} == {"left": (30, 3), "right": (30, 2)}
    assert ds.y["cls"].shape == (30, 1)
    single = load_source({"path": "d.h5", "x": "inputs/a", "y": "targets/cls"}, seed=0,
                         base_dir=tmp_path)
    assert single.x.shape == (30, 3)
    from nnrun.config.errors import DataError
    with pytest.raises(DataError, match="no dataset 'inputs/c' in the file; datasets present: "
                                        "inputs/a, inputs/b, targets/cls"):
        load_source({"path": "d.h5", "x": "inputs/c"}, seed=0, base_dir=tmp_path)
