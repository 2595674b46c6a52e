"""What a search writes and reads back: each trial told to the study (with its epochs,
seconds and note as trial attributes, so that the database alone holds the results),
trials.csv, tune.json, best.yaml, the kept trials' run directories, the pictures and
the terminal's table."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

from nnrun.config.errors import ConfigError
from nnrun.config.spec import dump_yaml
from nnrun.runs import rundir
from nnrun.sweep.run import csv_text

STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running"}
_ORDER = {"complete": 0, "pruned": 1, "running": 2, "failed": 3}   # the table's order


def trial_dir(tune_dir: Path, number: int) -> Path:
    """A trial's run directory: trials/trial-NNNN."""
    return Path(tune_dir) / "trials" / f"trial-{number:04d}"


def tell(study, vr, seconds: float, pruning, search) -> None:
    """One trained trial told: finished -> COMPLETE with its best metric value, pruned
    -> PRUNED (its reports stored first), diverged -> FAIL."""
    from nnrun.runs.runtable import cell
    from nnrun.tune import study as tune_study

    number = vr.variant.index
    if pruning is not None:
        pruning.store(number, complete=vr.status == "finished")
    value = float(vr.best_value)
    if vr.status == "finished" and math.isfinite(value):
        state, said = "COMPLETE", f"{search.tune.metric} {value:.4g}"
    elif vr.status == "pruned":
        state, value, said = "PRUNED", None, f"pruned after epoch {vr.epochs}"
    else:
        state, value, said = "FAIL", None, f"failed: {vr.stop_reason or vr.status}"
    tune_study.tell(study, number, state, value, epochs=vr.epochs, best_epoch=vr.best_epoch,
                    seconds=round(seconds, 3), note=vr.stop_reason or "")
    if not search.quiet:
        values = ", ".join(f"{k.split('.')[-1]}={cell(k, vr.variant.values)}"
                           for k in vr.variant.values)
        print(f"trial {number}: {said} ({values})", file=search.stream, flush=True)


def trial_rows(search, study) -> list[dict]:
    """trials.csv's rows: the trial, its config values, state, metric (a pruned trial's
    last reported value), epochs, best epoch, seconds, its run directory while it is
    kept, and a note."""
    from nnrun.tune.study import config_value

    rows = []
    for ft in study.get_trials(deepcopy=False):
        run = trial_dir(search.tune_dir, ft.number)
        params = {d.key: config_value(d, ft.params[d.key]) if d.key in ft.params else None
                  for d in search.tune.space}
        value = ft.value if ft.state.name == "COMPLETE" else \
            (ft.intermediate_values[max(ft.intermediate_values)]
             if ft.state.name == "PRUNED" and ft.intermediate_values else None)
        rows.append({"trial": ft.number, **params,
                     "state": STATES.get(ft.state.name, ft.state.name.lower()),
                     search.tune.metric: value, "epochs": ft.user_attrs.get("epochs"),
                     "best_epoch": ft.user_attrs.get("best_epoch"),
                     "seconds": ft.user_attrs.get("seconds"),
                     "run": str(run.relative_to(search.tune_dir)) if run.is_dir() else "",
                     "note": ft.user_attrs.get("note", "")})
    return rows


def ranked(rows: list[dict], metric: str, mode: str) -> list[dict]:
    """The rows best first: complete trials by their metric (min or max by `mode`), then
    pruned, running and failed ones; ties by trial number."""
    sign = 1 if mode == "min" else -1
    return sorted(rows, key=lambda r: (_ORDER.get(r["state"], 4), r[metric] is None,
                                       sign * r[metric] if r[metric] is not None else 0,
                                       r["trial"]))


def write_record(search, study, status: str, rows: list[dict] | None = None) -> tuple:
    """trials.csv and tune.json as of now (from `rows`, else read from the study);
    returns (rows, tune.json's best, counts)."""
    rows = trial_rows(search, study) if rows is None else rows
    top = ranked(rows, search.tune.metric, search.tune.mode)[:1]
    best = top[0] if top and top[0]["state"] == "complete" else None
    counts = {"total": search.total, **{s: 0 for s in STATES.values()}}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    best_record = None if best is None else {
        "trial": best["trial"], "value": best[search.tune.metric],
        "run": best["run"] or None,
        "params": {d.key: best[d.key] for d in search.tune.space}}
    record = {"kind": "tune", "name": search.base.name, "argv": search.argv,
              "config": str(search.config), "overrides": list(search.overrides),
              "metric": search.tune.metric, "mode": search.tune.mode, "keep": search.keep,
              "started": search.started,
              "finished": None if status == "running" else
              time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "status": status, "trials": counts, "best": best_record,
              "tune": search.tune.to_dict(), "resolved": search.base.resolved}
    rundir.write_json(search.tune_dir / rundir.TUNE_FILE, record)
    rundir.write_atomic(search.tune_dir / "trials.csv", csv_text(rows))
    return rows, best_record, counts


def after_batch(search, study) -> None:
    """Only the best --keep finished trials keep their run directories (a finished
    trial's value is final, so one left out now never comes back); trials.csv,
    tune.json and best.yaml."""
    rows = trial_rows(search, study)
    done = [r for r in ranked(rows, search.tune.metric, search.tune.mode)
            if r["state"] == "complete"]
    kept = {r["trial"] for r in done[:search.keep]}
    for r in rows:
        if r["state"] != "running" and r["trial"] not in kept and r["run"]:
            remove_run(search.tune_dir / r["run"])
            r["run"] = ""
    _, best, _ = write_record(search, study, "running", rows)
    write_best_yaml(search, best)


def remove_run(run: Path) -> None:
    if run.is_dir() and rundir.is_run_dir(run):
        shutil.rmtree(run)


def write_best_yaml(search, best: dict | None) -> None:
    """best.yaml: the best trial's resolved config without tune:, and where it came from."""
    if best is None or best["trial"] == search.best_written:
        return
    search.best_written = best["trial"]
    params = best["params"]
    spec = search.trial_spec(params)
    config = {k: v for k, v in spec.resolved.items() if k != "tune"}
    value = best["value"]
    head = [f"# nnrun tune {search.tune_dir}: the best trial, {best['trial']}, with "
            f"{search.tune.metric} {value:.6g} ({search.tune.mode}imized);",
            f"# {search.config} with " + ", ".join(f"{k}={json.dumps(v)}"
                                                   for k, v in params.items()),
            f"# (trials.csv has every trial). Train it: nnrun train "
            f"{search.tune_dir / 'best.yaml'}"]
    rundir.write_atomic(search.tune_dir / "best.yaml", "\n".join(head) + "\n" +
                        dump_yaml(config))


def finish(search, study, status: str, *, plots: bool) -> tuple:
    """The last trials.csv, tune.json and best.yaml, and the pictures."""
    rows, best, counts = write_record(search, study, status)
    write_best_yaml(search, best)
    if plots:
        from nnrun.tune.plots import draw_plots

        space = [{"key": d.key, "kind": d.kind, "values": list(d.values)}
                 for d in search.tune.space]
        plot_rows = [{"trial": r["trial"], "state": r["state"],
                      "value": r[search.tune.metric],
                      "params": {d.key: r[d.key] for d in search.tune.space}} for r in rows]
        draw_plots(search.tune_dir, plot_rows, space, search.tune.metric, search.tune.mode,
                   importances(study, counts, len(search.tune.space)))
    return rows, best, counts


def importances(study, counts: dict, dimensions: int) -> dict[str, float] | None:
    """optuna's parameter importances (its default evaluator), None with fewer than two
    complete trials or one dimension."""
    if counts.get("complete", 0) < 2 or dimensions < 2:
        return None
    import optuna

    try:
        return dict(optuna.importance.get_param_importances(study))
    except (ValueError, RuntimeError, ImportError):
        return None


# ---------------------------------------------------------------- resume

def resume_record(tune_dir: Path, config: Path | None, overrides: tuple) -> tuple:
    """(config, overrides, tune.json) of a tune directory to resume."""
    tune_dir = Path(tune_dir)
    record = rundir.read_tune_json(tune_dir)
    if record is None or record.get("kind") != "tune":
        raise ConfigError(f"not a tune directory ({rundir.TUNE_FILE} is missing, unreadable "
                          "or not nnrun tune's)", where=str(tune_dir))
    if config is not None or overrides:
        raise ConfigError("a resumed search keeps the config and --set overrides it "
                          f"started with ({record.get('config')}); give only --resume DIR",
                          where="--resume")
    if not (tune_dir / "study.db").is_file():
        raise ConfigError("no study.db in this tune directory: nothing to resume",
                          where=str(tune_dir))
    return Path(record["config"]), tuple(record.get("overrides", ())), record


def check_unchanged(tune_dir: Path, record: dict, base) -> None:
    """The config must be the one the search (its tune.json `record`) started with: its
    trials would otherwise mix two configs."""
    before = json.loads(json.dumps(record.get("resolved"), default=str))
    now = json.loads(json.dumps(base.resolved, default=str))
    if before != now:
        where = _first_difference(before, now)
        raise ConfigError(f"{record.get('config')} has changed since this search started "
                          f"(at {where}); its trials would mix two configs: start a new "
                          "search with nnrun tune CONFIG", where=str(tune_dir))


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else k)
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return _first_difference(x, y, f"{path}[{i}]")
    return path or "<root>"


# ---------------------------------------------------------------- the terminal

def table(result, limit: int = 10):
    """The rich table: the best trials first (up to `limit`), then the counts."""
    from rich import box
    from rich.table import Table

    from nnrun.runs.runtable import cell

    metric, c = result.metric, result.counts
    title = (f"tune {result.tune_dir.name}: {len(result.rows)}/{c['total']} trials, "
             f"{c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed")
    t = Table(title=title, box=box.SIMPLE_HEAVY)
    columns = ["trial", *result.space_keys, metric, "state", "epochs", "seconds"]
    for col in columns:
        t.add_column(col.split(".")[-1] if col in result.space_keys else col,
                     justify="left" if col == "state" else "right")
    for r in ranked(result.rows, metric, result.mode)[:limit]:
        t.add_row(*[cell(col, r) for col in columns])
    return t
