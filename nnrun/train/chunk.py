"""Several epochs in one dispatch (issue 21), the way Keras's `steps_per_execution` runs
several steps: one compiled program runs `count` epochs (a `lax.fori_loop` over the
epoch program and the validation pass) and returns each epoch's sums, the learning
rate each epoch started with, and the state of the epoch whose monitored value was
the best of the chunk (so the best weights need no host copy).

Epoch-at-a-time is the same program with count 1: the loop body is one compiled
computation whatever the count, so a run gives the same weights and logs however its
epochs are grouped. The host then takes the chunk's epochs one by one as before
(logs, callbacks, checkpoints). Where it needs the state after an epoch that the
program did not return (an EarlyStopping stop, a learning-rate change, an interrupt
inside the chunk, a best epoch the device judged otherwise in float32), it runs the
program again from the chunk's start for that many epochs: the same numbers, by
construction. The chunk's input is not donated for that reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nnrun.nn.optimizers import current_learning_rate
from nnrun.train.checkpoint import Held
from nnrun.train.devices import ONE_DEVICE, BatchSplit
from nnrun.train.epoch import EpochResult, Objective, epoch_logs, make_eval, make_train_epoch

TARGET_SECONDS = 0.1   # a chunk's wall time: Ctrl-C and the printed lines stay prompt
ORDER_CELLS = 1 << 21  # the most row indices one dispatch carries (count x rows)
MAX_EPOCHS = 64


def chunk_limit(n: int) -> int:
    """The most epochs one dispatch runs for `n` training rows."""
    return max(1, min(MAX_EPOCHS, ORDER_CELLS // max(n, 1)))


def chunk_keys(obj: Objective, validated: bool) -> list[str]:
    """The logged keys in a chunk's table, training's then the validation pass's."""
    return obj.keys() + ([f"val_{k}" for k in obj.keys()] if validated else [])


def make_train_chunk(model, obj: Objective, optimizer, n: int, batch_size: int, kmax: int, *,
                     val_n: int | None, monitor: str, sign: float, traces: dict | None = None,
                     weighted: bool = False, shard: BatchSplit = ONE_DEVICE) -> Callable:
    """`(ts, x, y, sw, vx, vy, orders, seed, epoch, lr_scale, count, best) -> (ts, table,
    best_ts, best_index)`, to be jitted: `count` (<= kmax) epochs from `epoch`, the i-th
    in `orders[i]`. Row i of `table` (kmax, 2 * keys + 2) holds epoch i's sums of every
    logged key (`chunk_keys`), then their counts, then the optimizer's own rate (before
    `lr_scale`) the epoch started with and the one it leaves for the next update: one
    row written per epoch (`read_table` reads it). `best_ts` is the state after the
    epoch whose `sign * monitor` was the lowest of the chunk and below `best` (float32),
    `best_index` that epoch (-1: none)."""
    epoch_fn = make_train_epoch(model, obj, optimizer, n, batch_size, traces, weighted, shard)
    evaluate = make_eval(model, obj, val_n, batch_size, shard) if val_n else None
    keys = chunk_keys(obj, evaluate is not None)
    finish = obj.finalizer(monitor.removeprefix("val_")) or (lambda v: v)

    def monitored(logs: dict) -> jax.Array:
        if monitor not in logs:
            return jnp.asarray(jnp.inf, jnp.float32)
        total, count = logs[monitor]
        return sign * finish(total / jnp.maximum(count, 1.0))

    def rate(ts) -> jax.Array:
        return jnp.asarray(current_learning_rate(ts.opt_state), jnp.float32)

    def chunk_fn(ts, x, y, sw, vx, vy, orders, seed, epoch, lr_scale, count, best):
        def body(i, carry):
            ts, table, (best_ts, best_value, best_index) = carry
            started = rate(ts)
            ts, train = epoch_fn(ts, x, y, sw, orders[i], seed, epoch + i, lr_scale)
            logs = dict(train)
            if evaluate is not None:
                logs.update({f"val_{k}": v
                             for k, v in evaluate(ts.params, ts.state, vx, vy).items()})
            table = table.at[i].set(jnp.stack([*(logs[k][0] for k in keys),
                                               *(logs[k][1] for k in keys), started, rate(ts)]))
            value = monitored(logs)
            better = jnp.isfinite(value) & (value < best_value)
            best_ts = jax.lax.cond(better, lambda: ts, lambda: best_ts)
            best = (best_ts, jnp.where(better, value, best_value),
                    jnp.where(better, i, best_index))
            return ts, table, best

        init = (ts, jnp.zeros((kmax, 2 * len(keys) + 2), jnp.float32),
                (ts, jnp.asarray(best, jnp.float32), jnp.asarray(-1, jnp.int32)))
        ts, table, (best_ts, _, best_index) = jax.lax.fori_loop(0, count, body, init)
        return ts, table, best_ts, best_index

    return chunk_fn


@dataclass
class Chunk:
    """The epochs of one dispatch, as the host takes them: `results` (one EpochResult
    each, seconds shared out), `lrs` (each epoch's logged learning rate), `next_rates`
    (the optimizer's own rate after each epoch, before `lr_scale`: what the callbacks
    see), and the states the fit loop may ask for (`hold(i)`: after the i-th epoch)."""

    results: list[EpochResult]
    lrs: list[float]
    next_rates: list[float]
    end: Any
    rerun: Callable[[int], Any] | None = None   # count -> the state after that many epochs
    best_index: int = -1
    best: Any = None
    donated: bool = False
    _replays: dict = field(default_factory=dict)

    def state_after(self, i: int) -> Any:
        if i == len(self.results) - 1:
            return self.end
        if i == self.best_index:
            return self.best
        if i not in self._replays:
            self._replays[i] = self.rerun(i + 1)
        return self._replays[i]

    def hold(self, i: int) -> Held:
        return Held(lambda: self.state_after(i), donated=self.donated)


def read_table(obj: Objective, validated: bool, table: np.ndarray, first: int,
               scale: np.float32, seconds: float) -> tuple[list[EpochResult], list[float],
                                                           list[float]]:
    """A chunk's table on the host (its rows of the epochs run) as (results, logged
    rates, next rates) for a Chunk; epochs counted from `first` + 1."""
    keys = chunk_keys(obj, validated)
    k = len(keys)
    results, lrs, next_rates = [], [], []
    for i, row in enumerate(table):
        sums = {key: (row[j], row[k + j]) for j, key in enumerate(keys)}
        val = {key: sums[f"val_{key}"] for key in obj.keys()} if validated else None
        results.append(EpochResult(first + i + 1, epoch_logs(obj, sums, val), seconds))
        lrs.append(float(np.float32(row[-2]) * scale))
        next_rates.append(float(row[-1]))
    return results, lrs, next_rates


class Pace:
    """How many epochs the next dispatch runs: one while the program compiles and its
    epoch time is measured, then as many as fill TARGET_SECONDS (at most the program's
    limit and the epochs left); always one where something acts before every epoch or
    needs every epoch's weights on the host (`grouped` false)."""

    def __init__(self, limit: int, grouped: bool):
        self.limit, self.grouped = limit, grouped
        self.per_epoch: float | None = None
        self.chunks = 0
        self._start = 0.0

    def count(self, left: int) -> int:
        """The next dispatch's epochs (its clock starts)."""
        self._start = time.perf_counter()
        if not self.grouped or self.per_epoch is None:
            return 1
        fits = int(TARGET_SECONDS / max(self.per_epoch, 1e-6))
        return max(1, min(self.limit, left, fits))

    def measured(self, epochs: int) -> None:
        """A dispatch of `epochs` was taken (the first, with the compile, is no measure)."""
        self.chunks += 1
        if self.chunks > 1:
            self.per_epoch = (time.perf_counter() - self._start) / epochs
