"""The optuna side of `nnrun tune`: the study in the tune directory's SQLite database,
its sampler and pruner, the space as optuna distributions, and the pruning of a group
of trials that train together.

optuna is an optional extra (`pip install 'nnrun[tune]'`): `optuna_module()` imports
it or raises a ConfigError saying how to install it.

Reproducibility: the sampler is made anew for each batch of trials, seeded from
(tune.seed, the batch's number); the batches started are counted in the study's user
attributes. A group's per-epoch reports go to an in-memory copy of the study
(`GroupPruning`) and reach the database only when the group has ended, so a search
interrupted inside a group leaves that group's trials as they were asked (RUNNING, no
values) and `--resume` trains them again to the same numbers and the same pruning.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from nnrun.config.errors import ConfigError
from nnrun.config.tune_spec import Dimension, TuneSpec

STUDY_NAME = "nnrun-tune"
BATCHES = "nnrun_batches"    # user attribute: batches started
SCALARS = (type(None), bool, int, float, str)
REDUCTION = 3                # ASHA: a third of a rung's trials go on


def optuna_module(where: str = "tune"):
    """optuna, imported with its logging quiet; a ConfigError when it is missing."""
    try:
        import optuna
    except ImportError:
        raise ConfigError("nnrun tune needs optuna, an optional extra: "
                          "pip install 'nnrun[tune]' (or pip install optuna)",
                          where=where) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def batch_seed(seed: int, batch: int) -> int:
    """The sampler's seed for one batch: a hash of (tune.seed, batch), 32 bits."""
    digest = hashlib.sha256(f"nnrun-tune:{seed}:{batch}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def make_sampler(tune: TuneSpec, batch: int):
    optuna = optuna_module()
    seed = batch_seed(tune.seed, batch)
    if tune.sampler in ("random", "grid"):   # grid: its points enqueued (ask_batch)
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def min_resource(epochs: int) -> int:
    """ASHA's first rung: epoch max(1, epochs // 10)."""
    return max(1, epochs // 10)


def make_pruner(tune: TuneSpec, epochs: int):
    """asha: successive halving from epoch max(1, epochs // 10), a third going on at
    each rung; median: a trial worse than the median of the finished ones at the same
    epoch, after 5 finished trials and 1 epoch; none."""
    optuna = optuna_module()
    if tune.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_resource(epochs),
                                                      reduction_factor=REDUCTION)
    if tune.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    return optuna.pruners.NopPruner()


def grid_points(tune: TuneSpec, study) -> list[dict]:
    """sampler grid: every combination of the choices not asked yet, in an order
    shuffled by tune.seed (so that a search of fewer trials spreads over the grid).
    optuna's GridSampler stops the study from inside tell(), which only works in
    optimize(); enqueued trials do the same with ask/tell."""
    import itertools
    import random

    keys = [d.key for d in tune.space]
    points = list(itertools.product(*(choice_labels(d) for d in tune.space)))
    random.Random(batch_seed(tune.seed, -1)).shuffle(points)
    asked = {tuple(json.dumps(ft.params.get(k)) for k in keys)
             for ft in study.get_trials(deepcopy=False)}
    return [dict(zip(keys, p)) for p in points
            if tuple(json.dumps(v) for v in p) not in asked]


def grid_size(tune: TuneSpec) -> int:
    return math.prod(len(d.values) for d in tune.space)


def choice_labels(dim: Dimension) -> tuple:
    """A choice dimension's values as optuna stores them: the values when they are all
    scalars, else each one's JSON text."""
    if all(isinstance(v, SCALARS) for v in dim.values):
        return tuple(dim.values)
    return tuple(json.dumps(v, sort_keys=True) for v in dim.values)


def distributions(tune: TuneSpec) -> dict:
    """Space key -> optuna distribution."""
    d = optuna_module().distributions
    out = {}
    for dim in tune.space:
        if dim.kind == "choice":
            out[dim.key] = d.CategoricalDistribution(choice_labels(dim))
        elif dim.kind == "int":
            out[dim.key] = d.IntDistribution(dim.values[0], dim.values[1], step=dim.step or 1)
        else:
            out[dim.key] = d.FloatDistribution(dim.values[0], dim.values[1],
                                               log=dim.kind == "loguniform")
    return out


def config_value(dim: Dimension, param: Any) -> Any:
    """The config value of a trial's optuna parameter (a choice label back to its value)."""
    if dim.kind == "choice":
        return dim.values[choice_labels(dim).index(param)]
    return param


def open_study(tune_dir: Path, tune: TuneSpec, *, create: bool):
    """The study in tune_dir/study.db (created, or loaded to resume)."""
    optuna = optuna_module()
    storage = f"sqlite:///{(Path(tune_dir) / 'study.db').resolve()}"
    direction = "minimize" if tune.mode == "min" else "maximize"
    if create:
        study = optuna.create_study(storage=storage, study_name=STUDY_NAME,
                                    direction=direction)
        study.set_user_attr(BATCHES, 0)
        return study
    try:
        return optuna.load_study(storage=storage, study_name=STUDY_NAME)
    except Exception as exc:   # KeyError (no such study), sqlalchemy errors
        raise ConfigError(f"cannot open the study in study.db: {exc}",
                          where=str(tune_dir)) from None


def ask_batch(study, tune: TuneSpec, count: int) -> list:
    """`count` new trials, asked from a sampler seeded for this batch."""
    batch = int(study.user_attrs.get(BATCHES, 0))
    study.sampler = make_sampler(tune, batch)
    dists = distributions(tune)
    if tune.sampler == "grid":
        for params in grid_points(tune, study)[:count]:
            study.enqueue_trial(params)
    trials = [study.ask(dists) for _ in range(count)]
    study.set_user_attr(BATCHES, batch + 1)
    return trials


def tell(study, number: int, state: str, value: float | None = None, **attrs) -> None:
    """Trial `number` told finished (`state`: COMPLETE with its `value`, PRUNED, FAIL),
    `attrs` first set as its user attributes (epochs, seconds, note...)."""
    from optuna.trial import TrialState

    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id,
                                                                       number)
    for key, attr in attrs.items():
        study._storage.set_trial_user_attr(trial_id, key, attr)
    study.tell(number, value, state=TrialState[state])


class GroupPruning:
    """The pruner's view while a group trains: an in-memory copy of the study (the
    finished trials and the group's own), where each epoch's values are reported; the
    database gets them when the group has ended (`store`)."""

    def __init__(self, study, tune: TuneSpec, epochs: int, numbers: list[int]):
        optuna = optuna_module()
        self.study, self.tune, self.min_resource = study, tune, min_resource(epochs)
        self.memory = optuna.create_study(
            direction="minimize" if tune.mode == "min" else "maximize",
            pruner=make_pruner(tune, epochs), sampler=optuna.samplers.RandomSampler(0))
        wanted = set(numbers)
        self.trials, self.ids = {}, {}   # number -> the copy's Trial, the database's id
        for ft in study.get_trials(deepcopy=False):
            if ft.state.is_finished():
                self.memory.add_trial(ft)
            elif ft.number in wanted:   # as asked: no reports (an aborted store's are not)
                self.memory.add_trial(optuna.trial.create_trial(
                    state=optuna.trial.TrialState.RUNNING, params=ft.params,
                    distributions=ft.distributions))
                copy_id = self.memory.get_trials(deepcopy=False)[-1]._trial_id
                self.trials[ft.number] = optuna.trial.Trial(self.memory, copy_id)
                self.ids[ft.number] = ft._trial_id

    def epoch(self, epoch: int, values: dict[int, float]) -> list[int]:
        """Report each running trial's value at `epoch`; the trials to prune."""
        for number, value in values.items():
            if math.isfinite(value):
                self.trials[number].report(float(value), epoch)
        return [n for n in values if math.isfinite(values[n])
                and self.trials[n].should_prune()]

    def store(self, number: int, complete: bool) -> None:
        """The trial's reports that a later pruning decision reads (and the pruner's
        notes) into the database: its last epoch's value (a pruned trial's score), and
        for `median` every epoch of a complete trial, for `asha` the rungs' epochs (its
        decisions read the rung values it keeps in the trials' system attributes). Each
        value is a database write of a few ms; every epoch of a kept trial is in its
        metrics.csv."""
        storage, trial_id = self.study._storage, self.ids[number]
        mem = self.memory._storage.get_trial(self.trials[number]._trial_id)
        values = mem.intermediate_values
        keep = {max(values)} if values else set()
        if self.tune.pruner == "median" and complete:
            keep = set(values)
        elif self.tune.pruner == "asha":
            step = self.min_resource
            while step <= max(values, default=0):
                keep.add(step)
                step *= REDUCTION
        for step in sorted(keep & set(values)):
            storage.set_trial_intermediate_value(trial_id, step, values[step])
        for key, value in mem.system_attrs.items():
            storage.set_trial_system_attr(trial_id, key, value)
