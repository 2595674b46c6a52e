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

from nnrun.config.errors import EXIT_DIVERGED, EXIT_INTERRUPTED, ConfigError, NnrunError
from nnrun.config.tune_spec import TuneSpec, dimension_override
from nnrun.sweep.variants import Variant, check_sweepable, group_variants, traced_rate
from nnrun.tune import results
from nnrun.tune.study import (
    GroupPruning,
    ask_batch,
    config_value,
    grid_size,
    open_study,
    tell,
)


class TrialVariant(Variant):
    """A trial as a sweep variant: its run directory is trials/trial-NNNN."""

    @property
    def dirname(self) -> str:
        return str(results.trial_dir(".", self.index))


@dataclass
class TuneResult:
    tune_dir: Path
    rows: list[dict]      # trials.csv's rows, in trial order
    best: dict | None     # tune.json's best
    counts: dict
    metric: str
    mode: str
    space_keys: list[str]
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
    started: str          # tune.json's: when the search began (kept on resume)
    best_written: int | None = None   # the trial best.yaml holds (written when it changes)

    @property
    def total(self) -> int:
        return min(self.tune.trials, grid_size(self.tune)) if self.tune.sampler == "grid" \
            else self.tune.trials

    def values(self, params: dict) -> dict:
        """A trial's optuna parameters as config values, by space key."""
        return {d.key: config_value(d, params[d.key]) for d in self.tune.space}

    def trial_sets(self, values: dict) -> tuple[str, ...]:
        return tuple(dimension_override(d, values[d.key]) for d in self.tune.space)

    def trial_spec(self, values: dict, sets: tuple[str, ...] | None = None):
        """The trial's config loaded as `nnrun train CONFIG --set ...` loads it."""
        from nnrun.api import load_checked

        sets = self.trial_sets(values) if sets is None else sets
        return load_checked(self.config, (*self.overrides, *sets))


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
    record: dict = {}
    if resume is not None:
        config, overrides, record = results.resume_record(resume, config, overrides)
    keep = record.get("keep", 3) if keep is None else keep
    base = load_base(Path(config), tuple(overrides))
    optuna_module(where=base.origins.where(("tune",), key=True))
    if resume is not None:
        results.check_unchanged(resume, record, base)
    with interrupt_guard(stream) as stop:
        with stop.creating_run():
            tune_dir = Path(resume) if resume is not None else \
                sweep_dir_for(runs_root, base.name, "tune")
            study = open_study(tune_dir, base.tune, create=resume is None)
            search = Search(Path(config), tuple(overrides), base, base.tune, tune_dir, keep,
                            argv, stream, quiet, record.get("started")
                            or time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            if resume is None:
                results.write_record(search, study, "running")
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
        EXIT_DIVERGED if counts["failed"] and not counts["complete"] else 0
    if stop.requested:   # said even with --quiet: the way back
        print(f"interrupted: nnrun tune --resume {tune_dir} goes on", file=stream, flush=True)
    return TuneResult(tune_dir, rows, best, counts, search.tune.metric, search.tune.mode,
                      [d.key for d in search.tune.space], code)


def _search(search: Search, study, stop) -> None:
    """Batch after batch until tune.trials were asked; RUNNING trials (asked before an
    interruption) are trained first."""
    from optuna.trial import TrialState

    def running() -> list:
        return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))

    pending = running()
    if pending and not search.quiet:
        print(f"resuming {len(pending)} trial(s) asked before the interruption: "
              f"{', '.join(str(ft.number) for ft in pending)}", file=search.stream,
              flush=True)
    while not stop.requested:
        if not pending:
            left = search.total - len(study.get_trials(deepcopy=False))
            if left <= 0:
                return
            ask_batch(study, search.tune, min(search.tune.batch, left))
            pending = running()
        _train_batch(search, study, pending, stop)
        results.after_batch(search, study)
        pending = []


def _train_batch(search: Search, study, pending: list, stop) -> None:
    """The batch's trials grouped by their compiled shapes, trained group by group."""
    variants = []
    paths = [d.path for d in search.tune.space]
    for ft in pending:
        run = results.trial_dir(search.tune_dir, ft.number)
        if run.exists():   # trained again (resumed): from an empty run directory
            shutil.rmtree(run)
        values = search.values(ft.params)
        sets = search.trial_sets(values)
        try:
            spec = search.trial_spec(values, sets)
            check_sweepable(spec)
        except NnrunError as exc:
            _fail(study, ft.number, exc, search)
            continue
        texts = dict(s.split("=", 1) for s in sets)
        variants.append(TrialVariant(ft.number, values, texts, sets, spec,
                                     traced_rate(spec, paths)))
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
    except NnrunError as exc:
        if isinstance(exc, ConfigError) and exc.where == "monitor":   # the config's problem
            raise ConfigError(f"tune.metric: {exc.message}",
                              where=search.base.where(("tune", "metric"))) from None
        for number in numbers:
            _fail(study, number, exc, search)
        return
    wall = time.perf_counter() - started
    epochs_run = sum(vr.epochs for vr in runs) or 1
    for vr in runs:
        if vr.status == "interrupted":
            continue   # left RUNNING: --resume trains it again
        seconds = wall * vr.epochs / epochs_run
        results.tell(study, vr, seconds, pruning, search)


def _fail(study, number: int, exc: NnrunError, search: Search) -> None:
    """A trial whose config or data failed: FAIL, the error (located) as its note."""
    reason = f"{exc.where}: {exc.message}" if exc.where else exc.message
    tell(study, number, "FAIL", note=reason)
    if not search.quiet:
        print(f"trial {number}: failed: {reason}", file=search.stream, flush=True)
