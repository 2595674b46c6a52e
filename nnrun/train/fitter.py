"""`Fitter`: the compiled programs and the train state of one `fit`, resident or streamed.

The programs are made in nnrun/train/epoch.py (on-device data) or, for data read
from disk a chunk at a time, nnrun/train/streaming.py; `Fitter` picks one path and
runs the epochs.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nnrun.data.arrays import rows
from nnrun.nn.model import Model
from nnrun.nn.optimizers import build_optimizer, current_learning_rate
from nnrun.train.epoch import (
    BackgroundCompile,
    EpochResult,
    Objective,
    TrainState,
    abstract_of,
    count_epoch,
    epoch_order,
    finalize,
    make_eval,
    make_train_epoch,
    named_key,
)


class Fitter:
    """Holds the compiled programs and the train state of one `fit`."""

    def __init__(self, model: Model, obj: Objective, optimizer_id: Any, *, seed: int,
                 batch_size: int, shuffle: bool, x: np.ndarray, y: np.ndarray,
                 val: tuple[np.ndarray, np.ndarray] | None = None,
                 sample_weight: np.ndarray | None = None, chunk_bytes: int | None = None,
                 placement=None):
        """`x` (and `val`'s features) may be row sources read from disk
        (nnrun/data/rowsource.py): the epochs are then streamed in chunks of batches
        (nnrun/train/streaming.py) instead of running on resident data. `placement`
        (nnrun/train/devices.py) splits each batch over several devices."""
        from nnrun.data.rowsource import is_lazy
        from nnrun.train.devices import Placement

        self.placement = placement or Placement()
        place = self.placement.replicate

        self.created = time.perf_counter()
        self.model, self.obj, self.seed = model, obj, seed
        self.optimizer = build_optimizer(optimizer_id)
        self.streamed = is_lazy(x) or (val is not None and is_lazy(val[0]))
        self.weighted = sample_weight is not None
        sw = np.asarray(sample_weight, np.float32) if self.weighted else None
        if self.streamed:
            self.x, self.y, self.sw, self.val = x, y, sw, val
        else:
            self.x, self.y = place(jax.tree_util.tree_map(jnp.asarray, (x, y)))
            self.sw = place(jnp.asarray(sw)) if self.weighted else None
            self.val = place(jax.tree_util.tree_map(jnp.asarray, tuple(val))) \
                if val is not None else None
        self.batch_size = batch_size
        self.chunk_bytes = chunk_bytes
        self.seed_array = np.int32(seed)
        self.traces: dict[str, int] = {}
        scalar = jax.ShapeDtypeStruct((), jnp.int32)
        # The init program runs once: XLA's cheapest optimisation level compiles it
        # faster (threefry is slow to optimise) and gives the same values.
        self._init = BackgroundCompile(self._init_fn, (scalar,),
                                       compiler_options={"xla_backend_optimization_level": 0})
        self.n = rows(x)
        self._start_compiles(self.n, shuffle)
        self.epoch = 0  # epochs completed
        self.lr_scale = np.float32(1.0)  # set between epochs by callbacks
        self.epoch_seconds: list[float] = []  # epochs after the first
        self.first_epoch_seconds: float | None = None  # from construction: compiles included

    def _init_fn(self, seed):
        params, state = self.model.init(named_key(seed, "init"))
        return TrainState(params, state, self.optimizer.init(params))

    def _start_compiles(self, n: int, shuffle: bool) -> None:
        pl = self.placement
        scalar = pl.abstract(jax.ShapeDtypeStruct((), jnp.int32))
        order = pl.abstract(jax.ShapeDtypeStruct((n,), jnp.int32))
        params, state = self.model.param_shapes()  # traced once, when the model was built
        ts = pl.abstract(TrainState(params, state, jax.eval_shape(self.optimizer.init, params)))
        self.shuffle = shuffle
        self.fixed_order = np.arange(n, dtype=np.int32)
        self.eval_val = None
        if self.streamed:
            from nnrun.train.streaming import StreamedFit

            self.stream = StreamedFit(self, ts)
            return
        epoch_fn = make_train_epoch(self.model, self.obj, self.optimizer, n, self.batch_size,
                                    self.traces, self.weighted, pl.shard_batch)
        abstract = pl.abstract if pl.mesh is not None else abstract_of
        self.train_epoch = BackgroundCompile(
            epoch_fn, (ts, abstract(self.x), abstract(self.y), abstract(self.sw), order,
                       scalar, scalar, pl.abstract(jax.ShapeDtypeStruct((), jnp.float32))),
            donate_argnums=(0,), out_shardings=pl.replicated)
        if self.val is not None:
            self.eval_val = BackgroundCompile(
                make_eval(self.model, self.obj, rows(self.val[0]), self.batch_size,
                          pl.shard_batch),
                (ts.params, ts.state, *abstract(self.val)), out_shardings=pl.replicated)

    def initial_state(self) -> TrainState:
        """Initial weights and optimizer state, built by one compiled program."""
        return self.placement.replicate(self._init(self.seed_array))

    def _placed(self, ts: TrainState) -> TrainState:
        want = self.placement.replicated
        if all(getattr(a, "sharding", None) == want for a in jax.tree_util.tree_leaves(ts)):
            return ts
        return self.placement.replicate(ts)

    def learning_rate(self, ts: TrainState) -> float:
        """The rate the next update will use: the schedule's times `lr_scale`, in float32
        as the update computes it."""
        return float(np.float32(current_learning_rate(ts.opt_state)) * self.lr_scale)

    def schedule_learning_rate(self, ts: TrainState) -> float:
        """The optimizer's own rate for the next update (without `lr_scale`)."""
        return float(current_learning_rate(ts.opt_state))

    def run_epoch(self, ts: TrainState) -> tuple[TrainState, EpochResult]:
        """Train one epoch, then evaluate the validation data; returns the new state."""
        e = np.int32(self.epoch)
        start = time.perf_counter()
        order = epoch_order(self.seed, self.epoch, self.n) if self.shuffle \
            else self.fixed_order
        if self.placement.mesh is not None:   # weights loaded or edited since: place them
            ts = self._placed(ts)
        if self.streamed:
            ts, sums, vsums = self.stream.epoch(ts, order, e, np.float32(self.lr_scale))
        else:
            ts, sums = self.train_epoch(ts, self.x, self.y, self.sw, order, self.seed_array,
                                        e, np.float32(self.lr_scale))
            vsums = self.eval_val(ts.params, ts.state, *self.val) \
                if self.eval_val is not None else None
        logs = finalize(self.obj, sums)
        if vsums is not None:
            logs.update({f"val_{k}": v for k, v in finalize(self.obj, vsums).items()})
        seconds = count_epoch(self, start)
        return ts, EpochResult(self.epoch, logs, seconds)
