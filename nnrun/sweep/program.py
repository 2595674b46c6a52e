"""`nnrun sweep`: the variants of a group trained as one vmapped program.

A group's programs are the trainer's own (`trainer.make_train_epoch`, `make_eval`)
under `jax.vmap` over a leading variant axis of the train state: one compile, one
pass over the data per epoch for all variants. Per variant are the seed (init,
dropout keys), the epoch's row order (drawn on the host from the variant's seed,
gathered on the device) and the learning-rate factor `lr_scale`. Data the variants
share (the usual case) is on the device once; data that differs per variant (a
builtin dataset drawn from the varied seed, a shuffled validation split) gets a
variant axis too, so each variant sees what its single run would.

Each variant writes a normal run directory (config.yaml, run.json, metrics.csv,
checkpoints/last.h5 and best.h5), so `nnrun evaluate` and `nnrun train --resume`
work on it; `nnrun.sweep.run` writes the sweep's tables.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TextIO

import jax
import jax.numpy as jnp
import numpy as np

from nnrun import api
from nnrun.api import prepare, training
from nnrun.config import faults
from nnrun.config.errors import ConfigError, DataError
from nnrun.data.rowsource import is_lazy
from nnrun.data.splitting import output_classes
from nnrun.nn.optimizers import build_optimizer, current_learning_rate
from nnrun.nn.traced import traced_values
from nnrun.sweep.rundirs import PacedMetricsLog, VariantRun, finish, monitor_of, write_checkpoints
from nnrun.sweep.variants import LR_KEYS, Group, check_sweepable, group_values
from nnrun.train.checkpoint import CHECKPOINT_SECONDS
from nnrun.train.epoch import (
    BackgroundCompile,
    TrainState,
    count_epoch,
    epoch_logs,
    epoch_order,
    make_eval,
    make_train_epoch,
    named_key,
)


def _abstract(tree, lead: tuple = ()):
    return jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct((*lead, *a.shape), a.dtype), tree)


def _same(a, b) -> bool:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(
        x is y or (x.shape == y.shape and x.dtype == y.dtype and np.array_equal(x, y))
        for x, y in zip(la, lb))


def shared_or_stacked(trees: list):
    """(one tree, None) when every variant's tree is the same, else (stacked, 0)."""
    if all(_same(trees[0], t) for t in trees[1:]):
        return trees[0], None
    shapes = {str(jax.tree_util.tree_map(np.shape, t)) for t in trees}
    if len(shapes) > 1:
        raise DataError("the variants' data differ in shape (a varied key changes the "
                        "data's size?); sweep such keys in separate sweeps")
    return jax.tree_util.tree_map(lambda *a: np.stack(a), *trees), 0


class GroupFit:
    """The compiled programs and the (variant-stacked) train state of one group."""

    def __init__(self, model, obj, optimizer_id, *, seeds: list[int], lr_scales: np.ndarray,
                 batch_size: int, shuffle: bool, data: dict, values: dict | None = None):
        """`data`: name -> (tree, axis) from `shared_or_stacked` for x, y, sw, vx, vy;
        `values`: key -> per-variant values read by the layers (`nnrun.nn.traced`)."""
        self.created = time.perf_counter()
        self.args = dict(model=model, obj=obj, optimizer_id=optimizer_id, batch_size=batch_size,
                         shuffle=shuffle)
        self.values = {k: jax.device_put(np.asarray(x)) for k, x in (values or {}).items()}
        values_abs = _abstract(self.values)
        self.model, self.obj = model, obj
        self.seeds = np.asarray(seeds, np.int32)
        self.lr_scales = np.asarray(lr_scales, np.float32)
        self.shuffle = shuffle
        v = len(seeds)
        self.optimizer = build_optimizer(optimizer_id)
        # device_put, not jnp.asarray: that compiles a program per array shape
        put = {k: (jax.device_put(t), ax) for k, (t, ax) in data.items()}
        self.data = put
        x, ax_x = put["x"]
        self.n = jax.tree_util.tree_leaves(x)[0].shape[0 if ax_x is None else 1]
        self.one_order = len(set(seeds)) == 1 or not shuffle   # the same rows for all
        weighted = put["sw"][0] is not None
        self.traces: dict[str, int] = {}
        params, state = model.param_shapes()
        ts = TrainState(params, state, jax.eval_shape(self.optimizer.init, params))
        scalar = jax.ShapeDtypeStruct((), jnp.int32)
        seeds_abs = jax.ShapeDtypeStruct((v,), jnp.int32)
        self._init = BackgroundCompile(jax.vmap(self._init_one), (seeds_abs,),
                                       compiler_options={"xla_backend_optimization_level": 0})
        epoch_fn = make_train_epoch(model, obj, self.optimizer, self.n, batch_size,
                                    self.traces, weighted)
        order_axis = None if self.one_order else 0
        axes = (0, put["x"][1], put["y"][1], put["sw"][1], order_axis, 0, None, 0, 0)
        order = jax.ShapeDtypeStruct((self.n,) if self.one_order else (v, self.n), jnp.int32)
        self.train_epoch = BackgroundCompile(
            jax.vmap(_reading_values(epoch_fn), in_axes=axes),
            (_abstract(ts, (v,)), _abstract(put["x"][0]), _abstract(put["y"][0]),
             _abstract(put["sw"][0]), order, seeds_abs, scalar,
             jax.ShapeDtypeStruct((v,), jnp.float32), values_abs), donate_argnums=(0,))
        self.eval_val = None
        if put["vx"][0] is not None:
            vx, ax_vx = put["vx"]
            nv = jax.tree_util.tree_leaves(vx)[0].shape[0 if ax_vx is None else 1]
            self.eval_val = BackgroundCompile(
                jax.vmap(_reading_values(make_eval(model, obj, nv, batch_size)),
                         in_axes=(0, 0, ax_vx, put["vy"][1], 0)),
                (_abstract(ts.params, (v,)), _abstract(ts.state, (v,)),
                 _abstract(vx), _abstract(put["vy"][0]), values_abs))
        self.select = jax.jit(_select)
        self.epoch = 0
        self.first_epoch_seconds: float | None = None
        self.epoch_seconds: list[float] = []

    def _init_one(self, seed):
        params, state = self.model.init(named_key(seed, "init"))
        return TrainState(params, state, self.optimizer.init(params))

    def subset(self, slots: list[int]) -> GroupFit:
        """The same program for some of the variants (a smaller vmapped axis: one more
        compile, then less work per epoch), at the same epoch."""
        idx = np.asarray(slots)
        data = {k: (t if ax is None else jax.tree_util.tree_map(lambda a: a[idx], t), ax)
                for k, (t, ax) in self.data.items()}
        new = GroupFit(**self.args, seeds=list(self.seeds[idx]), lr_scales=self.lr_scales[idx],
                       data=data, values={k: x[idx] for k, x in self.values.items()})
        new.epoch, new.created = self.epoch, self.created
        new.first_epoch_seconds, new.epoch_seconds = self.first_epoch_seconds, self.epoch_seconds
        return new

    def worth_regrouping(self, live: int, width: int, epochs: int) -> bool:
        """Whether a program for `live` of `width` variants saves more time over the
        remaining epochs than its compile costs (both estimated from this fit's epochs;
        an epoch's time taken as proportional to the variants in it)."""
        if live == 0 or live == width or not self.epoch_seconds:
            return False
        per_epoch = float(np.median(self.epoch_seconds))
        compile_cost = max((self.first_epoch_seconds or 0.0) - per_epoch, 0.0)
        saved = per_epoch * (1 - live / width) * (epochs - self.epoch)
        return saved > compile_cost

    def initial_state(self) -> TrainState:
        return self._init(self.seeds)

    def learning_rates(self, ts: TrainState) -> np.ndarray:
        """Per variant, the rate the next update uses (as `Fitter.learning_rate`)."""
        field_ = np.asarray(current_learning_rate(ts.opt_state), np.float32)
        return (np.broadcast_to(field_, self.lr_scales.shape) * self.lr_scales)

    def run_epoch(self, ts: TrainState):
        """One epoch of every variant; returns (ts, per-variant logs, seconds)."""
        start = time.perf_counter()
        if self.one_order:
            order = epoch_order(int(self.seeds[0]), self.epoch, self.n) if self.shuffle \
                else np.arange(self.n, dtype=np.int32)
        else:
            order = np.stack([epoch_order(int(s), self.epoch, self.n) for s in self.seeds])
        d = self.data
        ts, sums = self.train_epoch(ts, d["x"][0], d["y"][0], d["sw"][0], order, self.seeds,
                                    np.int32(self.epoch), self.lr_scales, self.values)
        vsums = self.eval_val(ts.params, ts.state, d["vx"][0], d["vy"][0], self.values) \
            if self.eval_val is not None else None
        sums, vsums = jax.device_get((sums, vsums))
        logs = []
        for i in range(len(self.seeds)):
            def row(tree, i=i):
                return None if tree is None else jax.tree_util.tree_map(lambda a: a[i], tree)

            logs.append(epoch_logs(self.obj, row(sums), row(vsums)))
        return ts, logs, count_epoch(self, start)


def _reading_values(fn):
    """`fn` with one more argument, the traced values its layers read while it traces."""
    def with_values(*args):
        *rest, values = args
        with traced_values(values):
            return fn(*rest)

    return with_values


def _select(mask, new, old):
    """Per variant, `new` where mask else `old` (the best states so far)."""
    return jax.tree_util.tree_map(
        lambda a, b: jnp.where(mask.reshape(-1, *[1] * (a.ndim - 1)), a, b), new, old)


def load_group_data(group: Group) -> list:
    """Each variant's splits, loaded as its single run would (once per distinct data
    config: variants that differ only in seed share the load unless the seed draws
    the data)."""
    cache: dict = {}
    out = []
    model = api.checked_model(group.variants[0].spec)
    for v in group.variants:
        key = v.spec.seed if _data_uses_seed(v.spec) else None
        if key not in cache:
            cache[key] = api.load_data(v.spec, num_classes=output_classes(model))
        out.append(cache[key])
    return out


def _data_uses_seed(spec) -> bool:
    """Whether the training data depends on the config seed: a builtin source without
    its own seed, or a shuffled validation split."""
    d = spec.data
    builtin = any(isinstance(s, dict) and "builtin" in s and "seed" not in s
                  for s in (d.train, d.validation))
    return builtin or bool(d.validation_split and d.shuffle_split)


def _optimizer_id(group: Group):
    opt = group.variants[0].spec.compile.optimizer
    if not group.traced_lr:
        return opt
    return {**{k: v for k, v in opt.items() if k not in LR_KEYS}, "learning_rate": 1.0}


def _group_fit(group: Group, splits: list):
    spec = group.variants[0].spec
    model = api.checked_model(spec) or api.build(spec, splits[0].train.x)
    for s in splits:
        prepare.check_features(model, s.train.x, s.train.source)
    obj = api.objective_for(spec, model, splits[0].train.y)
    for s in splits:
        prepare.check_targets(model, obj, s.train, "training")
        if s.validation is not None:
            prepare.check_features(model, s.validation.x, s.validation.source)
            prepare.check_targets(model, obj, s.validation, "validation")
    has_val = splits[0].validation is not None
    data = {"x": shared_or_stacked([s.train.x for s in splits]),
            "y": shared_or_stacked([s.train.y for s in splits]),
            "sw": shared_or_stacked([s.train.sample_weight for s in splits]),
            "vx": shared_or_stacked([s.validation.x if has_val else None for s in splits]),
            "vy": shared_or_stacked([s.validation.y if has_val else None for s in splits])}
    rates = [v.learning_rate if group.traced_lr else 1.0 for v in group.variants]
    fit = GroupFit(model, obj, _optimizer_id(group), seeds=[v.spec.seed for v in group.variants],
                   lr_scales=np.asarray(rates, np.float32), batch_size=spec.fit.batch_size,
                   shuffle=spec.fit.shuffle, data=data, values=group_values(group))
    return model, obj, fit, has_val


def train_group(group: Group, sweep_dir: Path, *, argv: list[str], stream: TextIO = sys.stdout,
                quiet: bool = False, stop=None, curves: bool = False,
                monitor: str | None = None, mode: str = "min",
                on_epoch=None) -> list[VariantRun]:
    """Train one group's variants as one vmapped program; each writes its run directory
    (with `curves`, its plots/learning_curves.png too). best.h5 is the epoch with the
    best `monitor` (default val_loss, else loss) in `mode` (min or max). `on_epoch(epoch,
    [(VariantRun, logs), ...])`, called after each epoch with the running variants,
    returns those to stop (status "pruned"); when few are left, they go on in a smaller
    program if that saves time (`GroupFit.worth_regrouping`)."""
    for v in group.variants:
        check_sweepable(v.spec)
    splits = load_group_data(group)
    if any(is_lazy(s.train.x) for s in splits):
        raise ConfigError("streamed data is not supported in a sweep", where="data")
    model, obj, fit, has_val = _group_fit(group, splits)
    spec = group.variants[0].spec
    keys = [*obj.keys(), *([f"val_{k}" for k in obj.keys()] if has_val else [])]
    runs = []
    for v, s in zip(group.variants, splits):
        run = sweep_dir / v.dirname
        run.mkdir(parents=True)
        (run / "checkpoints").mkdir()
        _, info = training.start_run(v.spec, model, sweep_dir, argv, s, run=run)
        info["sweep"] = {"dir": str(sweep_dir), "variant": v.index, "values": v.values,
                         "group_size": len(group.variants)}
        runs.append(VariantRun(v, run, info, PacedMetricsLog(run, keys),
                               best_value=np.inf if mode == "min" else -np.inf))
    monitor = monitor or monitor_of(has_val)
    if monitor not in keys:
        raise ConfigError(f"the runs log no {monitor!r}; they log {', '.join(keys)}",
                          where="monitor")
    ts = fit.initial_state()
    start_weights = api.start_weights(spec, model)
    if start_weights is not None:
        ts = _apply_start(ts, start_weights, len(runs))
    host = jax.device_get(ts)
    for i, vr in enumerate(runs):   # the initial weights: a loadable last.h5 from the start
        write_checkpoints(vr, host, None, i, last=True, monitor=monitor)
    forget = stop.on_abort(lambda name: _aborted(runs, fit, name)) if stop else lambda: None
    try:
        loop = _Loop(fit, runs, spec.fit.epochs, monitor, mode, stream, quiet, stop, on_epoch)
        ts, best = loop.run(ts)
        host, host_best = jax.device_get((ts, best))
        for i, vr in enumerate(loop.slots):
            write_checkpoints(vr, host, host_best, i, last=vr.status != "pruned",
                              monitor=monitor)
    except KeyboardInterrupt:
        for vr in runs:
            if vr.status == "running":
                vr.status, vr.stop_reason = "interrupted", "aborted"
        raise
    finally:
        forget()
        for vr in runs:
            vr.log.flush_now()
            finish(vr, fit)
            if curves:
                training.draw_curves(vr.run, stream)
    return runs


def _aborted(runs: list[VariantRun], fit, name: str) -> None:
    """The variants' run.json when a second signal aborts the sweep mid-epoch."""
    for vr in runs:
        if vr.status == "running":
            vr.status, vr.stop_reason = "interrupted", f"aborted by a second {name}"
        vr.log.flush_now()
        finish(vr, fit)


def _apply_start(ts, start, v: int):
    """model.weights: the same starting weights for every variant."""
    def tile(tree):
        return jax.tree_util.tree_map(lambda a: jnp.broadcast_to(jnp.asarray(a),
                                                                 (v, *np.shape(a))), tree)

    return ts._replace(params={**ts.params, **tile(start.params)},
                       state={**ts.state, **tile(start.state)})


class _Loop:
    """The epoch loop of a group. `slots[i]` is the variant in the program's slot i;
    after a regroup, the program holds only the running variants."""

    def __init__(self, fit: GroupFit, runs: list[VariantRun], epochs: int, monitor: str,
                 mode: str, stream: TextIO, quiet: bool, stop, on_epoch):
        self.fit, self.runs, self.slots, self.epochs = fit, runs, list(runs), epochs
        self.monitor, self.sign = monitor, 1.0 if mode == "min" else -1.0
        self.stream, self.quiet, self.stop, self.on_epoch = stream, quiet, stop, on_epoch

    def run(self, ts):
        """Returns (final ts, best states), slot by slot."""
        fit, epochs, best = self.fit, self.epochs, None
        last_write, write_seconds = time.monotonic(), 0.0
        while fit.epoch < epochs:
            faults.point("epoch")
            rates = fit.learning_rates(ts)
            ts, logs, seconds = fit.run_epoch(ts)
            improved = self._record(logs, rates, seconds)
            if improved.any():   # a copy: the next epoch donates ts
                best = fit.select(jnp.asarray(improved), ts, ts if best is None else best)
            _report(fit.epoch, epochs, logs, self.slots, seconds, self.stream, self.quiet)
            ts, best = self._prune(ts, best, logs)
            fit = self.fit
            done = fit.epoch == epochs or all(vr.status != "running" for vr in self.slots)
            if done or (self.stop is not None and self.stop.requested):
                for vr in self.slots:
                    if vr.status == "running":
                        vr.status, vr.stop_reason = ("finished", f"completed {epochs} epochs") \
                            if fit.epoch == epochs else \
                            ("interrupted", f"{self.stop.requested} after epoch {fit.epoch}")
                return ts, best
            if time.monotonic() - last_write >= max(CHECKPOINT_SECONDS, 10 * write_seconds):
                started = time.monotonic()
                self._write(ts, best, self.slots)
                last_write = time.monotonic()
                write_seconds = last_write - started
        return ts, best

    def _record(self, logs: list[dict], rates, seconds: float) -> np.ndarray:
        epoch, improved = self.fit.epoch, np.zeros(len(self.slots), bool)
        for i, (vr, one) in enumerate(zip(self.slots, logs)):
            if vr.status != "running":
                continue
            vr.epochs = epoch
            for key, value in one.items():
                vr.history.setdefault(key, []).append(value)
            vr.log.append(epoch, one, float(rates[i]), seconds)
            if not all(np.isfinite(x) for x in one.values()):
                vr.status = "diverged"
                vr.stop_reason = f"non-finite loss or metric at epoch {epoch}"
                continue
            value = one.get(self.monitor, np.nan)
            if np.isfinite(value) and self.sign * value < self.sign * vr.best_value:
                vr.best_value, vr.best_epoch, improved[i] = value, epoch, True
        return improved

    def _write(self, ts, best, which: list[VariantRun]) -> None:
        host, host_best = jax.device_get((ts, best))
        for i, vr in enumerate(self.slots):
            if any(vr is w for w in which):
                write_checkpoints(vr, host, host_best, i, last=True, monitor=self.monitor)

    def _prune(self, ts, best, logs: list[dict]):
        """Ask `on_epoch` which running variants to stop; regroup when it pays."""
        if self.on_epoch is None:
            return ts, best
        running = [(vr, one) for vr, one in zip(self.slots, logs) if vr.status == "running"]
        pruned = list(self.on_epoch(self.fit.epoch, running)) if running else []
        if not pruned:
            return ts, best
        self._write(ts, best, pruned)   # its checkpoints as of the epoch it stopped
        for vr in pruned:
            vr.status, vr.stop_reason = "pruned", f"pruned after epoch {self.fit.epoch}"
        live = [i for i, vr in enumerate(self.slots) if vr.status == "running"]
        if not self.fit.worth_regrouping(len(live), len(self.slots), self.epochs):
            return ts, best
        idx = jnp.asarray(live)

        def cut(tree):
            return None if tree is None else jax.tree_util.tree_map(lambda a: a[idx], tree)

        self.fit = self.fit.subset(live)
        self.slots = [self.slots[i] for i in live]
        return cut(ts), cut(best)


def _report(epoch: int, epochs: int, logs: list[dict], runs, seconds: float,
            stream: TextIO, quiet: bool) -> None:
    if quiet:
        return
    live = [one for one, vr in zip(logs, runs) if vr.status in ("running", "finished")]
    count = f"{len(runs)} variants" if len(live) == len(runs) else \
        f"{len(live)} of {len(runs)} variants"
    parts = []
    for key in ("loss", "val_loss"):
        values = [one[key] for one in live if key in one]
        if values:
            parts.append(f"{key} {min(values):.4g}..{max(values):.4g}")
    print(f"Epoch {epoch}/{epochs} - {seconds:.3f}s - {count} - "
          + " - ".join(parts), file=stream, flush=True)
