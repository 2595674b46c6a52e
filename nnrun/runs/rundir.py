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
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from nnrun import __version__
from nnrun.config import faults
from nnrun.config.errors import ConfigError
from nnrun.config.files import append_text, write_failed, write_text_atomic

LATEST = "latest"


def write_atomic(path: Path, text: str) -> None:
    """Write text to a temporary file beside `path`, then rename it into place (a full
    disk is a WriteError naming the file; nnrun/config/files.py)."""
    write_text_atomic(path, text)


def create_run_dir(runs_root: Path, name: str) -> Path:
    """Make a fresh run directory (runs/latest points at it once its config.yaml is
    written: `point_latest`)."""
    runs_root = Path(runs_root)
    try:
        runs_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_failed(runs_root, exc) from None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = f"{name}-{stamp}"
    for i in range(1000):
        run = runs_root / (base if i == 0 else f"{base}-{i}")
        try:
            run.mkdir()
            break
        except FileExistsError:
            continue
        except OSError as exc:
            raise write_failed(run, exc) from None
    faults.point("run-dir")
    (run / "checkpoints").mkdir()
    return run


def point_latest(run: Path) -> None:
    """runs/latest -> `run` (a relative symlink, replaced atomically)."""
    link = run.parent / LATEST
    tmp = run.parent / f".{LATEST}.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run.name)
    os.replace(tmp, link)


def is_run_dir(path: Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "config.yaml").is_file()


TUNE_FILE = "tune.json"


def read_tune_json(path: Path) -> dict | None:
    """A tune directory's tune.json (`nnrun tune`: runs/<name>-tune-<stamp>/), None when
    it is missing, unreadable or not a JSON object."""
    try:
        record = json.loads((Path(path) / TUNE_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def is_tune_dir(path: Path) -> bool:
    """A directory `nnrun tune` made: its tune.json says "kind": "tune"."""
    if not (Path(path) / TUNE_FILE).is_file():
        return False
    record = read_tune_json(path)
    return record is not None and record.get("kind") == "tune"


def tune_best_run(path: Path) -> Path:
    """The run directory of a tune directory's best trial (tune.json's best.run, relative
    to the tune directory): what evaluate, predict, export... use for a tune directory.
    A ConfigError located at the tune directory when tune.json cannot be read, no trial
    has finished yet, or the best trial's directory is gone."""
    path = Path(path)
    record = read_tune_json(path)
    if record is None or record.get("kind") != "tune":
        raise ConfigError(f"not a tune directory ({TUNE_FILE} is missing, unreadable or "
                          "not nnrun tune's)", where=str(path))
    best = record.get("best")
    if not isinstance(best, dict):
        hint = {"running": "wait for one (the search is running)",
                "interrupted": f"nnrun tune --resume {path} goes on",
                "finished": "every trial failed or was pruned (trials.csv has their notes)",
                }.get(record.get("status"), "trials.csv has the trials")
        yet = "" if record.get("status") == "finished" else " yet"
        raise ConfigError(f"no finished trial in this tune directory{yet}; {hint}",
                          where=str(path))
    run = best.get("run")
    if not isinstance(run, str) or not is_run_dir(path / run):
        which = f"trial {best.get('trial')}" if best.get("trial") is not None else "trial"
        kept = f"its run directory {run} is gone" if isinstance(run, str) else \
            "no run directory was kept"
        raise ConfigError(f"no run of the best trial ({which}) in this tune directory: "
                          f"{kept}; train it again with nnrun train {path / 'best.yaml'}",
                          where=str(path))
    return path / run


def tune_target(path: Path) -> Path:
    """What a command given `path` uses: for a tune directory (a tune.json and no
    config.yaml), its best trial's run (tune_best_run: a located error when there is
    none, or tune.json cannot be read); any other path as it is."""
    path = Path(path)
    if path.is_dir() and (path / TUNE_FILE).is_file() and not is_run_dir(path):
        return tune_best_run(path)
    return path


_STAMPED = re.compile(r"(?P<name>.+)-\d{8}-\d{6}(?:-\d+)?")


def run_name(run: Path) -> str | None:
    """The config name a run directory was trained under: run.json's `name`, else (a
    run from before it was recorded, or without run.json yet) its directory name
    without the `-YYYYmmdd-HHMMSS[-N]` stamp; None for a directory named otherwise."""
    try:
        name = json.loads((Path(run) / "run.json").read_text(encoding="utf-8")).get("name")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        name = None
    if isinstance(name, str):
        return name
    match = _STAMPED.fullmatch(Path(run).name)
    return match["name"] if match else None


def latest_run_of(runs_root: Path, name: str) -> Path | None:
    """The newest run directory of the config named `name`: exactly that name
    (`run_name`), never a longer name it begins (xor-mlp's runs are not xor-mlp-16's)."""
    root = Path(runs_root)
    if not root.is_dir():
        return None
    runs = [p for p in root.iterdir() if p.is_dir() and not p.is_symlink()
            and p.name.startswith(f"{name}-") and is_run_dir(p) and not is_tune_dir(p)
            and run_name(p) == name]
    return max(runs, key=lambda p: (p.stat().st_mtime, p.name)) if runs else None


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLog:
    """metrics.csv and metrics.jsonl, one row per epoch: written whole (atomically) when
    the log opens, then each epoch's row appended in one write (files.append_text: a
    crash leaves the row whole or absent, never half a row; was the whole file replaced
    every epoch, a rename per epoch and a file that grows with the epochs).

    metrics.csv holds what the model computed (epoch, loss, metrics, val_*, lr) and so
    is identical for identical runs; wall-clock seconds go to metrics.jsonl only.
    """

    def __init__(self, run: Path, keys: list[str], *, resume_after: int | None = None):
        """A new log, or with `resume_after` the run's log kept up to that epoch (rows
        after it, of epochs a resumed run trains again, dropped) and appended to."""
        self.keys = ["epoch", *keys, "lr"]
        self._csv_path, self._jsonl_path = run / "metrics.csv", run / "metrics.jsonl"
        self._csv_text, self._jsonl_text = _csv_line(self.keys), ""
        if resume_after is not None:
            self._csv_text, self._jsonl_text = _kept_logs(run, resume_after, self._csv_text)
        self._flush()

    def append(self, epoch: int, logs: dict[str, float], lr: float, seconds: float) -> None:
        row = {"epoch": epoch, **logs, "lr": lr}
        line = _csv_line([_fmt(row.get(k)) for k in self.keys])
        record = {k: _json_safe(v) for k, v in {**row, "seconds": seconds}.items()}
        self._write_row(line, json.dumps(record) + "\n")

    def _write_row(self, line: str, record: str) -> None:
        append_text(self._csv_path, line)
        append_text(self._jsonl_path, record)

    def _flush(self) -> None:
        """Both files written whole from the text held (the header and kept rows)."""
        write_atomic(self._csv_path, self._csv_text)
        write_atomic(self._jsonl_path, self._jsonl_text)

    def close(self) -> None:
        """Nothing is held open: every append already wrote its row."""


def _csv_line(values: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(values)
    return out.getvalue()


def _read_exact(path: Path) -> str:
    """A file's text with its line ends as written (read_text() would turn the CSV's
    CRLF into LF, and a resumed run's metrics.csv would differ from an uninterrupted
    one's)."""
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def _kept_logs(run: Path, epoch: int, header: str) -> tuple[str, str]:
    """metrics.csv's and metrics.jsonl's text without the rows after `epoch` (those a
    resumed run trains again); a log the run never wrote starts with `header`."""
    csv_path, jsonl_path = run / "metrics.csv", run / "metrics.jsonl"
    lines = _read_exact(csv_path).splitlines(keepends=True) if csv_path.is_file() else []
    kept = lines[:1] or [header]
    for n, line in enumerate(lines[1:], 2):
        if not line.endswith("\n"):   # cut short by a crash (never, as files are replaced)
            continue
        try:
            row_epoch = int(line.split(",", 1)[0])
        except ValueError:
            raise ConfigError("not a row of metrics.csv (a row starts with its epoch); "
                              "restore the file or start the run again",
                              where=f"{csv_path}:{n}") from None
        if row_epoch <= epoch:
            kept.append(line)
    records = _read_exact(jsonl_path).splitlines(keepends=True) \
        if jsonl_path.is_file() else []
    kept_records = []
    for record in records:
        try:
            row_epoch = json.loads(record)["epoch"]
        except (ValueError, KeyError, TypeError):
            continue   # metrics.jsonl is the wall-clock side log: a bad line is dropped
        if record.endswith("\n") and row_epoch <= epoch:
            kept_records.append(record)
    return "".join(kept), "".join(kept_records)


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


def base_run_info(argv: list[str], seed: int, data_files: list[dict], *,
                  name: str | None = None) -> dict:
    """run.json's start: `name` is the config's (`latest_run_of` matches it exactly)."""
    import jax

    return {
        **({"name": name} if name is not None else {}), "argv": argv, "versions": versions(),
        "devices": [str(d) for d in jax.devices()], "platform": sys.platform,
        "git": git_info(Path.cwd()), "data_files": data_files,
        "seeds": {"seed": seed, "streams": ["init", "dropout", "shuffle", "split"]},
        "status": "running", "stop_reason": None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **process_info(),
    }


def process_info() -> dict:
    """The process writing the run (a resume refuses a run whose process still runs)."""
    return {"pid": os.getpid(), "host": platform.node()}


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, json.dumps(value, indent=2, default=str) + "\n")


def read_run_json(run: Path) -> dict:
    try:
        info = json.loads((Path(run) / "run.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read run.json: {exc}", where=str(run)) from None
    if not isinstance(info, dict):
        raise ConfigError(f"cannot read run.json: expected an object, got "
                          f"{type(info).__name__}", where=str(run))
    return info


def best_record(path: Path) -> dict | None:
    """What a checkpoint says of itself, {"epoch", "monitor", "value"} from its HDF5
    attributes: for best.h5 the run's best epoch (the one definition run.json's `best`,
    `nnrun runs`, `evaluate`, the curves and the finish lines show). None when there is
    no readable checkpoint there."""
    from nnrun.config import h5gate
    from nnrun.config.errors import CheckpointError

    try:
        with h5gate.open_untrusted(path, str(path), CheckpointError) as f:
            if "epoch" not in f.attrs:
                return None
            attrs = {k: f.attrs.get(k) for k in ("epoch", "monitor", "value")}
    except (OSError, KeyError, ValueError, CheckpointError):   # refused or unreadable
        return None
    monitor, value = attrs["monitor"], attrs["value"]
    if isinstance(monitor, bytes):
        monitor = monitor.decode("utf-8", "replace")
    return {"epoch": int(attrs["epoch"]), "monitor": None if monitor is None else str(monitor),
            "value": None if value is None else float(value)}
