"""Keras callbacks in `fit.callbacks`: their arguments (Keras 3 names and defaults) and
their validation, part of config checking (jax-free).

A callback is a one-key mapping, as a layer: `{EarlyStopping: {monitor: val_loss,
patience: 3}}` (or a bare name). What a callback does between the epochs is in
nnrun/train/callbacks.py.
"""

from __future__ import annotations

import string as _string
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from nnrun.config.checks import Problems
from nnrun.config.registry import unknown_name_message
from nnrun.config.values import (
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
from nnrun.config.yamlsrc import PathT

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


def _checkpoint_file(value: Any) -> str:
    """ModelCheckpoint's `filepath`: a file name under the run's checkpoints/ folder (a
    relative path that stays there), a `str.format` template of `epoch` and the logged
    values such as `weights-{epoch:02d}.h5`."""
    text = string(value)
    parts = PurePosixPath(text).parts
    if "\0" in text or text.startswith(("/", "~")) or ".." in parts or \
            not [p for p in parts if p != "."]:
        raise ArgTypeError(f"expected a file name inside the run's checkpoints/ folder (a "
                           f"relative path without '..', e.g. weights-{{epoch:02d}}.h5), "
                           f"{got(value)}")
    try:
        fields = [f for _, f, _, _ in _string.Formatter().parse(text) if f is not None]
    except ValueError as exc:
        raise ArgTypeError(f"expected a file name template such as weights-{{epoch:02d}}.h5 "
                           f"({exc}), {got(value)}") from None
    for field in fields:
        if not field.isidentifier():
            raise ArgTypeError(f"expected {{epoch}} or {{<a logged value>}} in the file name, "
                               f"got {{{field}}}")
    return text


def checkpoint_fields(filepath: str) -> list[str]:
    """The names a ModelCheckpoint's filepath template uses (checked by `_checkpoint_file`)."""
    return [f for _, f, _, _ in _string.Formatter().parse(filepath) if f]


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
    "ModelCheckpoint": {"filepath": (optional(_checkpoint_file), None), **_MONITOR,
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
