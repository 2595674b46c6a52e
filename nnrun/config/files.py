"""Files nnrun writes: whole or not at all, readable as the umask says, and a full disk
(or any other write failure) as an error that names the file.

Every file of a run directory, every checkpoint and every predictions file goes
through `atomic_write`: the content is written to a temporary file beside the target
(`.NAME.XXXX.tmp`), which is then renamed into place, so a crash at any moment leaves
either the old file or the new one. The metrics logs' rows are appended
(`append_text`), each in one write that a crash leaves whole or absent.
`remove_temporaries` clears what a killed process left (`nnrun train --resume` does).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from nnrun.config import faults
from nnrun.config.errors import NnrunError

_MODE: int | None = None


class WriteError(NnrunError):
    """A file nnrun writes could not be written: a full disk, no permission (exit 3)."""

    exit_code = 3


def file_mode() -> int:
    """0o666 less the process's umask: what `open()` would give a new file (mkstemp's
    temporary files are 0o600, which would hide runs from a team on a shared machine)."""
    global _MODE
    if _MODE is None:
        mask = os.umask(0o022)
        os.umask(mask)
        _MODE = 0o666 & ~mask
    return _MODE


def write_failed(path: Path, exc: OSError) -> WriteError:
    """A located error for an OSError while writing `path`."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(exc):
        why = "the disk is full (no space left on device)"
    else:
        why = exc.strerror or str(exc)
    return WriteError(f"cannot write: {why}; the file is as it was before", where=str(path))


@contextlib.contextmanager
def atomic_write(path: Path, fault: str | None = None) -> Iterator[str]:
    """Yields a temporary path beside `path` to write; on success it is renamed into
    place with the umask's permissions, on failure removed. An OSError becomes a
    WriteError naming `path`. `fault`: the fault point passed before the rename."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_failed(path, exc) from None
    os.close(fd)
    try:
        yield tmp
        if fault is not None:
            faults.point(fault)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise write_failed(path, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """`text` (UTF-8, newlines as given) into `path`, atomically."""
    with atomic_write(path, f"write {Path(path).name}") as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)


def append_text(path: Path, text: str) -> None:
    """`text` (a log's row) added to the end of `path` in one write(): a kill leaves
    the row whole or absent (the kernel completes or skips one small write to a file),
    and a failed or short write (a full disk) is cut back to the old end, so the file
    stays whole rows. Cheaper than replacing the file whole (a rename per row).
    The fault point `write NAME` is passed before the write."""
    path = Path(path)
    faults.point(f"write {path.name}")
    data = text.encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    except OSError as exc:
        raise write_failed(path, exc) from None
    try:
        end = os.fstat(fd).st_size
        try:
            written = _write(path, fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, end)   # the file as it was
            raise write_failed(path, exc) from None
    finally:
        os.close(fd)


def _write(path: Path, fd: int, data: bytes) -> int:
    """os.write (tests replace it to fill the disk at a given file)."""
    return os.write(fd, data)


def remove_temporaries(folder: Path) -> list[str]:
    """Delete the `.NAME.XXXX.tmp` files a killed process left in `folder` (not below
    it); returns their names."""
    gone = []
    for p in Path(folder).glob(".*.tmp"):
        if p.is_file():
            p.unlink(missing_ok=True)
            gone.append(p.name)
    return gone
