"""SIGINT and SIGTERM while a command writes a run (`nnrun train`, `nnrun sweep`).

- Before a run directory exists, a signal ends the command at once (exit 130): there
  is nothing to save.
- Once it exists, the first signal asks training to stop at the next epoch boundary
  (before the first epoch if it comes during start-up): last.h5 is written, run.json
  says "interrupted", exit 130, and `--resume` continues exactly.
- A second signal aborts at once, also in the middle of an epoch: run.json says
  "interrupted" (aborted), last.h5 is the last checkpoint written; exit 130.

Python runs a signal handler only between the main thread's bytecodes, and the main
thread can sit in a compile or an epoch for seconds; a KeyboardInterrupt raised there
can even be swallowed (by a garbage-collector callback). So with `hard=True` (the
command line) the handler raises nothing: each signal's number reaches a watcher thread
through Python's wakeup fd, and the watcher acts at once (`os._exit` after the run
directory is brought up to date). With `hard=False` (the Python API: no exits behind the
caller's back) the first signal sets `requested` and a second raises KeyboardInterrupt
in the main thread.

Imports nothing heavy: the command line installs it before it imports JAX.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TextIO

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_INTERRUPTED = 130

_active: Interrupts | None = None


def active() -> Interrupts | None:
    """The installed guard of this process, if any."""
    return _active


class Interrupts:
    """The process's SIGINT/SIGTERM handling for one command; a context manager."""

    def __init__(self, stream: TextIO, *, hard: bool):
        self.stream = stream
        self.hard = hard
        self.requested: str | None = None   # the first signal's name, once received
        self.has_run = False   # a run directory exists: stop at an epoch boundary
        self._on_abort: list[Callable[[str], None]] = []
        self._lock = threading.RLock()
        self._count = 0
        self._creating = False
        self.finishing = False   # training ended: the run's last files are being written
        self._old: dict[int, object] = {}
        self._old_fd: int | None = None
        self._pipe: tuple[int, int] | None = None
        self._watcher: threading.Thread | None = None

    # ------------------------------------------------------------ install

    def __enter__(self) -> Interrupts:
        global _active
        if threading.current_thread() is not threading.main_thread() or _active is not None:
            return self   # signals are the main thread's; an outer guard handles them
        for sig in SIGNALS:
            self._old[sig] = signal.signal(sig, self._handle)
        if self.hard:
            r, w = os.pipe()
            os.set_blocking(w, False)
            self._pipe = (r, w)
            self._old_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
            self._watcher = threading.Thread(target=self._watch, name="nnrun-signals",
                                             daemon=True)
            self._watcher.start()
        _active = self
        return self

    def __exit__(self, *exc) -> None:
        global _active
        if _active is not self:
            return
        for sig, old in self._old.items():
            signal.signal(sig, old)
        if self._pipe is not None:
            signal.set_wakeup_fd(self._old_fd if self._old_fd is not None else -1)
            r, w = self._pipe
            os.close(w)   # the watcher reads end-of-file and ends
            if self._watcher is not None:
                self._watcher.join(timeout=5)
            os.close(r)
        _active = None

    # ------------------------------------------------------------ the run

    @contextlib.contextmanager
    def creating_run(self) -> Iterator[None]:
        """Around creating a run directory and its first files: a signal waits until the
        run exists (and then stops it at the first epoch boundary)."""
        with self._lock:
            self.check()
            self._creating = True
            try:
                yield
                self.has_run = True
            finally:
                self._creating = False

    def on_abort(self, fn: Callable[[str], None]) -> Callable[[], None]:
        """`fn(signal name)` brings the run directory up to date when a second signal
        aborts; returns a function that removes it (when the run's end is written)."""
        with self._lock:
            self._on_abort.append(fn)

        def remove() -> None:
            with self._lock:
                if fn in self._on_abort:
                    self._on_abort.remove(fn)
        return remove

    def check(self) -> None:
        """Between start-up steps: a signal before the run exists ends the command."""
        if self.requested and not self.has_run:
            raise KeyboardInterrupt

    # ------------------------------------------------------------ signals

    def _handle(self, signum, frame) -> None:
        if self.hard:
            return   # the watcher thread acts (the wakeup fd carries the signal)
        self._received(signal.Signals(signum).name)

    def _watch(self) -> None:
        r = self._pipe[0]
        while True:
            try:
                data = os.read(r, 64)
            except OSError:
                return
            if not data:
                return
            for number in data:
                if number in SIGNALS:
                    self._received(signal.Signals(number).name)

    def _received(self, name: str) -> None:
        with self._lock:
            self._count += 1
            if self._count == 1:
                self.requested = name
                if not self.has_run and not self._creating:
                    self._say(f"{name} received before the run started: stopping")
                    if self.hard:
                        self._exit()
                    raise KeyboardInterrupt
                if self.finishing:
                    self._say(f"{name} received: training has ended, writing the run's "
                              "last files (again to abort at once)")
                else:
                    self._say(f"{name} received: stopping after this epoch and saving a "
                              "checkpoint (again to abort at once)")
                return
            self._say(f"{name} received again: aborting")
            if not self.hard:
                raise KeyboardInterrupt
            for fn in list(self._on_abort):
                try:
                    fn(name)
                except Exception as exc:  # noqa: BLE001 - abort regardless
                    self._say(f"warning: the run directory was not brought up to date: "
                              f"{exc}")
            self._exit()

    def _say(self, text: str) -> None:
        try:
            print(text, file=self.stream, flush=True)
        except (OSError, ValueError):   # a closed pipe must not stop the exit
            pass

    def _exit(self) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(EXIT_INTERRUPTED)
