"""Prediction files: probabilities, classes (with class names when known) and the top-k
classes, written to .npy, .npz, .h5 or .csv, atomically (a temporary file renamed into
place)."""

from __future__ import annotations

import csv
import io
import pathlib

import numpy as np

from nnrun.config.errors import ConfigError
from nnrun.config.files import atomic_write

OUTPUT_TYPES = (".npy", ".npz", ".h5", ".csv")


def top_k(probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k most probable classes of each row and their probabilities, (n, k) each; one
    sigmoid column is P(class 1) of two classes."""
    flat = probs.reshape(len(probs), -1).astype(np.float64)
    if flat.shape[1] == 1:
        flat = np.concatenate([1 - flat, flat], axis=1)
    ids = np.argsort(-flat, axis=1, kind="stable")[:, :k]
    return ids, np.take_along_axis(flat, ids, axis=1).astype(probs.dtype)


def _prediction_columns(
    width: int, classes: np.ndarray | None, class_names: list[str] | None
) -> list[str]:
    if classes is None:
        return ["prediction"] if width == 1 else [f"prediction_{i}" for i in range(width)]
    ids = [1] if width == 1 else list(range(width))  # one sigmoid column = P(class 1)
    return [f"p_{class_names[i]}" if class_names else f"p{i}" for i in ids]


def _csv_text(probs: np.ndarray, classes: np.ndarray | None, class_names: list[str] | None,
              k: int | None = None) -> str:
    flat = probs.reshape(len(probs), -1)
    header = ["row", *_prediction_columns(flat.shape[1], classes, class_names)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    ranks = [] if k is None else [f"top{j + 1}" for j in range(k)]
    writer.writerow(header + (["class"] if classes is not None else [])
                    + ranks + [f"{r}_p" for r in ranks])
    ids, top_p = top_k(probs, k) if k else (None, None)

    def name(c) -> str:
        return class_names[int(c)] if class_names else str(int(c))

    for i, values in enumerate(flat):
        row = [str(i), *(format(float(v), ".9g") for v in values)]
        if classes is not None:
            row.append(name(classes[i]))
        if k:
            row += [name(c) for c in ids[i]] + [format(float(p), ".9g") for p in top_p[i]]
        writer.writerow(row)
    return out.getvalue()


def check_output_path(path: pathlib.Path, k: int | None = None) -> str:
    """Refuse an output file nnrun cannot write, before any work is done; returns the
    suffix. `k` (--top-k) needs a .csv, .npz or .h5."""
    suffix = pathlib.Path(path).suffix.lower()
    if suffix not in OUTPUT_TYPES:
        raise ConfigError(
            f"unsupported output file type {suffix or '(none)'!r}; supported: "
            f"{', '.join(OUTPUT_TYPES)}",
            where=str(path),
        )
    if k is not None and suffix == ".npy":
        raise ConfigError("the top k classes are columns or arrays: give a .csv, .npz or .h5 "
                          "output", where="--top-k")
    if not pathlib.Path(path).parent.is_dir():
        raise ConfigError("the output folder does not exist", where=str(path))
    return suffix


def write_output_arrays(path: pathlib.Path, arrays: dict[str, np.ndarray]) -> None:
    """A model of several outputs: one array per output name in a .npz, atomically."""
    path = pathlib.Path(path)
    if check_output_path(path) != ".npz":
        raise ConfigError(f"several outputs ({', '.join(arrays)}) are written to a .npz, one "
                          "array per name", where=str(path))
    _write_atomic(path, lambda f: np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()}))


def _write_atomic(path: pathlib.Path, write) -> None:
    """`write(binary file)` into a temporary file beside `path`, then rename it into place."""
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        write(f)


def write_predictions(
    path: pathlib.Path,
    probs: np.ndarray,
    classes: np.ndarray | None,
    class_names: list[str] | None = None,
    k: int | None = None,
) -> None:
    """Write predictions to .npy (probs), .npz or .h5 (probs, classes[, class_names][,
    top_k, top_k_p]) or .csv (row, p0..pk / prediction, class[, top1..topK,
    top1_p..topK_p]); atomically, via a temp file in the same folder. `k`: the k most
    probable classes of each row (a classifier's: `classes` given)."""
    path = pathlib.Path(path)
    suffix = check_output_path(path, k)
    if k is not None and classes is None:
        raise ConfigError("--top-k is for classifiers", where="--top-k")
    probs = np.asarray(probs)
    if classes is not None and len(classes) != len(probs):
        raise ValueError(f"{len(probs)} rows of probabilities but {len(classes)} classes")

    def write(f) -> None:
        if suffix == ".npy":
            np.save(f, probs, allow_pickle=False)
        elif suffix in (".npz", ".h5"):
            arrays = {"probs": probs}
            if classes is not None:
                arrays["classes"] = np.asarray(classes)
            if class_names:
                arrays["class_names"] = np.asarray(class_names, dtype=str)
            if k:
                arrays["top_k"], arrays["top_k_p"] = top_k(probs, k)
            if suffix == ".npz":
                np.savez(f, **arrays)
            else:
                _write_h5(f, arrays)
        else:
            f.write(_csv_text(probs, classes, class_names, k).encode("utf-8"))

    _write_atomic(path, write)


def _write_h5(f, arrays: dict[str, np.ndarray]) -> None:
    """One HDF5 dataset per array; strings as UTF-8."""
    import h5py

    buffer = io.BytesIO()   # h5py reads as it writes: build in memory, then copy
    with h5py.File(buffer, "w") as h5:
        for name, arr in arrays.items():
            if arr.dtype.kind == "U":
                h5.create_dataset(name, data=arr.astype(object), dtype=h5py.string_dtype())
            else:
                h5.create_dataset(name, data=arr)
    f.write(buffer.getvalue())
