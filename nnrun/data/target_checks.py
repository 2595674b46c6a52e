"""Target values checked against the model's outputs before training (exit 3): class
ids inside the output's classes for sparse losses, 0..1 targets for binary
cross-entropy. (Shapes are checked by api.objective_for.)"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from nnrun.config.errors import DataError


def check_target_values(obj, y, output_shapes: dict, source: str, split: str,
                        row_label: Callable[[int], str] = "row {}".format) -> None:
    """`obj` the resolved Objective; `y` the targets (a mapping for several outputs);
    `output_shapes` {output name or None: shape}; `row_label`: row i as the source
    counts it (Dataset.row_label: the file's row, not the split's)."""
    heads = obj.heads or {None: (obj, 1.0)}
    for name, (head, _) in heads.items():
        y_k = y[name] if name is not None else y
        shape = output_shapes[name]
        what = f"{split} targets" + (f" of output {name!r}" if name else "")
        _check_one(head.loss.name, np.asarray(y_k), shape, f"{source}: {what}", row_label)


def _check_one(loss: str, y: np.ndarray, shape, what: str,
               row_label: Callable[[int], str]) -> None:
    if y.size == 0 or not np.issubdtype(y.dtype, np.number):
        return
    if loss.startswith("sparse_categorical"):
        classes = int(shape[-1])
        bad = np.flatnonzero((y < 0) | (y >= classes) | (y != np.round(y)))
        if len(bad):
            row = row_label(int(np.unravel_index(bad[0], y.shape)[0]))
            value = y.reshape(-1)[bad[0]]
            raise DataError(f"{what}: class id {value:g} at {row} is not an integer in "
                            f"0..{classes - 1} (the model's output has {classes} classes)")
    elif loss == "binary_crossentropy":
        bad = np.flatnonzero((y < 0) | (y > 1))
        if len(bad):
            row = row_label(int(np.unravel_index(bad[0], y.shape)[0]))
            value = y.reshape(-1)[bad[0]]
            raise DataError(f"{what}: {value:g} at {row} is outside 0..1 (binary "
                            "cross-entropy takes 0/1 labels or probabilities)")
