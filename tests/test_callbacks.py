"""Callbacks (fit.callbacks) against scripted metric sequences, end to end through
training, and exact resume of an interrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from nnrun.cli.main import main
from nnrun.config.callback_specs import validate_callbacks
from nnrun.config.checks import Problems
from nnrun.config.yamlsrc import Origins
from nnrun.train import callbacks as cb

ROOT = Path(__file__).resolve().parents[1]


def make(name: str, **args) -> cb.Callback:
    problems = Problems(Origins())
    (spec,) = validate_callbacks([{name: args}], ("fit", "callbacks"), problems)
    assert not problems.items, problems.items
    return cb.make_callbacks((spec,))[0]


def replay(callback, values, key="val_loss", lr=1.0, start=0):
    """Feed a sequence of monitored values; per epoch (stop reason, keep, lr after)."""
    out = []
    for epoch, value in enumerate(values, start):
        control = cb.Control(lr)
        callback.on_epoch_begin(epoch, control)
        lr = control.learning_rate
        control = cb.Control(lr)
        callback.on_epoch_end(epoch, {key: value}, control)
        lr = control.learning_rate
        out.append((control.stop_reason, control.keep_weights, lr))
        if control.stop_reason:
            break
    return out


# ---------------------------------------------------------------- EarlyStopping


def stopped_at(steps) -> int | None:
    return next((i for i, (reason, _, _) in enumerate(steps) if reason), None)


@pytest.mark.parametrize("values, args, stop", [
    ([1.0, 0.9, 0.95, 0.91, 0.92], {"patience": 2}, 3),
    ([1.0, 0.9, 0.95, 0.91, 0.92], {"patience": 3}, 4),
    ([1.0, 0.9, 0.8, 0.7], {"patience": 1}, None),
    ([1.0, 0.99, 0.98], {"patience": 1, "min_delta": 0.05}, 1),    # too small a gain
    ([1.0, 0.94, 0.88], {"patience": 1, "min_delta": 0.05}, None),
    ([0.8, 0.7, 0.6, 0.6], {"patience": 2, "baseline": 0.5}, 3),   # never beat baseline
    ([0.8, 0.7, 0.6, 0.6], {"patience": 2}, None),
    ([1.0, 1.0, 1.0], {"patience": 0}, 1),                          # epoch > 0 only
    ([1.0, 1.1, 1.2, 1.3], {"patience": 1, "start_from_epoch": 2}, 3),
])
def test_early_stopping_follows_keras(values, args, stop):
    assert stopped_at(replay(make("EarlyStopping", **args), values)) == stop


def test_early_stopping_mode_auto_maximises_accuracy():
    es = make("EarlyStopping", monitor="val_accuracy", patience=1)
    assert es.direction == "max"
    assert stopped_at(replay(es, [0.5, 0.6, 0.55], key="val_accuracy")) == 2
    es = make("EarlyStopping", monitor="val_accuracy", patience=1, mode="min")
    assert stopped_at(replay(es, [0.5, 0.6, 0.55], key="val_accuracy")) == 1


def test_early_stopping_keeps_the_best_epochs_weights():
    es = make("EarlyStopping", patience=5, restore_best_weights=True)
    keeps = [keep for _, keep, _ in replay(es, [1.0, 0.9, 0.95, 0.8, 0.85])]
    assert keeps == [True, True, False, True, False]
    assert es.best_epoch == 3 and es.best == 0.8
    es = make("EarlyStopping", patience=5)          # no restoring: nothing kept
    assert not any(keep for _, keep, _ in replay(es, [1.0, 0.9]))


def test_callback_state_resumes_exactly():
    values = [1.0, 0.9, 0.95, 0.93, 0.91, 0.92, 0.94, 0.96]
    for name, args in [("EarlyStopping", {"patience": 3}),
                       ("ReduceLROnPlateau", {"patience": 1, "cooldown": 1, "factor": 0.5})]:
        whole = replay(make(name, **args), values)
        first = make(name, **args)
        head = replay(first, values[:4])
        saved = json.loads(json.dumps(first.state()))
        second = make(name, **args)
        second.load_state(saved)
        tail = replay(second, values[4:], lr=head[-1][2], start=4)
        assert head + tail == whole, name


# ---------------------------------------------------------------- ReduceLROnPlateau


def test_reduce_lr_on_plateau_follows_keras():
    cb_ = make("ReduceLROnPlateau", monitor="loss", patience=2, factor=0.5, cooldown=1,
               min_lr=0.2)
    lrs = [lr for _, _, lr in replay(cb_, [1.0] * 9, key="loss")]
    # e0 improves (from inf); e2 reduces, then a cooldown epoch; e4, e6 reduce (min_lr 0.2)
    assert lrs == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.2, 0.2, 0.2]


def test_reduce_lr_on_plateau_min_delta_and_defaults():
    cb_ = make("ReduceLROnPlateau")
    assert (cb_.monitor, cb_.factor, cb_.patience, cb_.min_delta, cb_.cooldown,
            cb_.min_lr) == ("val_loss", 0.1, 10, 1e-4, 0, 0.0)
    cb_ = make("ReduceLROnPlateau", patience=1, min_delta=0.1)
    lrs = [lr for _, _, lr in replay(cb_, [1.0, 0.95, 0.8, 0.75])]
    assert lrs == pytest.approx([1.0, 0.1, 0.1, 0.01])


# ---------------------------------------------------------------- the others


def test_learning_rate_scheduler_by_name():
    lrs = make("LearningRateScheduler", schedule="exponential_decay",
               initial_learning_rate=0.1, decay_steps=1, decay_rate=0.5)
    rates = [lr for _, _, lr in replay(lrs, [1.0, 1.0, 1.0])]
    assert rates == pytest.approx([0.1, 0.05, 0.025])


@pytest.mark.parametrize("args, saved", [
    ({"filepath": "m{epoch}.h5", "save_best_only": True}, ["m1.h5", "m2.h5", "m4.h5"]),
    ({"filepath": "m{epoch}.h5", "save_freq": 2}, ["m2.h5", "m4.h5"]),
    ({"filepath": "m{epoch}-{val_loss:.1f}.h5"}, ["m1-3.0.h5", "m2-2.0.h5", "m3-2.5.h5",
                                                  "m4-1.0.h5"]),
    ({}, []),
])
def test_model_checkpoint_files(args, saved):
    mc = make("ModelCheckpoint", **args)
    names = []
    for epoch, value in enumerate([3.0, 2.0, 2.5, 1.0]):
        mc.on_epoch_end(epoch, {"val_loss": value}, cb.Control(1.0))
        names += [mc.save] if mc.save else []
    assert names == saved


def test_terminate_on_nan_and_csv_logger_take_no_arguments():
    for name in ("TerminateOnNaN", "CSVLogger"):
        make(name)
        problems = Problems(Origins())
        validate_callbacks([{name: {"filename": "x"}}], ("fit", "callbacks"), problems)
        assert "takes no arguments" in problems.items[0][1]


# ---------------------------------------------------------------- end to end

CONFIG = """\
name: cb
seed: 1
data:
  train: {builtin: xor, samples: 400}
  validation_split: 0.25
model:
  input_shape: [2]
  layers:
    - Dense: {units: 8, activation: tanh}
    - Dense: {units: 1, activation: sigmoid}
compile: {optimizer: {name: sgd, learning_rate: 0.5}, loss: binary_crossentropy}
fit:
  batch_size: 20
  epochs: 12
"""


def train(tmp_path, callbacks: str, *extra, config: str = CONFIG):
    path = tmp_path / "cb.yaml"
    path.write_text(config + (f"  callbacks: {callbacks}\n" if callbacks else ""))
    result = CliRunner().invoke(main, ["train", str(path), "-q", "--runs-dir",
                                       str(tmp_path / "runs"), *extra])
    assert "Traceback" not in result.output, result.output
    return result


def weights(path: Path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, item: out.__setitem__(name, item[()])
                     if isinstance(item, h5py.Dataset) else None)
    return out


def test_early_stopping_restores_the_best_weights(tmp_path):
    result = train(tmp_path, "[{EarlyStopping: {patience: 1, restore_best_weights: true}}]",
                   "--set", "compile.optimizer.learning_rate=3.0")
    assert result.exit_code == 0, result.output
    run = Path(result.output.strip().splitlines()[-1])
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and "EarlyStopping" in info["stop_reason"]
    val = [float(r.split(",")[2]) for r in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert len(val) < 12 and int(np.argmin(val)) < len(val) - 1   # stopped after the best
    last, best = weights(run / "checkpoints/last.h5"), weights(run / "checkpoints/best.h5")
    with h5py.File(run / "checkpoints/best.h5") as f:
        assert f.attrs["epoch"] == int(np.argmin(val)) + 1
    for name in best:
        if name.startswith(("params/", "state/")):
            np.testing.assert_array_equal(last[name], best[name], err_msg=name)


def test_reduce_lr_on_plateau_scales_the_jitted_update(tmp_path):
    """ReduceLROnPlateau halves the rate after every epoch but the first (which improves
    on inf; min_delta is unreachable after it); the epochs equal those of runs whose
    optimizer had these rates (SGD, no momentum), bit for bit, and compile once."""
    import yaml

    from nnrun import api
    from nnrun.config.spec import spec_from_dict
    from nnrun.train.fitter import Fitter

    raw = yaml.safe_load(CONFIG)
    raw["fit"]["callbacks"] = [{"ReduceLROnPlateau": {"monitor": "loss", "factor": 0.5,
                                                      "patience": 0, "min_delta": 10.0}}]
    result = api.train(spec_from_dict(raw), runs_root=tmp_path / "runs", quiet=True)
    rows = (result.run_dir / "metrics.csv").read_text().splitlines()
    lrs = [float(r.split(",")[-1]) for r in rows[1:4]]
    assert lrs == [0.5, 0.5, 0.25]
    # the same 3 epochs, the rate set in the optimizer instead
    spec = spec_from_dict(raw)
    splits = api.load_data(spec)
    model = api.build(spec, splits.train.x)
    obj = api.objective_for(spec, model, splits.train.y)
    params = None
    for epoch, rate in enumerate(lrs):
        fitter = Fitter(model, obj, {"name": "sgd", "learning_rate": rate}, seed=1,
                        batch_size=20, shuffle=True, x=splits.train.x, y=splits.train.y)
        ts = fitter.initial_state() if params is None else params
        fitter.epoch = epoch
        ts, res = fitter.run_epoch(ts)
        params = ts
        assert res.logs["loss"] == result.history["loss"][epoch]
    assert fitter.traces == {"epoch": 1}


def test_learning_rate_scheduler_sets_each_epochs_rate(tmp_path):
    result = train(tmp_path, "[{LearningRateScheduler: {schedule: exponential_decay, "
                             "initial_learning_rate: 0.2, decay_steps: 1, decay_rate: 0.5}}]",
                   "--set", "fit.epochs=3")
    assert result.exit_code == 0, result.output
    run = Path(result.output.strip().splitlines()[-1])
    lrs = [float(r.split(",")[-1]) for r in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert lrs == pytest.approx([0.2, 0.1, 0.05], rel=1e-6)


def test_a_monitor_that_is_not_logged_is_a_config_error(tmp_path):
    config = CONFIG.replace("  validation_split: 0.25\n", "")
    result = train(tmp_path, "[{EarlyStopping: {patience: 1}}]", config=config)
    assert result.exit_code == 2
    assert "monitors 'val_loss', which is not logged" in result.output
    assert "fit.callbacks[0].EarlyStopping" in result.output


def test_terminate_on_nan_exits_4_keeping_the_last_good_checkpoint(tmp_path):
    config = (CONFIG.replace("xor", "sine").replace("input_shape: [2]", "input_shape: [1]")
              .replace("activation: sigmoid", "activation: linear")
              .replace("loss: binary_crossentropy", "loss: mse")
              .replace("learning_rate: 0.5", "learning_rate: 1.0e+10"))
    result = train(tmp_path, "[TerminateOnNaN, CSVLogger]", config=config)
    assert result.exit_code == 4, result.output
    run = Path(result.output.strip().splitlines()[-1])
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "diverged"
    assert all(np.isfinite(v).all() for k, v in weights(run / "checkpoints/last.h5").items()
               if k.startswith("params/"))


def test_terminate_on_nan_can_be_switched_off(tmp_path):
    config = (CONFIG.replace("xor", "sine").replace("input_shape: [2]", "input_shape: [1]")
              .replace("activation: sigmoid", "activation: linear")
              .replace("loss: binary_crossentropy", "loss: mse")
              .replace("learning_rate: 0.5", "learning_rate: 1.0e+10"))
    result = train(tmp_path, "[]", "--set", "fit.terminate_on_nan=false", "--set",
                   "fit.epochs=3", config=config)
    assert result.exit_code == 0, result.output
    run = Path(result.output.strip().splitlines()[-1])
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["epochs_completed"] == 3
    rows = (run / "metrics.csv").read_text().splitlines()[1:]
    assert len(rows) == 3 and "nan" in rows[-1].lower()


def test_a_diverged_run_ends_with_the_best_weights_when_asked(tmp_path, monkeypatch):
    """EarlyStopping(restore_best_weights) restores whenever training ends, a
    non-finite loss included: last.h5 then holds the best epoch's weights."""
    from nnrun.train.fitter import Fitter

    original = Fitter.run_epochs

    def scripted(self, *args):   # epoch 2 worse than epoch 1, epoch 3 not finite
        chunk = original(self, *args)
        for res in chunk.results:
            if res.epoch == 2:
                res.logs["val_loss"] = 1e6
            if res.epoch == 3:
                res.logs["loss"] = float("nan")
        return chunk

    from nnrun.train import checkpoint

    monkeypatch.setattr(Fitter, "run_epochs", scripted)
    monkeypatch.setattr(checkpoint, "CHECKPOINT_SECONDS", 0)   # last.h5 every epoch
    result = train(tmp_path, "[{EarlyStopping: {patience: 10, restore_best_weights: true}}]",
                   "--set", "fit.epochs=5")
    assert result.exit_code == 4, result.output
    run = Path(result.output.strip().splitlines()[-1])
    last, best = weights(run / "checkpoints/last.h5"), weights(run / "checkpoints/best.h5")
    params = [k for k in best if k.startswith("params/")]
    assert params
    for key in params:
        np.testing.assert_array_equal(last[key], best[key])


# ---------------------------------------------------------------- resume

RESUME = """\
name: resume
seed: 3
data:
  train: {builtin: xor, samples: 40000}
  validation_split: 0.2
model:
  input_shape: [2]
  layers:
    - Dense: {units: 32, activation: relu}
    - BatchNormalization: {}
    - Dropout: 0.2
    - Dense: {units: 1, activation: sigmoid}
compile:
  optimizer: {name: adam, learning_rate: {schedule: exponential_decay,
              initial_learning_rate: 0.01, decay_steps: 500, decay_rate: 0.9}}
  loss: binary_crossentropy
  metrics: [accuracy]
fit:
  batch_size: 16
  epochs: 6
  callbacks:
    - EarlyStopping: {monitor: val_loss, patience: 10, restore_best_weights: true}
    - ReduceLROnPlateau: {monitor: loss, factor: 0.5, patience: 0, min_delta: 0.5}
"""
ENV = {**os.environ, "NNRUN_NO_COMPILE_CACHE": "1", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}


def cli(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nnrun.cli", "train", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=ENV, cwd=ROOT)


@pytest.mark.slow
def test_resume_after_sigint_is_bit_identical(tmp_path):
    config = tmp_path / "resume.yaml"
    config.write_text(RESUME)
    straight = cli(str(config), "--runs-dir", str(tmp_path / "a"))
    out, _ = straight.communicate(timeout=300)
    assert straight.returncode == 0, out
    proc = cli(str(config), "--runs-dir", str(tmp_path / "b"))
    for line in proc.stdout:               # SIGINT while epoch 4 runs
        if line.startswith("Epoch 3/"):
            break
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    run = next((tmp_path / "b").glob("resume-*"))
    stopped = json.loads((run / "run.json").read_text())
    assert stopped["status"] == "interrupted" and 3 <= stopped["epochs_completed"] < 6

    resumed = cli("--resume", str(run), "--runs-dir", str(tmp_path / "b"))
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert out.strip().splitlines()[-1] == str(run.resolve())
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["epochs_completed"] == 6
    assert info["resumed"][0]["after_status"] == "interrupted"

    first = next((tmp_path / "a").glob("resume-*"))
    a, b = weights(first / "checkpoints/last.h5"), weights(run / "checkpoints/last.h5")
    assert sorted(a) == sorted(b) and any(k.startswith("optimizer/") for k in a)
    for name in a:
        assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name]), name
    rows_a = (first / "metrics.csv").read_text().splitlines()
    rows_b = (run / "metrics.csv").read_text().splitlines()
    assert len(rows_b) == 7 and rows_a[4:] == rows_b[4:] and rows_a == rows_b


def test_resume_refuses_a_changed_config(tmp_path):
    result = train(tmp_path, "", "--set", "fit.epochs=2")
    run = Path(result.output.strip().splitlines()[-1])
    info = json.loads((run / "run.json").read_text())
    info["status"] = "interrupted"    # as if stopped
    (run / "run.json").write_text(json.dumps(info))
    runner = CliRunner()
    result = runner.invoke(main, ["train", "--resume", str(run), "--set", "fit.epochs=4",
                                  "--runs-dir", str(tmp_path / "runs"), "-q"])
    assert result.exit_code == 2, result.output
    assert "--allow-config-change" in result.output and "+fit: {batch_size: 20, epochs: 4" \
        in result.output
    result = runner.invoke(main, ["train", "--resume", str(run), "--set", "fit.epochs=4",
                                  "--allow-config-change", "--runs-dir",
                                  str(tmp_path / "runs"), "-q"])
    assert result.exit_code == 0, result.output
    rows = (run / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]
    result = runner.invoke(main, ["train", "--resume", str(run), "--runs-dir",
                                  str(tmp_path / "runs")])
    assert result.exit_code == 2 and "nothing to resume" in result.output
