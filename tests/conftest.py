"""Shared test settings: Keras (the numerical reference) runs on its JAX backend, and
the suite shares compiled programs and keeps its memory bounded.

- One JAX persistent compilation cache for the whole run (every program, however
  quick to compile), in a temporary folder made by the first pytest process and shared
  by its xdist workers and by the `nnrun` subprocesses tests start: a program that
  several tests compile (the same model, the same eager op at the same shape) is
  compiled once. Removed at the end of the run. `NNRUN_TEST_JAX_CACHE=DIR` keeps it in
  DIR instead, across runs (a second run then compiles almost nothing).
- After a test, when the process holds more than `NNRUN_TEST_RSS_MB` (default 1000)
  MB, JAX's in-memory caches of compiled programs are dropped (the programs come back
  from the persistent cache when needed): compiled executables otherwise pile up
  to several GB over the suite.
- The CLI's own cache under ~/.cache stays off (NNRUN_NO_COMPILE_CACHE=1).
- nnrun's modules are compiled to bytecode first (`compileall`), for the workers and
  the subprocesses, where PYTHONDONTWRITEBYTECODE is set.
"""

import compileall
import ctypes
import gc
import os
import pathlib
import shutil
import sys
import tempfile

import pytest
from trained_examples import example_run  # noqa: F401  (a shared fixture)

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("NNRUN_NO_COMPILE_CACHE", "1")

_OWN_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:   # set already in an xdist worker
    kept = os.environ.get("NNRUN_TEST_JAX_CACHE")
    if kept:
        os.makedirs(kept, exist_ok=True)
    else:
        kept = _OWN_CACHE = tempfile.mkdtemp(prefix="nnrun-tests-jax-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = kept
    # nnrun's modules compiled to bytecode once, by the first pytest process: with
    # PYTHONDONTWRITEBYTECODE set (as on this project's machines) each xdist worker and
    # each `nnrun` subprocess a test starts would otherwise compile them again (0.2-0.5
    # s a process). __pycache__ is ignored by git.
    compileall.compile_dir(pathlib.Path(__file__).resolve().parents[1] / "nnrun",
                           quiet=2)   # a read-only tree: skipped
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

RSS_LIMIT_MB = int(os.environ.get("NNRUN_TEST_RSS_MB", "1000"))


def _rss_mb() -> int:
    """This process's resident memory (0 where /proc is missing)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def _release_compiled_programs() -> None:
    if "jax" in sys.modules:
        sys.modules["jax"].clear_caches()
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)   # hand freed pages back to the system
    except (OSError, AttributeError):   # not glibc
        pass


@pytest.fixture(autouse=True)
def _bounded_memory():
    yield
    if _rss_mb() > RSS_LIMIT_MB:
        _release_compiled_programs()


def pytest_unconfigure(config):
    if _OWN_CACHE is not None and not hasattr(config, "workerinput"):
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)
