"""Arrays from files: the `Dataset` a source loads into, row helpers, file records
(sha256 for run.json) and the .npy / .npz / HDF5 readers with their checks.

numpy only (no jax): every array leaves this module as a host numpy array.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib

import numpy as np

from nnrun.config.errors import DataError


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Features `x` (float32, or int32 when the source says `dtype: int32`) and targets `y`.
    For a graph model of several inputs, `x` maps input names to arrays."""

    x: np.ndarray | dict[str, np.ndarray]
    y: np.ndarray | dict[str, np.ndarray] | None   # a mapping for several outputs
    source: str
    files: list[dict] = dataclasses.field(default_factory=list)
    class_names: list[str] | None = None
    # Per-row loss weights, float32 (n,): a sample_weight column and/or class_weight.
    sample_weight: np.ndarray | None = None
    # What a table source fitted (column order, vocabularies, fill values, class names),
    # JSON-able: the training source's encodes validation, test and predict input.
    encoding: dict | None = None

    def __len__(self) -> int:
        return rows(self.x)


def rows(x: np.ndarray | dict[str, np.ndarray]) -> int:
    """The number of samples of features (an array, or a mapping of input names to arrays)."""
    first = next(iter(x.values())) if isinstance(x, dict) else x
    return int(first.shape[0])


def take_rows(x, index):
    """Rows `index` of features (an array or a mapping of them)."""
    if isinstance(x, dict):
        return {k: v[index] for k, v in x.items()}
    return x[index]


# ---------------------------------------------------------------- file sources


def sha256_file(path: os.PathLike | str) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_record(path: pathlib.Path) -> dict:
    """{path, size, sha256} of a data file; DataError when it is missing or unreadable."""
    if not path.exists():
        raise DataError("file not found", where=str(path))
    if not path.is_file():
        raise DataError("not a regular file", where=str(path))
    try:
        return {"path": str(path), "size": path.stat().st_size, "sha256": sha256_file(path)}
    except OSError as e:
        raise DataError(f"cannot read file: {e.strerror or e}", where=str(path)) from e


def _check_finite(arr: np.ndarray, what: str, path: pathlib.Path) -> None:
    if not np.issubdtype(arr.dtype, np.floating):
        return
    # A float64 sum is non-finite if any value is (or, rarely, if it overflows): a fast
    # screen that allocates nothing; the element-wise check runs only to locate the value.
    if np.isfinite(np.sum(arr, dtype=np.float64)):
        return
    if not np.isfinite(arr).all():
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise DataError(f"{what} contains NaN or inf (first at index {index})", where=str(path))


def as_features(arr: np.ndarray, dtype: str, what: str, path: pathlib.Path) -> np.ndarray:
    """float32 (or int32) features with at least 2 dims; a 1-D array becomes (n, 1)."""
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise DataError(f"{what} has dtype {arr.dtype}; expected numbers", where=str(path))
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise DataError(f"{what} is empty", where=str(path))
    arr = arr.reshape(-1, 1) if arr.ndim == 1 else arr
    if dtype == "int32":
        if np.issubdtype(arr.dtype, np.floating) and not np.array_equal(arr, np.round(arr)):
            raise DataError(
                f"{what} has non-integer values but dtype int32 was asked", where=str(path)
            )
        return arr.astype(np.int32)
    out = arr.astype(np.float32, copy=False)
    _check_finite(out, what, path)
    return out


def as_targets(arr: np.ndarray, what: str, path: pathlib.Path) -> np.ndarray:
    """int32 class ids for integer arrays, float32 otherwise; the shape is kept."""
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise DataError(f"{what} has dtype {arr.dtype}; expected numbers", where=str(path))
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise DataError(f"{what} is empty", where=str(path))
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int32)
    out = arr.astype(np.float32, copy=False)
    _check_finite(out, what, path)
    return out


def load_npy(path: pathlib.Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"cannot read .npy file: {e}", where=str(path)) from e


def load_arrays(path: pathlib.Path, required: list[str], optional: list[str] = ()) -> dict:
    """The named arrays of an .npz archive (or, for .h5/.hdf5, the datasets at those
    paths, read whole); `optional` ones are skipped when absent."""
    if path.suffix.lower() in (".h5", ".hdf5"):
        return _load_hdf5(path, required, optional)
    try:
        with np.load(path, allow_pickle=False) as archive:
            for name in required:
                if name not in archive.files:
                    raise DataError(
                        f"no array {name!r} in the archive; arrays present: "
                        f"{', '.join(archive.files) or '(none)'}",
                        where=str(path),
                    )
            return {n: archive[n] for n in [*required, *optional] if n in archive.files}
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"cannot read .npz file: {e}", where=str(path)) from e


def _load_hdf5(path: pathlib.Path, required: list[str], optional: list[str] = ()) -> dict:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            present: list[str] = []
            f.visititems(lambda name, obj: present.append(name)
                         if isinstance(obj, h5py.Dataset) else None)
            for name in required:
                if not isinstance(f.get(name), h5py.Dataset):
                    raise DataError(f"no dataset {name!r} in the file; datasets present: "
                                    f"{', '.join(present) or '(none)'}", where=str(path))
            return {n: f[n][()] for n in [*required, *optional]
                    if isinstance(f.get(n), h5py.Dataset)}
    except OSError as e:
        raise DataError(f"cannot read HDF5 file: {e}", where=str(path)) from e
