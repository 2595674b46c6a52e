"""The one reading gate for HDF5 files: every HDF5 file nnrun reads (checkpoints for
--resume, evaluate and predict, `model.weights:`, Keras `.keras` / `.h5` weights, data
files, a run's best.h5) is untrusted data, opened by `open_untrusted` and walked, from
its metadata alone, before any byte of a dataset is read. Refused, each a located error
of the caller's type (the file and the HDF5 object's path):

- an external link, or any link but a hard or a soft one (soft links stay inside the
  file; HDF5 itself stops a loop of them after 16);
- a dataset with external storage (its values in other files: Keras CVE-2026-1669);
- a virtual dataset with a source in another file (Keras CVE-2026-12480); a source in
  the same file (HDF5's ".") is read;
- a declared size the file cannot hold: a contiguous dataset larger than the file, or
  datasets (or one chunk) declaring more than `RATIO` times the file's size plus
  `MARGIN` in all — deflate, the strongest filter h5py reads without plugins, inflates
  at most 1032:1, so more than that is unallocated space or a memory bomb.

h5py is imported on first use; no jax.
"""

from __future__ import annotations

import math

RATIO = 1100            # deflate's best is 1032:1
MARGIN = 16 * 2 ** 20   # bytes any file may declare, whatever its size
ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)
_WHY = ("nnrun reads the bytes of the file it is given only (a link or a mapping to "
        "another file could read any file on this machine)")
_BEFORE = "refused before reading"
_BOMB = "a damaged file, or one made to exhaust memory"


def open_untrusted(source, where: str, error: type, *, unreadable: str = "cannot read "
                   "HDF5 file", advice: str = _WHY):
    """`source` (a path or a file-like object) opened read-only after `check`: an
    h5py.File (a context manager) the caller closes. `error(message, where=...)` is
    raised for a refused file, and for one h5py cannot read ("{unreadable}: ...")."""
    import h5py

    try:
        f = h5py.File(source, "r")
    except ERRORS as exc:
        raise error(f"{unreadable}: {exc}", where=where) from None
    try:
        check(f, where, error, unreadable=unreadable, advice=advice)
    except BaseException:
        f.close()
        raise
    return f


def check(f, where: str, error: type, *, unreadable: str = "cannot read HDF5 file",
          advice: str = _WHY) -> None:
    """Walk every link and object of the open file `f` (metadata only) and raise
    `error` at the first one refused, located as "{where} ({kind} '/{name}')"."""
    try:
        found = _problems(f)
    except ERRORS as exc:
        raise error(f"{unreadable}: {exc}", where=where) from None
    if found:
        kind, name, message, own = found
        raise error(f"{message}; " + (own or advice), where=f"{where} ({kind} '/{name}')"
                    if name is not None else where)


def _problems(f):
    """The first refusal: (kind, object name or None, message, advice or None)."""
    import h5py

    found = f.id.links.visit(_link_problem, info=True)
    if found:
        name, info = found
        if info.type == h5py.h5l.TYPE_EXTERNAL:
            target = f.get(name, getlink=True)
            return "link", name, (f"is an external link to {target.filename}:{target.path} "
                                "(links are not allowed to other files)"), None
        return "link", name, "is a user-defined link (not a hard or soft one)", None
    size = max(int(f.id.get_filesize()), 1)
    limit = RATIO * size + MARGIN
    total = [0, None, 0]   # declared bytes in all, the largest dataset and its size

    def visit(name, info):
        if info.type != h5py.h5o.TYPE_DATASET:
            return None
        problem = _dataset_problem(h5py, f, name, size, limit, total)
        return (name.decode("utf-8", "replace"), problem) if problem else None

    found = h5py.h5o.visit(f.id, visit, info=True)
    if found:
        name, message = found
        return ("dataset", name, message, _BOMB if message.endswith(_BEFORE) else None)
    if total[0] > limit:
        return ("dataset", total[1], f"the file's datasets declare {_size(total[0])} in "
                f"all (this one {_size(total[2])}) in a file of {_size(size)}: more than "
                f"{RATIO}x the file plus {_size(MARGIN)} is implausible, refused before "
                "reading", _BOMB)
    return None


def _link_problem(name, info):
    import h5py

    if info.type in (h5py.h5l.TYPE_HARD, h5py.h5l.TYPE_SOFT):
        return None
    return name.decode("utf-8", "replace"), info


def _dataset_problem(h5py, f, name: str, size: int, limit: int, total: list):
    dsid = h5py.h5d.open(f.id, name)
    dcpl = dsid.get_create_plist()
    layout = dcpl.get_layout()
    if dcpl.get_external_count():
        files = sorted({dcpl.get_external(i)[0].decode("utf-8", "replace")
                        for i in range(dcpl.get_external_count())})
        return f"keeps its values in external files ({', '.join(files)})"
    if layout == h5py.h5d.VIRTUAL:
        others = sorted({dcpl.get_virtual_filename(i) for i in
                         range(dcpl.get_virtual_count())} - {"."})
        if others:
            return f"is a virtual dataset that maps data of other files ({', '.join(others)})"
    itemsize = dsid.get_type().get_size()
    space = dsid.get_space()
    count = space.get_simple_extent_npoints() if space.get_simple_extent_type() != \
        h5py.h5s.NULL else 0
    declared = count * itemsize
    total[0] += declared
    if declared > total[2]:
        total[1], total[2] = name.decode("utf-8", "replace"), declared
    shape = space.get_simple_extent_dims() if count else ()
    if layout in (h5py.h5d.CONTIGUOUS, h5py.h5d.COMPACT) and declared > size:
        return (f"declares shape {tuple(shape)} of {itemsize}-byte values ({_size(declared)}) "
                f"in a file of {_size(size)}: more than its storage could hold, refused "
                "before reading")
    if layout in (h5py.h5d.CHUNKED, h5py.h5d.VIRTUAL):
        chunk = math.prod(dcpl.get_chunk()) * itemsize if layout == h5py.h5d.CHUNKED else 0
        if max(chunk, declared) > limit:
            what = "declares" if declared >= chunk else "declares chunks of"
            return (f"{what} {_size(max(chunk, declared))} (shape {tuple(shape)}) in a file "
                    f"of {_size(size)}: more than {RATIO}x the file plus {_size(MARGIN)} "
                    "is implausible, refused before reading")
    return None


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
