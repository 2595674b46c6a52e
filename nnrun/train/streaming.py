"""Training on data left on disk: each epoch runs as a series of compiled chunks.

The resident path (nnrun/train/epoch.py) puts the whole training set on the device and
runs an epoch as one program. For data larger than memory (features that are
`RowSource`s, nnrun/data/rowsource.py) the epoch's batches are cut into chunks of about
`CHUNK_BYTES`; a background thread reads the rows of the next chunks from disk (in
the epoch's shuffled order) and puts them on the device while the current chunk
trains. A chunk program scans the same step function as the resident epoch, with
the same row order, padding and dropout keys, so both paths give the same weights.
Two chunk sizes at most are compiled (the full chunk and the epoch's remainder).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nnrun.data.rowsource import RowSource
from nnrun.train.epoch import (
    BackgroundCompile,
    TrainState,
    _batch_plan,
    _zeros,
    epoch_dropout_key,
    make_eval_step,
    make_train_step,
)

CHUNK_BYTES = 32 << 20   # bytes of features per chunk
PREFETCH = 2             # chunks read ahead of the one training


def _gather(a, rows: np.ndarray):
    """Rows of features or targets: an array, a RowSource, or a mapping of them."""
    if a is None:
        return None
    if isinstance(a, dict):
        return {k: _gather(v, rows) for k, v in a.items()}
    if isinstance(a, RowSource):
        return a.take(rows)
    return np.asarray(a[rows])


def _row_bytes(x) -> int:
    parts = x.values() if isinstance(x, dict) else [x]
    return sum(int(np.prod(p.shape[1:], dtype=np.int64)) * np.dtype(p.dtype).itemsize
               for p in parts)


def _batched(tree, k: int, batch: int):
    return jax.tree_util.tree_map(lambda a: a.reshape(k, batch, *a.shape[1:]), tree)


class _Plan:
    """The batches of one pass over `n` rows: chunk boundaries and padded row indices."""

    def __init__(self, n: int, batch: int, row_bytes: int, chunk_bytes: int):
        self.n, self.batch = n, batch
        self.steps, self.pad = _batch_plan(n, batch)
        per_chunk = max(1, chunk_bytes // max(1, batch * row_bytes))
        self.k = min(self.steps, per_chunk)
        self.sizes = sorted({self.k, self.steps % self.k} - {0})

    def chunks(self, order: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(first step, row indices (k * batch,), weights (k, batch)) per chunk; the
        last batch padded with row 0 at weight 0, as the resident epoch does."""
        idx = np.concatenate([order, np.zeros(self.pad, order.dtype)])
        w = (np.arange(self.steps * self.batch) < self.n).astype(np.float32)
        for s0 in range(0, self.steps, self.k):
            s1 = min(s0 + self.k, self.steps)
            rows = idx[s0 * self.batch:s1 * self.batch]
            yield s0, rows, w[s0 * self.batch:s1 * self.batch].reshape(s1 - s0, self.batch)


class _Reader:
    """A thread that reads the chunks of one pass and puts them on the device, up to
    PREFETCH ahead; errors are raised in the consumer's thread."""

    _DONE = object()

    def __init__(self, plan: _Plan, order: np.ndarray, arrays: tuple, placement=None):
        self.plan, self.order, self.arrays = plan, order, arrays
        self.placement = placement
        self.queue: queue.Queue = queue.Queue(maxsize=PREFETCH)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for s0, rows, w in self.plan.chunks(self.order):
                if self.placement is not None and self.placement.mesh is not None:
                    # several devices: each process reads its own devices' rows
                    item = self.placement.put_rows(self.arrays, rows, w, _gather)
                else:
                    k = w.shape[0]
                    item = jax.device_put((*(_batched(_gather(a, rows), k, self.plan.batch)
                                             for a in self.arrays), w))
                if not self._put((s0, item)):
                    return
            self._put(self._DONE)
        except BaseException as exc:   # noqa: BLE001 - re-raised by the consumer
            self._put(exc)

    def __iter__(self):
        try:
            while True:
                item = self.queue.get()
                if item is self._DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.stop.set()


class StreamedFit:
    """The chunk programs of a fit on streamed data, and the epoch loop over them."""

    def __init__(self, fitter, ts: TrainState):
        self.fitter = fitter
        model, obj, batch = fitter.model, fitter.obj, fitter.batch_size
        chunk_bytes = fitter.chunk_bytes or CHUNK_BYTES
        self.plan = _Plan(fitter.n, batch, _row_bytes(fitter.x), chunk_bytes)
        step = make_train_step(model, obj, optax.with_extra_args_support(fitter.optimizer))
        weighted, pl = fitter.weighted, fitter.placement
        shard = pl.shard_batch

        def chunk_fn(ts, acc, xs, ys, sws, ws, s0, seed, epoch, lr_scale):
            key = epoch_dropout_key(seed, epoch)

            def body(carry, inputs):
                xb, yb, swb, wb, i = inputs
                with shard.rows():
                    return step(*carry, shard(xb), shard(yb), shard(wb),
                                shard(swb) if weighted else None,
                                jax.random.fold_in(key, i), lr_scale), None

            steps = s0 + jnp.arange(ws.shape[0])
            (ts, acc), _ = jax.lax.scan(body, (ts, acc), (xs, ys, sws, ws, steps))
            return ts, acc

        scalar = pl.abstract(jax.ShapeDtypeStruct((), jnp.int32))
        acc = pl.abstract(jax.eval_shape(lambda: _zeros(obj)))
        chunked = pl.batch_sharding(axis=1)
        self.train_chunk = {
            k: BackgroundCompile(chunk_fn, (
                ts, acc, *_chunk_shapes((fitter.x, fitter.y, fitter.sw), k, batch, chunked),
                jax.ShapeDtypeStruct((k, batch), jnp.float32, sharding=chunked), scalar,
                scalar, scalar, pl.abstract(jax.ShapeDtypeStruct((), jnp.float32))),
                donate_argnums=(0, 1), out_shardings=pl.replicated)
            for k in self.plan.sizes}
        self.reset = jax.jit(lambda ts: ts._replace(state=model.reset_states(ts.state)),
                             donate_argnums=0)
        self.val = None
        if fitter.val is not None:
            vx, vy = fitter.val
            self.val = ChunkedEval(model, obj, vx, vy, batch, chunk_bytes,
                                   (ts.params, ts.state), pl)

    def epoch(self, ts: TrainState, order: np.ndarray, epoch: np.int32, lr_scale: np.float32):
        """Train one epoch over the chunks in `order`; returns (ts, sums, val sums)."""
        f = self.fitter
        ts = self.reset(ts)
        acc = f.placement.replicate(_zeros(f.obj))
        reader = _Reader(self.plan, order, (f.x, f.y, f.sw), f.placement)
        for s0, (xs, ys, sws, ws) in reader:
            run: Callable = self.train_chunk[ws.shape[0]]
            ts, acc = run(ts, acc, xs, ys, sws, ws, np.int32(s0), f.seed_array, epoch,
                          lr_scale)
        return ts, acc, (self.val(ts.params, ts.state) if self.val is not None else None)


def _chunk_shapes(arrays: tuple, k: int, batch: int, sharding=None) -> tuple:
    def one(a):
        return jax.ShapeDtypeStruct((k, batch, *a.shape[1:]), np.dtype(a.dtype),
                                    sharding=sharding)

    return tuple(None if a is None else jax.tree_util.tree_map(
        one, a, is_leaf=lambda v: isinstance(v, RowSource)) for a in arrays)


def _rows(a) -> int:
    return len(next(iter(a.values()))) if isinstance(a, dict) else len(a)


class ChunkedEval:
    """Loss and metrics over rows read in chunks, in file order (inference mode).
    With `shapes` ((params, state) shapes), its programs compile now, in the background."""

    def __init__(self, model, obj, x, y, batch: int, chunk_bytes: int | None = None,
                 shapes: tuple | None = None, placement=None):
        from nnrun.train.devices import Placement

        self.model, self.obj, self.x, self.y = model, obj, x, y
        self.placement = pl = placement or Placement()
        self.plan = _Plan(_rows(y), batch, _row_bytes(x), chunk_bytes or CHUNK_BYTES)
        step = make_eval_step(model, obj)

        def eval_chunk(params, carry, xs, ys, ws):
            def body(carry, inputs):
                with pl.shard_batch.rows():
                    return step(params, carry, *pl.shard_batch(inputs)), None

            carry, _ = jax.lax.scan(body, carry, (xs, ys, ws))
            return carry

        if shapes is None:
            self.programs = {k: jax.jit(eval_chunk) for k in self.plan.sizes}
            return
        params, state = shapes
        carry = pl.abstract(jax.eval_shape(lambda s: (_zeros(obj), s), state))
        chunked = pl.batch_sharding(axis=1)
        self.programs = {
            k: BackgroundCompile(eval_chunk, (
                params, carry, *_chunk_shapes((x, y), k, batch, chunked),
                jax.ShapeDtypeStruct((k, batch), jnp.float32, sharding=chunked)),
                out_shardings=pl.replicated)
            for k in self.plan.sizes}

    def __call__(self, params, state):
        carry = self.placement.replicate((_zeros(self.obj), self.model.reset_states(state)))
        order = np.arange(self.plan.n, dtype=np.int32)
        for _, (xs, ys, ws) in _Reader(self.plan, order, (self.x, self.y), self.placement):
            carry = self.programs[ws.shape[0]](params, carry, xs, ys, ws)
        return carry[0]


def predict_rows(model, params, state, x, batch: int, names: tuple[str, ...] = (),
                 chunk_bytes: int | None = None):
    """Predictions (host arrays; a tuple with `names`, as trainer.make_predict) for
    rows read in chunks, in file order."""
    n = _rows(x)
    plan = _Plan(n, batch, _row_bytes(x), chunk_bytes or CHUNK_BYTES)

    @jax.jit
    def chunk(params, state, xs):
        def body(state, xb):
            if names:
                return model.outputs_of(params, state, xb, names)[::-1]
            preds, state = model.apply(params, state, xb, training=False)
            return state, preds

        return jax.lax.scan(body, state, xs)

    state, parts = model.reset_states(state), []
    for _, (xs, _w) in _Reader(plan, np.arange(n, dtype=np.int32), (x,)):
        state, out = chunk(params, state, xs)
        parts.append(jax.device_get(out))
    return jax.tree_util.tree_map(
        lambda *a: np.concatenate([p.reshape(-1, *p.shape[2:]) for p in a])[:n], *parts)


__all__ = ["StreamedFit", "ChunkedEval", "predict_rows", "CHUNK_BYTES"]
