"""Arrays left on disk and read a chunk of rows at a time: data larger than memory.

A `RowSource` stands for the features of a `.npy` file or an HDF5 dataset. Rows are
read on demand (`take(index)`), in the order asked, converted to float32 (or int32).
A C-ordered `.npy` and a contiguous, uncompressed HDF5 dataset (h5py's default) are
read row by row with `pread` at their byte offsets (one read for a run of rows), so
the process holds only the rows asked for, whatever the size of the file; the
operating system's page cache keeps what fits. A chunked or compressed HDF5 dataset
is read through h5py (slower: one selection per chunk).

numpy and h5py only (no jax). The trainer side is nnrun/train/streaming.py.
"""

from __future__ import annotations

import os
import pathlib
import threading
from typing import Any

import numpy as np

from nnrun.config.errors import DataError
from nnrun.data import hdf5
from nnrun.data.arrays import F32_MAX, npy_header, overflow_message, to_int32

# Training data larger than this is streamed unless `data.stream` says otherwise.
STREAM_THRESHOLD_BYTES = 1 << 30
# File types whose features can be left on disk.
# Rows per read when scanning a source (checks, statistics, evaluation).
SCAN_BYTES = 32 << 20


class RowSource:
    """Rows `index` (None: all, in file order) of an array on disk, as `dtype`."""

    def __init__(self, path: pathlib.Path, *, dataset: str | None = None,
                 dtype: str = "float32", index: np.ndarray | None = None,
                 transform=None, _layout: dict | None = None):
        self.path, self.dataset = pathlib.Path(path), dataset
        self.out_dtype = np.dtype(dtype)
        self._layout = _layout or _open_layout(self.path, dataset)
        self.index = index
        self.transform = transform   # applied to every chunk read (preprocessing)
        n = self._layout["shape"][0] if index is None else len(index)
        row = tuple(self._layout["shape"][1:]) or (1,)   # a 1-D array gives (n, 1) features
        self.shape = (int(n), *row)

    # -- numpy-like surface used by the data code: len, shape, dtype, rows by index
    def __len__(self) -> int:
        return self.shape[0]

    @property
    def dtype(self) -> np.dtype:
        return self.out_dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.out_dtype.itemsize

    @property
    def where(self) -> str:
        return f"{self.path}" + (f" (dataset {self.dataset!r})" if self.dataset else "")

    def __getitem__(self, rows) -> RowSource:
        """A view of some rows (a slice or an index array): nothing is read."""
        picked = np.arange(len(self), dtype=np.int64)[rows]
        base = picked if self.index is None else self.index[picked]
        return self._view(index=base)

    def with_transform(self, fn) -> RowSource:
        """A view whose rows go through `fn(chunk) -> chunk` (after any earlier one)."""
        before = self.transform
        return self._view(transform=fn if before is None else (lambda a: fn(before(a))))

    def _view(self, **changes) -> RowSource:
        kw = {"dataset": self.dataset, "dtype": str(self.out_dtype), "index": self.index,
              "transform": self.transform, **changes}
        return RowSource(self.path, _layout=self._layout, **kw)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The rows at `rows` (positions in this view), in that order, as `dtype`."""
        rows = np.asarray(rows, dtype=np.int64)
        file_rows = rows if self.index is None else self.index[rows]
        out = self._read(file_rows).reshape(len(rows), *self.shape[1:])
        if self.out_dtype.kind == "i":
            out = to_int32(out, "features", self.where)
        else:   # a value beyond float32 becomes inf, which check_finite reports
            with np.errstate(over="ignore", invalid="ignore"):
                out = out.astype(self.out_dtype, copy=False)
        return out if self.transform is None else self.transform(out)

    def raw(self, row: int) -> np.ndarray:
        """Row `row` (a position in this view) as stored in the file, not converted."""
        file_row = row if self.index is None else int(self.index[row])
        return self._read(np.array([file_row], dtype=np.int64))[0]

    def read_all(self) -> np.ndarray:
        """Every row in memory (a source found small enough not to stream)."""
        return self.take(np.arange(len(self)))

    def scan(self, rows_per_read: int | None = None):
        """(start, rows) over the view in order, a bounded number of bytes per read."""
        row_bytes = max(1, self.nbytes // max(len(self), 1))
        step = rows_per_read or max(1, SCAN_BYTES // row_bytes)
        for start in range(0, len(self), step):
            yield start, self.take(np.arange(start, min(start + step, len(self))))

    # -- reading
    def _read(self, file_rows: np.ndarray) -> np.ndarray:
        if self._layout["kind"] != "raw":
            return self._read_h5(file_rows)
        lay = self._layout
        row_shape = tuple(lay["shape"][1:])
        out = np.empty((len(file_rows), *row_shape), lay["dtype"])
        row_bytes = out.itemsize * int(np.prod(row_shape, dtype=np.int64))
        fd = self._fd()
        try:
            self._pread(fd, out, file_rows, row_bytes, lay["offset"])
        except OSError as exc:
            raise DataError(f"cannot read file: {exc.strerror or exc}",
                            where=self.where) from exc
        return out

    def _pread(self, fd: int, out: np.ndarray, file_rows: np.ndarray, row_bytes: int,
               offset: int) -> None:
        if len(file_rows) and np.array_equal(
                file_rows, np.arange(file_rows[0], file_rows[0] + len(file_rows))):
            spans = [(0, len(file_rows), int(file_rows[0]))]   # one run: one read
        else:
            spans = [(i, i + 1, int(r)) for i, r in enumerate(file_rows)]
        # Plain reads, not a memory map: a mapped file's pages count as the process's
        # memory (and a fault maps a whole folio around the row), reads copy only the rows.
        flat = out.reshape(len(file_rows), -1).view(np.uint8)
        for first, stop, row in spans:
            want = (stop - first) * row_bytes
            got = os.preadv(fd, [flat[first:stop].reshape(-1)], offset + row * row_bytes)
            if got != want:
                raise DataError(f"short read at row {row} (file truncated?)", where=self.where)

    def _fd(self) -> int:
        try:
            return _opened(self._layout, "fd", lambda: os.open(self.path, os.O_RDONLY))
        except OSError as exc:
            raise DataError(f"cannot open file: {exc.strerror or exc}",
                            where=self.where) from exc

    def _read_h5(self, file_rows: np.ndarray) -> np.ndarray:
        unique, inverse = np.unique(file_rows, return_inverse=True)
        f = _opened(self._layout, "h5", lambda: hdf5.open_file(self.path,
                                                                  [self.dataset]))
        with hdf5.reading(self.path, self.dataset):   # a damaged chunk, a missing filter
            dset = f[self.dataset]
            if len(unique) and unique[-1] - unique[0] + 1 == len(unique):   # one run
                block = dset[int(unique[0]):int(unique[-1]) + 1]
            else:
                block = dset[unique]
        return block[inverse]


_OPEN_LOCK = threading.Lock()


class _Layout(dict):
    """How an array is stored ({kind, shape, dtype, offset}) and, once read, its open
    file ("fd" or "h5"), closed when the last view of the array goes."""

    def __del__(self):
        fd, h5 = self.get("fd"), self.get("h5")
        if fd is not None:
            os.close(fd)
        if h5 is not None:
            h5.close()


def _opened(layout: dict, key: str, open_it):
    """One open file per array on disk, shared by its views and the reader threads
    (pread takes its offset, so threads do not disturb each other; h5py serializes its
    calls), opened on first use and kept for the process's life."""
    with _OPEN_LOCK:
        if key not in layout:
            layout[key] = open_it()
        return layout[key]


def _open_layout(path: pathlib.Path, dataset: str | None) -> dict:
    """How the array is stored: {kind: mapped|h5, shape, dtype, offset}."""
    try:
        return _Layout(_npy_layout(path) if dataset is None else _h5_layout(path, dataset))
    except OSError as exc:
        raise DataError(f"cannot read file: {exc.strerror or exc}", where=str(path)) from exc


def _npy_layout(path: pathlib.Path) -> dict:
    header, fortran, offset = npy_header(path)
    _check_array(header.dtype, header.shape, str(path))
    if fortran and header.ndim > 1:
        raise DataError("a Fortran-ordered .npy cannot be read by rows; save it C-ordered "
                        "(np.save(path, np.ascontiguousarray(x)))", where=str(path))
    return {"kind": "raw", "shape": header.shape, "dtype": header.dtype, "offset": offset}


def _h5_layout(path: pathlib.Path, dataset: str) -> dict:
    with hdf5.open_file(path, [dataset]) as f:
        dset = hdf5.dataset(f, dataset, path)   # refused when stored in another file
        shape = hdf5.shape_of(dset, dataset, path)
        _check_array(dset.dtype, shape, hdf5.where(path, dataset))
        with hdf5.reading(path, dataset):
            offset = dset.id.get_offset()
            contiguous = dset.chunks is None and dset.compression is None and \
                offset is not None
        return {"kind": "raw" if contiguous else "h5", "shape": shape,
                "dtype": dset.dtype, "offset": offset}


def _check_array(dtype: np.dtype, shape: tuple, where: str) -> None:
    if not (np.issubdtype(dtype, np.number) or dtype.kind == "b"):
        raise DataError(f"has dtype {dtype}; expected numbers", where=where)
    if len(shape) == 0 or shape[0] == 0:
        raise DataError("is empty (no rows)", where=where)


def is_lazy(x: Any) -> bool:
    """Whether features are (or, for several inputs, include) a RowSource."""
    if isinstance(x, dict):
        return any(isinstance(v, RowSource) for v in x.values())
    return isinstance(x, RowSource)


def row_chunks(x, y=None):
    """(x, y) chunks over the rows in order, a bounded number of bytes of features
    each: features that are (or include) RowSources, read a chunk at a time."""
    parts = x.values() if isinstance(x, dict) else [x]
    row_bytes = sum(int(np.prod(p.shape[1:], dtype=np.int64)) * np.dtype(p.dtype).itemsize
                    for p in parts)
    n, step = len(next(iter(parts))), max(1, SCAN_BYTES // max(1, row_bytes))

    def rows_of(a, start):
        if a is None:
            return None
        if isinstance(a, dict):
            return {k: rows_of(v, start) for k, v in a.items()}
        stop = min(start + step, n)
        return a.take(np.arange(start, stop)) if isinstance(a, RowSource) else a[start:stop]

    for start in range(0, n, step):
        yield rows_of(x, start), rows_of(y, start)


def check_finite(source: RowSource) -> None:
    """Every value finite, read a chunk at a time: DataError naming the first bad row."""
    if source.out_dtype.kind != "f":
        return
    for start, block in source.scan():
        if not np.isfinite(np.sum(block, dtype=np.float64)):
            bad = np.argwhere(~np.isfinite(block))
            if len(bad):
                index = (start + int(bad[0][0]), *(int(i) for i in bad[0][1:]))
                value = np.reshape(source.raw(index[0]), source.shape[1:])[index[1:]]
                if np.isfinite(value) and abs(value) > F32_MAX:
                    raise DataError(overflow_message("features", value, index),
                                    where=source.where)
                raise DataError(f"contains NaN or inf (first at index {index})",
                                where=source.where)


def open_features(path: pathlib.Path, dataset: str | None, dtype: str) -> RowSource:
    """Features of a .npy (dataset None) or an HDF5 dataset, left on disk."""
    return RowSource(path, dataset=dataset, dtype=dtype)
