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
from nnrun.train.chunk import Chunk, chunk_limit, make_train_chunk, read_table
from nnrun.train.epoch import (
    BackgroundCompile,
    EpochResult,
    Objective,
    TrainState,
    abstract_of,
    epoch_logs,
    epoch_order,
    named_key,
    tally_epoch,
)


class Fitter:
    """Holds the compiled programs and the train state of one `fit`."""

    def __init__(self, model: Model, obj: Objective, optimizer_id: Any, *, seed: int,
                 batch_size: int, shuffle: bool, x: np.ndarray, y: np.ndarray,
                 val: tuple[np.ndarray, np.ndarray] | None = None,
                 sample_weight: np.ndarray | None = None, chunk_bytes: int | None = None,
                 placement=None, monitor: tuple[str, str] | None = None):
        """`x` (and `val`'s features) may be row sources read from disk
        (nnrun/data/rowsource.py): the epochs are then streamed in chunks of batches
        (nnrun/train/streaming.py) instead of running on resident data. `placement`
        (nnrun/train/devices.py) splits each batch over several devices. `monitor`
        (key, "min" or "max"; default the validation loss, else the loss) is what the
        resident program's chunks keep the best epoch's state by (nnrun/train/chunk.py)."""
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
            # device_put, not jnp.asarray: the latter compiles a program per shape (about
            # 10 ms each before the first epoch); the values and dtypes are the same
            self.x, self.y = place(jax.device_put((x, y)))
            self.sw = place(jax.device_put(sw)) if self.weighted else None
            self.val = place(jax.device_put(tuple(val))) if val is not None else None
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
        self.monitor = monitor or ("val_loss" if val is not None else "loss", "min")
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
        params, state = self.model.param_shapes()  # traced once, when the model was built
        ts = pl.abstract(TrainState(params, state, jax.eval_shape(self.optimizer.init, params)))
        self.shuffle = shuffle
        self.fixed_order = np.arange(n, dtype=np.int32)
        self.limit = 1   # epochs per dispatch: streamed data runs one
        if self.streamed:
            from nnrun.train.streaming import StreamedFit

            self.stream = StreamedFit(self, ts)
            return
        abstract = pl.abstract if pl.mesh is not None else abstract_of
        self.limit = chunk_limit(n)
        key, mode = self.monitor
        chunk_fn = make_train_chunk(
            self.model, self.obj, self.optimizer, n, self.batch_size, self.limit,
            val_n=rows(self.val[0]) if self.val is not None else None, monitor=key,
            sign=-1.0 if mode == "max" else 1.0, traces=self.traces, weighted=self.weighted,
            shard=pl.shard_batch)
        val = abstract(self.val) if self.val is not None else (None, None)
        f32 = pl.abstract(jax.ShapeDtypeStruct((), jnp.float32))
        orders = pl.abstract(jax.ShapeDtypeStruct((self.limit, n), jnp.int32))
        self.train_chunk = BackgroundCompile(
            chunk_fn, (ts, abstract(self.x), abstract(self.y), abstract(self.sw), *val,
                       orders, scalar, scalar, f32, scalar, f32), out_shardings=pl.replicated)

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

    @property
    def donates(self) -> bool:
        """Whether an epoch's input state is donated (the streamed path): a state kept
        past the next epoch must then be copied (nnrun/train/chunk.py Held.keep)."""
        return self.streamed

    def _orders(self, first: int, count: int) -> np.ndarray:
        orders = np.zeros((self.limit, self.n), np.int32)
        for i in range(count):
            orders[i] = epoch_order(self.seed, first + i, self.n) if self.shuffle \
                else self.fixed_order
        return orders

    def run_epochs(self, ts: TrainState, count: int = 1, best: float = np.inf) -> Chunk:
        """Train `count` epochs from `self.epoch` in one dispatch, each followed by its
        validation pass (nnrun/train/chunk.py); `best` is the monitored value to beat
        (times -1 for mode max). The Fitter's epoch counter is not advanced: the fit
        loop `accept`s the epochs it takes."""
        start = time.perf_counter()
        if self.placement.mesh is not None:   # weights loaded or edited since: place them
            ts = self._placed(ts)
        if self.streamed:
            return self._streamed_epoch(ts, start)
        if not 1 <= count <= self.limit:
            raise ValueError(f"count {count}: a dispatch runs 1 to {self.limit} epochs")
        first, scale = self.epoch, np.float32(self.lr_scale)
        orders = self._orders(first, count)

        def run(k: int):
            return self.train_chunk(ts, self.x, self.y, self.sw,
                                    *(self.val if self.val is not None else (None, None)),
                                    orders, self.seed_array, np.int32(first), scale,
                                    np.int32(k), np.float32(best))

        end, table, best_ts, best_index = run(count)
        table, best_index = jax.device_get((table, best_index))
        results, lrs, next_rates = read_table(self.obj, self.val is not None, table[:count],
                                              first, scale,
                                              (time.perf_counter() - start) / count)
        return Chunk(results, lrs, next_rates, end, rerun=lambda k: run(k)[0],
                     best_index=int(best_index), best=best_ts)

    def _streamed_epoch(self, ts: TrainState, start: float) -> Chunk:
        lr = self.learning_rate(ts)
        order = epoch_order(self.seed, self.epoch, self.n) if self.shuffle \
            else self.fixed_order
        ts, sums, vsums = self.stream.epoch(ts, order, np.int32(self.epoch),
                                            np.float32(self.lr_scale))
        result = EpochResult(self.epoch + 1, epoch_logs(self.obj, sums, vsums),
                             time.perf_counter() - start)
        return Chunk([result], [lr], [self.schedule_learning_rate(ts)], ts, donated=True)

    def accept(self, result: EpochResult) -> None:
        """The fit loop took the epoch: the epoch counter and the timings advance."""
        tally_epoch(self, result.seconds)

    def run_epoch(self, ts: TrainState) -> tuple[TrainState, EpochResult]:
        """Train one epoch, then evaluate the validation data; returns the new state."""
        chunk = self.run_epochs(ts, 1)
        self.accept(chunk.results[0])
        return chunk.end, chunk.results[0]
