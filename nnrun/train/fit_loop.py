"""The epoch loop of `nnrun train`: callbacks between the jitted epochs, and resuming a
stopped run from its last.h5 exactly.

Everything a continued run needs beyond the weights and optimizer state (the epoch, the
learning-rate scale the callbacks set, their counters, the best value so far) is saved
as attributes of last.h5; EarlyStopping's best weights go to
checkpoints/early_stopping.h5 beside it. The data order and dropout keys are functions
of (seed, epoch), the schedule's step is the optimizer's count: so a resumed run
computes what the uninterrupted one would have, bit for bit.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np

from nnrun.config import faults
from nnrun.config.errors import CheckpointError, ConfigError
from nnrun.train import callbacks as cb
from nnrun.train.checkpoint import Held, as_held, load_checkpoint, save_checkpoint
from nnrun.train.chunk import Chunk, Pace

EARLY_STOPPING_FILE = "early_stopping.h5"


class CallbackRunner:
    """The config's callbacks, run between epochs, acting on the Fitter and train state."""

    def __init__(self, spec, folder: Path):
        self.specs = spec.fit.callbacks
        self.callbacks = cb.make_callbacks(self.specs)
        self.folder = Path(folder)
        self.best_weights = None   # (params, state) that EarlyStopping keeps
        self.best_dirty = False
        self.restores = any(c.spec.name == "EarlyStopping" and c.restore_best_weights
                            for c in self.callbacks)

    def best_monitor(self, has_validation: bool) -> tuple[str, str]:
        """(monitor, mode) of best.h5: the first ModelCheckpoint's, else the loss."""
        return best_monitor(self.specs, has_validation)

    def groups_epochs(self) -> bool:
        """Whether several epochs may run in one dispatch: no callback acts before each
        epoch (LearningRateScheduler) or needs each epoch's weights (ModelCheckpoint's
        filepath)."""
        return not any(isinstance(c, cb.LearningRateScheduler) or
                       (isinstance(c, cb.ModelCheckpoint) and c.filepath is not None)
                       for c in self.callbacks)

    def _set_rate(self, fitter, control: cb.Control, base: float) -> None:
        """The rate a callback set, as `lr_scale` over the optimizer's own `base`."""
        if not np.isfinite(base) or base <= 0:
            raise ConfigError(f"the optimizer's learning rate is {base}: callbacks cannot "
                              "change it", where="fit.callbacks")
        fitter.lr_scale = np.float32(control.learning_rate / base)

    def begin_epoch(self, fitter, ts) -> None:
        control = cb.Control(fitter.learning_rate(ts))
        for c in self.callbacks:
            c.on_epoch_begin(fitter.epoch, control)
        if control.lr_changed:
            self._set_rate(fitter, control, fitter.schedule_learning_rate(ts))

    def end_epoch(self, fitter, held: Held, rate: float, epoch: int,
                  logs: dict[str, float]) -> str | None:
        """After epoch `epoch` (1-based), whose state `held` gives and after which the
        optimizer's own rate is `rate`: the callbacks' reason to stop, or None."""
        control = cb.Control(float(np.float32(rate) * fitter.lr_scale))
        for c in self.callbacks:
            c.on_epoch_end(epoch - 1, logs, control)
        if control.lr_changed:
            self._set_rate(fitter, control, rate)
        if control.keep_weights:
            self.best_weights, self.best_dirty = held.keep(), True
        for c in self.callbacks:
            if isinstance(c, cb.ModelCheckpoint) and c.save:
                ts = held.get()
                save_checkpoint(self._inside(c.save), params=ts.params, state=ts.state,
                                opt_state=ts.opt_state, attrs={"epoch": epoch})
        return control.stop_reason

    def _inside(self, name: str) -> Path:
        path = (self.folder / name).resolve()
        if self.folder.resolve() not in path.parents:
            raise ConfigError(f"ModelCheckpoint's filepath {name!r} leaves the run's "
                              "checkpoints/ folder", where="fit.callbacks")
        return path

    def restore(self, ts):
        """EarlyStopping's restore_best_weights: the best epoch's weights, this optimizer
        state (as Keras's set_weights)."""
        if not self.restores or self.best_weights is None:
            return ts
        best = self.best_weights.get()
        return ts._replace(params=best.params, state=best.state)

    def restored_epoch(self) -> int | None:
        """The epoch (1-based) whose weights restore_best_weights restores."""
        return next((c.best_epoch + 1 for c in self.callbacks
                     if isinstance(c, cb.EarlyStopping) and c.has_best_weights), None)

    def last_attrs(self, fitter) -> dict[str, Any]:
        """Attributes of last.h5 for resuming (and early_stopping.h5 written if due)."""
        if self.best_dirty and self.best_weights is not None:
            best = self.best_weights.get()
            save_checkpoint(self.folder / EARLY_STOPPING_FILE, params=best.params,
                            state=best.state)
            self.best_dirty = False
        return {"lr_scale": np.float32(fitter.lr_scale),
                "callbacks": json.dumps([c.state() for c in self.callbacks])}

    def load(self, attrs: dict, skeleton) -> None:
        """The callbacks' counters (and EarlyStopping's best weights) from last.h5."""
        states = json.loads(attrs.get("callbacks", "[]"))
        if len(states) != len(self.callbacks):
            raise CheckpointError("the checkpoint's callbacks do not match fit.callbacks")
        for c, state in zip(self.callbacks, states):
            c.load_state(state)
        if any(getattr(c, "has_best_weights", False) for c in self.callbacks):
            params, state, _, _ = load_checkpoint(self.folder / EARLY_STOPPING_FILE,
                                                  params=skeleton[0], state=skeleton[1])
            from nnrun.train.epoch import TrainState

            self.best_weights = Held(value=jax.device_put(TrainState(params, state, None)))


def best_monitor(specs, has_validation: bool) -> tuple[str, str]:
    """(monitor, mode) of best.h5: the first ModelCheckpoint's, else the loss."""
    for c in cb.make_callbacks(specs):
        if isinstance(c, cb.ModelCheckpoint):
            return c.monitor, c.direction
    return ("val_loss" if has_validation else "loss"), "min"


def fit_loop(spec, fitter, ts, log, checkpointer, reporter, stop, result, runner):
    """Train from `fitter.epoch` to fit.epochs; returns the final train state and fills
    `result` (status, stop reason, exit code, history). Epochs run in chunks of several
    per dispatch where nothing needs the host between them (nnrun/train/chunk.py); the
    host takes them one by one, as if they had run one at a time."""
    if fitter.epoch < spec.fit.epochs and fitter.donates:
        checkpointer.prepare(ts)
    pace = Pace(fitter.limit, runner.groups_epochs() and checkpointer.every > 0)
    while fitter.epoch < spec.fit.epochs:
        if stop.requested:   # a signal during the last epoch, or before the first
            checkpointer.flush(ts, fitter.epoch)
            result.status, result.exit_code = "interrupted", 130
            result.stop_reason = (f"{stop.requested} after epoch {fitter.epoch}"
                                  if fitter.epoch else f"{stop.requested} before epoch 1")
            return ts
        faults.point("epoch")
        runner.begin_epoch(fitter, ts)
        count = pace.count(spec.fit.epochs - fitter.epoch)
        chunk = fitter.run_epochs(ts, count, checkpointer.best_value)
        ts, ended = take_chunk(spec, chunk, fitter, log, checkpointer, reporter, stop,
                               result, runner)
        pace.measured(count)
        if ended:
            return ts
    result.stop_reason = f"completed {spec.fit.epochs} epochs"
    return ts


def take_chunk(spec, chunk: Chunk, fitter, log, checkpointer, reporter, stop, result,
               runner) -> tuple[Any, bool]:
    """The chunk's epochs taken one by one: (the state after the last one taken, whether
    training ended). A stop, a learning-rate change or the end of training inside the
    chunk leaves its later epochs untaken (not logged, not counted)."""
    last = len(chunk.results) - 1
    for i, res in enumerate(chunk.results):
        if i:
            if stop.requested:   # the loop's next turn stops after epoch i - 1
                return chunk.state_after(i - 1), False
            faults.point("epoch")
        fitter.accept(res)
        for key, value in res.logs.items():
            result.history.setdefault(key, []).append(value)
        log.append(res.epoch, res.logs, chunk.lrs[i], res.seconds)
        reporter.epoch_end(res.epoch, res.logs, res.seconds)
        held = after = chunk.hold(i)   # after: the state training goes on from, or ends with
        if spec.fit.terminate_on_nan and not all(np.isfinite(v) for v in res.logs.values()):
            if runner.restores and runner.best_weights is not None:
                # EarlyStopping's restore_best_weights acts whenever training ends
                after = as_held(runner.restore(held.get()))
                checkpointer.flush(after, res.epoch - 1)   # last.h5: the best epoch's weights
            else:
                checkpointer.flush(None, res.epoch)  # keep the last good files
            result.status, result.exit_code = "diverged", 4
            result.stop_reason = f"non-finite loss or metric at epoch {res.epoch}"
            return after.get(), True
        scale = fitter.lr_scale
        early = runner.end_epoch(fitter, held, chunk.next_rates[i], res.epoch, res.logs)
        done = early is not None or res.epoch == spec.fit.epochs
        cut = done or fitter.lr_scale != scale   # the chunk's later epochs are void
        restore = done and runner.restores
        checkpointer.epoch_end(held, res.epoch, res.logs, final=done and not restore,
                               may_write=cut or i == last)
        if restore:
            after = as_held(runner.restore(held.get()))
            checkpointer.flush(after, res.epoch)
        if early is not None:
            result.stop_reason = f"{early}; stopped after epoch {res.epoch}"
            if restore and runner.best_weights is not None:
                result.stop_reason += (f"; restore_best_weights put epoch "
                                       f"{runner.restored_epoch()}'s weights in last.h5")
            result.stopped_by = early.split(":")[0]   # the callback's name
            return after.get(), True
        if cut:
            return after.get(), False
    return chunk.end, False


# ---------------------------------------------------------------- resuming


def config_diff(old: str, new: str, run: Path) -> str:
    """A unified diff of the run's config.yaml and the config to resume with ('' if none)."""
    lines = difflib.unified_diff(old.splitlines(), new.splitlines(),
                                 f"{run}/config.yaml", "the config given", lineterm="")
    return "\n".join(lines)


def check_resumable(run: Path, info: dict, old_config: str, new_config: str,
                    allow_config_change: bool) -> str:
    """Refuse a finished run, or a changed config unless allowed; returns the diff."""
    if info.get("status") == "finished" and not allow_config_change:
        raise ConfigError(f"the run finished ({info.get('stop_reason')}); nothing to resume "
                          "(--allow-config-change with more fit.epochs continues it)",
                          where=str(run))
    diff = config_diff(old_config, new_config, run)
    if diff and not allow_config_change:
        raise ConfigError("the config differs from the run's; resume with "
                          f"--allow-config-change to accept:\n{diff}", where=str(run))
    if info.get("status") == "running" and process_alive(info):
        raise ConfigError(f"the run is still running (process {info['pid']} on this "
                          "machine); stop it first", where=str(run))
    return diff


def process_alive(info: dict) -> bool:
    """Whether run.json's process (pid, host) still runs: on this machine, and not us."""
    import os
    import platform

    pid = info.get("pid")
    if not isinstance(pid, int) or info.get("host") != platform.node() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:   # alive, another user's
        return True
    return True


def load_resume_state(run: Path, fitter, checkpointer, runner):
    """The train state of last.h5, with the Fitter's epoch and learning-rate scale, the
    callbacks' counters and the best value so far restored; returns the train state."""
    from nnrun.train.epoch import TrainState

    params, state = fitter.model.param_shapes()
    opt = jax.eval_shape(fitter.optimizer.init, params)
    p, s, o, attrs = load_checkpoint(run / "checkpoints" / "last.h5", params=params,
                                     state=state, opt_state=opt)
    ts = jax.device_put(TrainState(p, s, o))
    fitter.epoch = int(attrs["epoch"])
    fitter.lr_scale = np.float32(attrs.get("lr_scale", 1.0))
    checkpointer.best_value = float(attrs.get("best_value", np.inf))
    runner.load(attrs, (params, state))
    return ts
