"""Arrays from files: the `Dataset` a source loads into, row helpers, file records
(sha256 for run.json) and the .npy / .npz / HDF5 readers with their checks. Headers
(shape, dtype) are read and checked before any values (an .npz that inflates far
beyond its size fails on a mismatch without inflating), and values are cast to
float32 / int32 with their range checked (a DataError, never numpy's cast warning).

numpy only (no jax): every array leaves this module as a host numpy array.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import pathlib
import threading
import tokenize
import zipfile
import zlib
from collections.abc import Callable

import numpy as np

from nnrun.config.errors import DataError
from nnrun.data import hdf5


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
    # Which row of the source each row is, once a split took rows out of it (a slice of
    # them, or their indices when shuffled); None: row i is the source's row i.
    source_rows: np.ndarray | slice | None = None
    # A table source's file line of each of its rows (the source's, before any split).
    lines: list[int] | None = None

    def __len__(self) -> int:
        return rows(self.x)

    def row_label(self, i: int) -> str:
        """Row `i` as the user finds it in the source: in a table "row R (line L)", R
        counted from 1 below the header and L the file's line (as the table's other
        messages); else the 0-based row of the source's arrays."""
        src = _source_row(self.source_rows, i)
        return f"row {src + 1} (line {self.lines[src]})" if self.lines else f"row {src}"


def _source_row(source_rows: np.ndarray | slice | None, i: int) -> int:
    if source_rows is None:
        return i
    if isinstance(source_rows, slice):
        return (source_rows.start or 0) + i
    return int(source_rows[i])


def source_rows_of(ds: Dataset, index: np.ndarray | slice) -> np.ndarray | slice:
    """`Dataset.source_rows` of rows `index` of `ds` (a split of a split keeps pointing
    into the source)."""
    outer = ds.source_rows
    if outer is None:
        return index
    if isinstance(outer, slice) and isinstance(index, slice):
        start = outer.start or 0
        return slice(start + (index.start or 0), start + (index.stop or 0))
    base = np.arange(outer.start or 0, outer.stop) if isinstance(outer, slice) else outer
    return base[index]


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


def file_record_soon(path: pathlib.Path) -> Callable[[], dict]:
    """file_record(path), its hash computed on a thread while the caller reads the file
    (hashlib and file reads release the GIL: 0.12 s of the MNIST-sized data's 188 MB
    off the path to the first epoch). Missing or not a file: a DataError at once. Call
    the result for the record (it waits, and raises what file_record raised)."""
    if not path.exists() or not path.is_file():
        file_record(path)   # its DataError
    result: list = []

    def work() -> None:
        try:
            result.append(file_record(path))
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
            result.append(exc)

    thread = threading.Thread(target=work, name="nnrun-hash")
    thread.start()

    def record() -> dict:
        thread.join()
        if isinstance(result[0], BaseException):
            raise result[0]
        return result[0]

    return record


F32_MAX = float(np.finfo(np.float32).max)   # about 3.4e38
_INT32 = np.iinfo(np.int32)


def _check_finite(arr: np.ndarray, what: str, path, before: np.ndarray | None = None
                  ) -> None:
    """NaN or inf in float `arr`: a DataError at the first; where `before` (the values
    cast to `arr`) was finite there, the value overflowed float32 and the error says so."""
    if not np.issubdtype(arr.dtype, np.floating):
        return
    # A float64 sum is non-finite if any value is (or, rarely, if it overflows): a fast
    # screen that allocates nothing; the element-wise check runs only to locate the value.
    if np.isfinite(np.sum(arr, dtype=np.float64)):
        return
    if not np.isfinite(arr).all():
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        if before is not None and np.isfinite(before[index]):
            raise DataError(overflow_message(what, before[index], index), where=str(path))
        raise DataError(f"{what} contains NaN or inf (first at index {index})", where=str(path))


def overflow_message(what: str, value, index) -> str:
    return (f"{what}: {float(value):.6g} at index {index} overflows float32 (the largest "
            f"magnitude it holds is about {F32_MAX:.1e}); rescale the data")


def to_float32(arr: np.ndarray, what: str, path) -> np.ndarray:
    """float32 values, all finite: a DataError naming the first NaN, inf or value beyond
    float32's range (numpy's cast warning silenced: the error says it)."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = arr.astype(np.float32, copy=False)
    _check_finite(out, what, path, None if out is arr else arr)
    return out


def to_int32(arr: np.ndarray, what: str, path) -> np.ndarray:
    """int32 values: a DataError for a non-integer or one beyond int32's range."""
    if np.issubdtype(arr.dtype, np.floating) and not np.array_equal(arr, np.round(arr)):
        raise DataError(f"{what} has non-integer values but dtype int32 was asked",
                        where=str(path))
    if arr.dtype != bool and arr.size and np.dtype(arr.dtype).itemsize >= 4:
        out_of_range = (arr < _INT32.min) | (arr > _INT32.max)
        if out_of_range.any():
            index = tuple(int(i) for i in np.argwhere(out_of_range)[0])
            raise DataError(f"{what}: {arr[index]:.6g} at index {index} is beyond int32's "
                            f"range (±{_INT32.max})", where=str(path))
    return arr.astype(np.int32)


def _numbers(arr, what: str, path) -> None:
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise DataError(f"{what} has dtype {arr.dtype}; expected numbers", where=str(path))
    if arr.ndim == 0:
        raise DataError(f"{what} is a single value (shape ()); expected one row per sample",
                        where=str(path))
    if arr.shape[0] == 0:
        raise DataError(f"{what} is empty", where=str(path))


def as_features(arr: np.ndarray, dtype: str, what: str, path: pathlib.Path) -> np.ndarray:
    """float32 (or int32) features with at least 2 dims; a 1-D array becomes (n, 1)."""
    _numbers(arr, what, path)
    arr = arr.reshape(-1, 1) if arr.ndim == 1 else arr
    return to_int32(arr, what, path) if dtype == "int32" else to_float32(arr, what, path)


def as_targets(arr: np.ndarray, what: str, path: pathlib.Path) -> np.ndarray:
    """int32 class ids for integer arrays, float32 otherwise; the shape is kept."""
    _numbers(arr, what, path)
    if np.issubdtype(arr.dtype, np.integer):
        return to_int32(arr, what, path)
    return to_float32(arr, what, path)


# ---------------------------------------------------------------- headers


@dataclasses.dataclass(frozen=True)
class ArrayHeader:
    """An array's shape and dtype, known without reading its values (a .npy header, an
    .npz member's, an HDF5 dataset's)."""

    shape: tuple
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def read_npy_header(f) -> tuple[ArrayHeader, bool]:
    """(shape and dtype, Fortran order) of the .npy at `f`'s position (a file or an .npz
    member), `f` left at the data; ValueError when it is not a .npy. Nothing is
    unpickled."""
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) \
        else np.lib.format.read_array_header_2_0
    try:
        shape, fortran, dtype = read(f)
    except (SyntaxError, tokenize.TokenError, TypeError, RecursionError) as exc:
        raise ValueError(f"cannot parse the header: {exc}") from exc   # garbage bytes
    return ArrayHeader(tuple(int(n) for n in shape), np.dtype(dtype)), bool(fortran)


def npy_header(path: pathlib.Path) -> tuple[ArrayHeader, bool, int]:
    """(shape and dtype, Fortran order, data offset) of a .npy file: a DataError when it
    is not one, or when it is shorter than its header says."""
    try:
        with open(path, "rb") as f:
            header, fortran = read_npy_header(f)
            offset = f.tell()
        size = os.path.getsize(path)
    except OSError as exc:
        raise DataError(f"cannot read file: {exc.strerror or exc}", where=str(path)) from exc
    except (ValueError, EOFError) as exc:
        raise DataError(f"cannot read .npy file: {exc}", where=str(path)) from exc
    if header.dtype.hasobject:
        raise DataError(_OBJECTS, where=str(path))
    if offset + header.nbytes > size:
        raise DataError(f"the .npy file is shorter than its header says (shape "
                        f"{header.shape}, {header.dtype}: truncated?)", where=str(path))
    return header, fortran, offset


_OBJECTS = ("holds Python objects (dtype object); nnrun reads numbers only and never "
            "unpickles: save a numeric array")


def check_headers(headers: dict[str, ArrayHeader], noun: str, path,
                  weight: str | None = None) -> None:
    """The arrays of one source, before any is read: numbers, and one row per sample in
    each (the same number of rows); `weight` names the sample_weight array, if any."""
    for name, h in headers.items():
        what = f"{noun} {name!r}"
        if h.dtype.hasobject:
            raise DataError(f"{what} {_OBJECTS}", where=str(path))
        if not (np.issubdtype(h.dtype, np.number) or h.dtype == bool):
            raise DataError(f"{what} has dtype {h.dtype}; expected numbers", where=str(path))
        if h.ndim == 0:
            raise DataError(f"{what} is a single value (shape ()); expected one row per "
                            "sample", where=str(path))
    rows_of = {name: h.shape[0] for name, h in headers.items() if name != weight}
    if len(set(rows_of.values())) > 1:
        counts = ", ".join(f"{name!r} has {n} rows" for name, n in rows_of.items())
        raise DataError(f"the {noun}s have different numbers of rows: {counts} (one row "
                        "per sample in each)", where=str(path))
    n = next(iter(rows_of.values()), None)
    if weight in headers and n is not None and headers[weight].shape not in ((n,), (n, 1)):
        raise DataError(f"{noun} {weight!r} (sample_weight) has shape "
                        f"{headers[weight].shape}; expected ({n},), one weight per row",
                        where=str(path))


def _too_large(what: str, header: ArrayHeader, path) -> DataError:
    return DataError(f"{what} ({header.shape}, {header.dtype}: {header.nbytes / 2**30:.1f} "
                     "GiB) does not fit in memory; save the features as .npy or HDF5 to "
                     "stream them from disk (data.stream: true)", where=str(path))


# ---------------------------------------------------------------- readers


ALIGN = 64        # bytes: JAX's CPU client uses an array this aligned in place
READ_CHUNK = 1 << 24


def read_npy_data(f, header: ArrayHeader, fortran: bool) -> np.ndarray:
    """The values of the .npy whose header was just read from `f` (a file, or an .npz
    member, which checks its CRC at its end); EOFError when `f` ends first.

    The array's data starts on a 64-byte boundary (numpy's own allocations are 16-byte
    aligned): on the CPU, jax.device_put then uses its memory as is instead of copying
    it. The MNIST-sized data of benchmarks/process_bench.py is 188 MB, about 0.1 s to
    copy and its size again in memory. Nothing writes to a loaded array afterwards."""
    raw = np.empty(header.nbytes + ALIGN, np.uint8)
    start = -raw.ctypes.data % ALIGN
    data = raw[start:start + header.nbytes]
    view, done = memoryview(data), 0
    while done < header.nbytes:
        n = f.readinto(view[done:done + READ_CHUNK])
        if not n:
            raise EOFError(f"the data ends after {done} of {header.nbytes} bytes "
                           "(truncated?)")
        done += n
    return data.view(header.dtype).reshape(header.shape, order="F" if fortran else "C")


def load_npy(path: pathlib.Path) -> np.ndarray:
    header, fortran, offset = npy_header(path)
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return read_npy_data(f, header, fortran)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"cannot read .npy file: {e}", where=str(path)) from e
    except MemoryError:
        raise _too_large("the array", header, path) from None


def load_arrays(path: pathlib.Path, required: list[str], optional: list[str] = (), *,
                weight: str | None = None) -> dict:
    """The named arrays of an .npz archive (or, for .h5/.hdf5, the datasets at those
    paths, read whole); `optional` ones are skipped when absent. Every array's header
    is checked first (check_headers; `weight`: the sample_weight array's name): a
    mismatch costs no decompression."""
    if path.suffix.lower() in (".h5", ".hdf5"):
        return _load_hdf5(path, required, optional, weight)
    try:
        with zipfile.ZipFile(path) as archive:
            members = _npz_members(archive, path, required, optional, weight)
            return {name: _read_member(archive, info, header, name, path)
                    for name, (info, header) in members.items()}
    except (OSError, ValueError, EOFError, RuntimeError, NotImplementedError,
            zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"cannot read .npz file: {e}", where=str(path)) from e


def array_headers(path: pathlib.Path, names: list[str]) -> dict[str, ArrayHeader]:
    """The shapes and dtypes of the named arrays of an .npz (from their members' .npy
    headers: nothing else is decompressed) or HDF5 file, checked by check_headers."""
    if path.suffix.lower() in (".h5", ".hdf5"):
        with hdf5.open_file(path, names) as f:
            headers = {n: ArrayHeader(hdf5.shape_of(d, n, path), d.dtype)
                       for n in dict.fromkeys(names) for d in [hdf5.dataset(f, n, path)]}
        check_headers(headers, "dataset", path)
        return headers
    try:
        with zipfile.ZipFile(path) as archive:
            return {n: h for n, (_, h) in _npz_members(archive, path, names, []).items()}
    except (OSError, ValueError, EOFError, RuntimeError, NotImplementedError,
            zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"cannot read .npz file: {e}", where=str(path)) from e


def _npz_members(archive: zipfile.ZipFile, path, required: list[str], optional,
                 weight: str | None = None) -> dict:
    """{name: (zip member, header)} of the named arrays, as np.load names them (the
    member's name less .npy), checked by check_headers."""
    infos = {i.filename[:-4] if i.filename.endswith(".npy") else i.filename: i
             for i in archive.infolist()}
    for name in required:
        if name not in infos:
            raise DataError(f"no array {name!r} in the archive; arrays present: "
                            f"{', '.join(infos) or '(none)'}", where=str(path))
    out = {}
    for name in dict.fromkeys([*required, *optional]):
        if name not in infos:
            continue
        info = infos[name]
        with archive.open(info) as member:
            try:
                header, _ = read_npy_header(member)
            except (ValueError, EOFError) as exc:
                raise DataError(f"member {info.filename!r} of the archive is not a .npy "
                                f"array ({exc})", where=str(path)) from exc
            stated = member.tell() + header.nbytes if not header.dtype.hasobject else 0
        # The zip directory's size of the member, and what deflate can inflate to: a
        # header claiming more is damaged (and would allocate all it claims first).
        limit = info.file_size if info.compress_type in (zipfile.ZIP_STORED,
                                                         zipfile.ZIP_DEFLATED) else None
        if info.compress_type == zipfile.ZIP_DEFLATED:
            limit = min(limit, 1032 * info.compress_size + 4096)
        if limit is not None and stated > limit:
            raise DataError(f"array {name!r} is damaged: its header says shape "
                            f"{header.shape} ({header.dtype}), more than the archive "
                            "holds (truncated?)", where=str(path))
        out[name] = (info, header)
    check_headers({n: h for n, (_, h) in out.items()}, "array", path, weight)
    return out


def _read_member(archive: zipfile.ZipFile, info, header: ArrayHeader, name: str, path):
    try:
        with archive.open(info) as member:
            _, fortran = read_npy_header(member)   # the header checked before
            return read_npy_data(member, header, fortran)
    except MemoryError:
        raise _too_large(f"array {name!r}", header, path) from None


def _load_hdf5(path: pathlib.Path, required: list[str], optional: list[str] = (),
               weight: str | None = None) -> dict:
    f = hdf5.open_file(path, [*required, *optional])
    with f:
        dsets = {n: hdf5.dataset(f, n, path) for n in dict.fromkeys(required)}
        dsets.update({n: d for n in optional if n not in dsets
                      for d in [hdf5.find(f, n, path)] if d is not None})
        headers = {n: ArrayHeader(hdf5.shape_of(d, n, path), d.dtype)
                   for n, d in dsets.items()}
        check_headers(headers, "dataset", path, weight)
        out = {}
        for n, d in dsets.items():
            try:
                out[n] = hdf5.read(d, n, path)
            except MemoryError:
                raise _too_large(f"dataset {n!r}", headers[n], path) from None
        return out
