"""Several processes (hosts) as one JAX system: `distributed:` in the config.

`jax.distributed.initialize` joins this process to the others; `jax.devices()` then
lists every process's devices, the data mesh (nnrun/train/devices.py) spans them all, and
XLA's collectives (gloo on the CPU, NCCL on GPUs) reduce the gradients across
processes. Every process runs the same config: it loads the data (the same rows and
the same shuffled order everywhere) and feeds its own devices their part of each
batch; only process 0 writes the run directory (the others write into a temporary
folder that is removed at the end) and prints.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

from nnrun.config.errors import ConfigError

_joined: dict | None = None


def initialize(options: dict | None, where: str) -> None:
    """Join the distributed system once per process (a no-op for `options` None)."""
    global _joined
    if options is None:
        return
    if _joined is not None:
        if _joined != options:
            raise ConfigError("this process already joined a distributed system with "
                              f"other settings ({_joined})", where=where)
        return
    import jax

    try:
        jax.distributed.initialize(**options)
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot join the distributed system: {first}", where=where) from None
    _joined = dict(options)


def is_writer() -> bool:
    """Whether this process writes the run directory (process 0, or a lone process)."""
    import jax

    return jax.process_index() == 0


@contextlib.contextmanager
def runs_root_for(runs_root: Path):
    """Process 0's runs folder; another process gets a temporary one, removed after."""
    if is_writer():
        yield Path(runs_root)
        return
    folder = Path(tempfile.mkdtemp(prefix="nnrun-process-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
