"""HDF5 data files read safely: a dataset found by its path, soft links followed (a loop
of them is a DataError), and refused when its values live in another file — behind an
external link, in a virtual dataset that maps other files, or in external raw storage —
because run.json's `data_files` records (and hashes) only the file the config names.
Anything h5py raises on a damaged file (a bad signature or object header, an unreadable
chunk, a missing compression filter) becomes a DataError naming the file and dataset.
The whole file then passes the reading gate (nnrun.config.h5gate) before a byte is read.

h5py and numpy only (no jax).
"""

from __future__ import annotations

import contextlib
import os
import pathlib

import numpy as np

from nnrun.config import h5gate
from nnrun.config.errors import DataError

# What h5py raises on a damaged or unusual file (HDF5's errors map to these).
ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)
_MAX_LINKS = 32   # soft links followed from one name before it counts as a loop
_ONE_FILE = ("nnrun reads data from the file the config names only, since run.json "
             "records and hashes that file alone: copy the data into one file (e.g. "
             "`h5copy`, or h5py: dst[name] = src[name][()])")


def where(path, dataset: str | None = None) -> str:
    return f"{path}" + (f" (dataset {dataset!r})" if dataset else "")


@contextlib.contextmanager
def reading(path, dataset: str | None = None):
    """Anything h5py raises inside the block as a DataError naming the file (and dataset)."""
    try:
        yield
    except ERRORS as exc:
        raise DataError(f"cannot read HDF5 file: {exc}", where=where(path, dataset)) from exc


def open_file(path, names=()):
    """The file opened for reading through the reading gate (nnrun.config.h5gate): a
    DataError when it is not HDF5, is damaged, reaches another file anywhere (a link,
    external storage, a virtual dataset) or declares more than it can hold. The datasets
    `names` are checked first, so that a refusal on their way names them."""
    import h5py

    with reading(path):
        f = h5py.File(path, "r")
    try:
        for name in names:
            find(f, name, path)
        h5gate.check(f, str(path), DataError, advice=_ONE_FILE)
    except BaseException:
        f.close()
        raise
    return f


def datasets_present(f) -> list[str]:
    """Every dataset's path in the file (hard links only: no link is followed)."""
    import h5py

    present: list[str] = []
    with reading(f.filename):
        f.visititems(lambda name, obj: present.append(name)
                     if isinstance(obj, h5py.Dataset) else None)
    return present


def find(f, name: str, path):
    """The dataset `name` of the open file, or None when there is none (or it is a group).
    A DataError for a loop of soft links or data stored in another file."""
    import h5py

    _check_links(f, name, path)
    with reading(path, name):
        obj = f.get(name)
    if not isinstance(obj, h5py.Dataset):
        return None
    with reading(path, name):
        elsewhere = _other_file(obj, f)
        virtual = obj.is_virtual and sorted({s.file_name for s in obj.virtual_sources()
                                             if not _same_file(s.file_name, f)})
        external = obj.external
    if elsewhere:
        raise DataError(f"is stored in another file, {elsewhere} (reached through a link); "
                        + _ONE_FILE, where=where(path, name))
    if virtual:
        raise DataError(f"is a virtual dataset that maps data of other files "
                        f"({', '.join(virtual)}); " + _ONE_FILE, where=where(path, name))
    if external:
        files = sorted({str(e[0]) for e in external})
        raise DataError(f"keeps its values in external files ({', '.join(files)}); "
                        + _ONE_FILE, where=where(path, name))
    return obj


def dataset(f, name: str, path):
    """The dataset `name` of the open file; a DataError listing the datasets present
    when there is none."""
    obj = find(f, name, path)
    if obj is None:
        raise DataError(f"no dataset {name!r} in the file; datasets present: "
                        f"{', '.join(datasets_present(f)) or '(none)'}", where=str(path))
    return obj


def shape_of(dset, name: str, path) -> tuple:
    if dset.shape is None:   # h5py.Empty: a null dataspace
        raise DataError("has no values (an empty dataspace)", where=where(path, name))
    return tuple(int(n) for n in dset.shape)


def read(dset, name: str, path) -> np.ndarray:
    """The whole dataset in memory."""
    shape_of(dset, name, path)
    with reading(path, name):
        return np.asarray(dset[()])


def _check_links(f, name: str, path) -> None:
    """Follow `name` link by link: a DataError at an external link or a loop of soft
    links; a missing link ends the walk (the caller says "no dataset")."""
    import h5py

    parts, seen, i = [p for p in name.split("/") if p], 0, 0
    while i < len(parts):
        prefix = "/" + "/".join(parts[:i + 1])
        with reading(path, name):
            link = f.get(prefix, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            raise DataError(f"{prefix} is an external link to {link.filename}:{link.path}; "
                            + _ONE_FILE, where=where(path, name))
        if isinstance(link, h5py.SoftLink):
            seen += 1
            if seen > _MAX_LINKS:
                raise DataError(f"its soft links go round in a loop (more than {_MAX_LINKS} "
                                f"followed, the last {prefix} -> {link.path}); point each "
                                "link at a dataset or group", where=where(path, name))
            target = link.path if link.path.startswith("/") else \
                "/".join(parts[:i]) + "/" + link.path
            parts = [p for p in target.split("/") if p] + parts[i + 1:]
            i = 0
            continue
        if link is None:
            return
        i += 1


def _other_file(obj, f) -> str | None:
    """The name of the file `obj` lives in when that is not `f`'s, else None."""
    name = obj.file.filename
    return None if _same_file(name, f) else name


def _same_file(name: str, f) -> bool:
    if name == ".":   # a virtual dataset's source in its own file
        return True
    own = pathlib.Path(f.filename)
    other = pathlib.Path(name)
    other = other if other.is_absolute() else own.parent / other
    try:
        return os.path.samefile(own, other)
    except OSError:
        return False
