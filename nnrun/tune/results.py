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
from nnrun.sweep.run import _csv

STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running"}


def tell(study, vr, seconds: float, pruning, search) -> None:
    """One trained trial told: finished -> COMPLETE with its best metric value, pruned
    -> PRUNED (its reports stored first), diverged -> FAIL."""
    from optuna.trial import TrialState

    number = vr.variant.index
    storage = study._storage
    trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    if pruning is not None:
        pruning.store(number, complete=vr.status == "finished")
    for key, value in (("epochs", vr.epochs), ("best_epoch", vr.best_epoch),
                       ("seconds", round(seconds, 3)), ("note", vr.stop_reason or "")):
        storage.set_trial_user_attr(trial_id, key, value)
    value = float(vr.best_value)
    if vr.status == "finished" and math.isfinite(value):
        study.tell(number, value)
        said = f"{search.tune.metric} {value:.4g}"
    elif vr.status == "pruned":
        study.tell(number, state=TrialState.PRUNED)
        said = f"pruned after epoch {vr.epochs}"
    else:
        study.tell(number, state=TrialState.FAIL)
        said = f"failed: {vr.stop_reason or vr.status}"
    if not search.quiet:
        values = ", ".join(f"{k.split('.')[-1]}={_cell(v)}" for k, v in vr.variant.values.items())
        print(f"trial {number}: {said} ({values})", file=search.stream, flush=True)


def trial_rows(search, study) -> list[dict]:
    """trials.csv's rows: the trial, its config values, state, metric, epochs, best
    epoch, seconds, its run directory while it is kept, and a note."""
    rows = []
    for ft in study.get_trials(deepcopy=False):
        from nnrun.tune.study import config_value

        run = search.tune_dir / "trials" / f"trial-{ft.number:04d}"
        params = {d.key: config_value(d, ft.params[d.key]) if d.key in ft.params else None
                  for d in search.tune.space}
        value = ft.value if ft.state.name == "COMPLETE" else \
            (ft.intermediate_values[max(ft.intermediate_values)]
             if ft.state.name == "PRUNED" and ft.intermediate_values else None)
        rows.append({"trial": ft.number, **params, "state": STATES.get(ft.state.name,
                                                                         ft.state.name.lower()),
                     search.tune.metric: value, "epochs": ft.user_attrs.get("epochs"),
                     "best_epoch": ft.user_attrs.get("best_epoch"),
                     "seconds": ft.user_attrs.get("seconds"),
                     "run": str(run.relative_to(search.tune_dir)) if run.is_dir() else "",
                     "note": ft.user_attrs.get("note", "")})
    return rows


def best_row(search, rows: list[dict]) -> dict | None:
    done = [r for r in rows if r["state"] == "complete"]
    if not done:
        return None
    sign = 1 if search.tune.mode == "min" else -1
    return min(done, key=lambda r: (sign * r[search.tune.metric], r["trial"]))


def counts_of(rows: list[dict], total: int) -> dict:
    out = {"total": total, **{s: 0 for s in STATES.values()}}
    for r in rows:
        out[r["state"]] = out.get(r["state"], 0) + 1
    return out


def write_record(search, study, status: str, *, started: bool = False) -> tuple:
    """trials.csv and tune.json as of now; (rows, best, counts)."""
    rows = trial_rows(search, study)
    best = best_row(search, rows)
    counts = counts_of(rows, search.total)
    path = search.tune_dir / "tune.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    best_record = None if best is None else {
        "trial": best["trial"], "value": best[search.tune.metric],
        "run": best["run"] or None,
        "params": {d.key: best[d.key] for d in search.tune.space}}
    record = {"kind": "tune", "name": search.base.name, "argv": search.argv,
              "config": str(search.config), "overrides": list(search.overrides),
              "metric": search.tune.metric, "mode": search.tune.mode, "keep": search.keep,
              "started": old.get("started") or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "finished": None if status == "running" else
              time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "status": status, "trials": counts, "best": best_record,
              "tune": search.tune.to_dict(), "resolved": search.base.resolved}
    rundir.write_json(path, record)
    rundir.write_atomic(search.tune_dir / "trials.csv", _csv(rows))
    return rows, best_record, counts


def after_batch(search, study) -> None:
    """Only the best --keep finished trials keep their run directories (a finished
    trial's value is final, so one left out now never comes back); best.yaml."""
    rows = trial_rows(search, study)
    done = [r for r in rows if r["state"] == "complete"]
    sign = 1 if search.tune.mode == "min" else -1
    done.sort(key=lambda r: (sign * r[search.tune.metric], r["trial"]))
    kept = {r["trial"] for r in done[:search.keep]}
    for r in rows:
        if r["state"] != "running" and r["trial"] not in kept and r["run"]:
            remove_run(search.tune_dir / r["run"])
    _, best, _ = write_record(search, study, "running")
    write_best_yaml(search, best)


def remove_run(run: Path) -> None:
    if run.is_dir() and rundir.is_run_dir(run):
        shutil.rmtree(run)


def write_best_yaml(search, best: dict | None) -> None:
    """best.yaml: the best trial's resolved config without tune:, and where it came from."""
    if best is None:
        return
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
        names = {v: k for k, v in STATES.items()}
        plot_rows = [{"trial": r["trial"], "state": names.get(r["state"], "FAIL"),
                      "value": r[search.tune.metric],
            "params": {d.key: r[d.key] for d in search.tune.space}} for r in rows]
        draw_plots(search.tune_dir, plot_rows, space, search.tune.metric, search.tune.mode,
                   importances(study, counts))
    return rows, best, counts


def importances(study, counts: dict) -> dict[str, float] | None:
    """optuna's parameter importances (its default evaluator), None with fewer than two
    complete trials or one dimension."""
    if counts.get("complete", 0) < 2 or len(study.get_trials(deepcopy=False)[0].params) < 2:
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
    path = tune_dir / "tune.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"not a tune directory (cannot read tune.json: {exc})",
                          where=str(tune_dir)) from None
    if not isinstance(record, dict) or record.get("kind") != "tune":
        raise ConfigError("not a tune directory (tune.json is not nnrun tune's)",
                          where=str(tune_dir))
    if config is not None or overrides:
        raise ConfigError("--resume takes the config and --set overrides the search "
                          f"started with ({record.get('config')}); give only --resume DIR",
                          where="--resume")
    if not (tune_dir / "study.db").is_file():
        raise ConfigError("no study.db in this tune directory: nothing to resume",
                          where=str(tune_dir))
    return Path(record["config"]), tuple(record.get("overrides", ())), record


def check_unchanged(tune_dir: Path, base) -> None:
    """The config must be the one the search started with: its trials would otherwise
    mix two configs."""
    record = json.loads((Path(tune_dir) / "tune.json").read_text(encoding="utf-8"))
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

def table(result, space_keys: list[str], limit: int = 10):
    """The rich table: the best trials first (up to `limit`), then the counts."""
    from rich import box
    from rich.table import Table

    metric = result.metric
    c = result.counts
    title = (f"tune {result.tune_dir.name}: {len(result.rows)}/{c['total']} trials, "
             f"{c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed")
    t = Table(title=title, box=box.SIMPLE_HEAVY)
    for col in ("trial", *[k.split(".")[-1] for k in space_keys], metric, "state",
                "epochs", "seconds"):
        t.add_column(col, justify="left" if col == "state" else "right")
    sign = 1 if result.mode == "min" else -1
    order = {"complete": 0, "pruned": 1, "running": 2, "failed": 3}
    ranked = sorted(result.rows, key=lambda r: (
        order.get(r["state"], 4), r[metric] is None,
        sign * r[metric] if r[metric] is not None else 0, r["trial"]))
    for r in ranked[:limit]:
        t.add_row(str(r["trial"]), *[_cell(r[k]) for k in space_keys],
                  _cell(r[metric]), r["state"], _cell(r["epochs"]), _cell(r["seconds"]))
    return t


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)
