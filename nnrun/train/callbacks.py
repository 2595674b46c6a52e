"""The logic of Keras callbacks (`fit.callbacks`), run on the host between the jitted epochs.

It follows Keras 3 (keras/src/callbacks/): a callback sees 0-based epoch indices and
the epoch's logs, and acts through a `Control` (the learning rate, stopping, keeping
the current weights). Every counter is in `state()`, saved in last.h5 for exact resume.
Their config arguments and validation are in nnrun/config/callback_specs.py; what only
the logged keys tell (a monitor not logged, a ModelCheckpoint filepath naming an
unlogged value) is checked here from the config (`callback_problems`, for `nnrun
check`) and again once training has its keys (`check_monitors`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from nnrun.config.callback_specs import CallbackSpec, monitor_mode
from nnrun.config.errors import ConfigError

if TYPE_CHECKING:
    from nnrun.config.spec import Spec


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
            control.stop(self._reason())

    def _reason(self) -> str:
        """Why it stopped, in its own terms: its reference epoch is the last improvement
        by more than min_delta, which is not the run's best epoch (best.h5's) when
        min_delta > 0, so it is not called "best"."""
        by = f" by more than min_delta={self.min_delta:g}" if self.min_delta else ""
        if self.baseline is not None:
            return (f"EarlyStopping: {self.monitor} did not both improve{by} and beat "
                    f"baseline {self.baseline:g} for {self.wait} epochs")
        return (f"EarlyStopping: {self.monitor} did not improve{by} for the {self.wait} "
                f"epochs after epoch {self.best_epoch + 1} ({self.best:.6g})")

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
    """Keras's LearningRateScheduler with a named schedule (nnrun.nn.schedules) of the
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
    from nnrun.nn.schedules import build_schedule

    given = {k: v for k, v in spec.args.items() if k != "verbose"}
    return build_schedule(given)


def make_callbacks(specs: tuple[CallbackSpec, ...]) -> list[Callback]:
    return [CLASSES[spec.name](spec) for spec in specs]


def schedule_problems(specs: tuple[CallbackSpec, ...], where) -> list[tuple[str | None, str]]:
    """LearningRateScheduler's schedule names and arguments resolved (imports jax):
    `where(path)` locates `fit.callbacks[i]...`."""

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

    problems = []
    for spec in specs:
        monitor = spec.args.get("monitor")
        if monitor is not None and monitor not in keys:
            validated = any(k.startswith("val_") for k in keys)
            hint = " (val_* needs validation data: data.validation_split or " \
                   "data.validation)" if monitor.startswith("val_") and not validated else ""
            problems.append((where(("fit", "callbacks", spec.index, spec.name, "monitor")),
                             f"{spec.name} monitors {monitor!r}, which is not logged{hint}; "
                             f"logged: {', '.join(keys)}"))
    if problems:
        raise ConfigError(problems[0][1], where=problems[0][0], problems=problems)


def logged_keys(spec: Spec) -> list[str] | None:
    """The keys each epoch logs (what callbacks may monitor), as training forms them
    (nnrun.train.epoch.Objective.keys, `val_` ones with validation data), from the
    config alone; None where a metric does not resolve (a problem reported already)."""
    from nnrun.nn.metrics import resolve_metric

    comp, model = spec.compile, spec.model
    outputs = list(model.outputs) if model.is_graph and len(model.outputs) > 1 else [None]
    keys = ["loss", *(f"{name}_loss" for name in outputs if name is not None)]
    for name in outputs:
        prefix, metrics = ("", comp.metrics) if name is None else \
            (f"{name}_", comp.for_output(name)[1])
        try:
            keys += [prefix + resolve_metric(m, (2, 1), (2, 1))[0] for m in metrics]
        except ConfigError:
            return None
    validation = spec.data.validation is not None or bool(spec.data.validation_split)
    return keys + ([f"val_{k}" for k in keys] if validation else [])


def callback_problems(spec: Spec) -> list[tuple[str | None, str]]:
    """Callbacks that would fail once training runs: a monitor that is not logged
    (check_monitors, which training calls again), and a
    ModelCheckpoint filepath naming a value that is not logged or that cannot format."""
    from nnrun.config.callback_specs import checkpoint_fields

    keys = logged_keys(spec)
    if keys is None:
        return []
    problems = []
    try:
        check_monitors(spec.fit.callbacks, keys, spec.where)
    except ConfigError as exc:
        problems += exc.problems
    for cb in spec.fit.callbacks:
        filepath = cb.args.get("filepath") if cb.name == "ModelCheckpoint" else None
        if filepath is None:
            continue
        where = spec.where(("fit", "callbacks", cb.index, cb.name, "filepath"))
        unknown = [f for f in checkpoint_fields(filepath) if f != "epoch" and f not in keys]
        if unknown:
            problems.append((where, f"ModelCheckpoint's filepath names {{{unknown[0]}}}, "
                                    f"which is not logged; it may name {{epoch}} and the "
                                    f"logged values: {', '.join(keys)}"))
            continue
        try:
            filepath.format(epoch=1, **dict.fromkeys(keys, 0.5))
        except (KeyError, ValueError, TypeError) as exc:
            problems.append((where, f"ModelCheckpoint's filepath cannot be formatted: {exc} "
                                    "(the epoch is an integer, logged values are numbers)"))
    return problems
