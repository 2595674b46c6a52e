"""A sweep variant's run directory: what it recorded, its metrics log (written at a
pace) and its checkpoints, cut from the group's variant-stacked train state."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np

from nnrun.api import training
from nnrun.config.spec import dump_yaml
from nnrun.runs import rundir
from nnrun.sweep.variants import Variant
from nnrun.train.checkpoint import CHECKPOINT_SECONDS, save_checkpoint


def _variant(tree, i: int):
    return jax.tree_util.tree_map(lambda a: a[i], tree)


def _with_rate(opt_state, rate: float | None):
    """A traced-rate variant's optimizer state as its single run holds it: the
    `learning_rate` fields (the schedule's rate, 1.0 here) times the variant's rate."""
    if rate is None:
        return opt_state

    def fix(node):
        if isinstance(node, tuple) and "learning_rate" in getattr(node, "_fields", ()):
            return node._replace(learning_rate=np.float32(node.learning_rate) *
                                 np.float32(rate))
        return node

    return jax.tree_util.tree_map(fix, opt_state, is_leaf=lambda n: isinstance(n, tuple) and
                                  "learning_rate" in getattr(n, "_fields", ()))


@dataclass(eq=False)   # compared by identity
class VariantRun:
    """One variant's run directory and what it recorded."""

    variant: Variant
    run: Path
    info: dict
    log: rundir.MetricsLog
    history: dict[str, list[float]] = field(default_factory=dict)
    status: str = "running"
    stop_reason: str | None = None
    epochs: int = 0
    best_value: float = np.inf
    best_epoch: int | None = None
    best_written: int | None = None

    def attrs(self) -> dict:
        return {"seed": self.variant.spec.seed, "config": dump_yaml(self.variant.spec.resolved)}


class PacedMetricsLog(rundir.MetricsLog):
    """metrics.csv / metrics.jsonl written whole at most every CHECKPOINT_SECONDS (and at
    the end) rather than after every epoch: a sweep has a log per variant, and a crash
    costs at most the rows of the last second, as the checkpoints' cadence does."""

    def __init__(self, run: Path, keys: list[str]):
        self._last = -np.inf
        super().__init__(run, keys)

    def _write_row(self, line: str, record: str) -> None:
        self._csv_text += line
        self._jsonl_text += record
        if time.monotonic() - self._last >= CHECKPOINT_SECONDS:
            self.flush_now()

    def flush_now(self) -> None:
        super()._flush()
        self._last = time.monotonic()


def monitor_of(has_val: bool) -> str:
    return "val_loss" if has_val else "loss"


def write_checkpoints(vr: VariantRun, host_ts, host_best, i: int, *, last: bool,
                      monitor: str) -> None:
    """last.h5 (unless the variant diverged) and best.h5 when it changed."""
    rate = vr.variant.learning_rate
    if last and vr.status != "diverged":
        ts = _variant(host_ts, i)
        save_checkpoint(vr.run / "checkpoints" / "last.h5", params=ts.params, state=ts.state,
                        opt_state=_with_rate(ts.opt_state, rate),
                        attrs={"epoch": vr.epochs, **vr.attrs(),
                               "best_value": float(vr.best_value), "lr_scale": np.float32(1),
                               "callbacks": "[]"})
    if host_best is not None and vr.best_epoch is not None \
            and vr.best_written != vr.best_epoch:
        ts = _variant(host_best, i)
        save_checkpoint(vr.run / "checkpoints" / "best.h5", params=ts.params, state=ts.state,
                        opt_state=_with_rate(ts.opt_state, rate),
                        attrs={"epoch": vr.best_epoch, **vr.attrs(), "monitor": monitor,
                               "value": float(vr.best_value)})
        vr.best_written = vr.best_epoch


def finish(vr: VariantRun, fit) -> None:
    if vr.status == "running":   # an exception ended the loop
        vr.status, vr.stop_reason = "failed", vr.stop_reason or "the sweep stopped"
    result = training.TrainResult(vr.run, vr.history, vr.status, vr.stop_reason)
    stand_in = SimpleNamespace(epoch=vr.epochs, first_epoch_seconds=fit.first_epoch_seconds,
                               epoch_seconds=fit.epoch_seconds)
    training.finish_run(vr.run, vr.info, stand_in, result)
