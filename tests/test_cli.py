"""The command line through click's runner: outputs, run directory, exit codes."""

import json
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from nnrun.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
MLP = str(ROOT / "configs" / "mlp.yaml")


@pytest.fixture
def runner():
    return CliRunner()


def nnrun(runner, tmp_path, *args):
    result = runner.invoke(main, [*args, "--runs-dir", str(tmp_path / "runs")])
    assert "Traceback" not in result.output
    return result


def train_mlp(runner, tmp_path, epochs=3):
    result = nnrun(runner, tmp_path, "train", MLP, "--set", f"fit.epochs={epochs}")
    assert result.exit_code == 0, result.output
    return Path(result.output.strip().splitlines()[-1])


def test_train_writes_the_run_directory(runner, tmp_path):
    run = train_mlp(runner, tmp_path)
    assert run.parent == tmp_path / "runs" and run.name.startswith("xor-mlp-")
    for name in ["config.yaml", "run.json", "metrics.csv", "metrics.jsonl", "summary.txt",
                 "model.json", "model.yaml", "checkpoints/last.h5", "checkpoints/best.h5"]:
        assert (run / name).is_file(), name
    assert (tmp_path / "runs" / "latest").resolve() == run.resolve()
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["epochs_completed"] == 3
    assert info["versions"]["jax"] and info["timing"]["first_epoch_seconds"] > 0
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0] == "epoch,loss,accuracy,val_loss,val_accuracy,lr" and len(rows) == 4
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    assert "epochs: 3" in (run / "config.yaml").read_text()
    arch = json.loads((run / "model.json").read_text())
    assert [next(iter(layer)) for layer in arch["model"]["layers"]] == [
        "Dense", "Activation", "Dense", "Activation"]
    for saved in ("model.json", "model.yaml"):   # the architecture loads as a config's model:
        config = tmp_path / f"from_{saved}.yaml"
        config.write_text(f"model: {run / saved}\ncompile: {{loss: mse}}\n")
        result = nnrun(runner, tmp_path, "summary", str(config))
        assert result.exit_code == 0, result.output
        assert "Total params: 21 (84.00 B)" in result.output


def test_two_identical_runs_are_identical(runner, tmp_path):
    a, b = train_mlp(runner, tmp_path, 5), train_mlp(runner, tmp_path, 5)
    assert a != b
    assert (a / "metrics.csv").read_bytes() == (b / "metrics.csv").read_bytes()
    with h5py.File(a / "checkpoints/last.h5") as fa, h5py.File(b / "checkpoints/last.h5") as fb:
        for layer in fa["params"]:
            for w in fa["params"][layer]:
                assert fa["params"][layer][w][()].tobytes() == fb["params"][layer][w][()].tobytes()


def test_evaluate_predict_and_summary(runner, tmp_path):
    run = train_mlp(runner, tmp_path)
    result = nnrun(runner, tmp_path, "evaluate", str(run), "--json")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert scores["data"] == "test" and {"loss", "accuracy"} <= set(scores)
    by_config = json.loads(nnrun(runner, tmp_path, "evaluate", MLP, "--json").output)
    assert by_config["loss"] == scores["loss"]   # a config means its newest run

    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "x.csv").write_text("a,b\n0,0\n0,1\n1,0\n1,1\n")
    for src, dst in [("x.npy", "p.npy"), ("x.csv", "p.csv")]:
        result = nnrun(runner, tmp_path, "predict", str(run), "--input", str(tmp_path / src),
                       "--output", str(tmp_path / dst))
        assert result.exit_code == 0, result.output
    probs = np.load(tmp_path / "p.npy")
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "row,p1,class"
    np.testing.assert_allclose([float(line.split(",")[1]) for line in lines[1:]],
                               probs[:, 0], rtol=1e-6)
    assert [int(line.split(",")[2]) for line in lines[1:]] == list((probs[:, 0] > 0.5) * 1)

    result = nnrun(runner, tmp_path, "summary", MLP)
    assert result.exit_code == 0
    assert "Layer (type)" in result.output and "dense_1 (Dense)" in result.output
    assert "Total params: 21 (84.00 B)" in result.output
    summary = json.loads(nnrun(runner, tmp_path, "summary", str(run), "--json").output)
    assert summary["total_params"] == 21


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("args, code, needle", [
    (["train", "missing.yaml"], 2, "does not exist"),
    (["train"], 2, "Missing argument"),
    (["trian", MLP], 2, "No such command"),
    (["train", MLP, "--set", "fit.epochs=-1"], 2, "--set fit.epochs=-1: fit.epochs: expected"),
    (["train", MLP, "--set", "compile.loss=msee"], 2, "did you mean 'mse'"),
    (["train", MLP, "--set", "data.train={path: nowhere.csv, target: y}"], 3, "nowhere.csv"),
    (["train", MLP, "--set", "model.layers[2].Dense=3"], 3, "do not fit the model output"),
    (["evaluate", MLP], 2, "train it first"),
])
def test_error_exit_codes(runner, tmp_path, args, code, needle):
    result = nnrun(runner, tmp_path, *args)
    assert result.exit_code == code, result.output
    assert needle in result.output


def test_config_error_names_file_and_line(runner, tmp_path):
    path = write(tmp_path, Path(MLP).read_text().replace("Dense: 1", "Dense: {units: 0}"))
    result = nnrun(runner, tmp_path, "train", path)
    assert result.exit_code == 2
    assert f"{path}:16:" in result.output and "model.layers[2].Dense.units" in result.output
    assert not (tmp_path / "runs").exists()   # nothing started


def test_compile_and_layer_errors_are_located_before_data_is_read(runner, tmp_path):
    path = write(tmp_path, "model:\n  layers:\n    - Dense: {units: 5, input_dim: 2}\n"
                           "    - Dense: {units: 1, activation: sigmod}\n"
                           "compile:\n  loss: mse\n"
                           "  optimizer: {name: adam, bta_1: 0.9, clipnorm: 1, clipvalue: 2}\n"
                           "data: {train: {path: missing.csv, target: y}}\n")
    result = nnrun(runner, tmp_path, "train", path)
    assert result.exit_code == 2, result.output
    assert f"{path}:7:27: compile.optimizer.bta_1: unknown parameter 'bta_1'" in result.output
    assert "did you mean 'beta_1'" in result.output
    assert f"{path}:7:52: compile.optimizer.clipvalue: only one of" in result.output
    fixed = Path(path).read_text().replace("bta_1: 0.9, clipnorm: 1, clipvalue: 2", "amsgrad: true")
    Path(path).write_text(fixed)
    result = nnrun(runner, tmp_path, "train", path)
    assert result.exit_code == 2, result.output
    assert f"{path}:4:37: model.layers[1].Dense.activation: unknown activation 'sigmod' " \
           "(did you mean 'sigmoid'" in result.output


def test_predict_refuses_unknown_output_type_before_work(runner, tmp_path):
    run = train_mlp(runner, tmp_path, 1)
    np.save(tmp_path / "x.npy", np.zeros((2, 2), np.float32))
    result = nnrun(runner, tmp_path, "predict", str(run), "-i", str(tmp_path / "x.npy"),
                   "-o", str(tmp_path / "p.xyz"))
    assert result.exit_code == 2 and "unsupported output file type" in result.output


def test_divergence_exits_4_and_keeps_a_loadable_checkpoint(runner, tmp_path):
    config = write(tmp_path, (ROOT / "configs" / "regression.yaml").read_text())
    result = nnrun(runner, tmp_path, "train", config, "--set", "fit.epochs=30",
                   "--set", "fit.shuffle=false",
                   "--set", "compile.optimizer={name: sgd, learning_rate: 0.2, momentum: 0.9}")
    assert result.exit_code == 4, result.output
    run = Path(result.output.strip().splitlines()[-1])
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "diverged" and "non-finite" in info["stop_reason"]
    assert info["epochs_completed"] == 2   # epoch 1 was finite, epoch 2 was not
    assert nnrun(runner, tmp_path, "evaluate", str(run), "--json").exit_code == 0


def test_sigint_saves_a_checkpoint_and_exits_130(tmp_path):
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "nnrun.cli", "train", MLP, "--set", "fit.epochs=100000",
         "--runs-dir", str(tmp_path / "runs")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # On a GPU the parent test process already holds most of the memory XLA preallocates.
        env={**__import__("os").environ, "NNRUN_NO_COMPILE_CACHE": "1",
             "XLA_PYTHON_CLIENT_PREALLOCATE": "false"})
    for line in proc.stdout:           # wait until training is under way
        if line.startswith("Epoch 3/"):
            break
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "Traceback" not in out
    run = next((tmp_path / "runs").glob("xor-mlp-*"))
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "interrupted" and "SIGINT" in info["stop_reason"]
    import h5py
    with h5py.File(run / "checkpoints" / "last.h5") as f:
        assert f.attrs["epoch"] == info["epochs_completed"] >= 3


@pytest.mark.parametrize("fmt", ["csv", "npz", "npy"])
def test_trains_and_predicts_from_files(runner, tmp_path, fmt):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3)).astype(np.float32)
    y = (x.sum(axis=1, keepdims=True) > 0).astype(np.float32)
    if fmt == "csv":
        rows = ["a,b,c,label"] + [",".join(f"{v:.6f}" for v in (*r, t[0])) for r, t in zip(x, y)]
        (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
        source = "{path: train.csv, target: label}"
    elif fmt == "npz":
        np.savez(tmp_path / "train.npz", features=x, labels=y)
        source = "{path: train.npz, x: features, y: labels}"
    else:
        np.save(tmp_path / "train.npy", x)
        np.save(tmp_path / "labels.npy", y)
        source = "{path: train.npy, target: labels.npy}"
    config = write(tmp_path, f"name: files\ndata:\n  train: {source}\n  validation_split: 0.25\n"
                             "model:\n  layers:\n    - Dense: {units: 8, activation: relu}\n"
                             "    - Dense: {units: 1, activation: sigmoid}\n"
                             "compile: {optimizer: adam, loss: binary_crossentropy, "
                             "metrics: [accuracy]}\nfit: {epochs: 3, batch_size: 16}\n")
    result = nnrun(runner, tmp_path, "train", config)   # input shape taken from the data
    assert result.exit_code == 0, result.output
    run = Path(result.output.strip().splitlines()[-1])
    info = json.loads((run / "run.json").read_text())
    assert info["samples"] == {"train": 90, "validation": 30}
    assert all(len(f["sha256"]) == 64 for f in info["data_files"]) and info["data_files"]
    src = tmp_path / ("train.csv" if fmt == "csv" else "train.npy" if fmt == "npy" else "x.npy")
    if fmt == "npz":
        np.save(src, x)
    result = nnrun(runner, tmp_path, "predict", str(run), "-i", str(src),
                   "-o", str(tmp_path / "p.npy"))    # the CSV's label column is dropped
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "p.npy").shape == (120, 1)


@pytest.mark.parametrize("config", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_example_configs_train(runner, tmp_path, config, example_run):
    """Each example config trains (one epoch, a few rows of each generated split: the
    brief run the export tests read, tests/trained_examples.py, trained once per test
    process) and summarizes."""
    run = example_run(config.removesuffix(".yaml"))
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["epochs_completed"] == 1, info
    assert (run / "checkpoints" / "last.h5").is_file()
    assert nnrun(runner, tmp_path, "summary", str(ROOT / "configs" / config)).exit_code == 0


def test_check_validates_many_configs_without_data_and_reports_every_problem(runner,
                                                                              tmp_path):
    good = sorted(str(p) for p in (ROOT / "configs").glob("*.yaml"))
    result = runner.invoke(main, ["check", *good])
    assert result.exit_code == 0, result.output
    assert result.output.count(": ok (") == len(good)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  input_shape: [4]\n  layers:\n"
                   "    - Dense: {units: 8, activation: sigmod}\n"
                   "    - Reshape: [3, 3]\n"
                   "compile: {loss: mse, optimizer: adamm}\n")
    result = runner.invoke(main, ["check", str(bad), good[0]])
    assert result.exit_code == 2
    assert f"{bad}:4:37: model.layers[0].Dense.activation: unknown activation 'sigmod'" \
        in result.output
    assert f"{bad}:6:22: compile.optimizer: unknown optimizer 'adamm'" in result.output
    assert f"{good[0]}: ok" in result.output
    fixed = bad.read_text().replace("sigmod", "sigmoid").replace("adamm", "adam")
    bad.write_text(fixed)   # now the shape check (no data read) finds the Reshape
    result = runner.invoke(main, ["check", str(bad), "--json"])
    assert result.exit_code == 2
    (report,) = json.loads(result.output)
    assert not report["ok"] and "cannot reshape 8 values" in report["problems"][0]["message"]


def test_errors_show_the_yaml_line_with_a_caret(tmp_path):
    from nnrun.config.errors import ConfigError
    from nnrun.config.spec import load_spec
    from nnrun.config.yamlsrc import describe, snippet

    path = tmp_path / "c.yaml"
    line = "    - Dense: {unitz: 8, activation: relu}"
    path.write_text(f"model:\n  input_shape: [4]\n  layers:\n{line}\ncompile: {{loss: mse}}\n")
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    text = describe(info.value, snippets=True).splitlines()
    assert text[0].startswith(f"{path}:4:{line.index('unitz') + 1}: ")
    assert text[1] == f"  4 | {line}"
    assert text[2] == "    | " + " " * line.index("unitz") + "^"
    assert snippet("no location here") == [] and snippet(f"{tmp_path}/gone.yaml:1:1") == []


@pytest.mark.parametrize("name", ["mlp.yaml", "two_outputs.yaml", "autoencoder.yaml"])
def test_config_prints_the_resolved_config_which_loads_back(runner, tmp_path, name):
    import yaml

    from nnrun.config.spec import load_spec, model_to_dict

    source = ROOT / "configs" / name
    result = runner.invoke(main, ["config", str(source), "--set", "fit.epochs=3"])
    assert result.exit_code == 0, result.output
    resolved = yaml.safe_load(result.output)
    assert resolved["fit"]["epochs"] == 3 and resolved["version"] == 1
    (tmp_path / name).write_text(result.output)
    again = load_spec(tmp_path / name)
    assert model_to_dict(again.model) == model_to_dict(load_spec(source).model)
    as_json = runner.invoke(main, ["config", str(source), "--json"])
    assert json.loads(as_json.output)["model"] == resolved["model"]


@pytest.mark.parametrize("command", [
    ["train"], ["evaluate"], ["summary"], ["plot", "-o", "m.png"], ["export"],
    ["predict", "-i", "IN", "-o", "out.csv"], ["check"],
])
def test_every_command_runs_the_same_check_first(runner, tmp_path, monkeypatch, command):
    """Each command reports exactly what `nnrun check` reports, before any other work."""
    monkeypatch.chdir(tmp_path)  # the default runs/ is here
    config = tmp_path / "bad.yaml"
    config.write_text(textwrap.dedent("""\
        model:
          input_shape: [2]
          layers:
            - Dense: {units: 4, activation: rellu}
            - Dense: {units: 1, unitz: 2}
        compile: {optimizer: adamm, loss: mse}
        """))
    (tmp_path / "IN").write_text("a,b\n1,2\n")
    args = [a.replace("IN", str(tmp_path / "IN")) for a in command]
    result = runner.invoke(main, [args[0], str(config), *args[1:]])
    assert result.exit_code == 2, result.output
    for needle in ("did you mean 'relu'", "did you mean 'units'", "did you mean 'adam'"):
        assert needle in result.output, (command, result.output)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "m.png").exists()
