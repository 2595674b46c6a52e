"""What every `nnrun` command shares: error handling (exit codes of DESIGN.md section 5,
a traceback only with --debug), the common options, and JAX's set-up."""

from __future__ import annotations

import functools
import gc
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from nnrun.config.errors import EXIT_INTERRUPTED, EXIT_UNEXPECTED, ConfigError, NnrunError
from nnrun.config.yamlsrc import describe

_gc_paused = False


def pause_gc() -> None:
    """No garbage collection until `configure_jax` (the console script, for `nnrun
    train`): the collector's passes over the objects JAX's import creates took about
    0.1 s of the founding network's 1.8 s process (issue 21; benchmarks/README.md)."""
    global _gc_paused
    gc.disable()
    _gc_paused = True


def resume_gc() -> None:
    """Collection back on after `pause_gc`, with what exists now (the imported modules,
    mostly) frozen: later full collections skip it. Nothing without `pause_gc`."""
    global _gc_paused
    if _gc_paused:
        _gc_paused = False
        gc.freeze()
        gc.enable()


def configure_jax(devices: int | str = "all") -> None:
    """Turn on JAX's persistent compilation cache (off with NNRUN_NO_COMPILE_CACHE=1);
    garbage collection back on after `pause_gc`; with `devices` (a config's
    fit.devices) a number, that many CPU devices where it can (a process-level
    setting: nnrun/train/devices.py, make_cpu_devices)."""
    import jax

    resume_gc()
    if isinstance(devices, int):
        from nnrun.train.devices import make_cpu_devices

        make_cpu_devices(devices)
    if os.environ.get("NNRUN_NO_COMPILE_CACHE"):
        return
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    jax.config.update("jax_compilation_cache_dir", os.path.join(base, "nnrun", "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def fail(message: str, code: int) -> None:
    click.echo(f"error: {message}" if "\n" not in message else f"error:\n{message}", err=True)
    sys.exit(code)


def handle_errors(fn: Callable) -> Callable:
    """Map exceptions to exit codes; print a traceback only with --debug."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = kwargs.get("debug", False)
        try:
            return fn(*args, **kwargs)
        except NnrunError as exc:
            if debug:
                traceback.print_exc()
            fail(describe(exc, snippets=sys.stderr.isatty()), exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", EXIT_INTERRUPTED)
        except click.exceptions.Exit:
            raise
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            if debug:
                traceback.print_exc()
            fail(f"unexpected {type(exc).__name__}: {exc} (run again with --debug for the "
                  "traceback)", EXIT_UNEXPECTED)

    return wrapper


def common_options(fn: Callable) -> Callable:
    """--set, --json, --debug and --runs-dir on every command."""
    fn = click.option("--debug", is_flag=True, help="Show tracebacks.")(fn)
    fn = click.option("--json", "as_json", is_flag=True,
                      help="Print one JSON object instead of tables.")(fn)
    fn = click.option("--runs-dir", type=click.Path(file_okay=False, path_type=Path),
                      default=Path("runs"), show_default=True,
                      help="Where run directories live.")(fn)
    fn = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                      help="Override a config value (YAML syntax), e.g. fit.epochs=5. "
                           "Repeatable.")(fn)
    return fn


TARGET = click.argument("target", metavar="CONFIG|RUN",
                        type=click.Path(exists=True, path_type=Path))
CHECKPOINT = click.option("--checkpoint", default="best", show_default=True,
                          help="best, last, or a path to an .h5 checkpoint.")



def write_text(path: Path, text: str) -> None:
    """Write a file the user named; a failure is a located error (exit 2)."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write: {exc.strerror}", where=str(path)) from None


class PipeSafe:
    """stdout or stderr that outlives its reader: once the reader has gone (`nnrun train
    ... | head -3`), what follows is dropped instead of failing the command with a
    BrokenPipeError, so training goes on to its end and its run directory is whole. The
    file descriptor is pointed at /dev/null, so the interpreter's last flush is quiet."""

    def __init__(self, stream):
        self._stream = stream
        self.broken = False

    def write(self, text):
        if not self.broken:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._gone()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._gone()

    def _gone(self) -> None:
        self.broken = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):   # no descriptor (a test's captured stream)
            pass

    def __getattr__(self, name):
        return getattr(self._stream, name)
