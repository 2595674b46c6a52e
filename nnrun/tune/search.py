"""`nnrun tune` end to end: batches of trials asked from the study, grouped by their
compiled shapes and trained group by group with the sweep machinery, told back, and
the tune directory's results written after each batch.

    runs/<name>-tune-<stamp>/
      study.db      the optuna study (SQLite): open it with optuna's own tools
      tune.json     the command, the config, the counts, the best trial
      trials.csv    one row per trial: values, state, metric, epochs, seconds, run
      best.yaml     the best trial's config, ready for nnrun train
      trials/trial-NNNN/   normal run directories of the best --keep trials
      plots/        history.png, importances.png, parallel.png

A trial is the config loaded with the base `--set` overrides and then one `--set
PATH=VALUE` per space dimension, as `nnrun train CONFIG --set ...` would load it.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from nnrun.config.errors import EXIT_INTERRUPTED, ConfigError, NnrunError
from nnrun.config.tune_spec import TuneSpec, dimension_override
from nnrun.sweep.variants import Variant, check_sweepable, group_variants, traced_rate
from nnrun.tune import results
from nnrun.tune.study import GroupPruning, ask_batch, config_value, grid_size, open_study


class TrialVariant(Variant):
    """A trial as a sweep variant: its run directory is trials/trial-NNNN."""

    @property
    def dirname(self) -> str:
        return f"trials/trial-{self.index:04d}"


@dataclass
class TuneResult:
    tune_dir: Path
    rows: list[dict]      # trials.csv's rows, in trial order
    best: dict | None     # tune.json's best
    counts: dict
    metric: str
    mode: str
    exit_code: int = 0


@dataclass
class Search:
    """What a search needs: the config, the base spec and its tune: section."""

    config: Path
    overrides: tuple[str, ...]
    base: object           # nnrun.config.spec.Spec
    tune: TuneSpec
    tune_dir: Path
    keep: int
    argv: list[str]
    stream: TextIO
    quiet: bool

    @property
    def total(self) -> int:
        return min(self.tune.trials, grid_size(self.tune)) if self.tune.sampler == "grid" \
            else self.tune.trials

    def values(self, params: dict) -> dict:
        """A trial's optuna parameters as config values, by space key."""
        return {d.key: config_value(d, params[d.key]) for d in self.tune.space}

    def trial_sets(self, values: dict) -> tuple[str, ...]:
        return tuple(dimension_override(d, values[d.key]) for d in self.tune.space)

    def trial_spec(self, values: dict):
        from nnrun.api import load_checked

        return load_checked(self.config, (*self.overrides, *self.trial_sets(values)))


def load_base(config: Path, overrides: tuple[str, ...]):
    """The config to search and its tune: section (a located error without one)."""
    from nnrun.api import load_checked
    from nnrun.api.prepare import checked_model

    base = load_checked(config, overrides)
    if base.tune is None:
        raise ConfigError("the config has no tune: section; add one saying what to search "
                          "(docs/configuration.md#the-tune-section)", where=str(config))
    check_sweepable(base)
    checked_model(base)
    return base


def run_tune(config: Path | None, overrides: tuple[str, ...] = (), *,
             resume: Path | None = None, keep: int | None = None,
             runs_root: Path = Path("runs"), argv: list[str] | None = None,
             stream: TextIO = sys.stdout, quiet: bool = False) -> TuneResult:
    """Search the config's tune.space: a new tune directory, or `resume` one."""
    from nnrun.api.training import interrupt_guard
    from nnrun.sweep.run import sweep_dir_for
    from nnrun.tune.study import optuna_module

    argv = list(argv or sys.argv)
    if resume is not None:
        config, overrides, record = results.resume_record(resume, config, overrides)
        keep = record["keep"] if keep is None else keep
    keep = 3 if keep is None else keep
    base = load_base(Path(config), tuple(overrides))
    optuna_module(where=base.origins.where(("tune",), key=True))
    if resume is not None:
        results.check_unchanged(resume, base)
    with interrupt_guard(stream) as stop:
        with stop.creating_run():
            tune_dir = Path(resume) if resume is not None else \
                sweep_dir_for(runs_root, base.name, "tune")
            study = open_study(tune_dir, base.tune, create=resume is None)
            search = Search(Path(config), tuple(overrides), base, base.tune, tune_dir, keep,
                            argv, stream, quiet)
            if resume is None:
                results.write_record(search, study, "running", started=True)
        try:
            _search(search, study, stop)
        except KeyboardInterrupt:   # a second signal: the trials told so far are kept
            results.finish(search, study, "interrupted", plots=False)
            raise
        except BaseException:
            if resume is None and not any(ft.state.is_finished() for ft in
                                          study.get_trials(deepcopy=False)):
                shutil.rmtree(tune_dir, ignore_errors=True)   # nothing done: nothing kept
            else:
                results.finish(search, study, "failed", plots=False)
            raise
    status = "interrupted" if stop.requested else "finished"
    rows, best, counts = results.finish(search, study, status, plots=True)
    code = EXIT_INTERRUPTED if stop.requested else \
        (0 if counts["complete"] else 4 if counts["failed"] else 0)
    if stop.requested:   # said even with --quiet: the way back
        print(f"interrupted: nnrun tune --resume {tune_dir} goes on", file=stream, flush=True)
    return TuneResult(tune_dir, rows, best, counts, search.tune.metric, search.tune.mode,
                      code)


def _search(search: Search, study, stop) -> None:
    from optuna.trial import TrialState

    while True:
        pending = [ft for ft in study.get_trials(deepcopy=False)
                   if ft.state == TrialState.RUNNING]   # an interrupted batch first
        if not pending:
            left = search.total - len(study.get_trials(deepcopy=False))
            if left <= 0 or stop.requested:
                return
            asked = ask_batch(study, search.tune, min(search.tune.batch, left))
            pending = [study._storage.get_trial(t._trial_id) for t in asked]
        elif not search.quiet:
            print(f"resuming {len(pending)} trial(s) asked before the interruption: "
                  f"{', '.join(str(ft.number) for ft in pending)}", file=search.stream,
                  flush=True)
        _train_batch(search, study, pending, stop)
        results.after_batch(search, study)
        if stop.requested:
            return


def _train_batch(search: Search, study, pending: list, stop) -> None:
    """The batch's trials grouped by their compiled shapes, trained group by group."""
    variants = []
    for ft in pending:
        _remove_partial(search.tune_dir, ft.number)
        values = search.values(ft.params)
        try:
            spec = search.trial_spec(values)
            check_sweepable(spec)
        except NnrunError as exc:
            _fail(study, ft.number, f"{exc.where}: {exc.message}" if exc.where else
                  exc.message, search)
            continue
        sets = search.trial_sets(values)
        texts = {s.split("=", 1)[0]: s.split("=", 1)[1] for s in sets}
        variants.append(TrialVariant(ft.number, values, texts, sets,
                                     spec, traced_rate(spec, [d.path for d in search.tune.space])))
    groups = group_variants(variants) if variants else []
    if not search.quiet:
        print(f"batch of {len(pending)} trial(s) ({pending[0].number}..{pending[-1].number}) "
              f"in {len(groups)} program(s)", file=search.stream, flush=True)
    for n, group in enumerate(groups, 1):
        if stop.requested:
            return
        if not search.quiet:
            print(f"program {n}/{len(groups)}: trial(s) "
                  f"{', '.join(str(v.index) for v in group.variants)}", file=search.stream,
                  flush=True)
        _train_group(search, study, group, stop)


def _train_group(search: Search, study, group, stop) -> None:
    from nnrun.sweep.program import train_group

    tune = search.tune
    numbers = [v.index for v in group.variants]
    epochs = group.variants[0].spec.fit.epochs
    pruning = GroupPruning(study, tune, epochs, numbers) if tune.pruner != "none" else None

    def on_epoch(epoch: int, running: list) -> list:
        if pruning is None:
            return []
        values = {vr.variant.index: float(logs.get(tune.metric, float("nan")))
                  for vr, logs in running}
        doomed = set(pruning.epoch(epoch, values))
        return [vr for vr, _ in running if vr.variant.index in doomed]

    started = time.perf_counter()
    try:
        runs = train_group(group, search.tune_dir, argv=search.argv, stream=search.stream,
                           quiet=search.quiet, stop=stop, monitor=tune.metric, mode=tune.mode,
                           on_epoch=on_epoch)
    except ConfigError as exc:
        if exc.where == "monitor":   # the metric is not logged: the config's problem
            raise ConfigError(f"tune.metric: {exc.message}",
                              where=search.base.where(("tune", "metric"))) from None
        for number in numbers:
            _fail(study, number, f"{exc.where}: {exc.message}" if exc.where else exc.message,
                  search)
        return
    except NnrunError as exc:
        for number in numbers:
            _fail(study, number, exc.message, search)
        return
    wall = time.perf_counter() - started
    epochs_run = sum(vr.epochs for vr in runs) or 1
    for vr in runs:
        if vr.status == "interrupted":
            continue   # left RUNNING: --resume trains it again
        seconds = wall * vr.epochs / epochs_run
        results.tell(study, vr, seconds, pruning, search)


def _fail(study, number: int, reason: str, search: Search) -> None:
    from optuna.trial import TrialState

    trial_id = study._storage.get_trial_id_from_study_id_trial_number(
        study._study_id, number)
    study._storage.set_trial_user_attr(trial_id, "note", reason)
    study.tell(number, state=TrialState.FAIL)
    if not search.quiet:
        print(f"trial {number}: failed: {reason}", file=search.stream, flush=True)


def _remove_partial(tune_dir: Path, number: int) -> None:
    """A trial trained again (resumed) starts from an empty run directory."""
    run = tune_dir / "trials" / f"trial-{number:04d}"
    if run.exists():
        shutil.rmtree(run)
