"""The run directory (DESIGN.md section 4): creation, atomic files, metrics logs, run.json.

runs/<name>-<YYYYmmdd-HHMMSS>/ is never overwritten (a suffix -1, -2 ... is added
when the name is taken); runs/latest is a relative symlink to the newest run.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from nnrun import __version__
from nnrun.config.errors import ConfigError

LATEST = "latest"


def write_atomic(path: Path, text: str) -> None:
    """Write text to a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def create_run_dir(runs_root: Path, name: str) -> Path:
    """Make a fresh run directory and point runs/latest at it."""
    runs_root = Path(runs_root)
    runs_root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = f"{name}-{stamp}"
    for i in range(1000):
        run = runs_root / (base if i == 0 else f"{base}-{i}")
        try:
            run.mkdir()
            break
        except FileExistsError:
            continue
    (run / "checkpoints").mkdir()
    link = runs_root / LATEST
    tmp = runs_root / f".{LATEST}.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run.name)
    os.replace(tmp, link)
    return run


def is_run_dir(path: Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "config.yaml").is_file()


def latest_run_of(runs_root: Path, name: str) -> Path | None:
    """The newest run directory whose name is `<name>-<stamp>`."""
    root = Path(runs_root)
    if not root.is_dir():
        return None
    runs = [p for p in root.iterdir() if p.is_dir() and not p.is_symlink()
            and p.name.startswith(f"{name}-") and is_run_dir(p)]
    return max(runs, key=lambda p: (p.stat().st_mtime, p.name)) if runs else None


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLog:
    """metrics.csv and metrics.jsonl, one row per epoch, each file replaced atomically
    after every epoch (a crash leaves the previous complete file, never half a row).

    metrics.csv holds what the model computed (epoch, loss, metrics, val_*, lr) and so
    is identical for identical runs; wall-clock seconds go to metrics.jsonl only.
    """

    def __init__(self, run: Path, keys: list[str], *, resume_after: int | None = None):
        """A new log, or with `resume_after` the run's log kept up to that epoch (rows
        after it, of epochs a resumed run trains again, dropped) and appended to."""
        self.keys = ["epoch", *keys, "lr"]
        self._csv_path, self._jsonl_path = run / "metrics.csv", run / "metrics.jsonl"
        if resume_after is not None:
            _truncate_logs(run, resume_after)
            self._csv_text = self._csv_path.read_text(encoding="utf-8")
            self._jsonl_text = self._jsonl_path.read_text(encoding="utf-8") \
                if self._jsonl_path.is_file() else ""
        else:
            self._csv_text, self._jsonl_text = _csv_line(self.keys), ""
        self._flush()

    def append(self, epoch: int, logs: dict[str, float], lr: float, seconds: float) -> None:
        row = {"epoch": epoch, **logs, "lr": lr}
        self._csv_text += _csv_line([_fmt(row.get(k)) for k in self.keys])
        record = {k: _json_safe(v) for k, v in {**row, "seconds": seconds}.items()}
        self._jsonl_text += json.dumps(record) + "\n"
        self._flush()

    def _flush(self) -> None:
        write_atomic(self._csv_path, self._csv_text)
        write_atomic(self._jsonl_path, self._jsonl_text)

    def close(self) -> None:
        """Nothing is held open: every append already wrote both files whole."""


def _csv_line(values: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(values)
    return out.getvalue()


def _truncate_logs(run: Path, epoch: int) -> None:
    """metrics.csv and metrics.jsonl rewritten (atomically) without rows after `epoch`."""
    csv_path, jsonl_path = run / "metrics.csv", run / "metrics.jsonl"
    lines = csv_path.read_text(encoding="utf-8").splitlines(keepends=True)
    # A line without its newline is one a crash cut short.
    kept = lines[:1] + [line for line in lines[1:]
                        if line.endswith("\n") and int(line.split(",", 1)[0]) <= epoch]
    write_atomic(csv_path, "".join(kept))
    records = jsonl_path.read_text(encoding="utf-8").splitlines(keepends=True) \
        if jsonl_path.is_file() else []
    write_atomic(jsonl_path, "".join(r for r in records
                                     if r.endswith("\n") and json.loads(r)["epoch"] <= epoch))


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def git_info(cwd: Path) -> dict:
    """The git commit and dirty flag (tracked files) of the working directory, in one call."""
    try:
        out = subprocess.run(["git", "status", "--porcelain=v2", "--branch",
                              "--untracked-files=no"], cwd=cwd, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if out.returncode != 0:
        return {"commit": None, "dirty": None}
    lines = out.stdout.splitlines()
    oid = next((line.split()[2] for line in lines if line.startswith("# branch.oid ")), None)
    commit = oid if oid and oid != "(initial)" else None
    return {"commit": commit, "dirty": any(not line.startswith("#") for line in lines)}


def versions() -> dict:
    import jax
    import jaxlib
    import optax

    return {"nnrun": __version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "optax": optax.__version__, "python": platform.python_version()}


def base_run_info(argv: list[str], seed: int, data_files: list[dict]) -> dict:
    import jax

    return {
        "argv": argv, "versions": versions(),
        "devices": [str(d) for d in jax.devices()], "platform": sys.platform,
        "git": git_info(Path.cwd()), "data_files": data_files,
        "seeds": {"seed": seed, "streams": ["init", "dropout", "shuffle", "split"]},
        "status": "running", "stop_reason": None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, json.dumps(value, indent=2, default=str) + "\n")


def read_run_json(run: Path) -> dict:
    try:
        return json.loads((Path(run) / "run.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read run.json: {exc}", where=str(run)) from None
