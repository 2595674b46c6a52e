"""Likely mistakes in the data, warned about before the first epoch (training goes on):
a validation set holding a class that no training row has (a file sorted by class, split
by Keras's last rows), features on very different scales with no preprocessing, and a
classifier's output width other than the number of classes in its targets.

Each warning is one line beginning `warning:` that says the fix. Regression targets
are never judged; numpy only (no jax)."""

from __future__ import annotations

import numpy as np

from nnrun.config.errors import ConfigError
from nnrun.data.arrays import Dataset
from nnrun.data.rowsource import is_lazy
from nnrun.data.splitting import class_ids

CLASS_LOSSES = ("binary_crossentropy", "categorical_crossentropy",
                "sparse_categorical_crossentropy")
SCALE_RATIO = 100.0   # largest / smallest column spread that earns a warning
SAMPLE_ROWS = 10_000  # rows (evenly spaced) whose spreads are compared, at most
SAMPLE_CELLS = 1_000_000  # and at most this many values (784 features: 1,275 rows)


def likely_mistakes(train: Dataset, validation: Dataset | None, *, loss: str | None,
                    width: int | None, split: str | None, preprocess_x: bool) -> list[str]:
    """The warnings for these splits. `loss`: the (single) output's loss name, None for
    several outputs; `width`: that output's last dimension; `split`: how the validation
    rows were taken from the training file ("last", "shuffled", "stratified"), None for
    a validation source of its own; `preprocess_x`: data.preprocess scales features."""
    out = []
    if loss in CLASS_LOSSES:
        ids = _ids(train.y)
        val = _ids(validation.y) if validation is not None else None
        if ids is not None:
            out += _unseen_classes(ids, val, split, train.class_names)
            every = ids if val is None else np.concatenate([ids, val])
            out += _width(every, width, loss, train.class_names)
    if not preprocess_x:
        out += _scales(train)
    return out


def _ids(y) -> np.ndarray | None:
    """Class ids of targets, or None for targets that are not classes."""
    if y is None or isinstance(y, dict) or np.size(y) == 0:
        return None
    try:
        return class_ids(y, "targets")
    except ConfigError:
        return None


def _named(ids, names: list[str] | None) -> str:
    return ", ".join(repr(names[i]) if names and i < len(names) else str(i) for i in ids)


def _unseen_classes(ids: np.ndarray, val: np.ndarray | None, split: str | None,
                    names: list[str] | None) -> list[str]:
    """Validation rows (class ids `val`) of classes no training row has, or (Keras's last
    rows of a file sorted by class) of only some of the classes."""
    if val is None or len(val) == 0:
        return []
    train_set, val_set = set(np.unique(ids).tolist()), set(np.unique(val).tolist())
    unseen = sorted(val_set - train_set)
    every = np.concatenate([ids, val])
    steps = np.diff(every)
    ordered = len(train_set | val_set) > 1 and ((steps >= 0).all() or (steps <= 0).all())
    if split == "last" and (unseen or (ordered and val_set < train_set)):
        shown = sorted(val_set)
        s = "es" if len(shown) > 1 else ""
        lack = f" ({_named(unseen, names)} in no training row)" if unseen else ""
        sorted_file = ", which are sorted by class" if ordered else ""
        return [f"warning: validation_split took the last rows of the training data"
                f"{sorted_file}: the validation rows hold only class{s} "
                f"{_named(shown, names)}{lack}; set data.shuffle_split: true (or "
                "data.stratify: true)"]
    if not unseen:
        return []
    s = "es" if len(unseen) > 1 else ""
    head = (f"warning: the validation rows hold class{s} {_named(unseen, names)} that no "
            "training row has")
    if split is None:
        return [f"{head}: the model never learns {'them' if s else 'it'}; give training "
                "data with every class"]
    return [f"{head}: too few rows of {'those classes' if s else 'that class'} to share; "
            "set data.stratify: true"]


def _width(ids: np.ndarray, width: int | None, loss: str,
           names: list[str] | None) -> list[str]:
    """A sparse classifier whose output has more units than the targets have classes
    (fewer is an error: the class ids are checked before training)."""
    if width is None or loss != "sparse_categorical_crossentropy":
        return []
    classes = len(names) if names else int(ids.max()) + 1
    if width <= classes:
        return []
    which = f"{len(names)} classes" if names else f"class ids 0..{classes - 1}"
    return [f"warning: the output layer has {width} units but the targets have {which}; "
            f"set the last layer's units to {classes} (one per class)"]


def _scales(train: Dataset) -> list[str]:
    """Columns of a (rows, features) float table whose spreads differ over SCALE_RATIO
    times: unscaled features slow or stall training."""
    x = train.x
    if isinstance(x, dict) or is_lazy(x) or np.ndim(x) != 2 or len(x) < 2 \
            or not np.issubdtype(np.asarray(x).dtype, np.floating):
        return []
    rows = max(2, min(SAMPLE_ROWS, SAMPLE_CELLS // max(1, np.shape(x)[1])))
    sample = np.asarray(x[::max(1, len(x) // rows)], np.float64)   # a bounded copy
    spread = np.std(sample, axis=0) if np.isfinite(sample).all() else \
        np.nanstd(sample, axis=0)   # nanstd copies the sample again
    live = np.flatnonzero(np.isfinite(spread) & (spread > 0))
    if len(live) < 2:
        return []
    hi, lo = live[np.argmax(spread[live])], live[np.argmin(spread[live])]
    if spread[hi] < SCALE_RATIO * spread[lo]:
        return []
    names = (train.encoding or {}).get("feature_names") or []

    def col(i: int) -> str:
        return repr(names[i]) if i < len(names) else str(i)

    base = "" if len(names) > max(hi, lo) else ", columns counted from 0"
    return [f"warning: features have very different scales (column {col(hi)} spreads "
            f"{spread[hi]:.3g}, column {col(lo)} {spread[lo]:.3g}{base}); add "
            "data.preprocess: {x: standardize}"]


def shape_advice(y_dims: tuple, out: tuple, loss: str) -> str:
    """The fix for targets (`y_dims`, each row's shape) that do not fit an output
    (`out`) with `loss` (its canonical name): class ids against one-hot losses and back,
    a width that differs; else the shape the loss expects."""
    width = out[-1] if out else 1
    ids = width > 1 and y_dims in (out[:-1], (*out[:-1], 1))
    if ids and loss == "binary_crossentropy":
        return (f"binary_crossentropy takes one 0/1 target per output unit and the output "
                f"has {width}; for {width} classes use loss: sparse_categorical_crossentropy "
                "(softmax output), for one yes/no label make the last layer 1 unit with "
                "sigmoid")
    if ids and loss.startswith(("categorical", "kl_divergence")):
        return (f"the targets are one class id per row and {loss} takes one-hot rows of "
                f"{width}; use loss: sparse_categorical_crossentropy, or one-hot the targets "
                "with data: {preprocess: {y: one_hot}}")
    if ids:
        return (f"one target per row against {width} output values per row; for "
                f"{width} classes use loss: sparse_categorical_crossentropy, for one number "
                "per row make the last layer's units 1")
    if loss.startswith("sparse") and y_dims == out:
        return (f"{loss} takes one class id per row and the targets are rows of {width} "
                "(one-hot?); use loss: categorical_crossentropy, or turn them into ids with "
                "data: {preprocess: {y: sparse}}")
    if y_dims and len(y_dims) == len(out) and y_dims[:-1] == out[:-1]:
        return (f"the targets have {y_dims[-1]} values per row and the output {width}; "
                f"make the last layer's units {y_dims[-1]}")
    if loss.startswith("sparse"):
        need = out[:-1]
        return f"{loss} takes integer class ids of shape {_shape(need)}"
    return f"expected targets of shape {_shape(out)}"


def _shape(dims: tuple) -> str:
    return "(None, " + ", ".join(str(d) for d in dims) + ")" if dims else "(None,)"
