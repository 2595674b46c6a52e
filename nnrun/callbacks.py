"""Keras callbacks from `fit.callbacks`: their config arguments and their logic.

A callback is a one-key mapping, as a layer: `{EarlyStopping: {monitor: val_loss,
patience: 3}}` (or a bare name). The logic runs on the host between the jitted
epochs and follows Keras 3 (keras/src/callbacks/): it sees 0-based epoch indices and
the epoch's logs, and acts through a `Control` (the learning rate, stopping, keeping
the current weights). Every counter is in `state()`, saved in last.h5 for exact resume.
Jax-free: the config side (`validate_callbacks`) is part of config checking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from nnrun.registry import unknown_name_message
from nnrun.schema import (
    ArgTypeError,
    boolean,
    got,
    non_negative_int,
    number,
    one_of,
    optional,
    positive_int,
    string,
)
from nnrun.spec_checks import Problems
from nnrun.yamlsrc import PathT

MODES = ("auto", "min", "max")
_MAXIMISED = ("acc", "auc", "precision", "recall", "f1", "fbeta", "iou")


def _factor(value: Any) -> float:
    v = number(value)
    if not 0.0 < v < 1.0:   # Keras: "ReduceLROnPlateau does not support a factor >= 1.0"
        raise ArgTypeError(f"expected a number in (0, 1), got {value!r}")
    return v


def _non_negative(value: Any) -> float:
    v = number(value)
    if v < 0:
        raise ArgTypeError(f"expected a non-negative number, got {value!r}")
    return v


def _save_freq(value: Any) -> int:
    """Keras's save_freq: 'epoch' (= 1) or, here, a number of epochs."""
    return 1 if value == "epoch" else positive_int(value)


def _verbose(value: Any) -> int:
    if value in (0, 1, 2) and not isinstance(value, bool):
        return value
    raise ArgTypeError(f"expected 0, 1 or 2, {got(value)}")


_MONITOR = {"monitor": (string, "val_loss"), "mode": (one_of(*MODES), "auto")}
# name -> argument -> (checker, default); `verbose` is accepted for Keras's sake (nnrun
# prints what callbacks do anyway).
ARGS: dict[str, dict[str, tuple[Any, Any]]] = {
    "EarlyStopping": {**_MONITOR, "min_delta": (_non_negative, 0.0),
                      "patience": (non_negative_int, 0), "baseline": (optional(number), None),
                      "restore_best_weights": (boolean, False),
                      "start_from_epoch": (non_negative_int, 0), "verbose": (_verbose, 0)},
    "ReduceLROnPlateau": {**_MONITOR, "factor": (_factor, 0.1),
                          "patience": (non_negative_int, 10),
                          "min_delta": (_non_negative, 1e-4),
                          "cooldown": (non_negative_int, 0), "min_lr": (_non_negative, 0.0),
                          "verbose": (_verbose, 0)},
    "ModelCheckpoint": {"filepath": (optional(string), None), **_MONITOR,
                        "save_best_only": (boolean, False), "save_freq": (_save_freq, 1),
                        "save_weights_only": (boolean, False), "verbose": (_verbose, 0)},
    "LearningRateScheduler": {"schedule": (string, None), "verbose": (_verbose, 0)},
    "TerminateOnNaN": {},
    "CSVLogger": {},
}
NOTES = {
    "TerminateOnNaN": "TerminateOnNaN is on by default (a non-finite loss stops training "
                      "with exit code 4, keeping the last good checkpoint); it takes no "
                      "arguments; fit.terminate_on_nan: false switches it off",
    "CSVLogger": "CSVLogger is always on (metrics.csv in the run directory); it takes no "
                 "arguments",
}


@dataclass(frozen=True)
class CallbackSpec:
    """A validated callback: its name and every argument (defaults filled in); for
    LearningRateScheduler, `schedule_args` are the named schedule's arguments."""

    name: str
    args: dict[str, Any]
    index: int = 0   # its place in fit.callbacks (for error locations)

    def to_dict(self) -> dict[str, Any]:
        return {self.name: dict(self.args)}


def validate_callbacks(raw: Any, path: PathT, problems: Problems) -> tuple[CallbackSpec, ...]:
    """`fit.callbacks`: a list of `{Name: {args}}` (or bare names), every problem located."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.add(path, f"expected a list of callbacks such as [{{EarlyStopping: "
                           f"{{patience: 3}}}}], {got(raw)}")
        return ()
    out = []
    for i, item in enumerate(raw):
        spec = _validate_one(item, path + (i,), problems)
        if spec is not None:
            out.append(spec)
    return tuple(out)


def _validate_one(item: Any, path: PathT, problems: Problems) -> CallbackSpec | None:
    if isinstance(item, str):
        item = {item: None}
    if not isinstance(item, dict) or len(item) != 1:
        problems.add(path, f"expected a one-key mapping such as {{EarlyStopping: {{patience: "
                           f"3}}}} or a callback name, {got(item)}")
        return None
    (name, given), = item.items()
    if name not in ARGS:
        problems.add(path + (name,), unknown_name_message("callback", str(name), list(ARGS)),
                     key=True)
        return None
    given = {} if given is None else given
    if not isinstance(given, dict):
        problems.add(path + (name,), f"expected a mapping of {name}'s arguments, {got(given)}")
        return None
    allowed = ARGS[name]
    args: dict[str, Any] = {}
    ok = True
    schedule_args = {}
    for key, value in given.items():
        if key not in allowed:
            if name == "LearningRateScheduler":   # the named schedule's own arguments
                schedule_args[key] = value
                continue
            hint = f" ({NOTES[name]})" if name in NOTES else ""
            problems.add(path + (name, key), unknown_name_message(
                f"argument of {name}", str(key), list(allowed), hint), key=True)
            ok = False
            continue
        try:
            args[key] = allowed[key][0](value)
        except ArgTypeError as exc:
            problems.add(path + (name, key), str(exc))
            ok = False
    if name == "LearningRateScheduler" and "schedule" not in given:
        problems.add(path + (name,), "LearningRateScheduler needs `schedule:`, a schedule's "
                                     "name (e.g. exponential_decay), and its arguments")
        ok = False
    if not ok:
        return None
    full = {key: args.get(key, default) for key, (_, default) in allowed.items()}
    full.update(schedule_args)
    return CallbackSpec(name, full, path[-1])


def monitor_mode(monitor: str, mode: str) -> str:
    """'min' or 'max': 'auto' maximises accuracy-like metrics and minimises the rest."""
    if mode != "auto":
        return mode
    return "max" if any(w in monitor for w in _MAXIMISED) else "min"


# ---------------------------------------------------------------- runtime


class Control:
    """What a callback may do to the training (the fit loop reads it after each hook)."""

    def __init__(self, learning_rate: float = math.nan):
        self.learning_rate = learning_rate   # the rate the next epoch's updates use
        self.lr_changed = False
        self.stop_reason: str | None = None
        self.keep_weights = False   # copy the current weights (EarlyStopping's best)

    def set_learning_rate(self, value: float) -> None:
        self.learning_rate, self.lr_changed = float(value), True

    def stop(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason


class Callback:
    """Keras's hooks, epoch-level; `state()`/`load_state()` hold every counter."""

    def __init__(self, spec: CallbackSpec):
        self.spec = spec
        self.__dict__.update(spec.args)

    def on_epoch_begin(self, epoch: int, control: Control) -> None:
        """Before epoch `epoch` (0-based)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float], control: Control) -> None:
        """After epoch `epoch` (0-based), with its logs."""

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


class _Monitored(Callback):
    def __init__(self, spec: CallbackSpec):
        super().__init__(spec)
        self.direction = monitor_mode(self.monitor, self.mode)

    def better(self, current: float, reference: float | None, min_delta: float) -> bool:
        """An improvement on `reference` by more than `min_delta` (Keras's
        `_is_improvement`); anything improves on None."""
        if reference is None:
            return True
        if self.direction == "min":
            return current + min_delta < reference
        return current - min_delta > reference


class EarlyStopping(_Monitored):
    """Keras 3's EarlyStopping. With restore_best_weights, the best epoch's weights (the
    first epoch's until one improves) are restored whenever training ends."""

    def __init__(self, spec: CallbackSpec):
        super().__init__(spec)
        self.wait, self.stopped_epoch, self.best_epoch = 0, 0, 0
        self.best: float | None = None
        self.has_best_weights = False

    def on_epoch_end(self, epoch, logs, control):
        current = logs.get(self.monitor)
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and not self.has_best_weights:
            self.has_best_weights, self.best_epoch = True, epoch
            control.keep_weights = True
        self.wait += 1
        if self.better(current, self.best, self.min_delta):
            self.best, self.best_epoch = current, epoch
            control.keep_weights = control.keep_weights or self.restore_best_weights
            if self.baseline is None or self.better(current, self.baseline, self.min_delta):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            control.stop(f"EarlyStopping: {self.monitor} did not improve for "
                         f"{self.wait} epochs (best {self.best:.6g} at epoch "
                         f"{self.best_epoch + 1})")

    def state(self):
        return {"wait": self.wait, "stopped_epoch": self.stopped_epoch, "best": self.best,
                "best_epoch": self.best_epoch, "has_best_weights": self.has_best_weights}


class ReduceLROnPlateau(_Monitored):
    """Keras 3's ReduceLROnPlateau: the rate times `factor` (not below `min_lr`) after
    `patience` epochs without improvement, then `cooldown` epochs of rest."""

    def __init__(self, spec: CallbackSpec):
        super().__init__(spec)
        self.best = math.inf if self.direction == "min" else -math.inf
        self.wait, self.cooldown_counter = 0, 0

    def _improved(self, current: float) -> bool:
        if self.direction == "min":
            return current < self.best - self.min_delta
        return current > self.best + self.min_delta

    def on_epoch_end(self, epoch, logs, control):
        current = logs.get(self.monitor)
        if current is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(current):
            self.best, self.wait = current, 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.patience:
                old = control.learning_rate
                if old > _f32(self.min_lr):
                    control.set_learning_rate(max(old * self.factor, self.min_lr))
                    self.cooldown_counter, self.wait = self.cooldown, 0

    def state(self):
        return {"best": self.best, "wait": self.wait, "cooldown_counter": self.cooldown_counter}


def _f32(value: float) -> float:
    import struct

    return struct.unpack("f", struct.pack("f", value))[0]


class LearningRateScheduler(Callback):
    """Keras's LearningRateScheduler with a named schedule (nnrun.schedules) of the
    0-based epoch index: the rate of each epoch is `schedule(epoch)`."""

    def __init__(self, spec: CallbackSpec, schedule=None):
        super().__init__(spec)
        self.function = schedule if schedule is not None else build_epoch_schedule(spec)

    def on_epoch_begin(self, epoch, control):
        control.set_learning_rate(float(self.function(epoch)))


class ModelCheckpoint(_Monitored):
    """Keras's ModelCheckpoint: its monitor and mode choose best.h5; with `filepath` (a
    file name under checkpoints/, formatted with `epoch` and the logs), that file is
    written every `save_freq` epochs, or only on improvement with save_best_only.
    `save` is set by `on_epoch_end` to the file name to write, or None."""

    def __init__(self, spec: CallbackSpec):
        super().__init__(spec)
        self.best: float | None = None
        self.save: str | None = None

    def on_epoch_end(self, epoch, logs, control):
        self.save = None
        if self.filepath is None or (epoch + 1) % self.save_freq:
            return
        if self.save_best_only:
            current = logs.get(self.monitor)
            if current is None or not math.isfinite(current) or \
                    not self.better(current, self.best, 0.0):
                return
            self.best = current
        self.save = self.filepath.format(epoch=epoch + 1, **logs)

    def state(self):
        return {"best": self.best}


class _Inert(Callback):
    """TerminateOnNaN and CSVLogger: always on, in the fit loop and the run directory."""


CLASSES = {"EarlyStopping": EarlyStopping, "ReduceLROnPlateau": ReduceLROnPlateau,
           "ModelCheckpoint": ModelCheckpoint, "LearningRateScheduler": LearningRateScheduler,
           "TerminateOnNaN": _Inert, "CSVLogger": _Inert}


def build_epoch_schedule(spec: CallbackSpec):
    """LearningRateScheduler's named schedule as a function epoch -> rate (imports jax)."""
    from nnrun.schedules import build_schedule

    given = {k: v for k, v in spec.args.items() if k != "verbose"}
    return build_schedule(given)


def make_callbacks(specs: tuple[CallbackSpec, ...]) -> list[Callback]:
    return [CLASSES[spec.name](spec) for spec in specs]


def schedule_problems(specs: tuple[CallbackSpec, ...], where) -> list[tuple[str | None, str]]:
    """LearningRateScheduler's schedule names and arguments resolved (imports jax):
    `where(path)` locates `fit.callbacks[i]...`."""
    from nnrun.errors import ConfigError

    problems = []
    for spec in specs:
        if spec.name != "LearningRateScheduler":
            continue
        try:
            build_epoch_schedule(spec)
        except ConfigError as exc:
            key = exc.where if exc.where in spec.args else "schedule"
            problems.append((where(("fit", "callbacks", spec.index, spec.name, key)),
                             exc.message))
    return problems


def check_monitors(specs: tuple[CallbackSpec, ...], keys: list[str], where) -> None:
    """Every monitor is a logged key (ConfigError, located, otherwise)."""
    from nnrun.errors import ConfigError

    problems = []
    for spec in specs:
        monitor = spec.args.get("monitor")
        if monitor is not None and monitor not in keys:
            hint = " (val_* needs validation data: data.validation_split or " \
                   "data.validation)" if monitor.startswith("val_") else ""
            problems.append((where(("fit", "callbacks", spec.index, spec.name, "monitor")),
                             f"{spec.name} monitors {monitor!r}, which is not logged{hint}; "
                             f"logged: {', '.join(keys)}"))
    if problems:
        raise ConfigError(problems[0][1], where=problems[0][0], problems=problems)
