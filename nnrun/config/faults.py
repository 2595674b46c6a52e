"""Fault points: named moments of a run where the crash tests make the process die.

`NNRUN_FAULT="POINT:N"` sends the process SIGKILL the N-th time it passes POINT;
`NNRUN_FAULT="POINT:N:INT"` (or `:TERM`) sends that signal instead, for the signal
tests. Points (tests/test_faults.py uses them all):

- `start`: the train command begins (before data is read, no run directory yet)
- `run-dir`: the run directory was just made, before any file is in it
- `compile`: the run's files are written, before the first epoch
- `epoch`: an epoch begins (the N-th epoch this process trains)
- `write NAME`: a text file NAME of the run (metrics.csv, run.json, ...) is half
  written to its temporary file, before the rename that puts it in place
- `h5 NAME`: a checkpoint NAME (last.h5, best.h5) is half written, likewise

Unset (the normal case), `point()` costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import time

_PLAN: tuple[str, int, int] | None | bool = False   # False: not read yet
_seen: dict[str, int] = {}


def _plan() -> tuple[str, int, int] | None:
    global _PLAN
    if _PLAN is False:
        text = os.environ.get("NNRUN_FAULT")
        if not text:
            _PLAN = None
        else:
            parts = text.rsplit(":", 2) if text.count(":") >= 2 else text.rsplit(":", 1)
            name, count = parts[0], int(parts[1])
            sig = getattr(signal, f"SIG{parts[2]}") if len(parts) == 3 else signal.SIGKILL
            _PLAN = (name, count, sig)
    return _PLAN


def point(name: str) -> None:
    """Pass the fault point `name` (see the module's docstring)."""
    plan = _plan()
    if plan is None or plan[0] != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] == plan[1]:
        os.kill(os.getpid(), plan[2])
        if plan[2] != signal.SIGKILL:   # handled (by the watcher thread) before going on
            time.sleep(0.2)
