"""The learning curves of `nnrun train`, rendered by a helper process (issue 21).

Importing matplotlib and drawing the curves took about 0.7 s at the end of every
training, after the last epoch. The `nnrun` console script starts this helper as a
training command begins (`start`): it imports matplotlib and warms its text
rendering on the spare core while the main process imports JAX and compiles, then
waits. When training ends, the main process sends the run directory (one JSON line
on the helper's stdin); the helper reads metrics.csv and the run's files, renders
the PNG and sends it back (`png N`, then N bytes) or says why not (`none` before the
first epoch, `error TEXT`). The main process writes the file itself (atomically, at
its fault point), so a kill leaves the files as before. If the helper is missing,
slow to start or fails, the main process draws as before: the helper saves time,
it is never needed.

The helper runs in its own session (a Ctrl-C at the terminal is the main process's
to handle) and ends when its request is answered or its stdin closes: the main
process exits, or dies, without asking.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from nnrun.config.errors import ConfigError

WAIT_SECONDS = 120.0   # for the picture (a helper building matplotlib's font cache)
_helper: subprocess.Popen | None = None


def start() -> None:
    """Start the helper for this process's training (once; nothing if it cannot)."""
    global _helper
    if _helper is not None:
        return
    env = {k: v for k, v in os.environ.items() if k != "NNRUN_FAULT"}
    try:
        _helper = subprocess.Popen(
            [sys.executable, "-m", "nnrun.runs.curves_helper"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
            start_new_session=True)
    except OSError:
        _helper = None


def plot_learning_curves(run: Path) -> Path:
    """charts.plot_learning_curves(run), its picture rendered by the helper if there is
    one (its bytes are the same)."""
    from nnrun.runs import charts

    data = rendered_by_helper(run)
    if data is None:
        return charts.plot_learning_curves(run)
    output = Path(run) / "plots" / charts.CURVES
    output.parent.mkdir(parents=True, exist_ok=True)
    charts.save_bytes(data, output)
    return output


def rendered_by_helper(run: Path) -> bytes | None:
    """The helper's PNG of `run`'s learning curves; None where there is no helper or it
    did not answer (the caller draws). A ConfigError where there is nothing to draw, as
    drawing here would raise."""
    global _helper
    proc, _helper = _helper, None
    if proc is None:
        return None
    try:
        proc.stdin.write((json.dumps(str(Path(run).resolve())) + "\n").encode())
        proc.stdin.close()
        kind, _, rest = _read_line(proc).partition(" ")
        if kind == "png":
            data = proc.stdout.read(int(rest))   # a buffered read: all of it, or EOF
            return data if len(data) == int(rest) else None
        if kind == "none":
            raise ConfigError(rest, where=str(Path(run) / "metrics.csv"))
        return None   # "error ...": the caller draws, and reports what it finds
    except (OSError, ValueError):
        return None
    finally:
        _stop(proc)


def _read_line(proc: subprocess.Popen) -> str:
    import select

    ready, _, _ = select.select([proc.stdout], [], [], WAIT_SECONDS)
    if not ready:
        return ""
    return proc.stdout.readline().decode("utf-8", "replace").rstrip("\n")


def _stop(proc: subprocess.Popen) -> None:
    try:
        proc.wait(timeout=1.0)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _warm_up() -> None:
    """What drawing the curves loads on first use, loaded: matplotlib, its fonts and
    mathtext (a log axis's labels), h5py (best.h5's epoch)."""
    import h5py  # noqa: F401

    from nnrun.runs import charts

    columns = {"epoch": [1.0, 2.0, 3.0], "loss": [1.0, 0.1, 0.001],
               "val_loss": [1.0, 0.2, 0.002], "accuracy": [0.5, 0.7, 0.9]}
    charts.rendered(charts.curves_figure(columns, "warm-up",
                                         [charts.Mark(2, "best", "#2ca02c", (5, 3))]))


def main() -> None:
    """The helper: warm up, answer one request, exit."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = sys.stdout.buffer
    try:
        _warm_up()
    except Exception:  # noqa: BLE001 - the request is answered (or refused) below
        pass
    line = sys.stdin.buffer.readline()
    if not line:
        return
    try:
        from nnrun.runs import charts

        data = charts.rendered(charts.curves_figure_of(Path(json.loads(line))))
        out.write(b"png %d\n" % len(data) + data)
    except ConfigError as exc:
        out.write(b"none " + exc.message.replace("\n", " ").encode() + b"\n")
    except Exception as exc:  # noqa: BLE001 - the main process draws, and reports
        out.write(b"error " + f"{type(exc).__name__}: {exc}".replace("\n", " ").encode()
                  + b"\n")
    out.flush()


if __name__ == "__main__":
    main()
    os._exit(0)   # answered: no interpreter teardown (matplotlib's, h5py's) to wait for
