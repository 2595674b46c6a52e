"""The trainer: one jitted program per epoch (a `lax.scan` over on-device batches).

Batches are gathered on the device, from the resident data, in an order drawn on
the host from (seed, epoch); the last partial batch is padded with row 0 and
masked with weight 0, so every epoch has the same shapes and compiles once. Loss
and metrics accumulate on the device as (weighted sum, count) pairs and are read
once per epoch. The programs of a fit compile side by side in background threads.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nnrun.nn import losses as losses_mod
from nnrun.nn import metrics as metrics_mod
from nnrun.nn.model import Model
from nnrun.nn.precision import float32_update
from nnrun.train.devices import ONE_DEVICE, BatchSplit

# Named streams of the one config seed (DESIGN.md section 2).
KEY_STREAMS = {"init": 0, "dropout": 1, "shuffle": 2, "split": 3}


def named_key(seed: int, stream: str) -> jax.Array:
    """The PRNG key of one named stream of the config seed."""
    return jax.random.fold_in(jax.random.key(seed), KEY_STREAMS[stream])


class TrainState(NamedTuple):
    """Everything that changes during training, as one pytree."""

    params: Any
    state: Any
    opt_state: Any


@dataclass
class Objective:
    """Loss and metrics resolved for a model's output and target shapes. A model of
    several outputs has one Objective per output (`heads`, by output name, with the
    loss weights), and Keras's history keys: `loss` (the weighted total),
    `<output>_loss` (unweighted) and `<output>_<metric>`."""

    loss: losses_mod.Loss
    metrics: dict[str, metrics_mod.Metric] = field(default_factory=dict)
    heads: dict[str, tuple[Objective, float]] | None = None

    def keys(self) -> list[str]:
        if self.heads is None:
            return ["loss", *self.metrics]
        return ["loss", *(f"{name}_loss" for name in self.heads),
                *(f"{name}_{key}" for name, (head, _) in self.heads.items()
                  for key in head.metrics)]

    def parts(self) -> list[tuple[str, Objective, float]]:
        """(history-key prefix, objective, loss weight) per output."""
        if self.heads is None:
            return [("", self, 1.0)]
        return [(f"{name}_", head, weight) for name, (head, weight) in self.heads.items()]

    def finalizer(self, key: str):
        for prefix, head, _ in self.parts():
            if key.startswith(prefix) and key[len(prefix):] in head.metrics:
                return head.metrics[key[len(prefix):]].finalize
        return None   # losses: the batch losses' size-weighted mean


def resolve_objective(loss_id: Any, metric_ids: tuple, y_shape: tuple,
                      out_shape: tuple) -> Objective:
    """Build the loss and metrics; shapes include the batch axis."""
    loss = losses_mod.resolve_loss(loss_id, tuple(y_shape), tuple(out_shape))
    metrics = {}
    for ident in metric_ids:
        key, metric = metrics_mod.resolve_metric(ident, tuple(y_shape), tuple(out_shape))
        metrics[key] = metric
    return Objective(loss, metrics)


def _batch_plan(n: int, batch_size: int) -> tuple[int, int]:
    steps = max(1, math.ceil(n / batch_size))
    return steps, steps * batch_size - n


def _weighted_mean(values: jax.Array, w: jax.Array) -> jax.Array:
    return jnp.sum(values * w) / jnp.maximum(jnp.sum(w), 1.0)


def _accumulate(acc: dict, obj: Objective, loss: jax.Array, parts: list,
                samples: jax.Array) -> dict:
    """Add a batch: the losses weighted by its number of samples (as Keras's epoch mean),
    the metrics per element of weight `w`. `parts`: per output (loss, y, preds, w)."""
    out = {"loss": (acc["loss"][0] + loss * samples, acc["loss"][1] + samples)}
    for (prefix, head, _), (part_loss, yb, preds, w) in zip(obj.parts(), parts):
        if prefix:
            key = f"{prefix}loss"
            out[key] = (acc[key][0] + part_loss * samples, acc[key][1] + samples)
        count = jnp.sum(w)
        for name, metric in head.metrics.items():
            key = prefix + name
            v = metric.per_sample(yb, preds)
            out[key] = (acc[key][0] + jnp.sum(v * w), acc[key][1] + count)
    return out


def objective_loss(model: Model, obj: Objective, params, yb, preds, w, out_mask,
                   activity, sw=None) -> tuple[jax.Array, list]:
    """The batch loss (weighted sum over outputs, + regularization and activity) and
    per output (its loss, y, preds, weights) for the metrics. `w` marks the batch's real
    rows (0 for padding); `sw`, per-row sample weights, weighs the loss only, as Keras's
    `sample_weight`: sum(loss * sw) / rows (the metrics stay unweighted)."""
    if obj.heads is None:
        ys, ps, ms = (yb,), (preds,), (out_mask,)
    else:
        names = list(obj.heads)
        ys = tuple(yb[n] for n in names)
        ps, ms = tuple(preds), tuple(out_mask)
    total, parts = None, []
    for (_, head, weight), y_k, p_k, m_k in zip(obj.parts(), ys, ps, ms):
        y_k, p_k, w_k = unmasked_steps(y_k, p_k, w, m_k)
        per_sample = head.loss.per_sample(y_k, p_k)
        if sw is not None:
            per_sample = per_sample * unmasked_steps(None, None, sw, m_k)[2]
        part = head.loss.finalize(_weighted_mean(per_sample, w_k))
        weighted = part if weight == 1.0 else part * weight
        total = weighted if total is None else total + weighted
        parts.append((part, y_k, p_k, w_k))
    return total + model.regularization(params) + activity, parts


def unmasked_steps(yb, preds, w, out_mask):
    """With a Keras mask on a sequence output, the (batch * steps) rows of targets and
    predictions and their weights (row weight x step mask): the loss and metrics then
    average the real steps only, as Keras 3. Without a mask, the arguments unchanged."""
    if out_mask is None:
        return yb, preds, w
    weights = out_mask.astype(w.dtype) * w.reshape(-1, *([1] * (out_mask.ndim - 1)))

    def rows(a):
        return None if a is None else a.reshape(-1, *a.shape[out_mask.ndim:])

    return rows(yb), rows(preds), weights.reshape(-1)


def _zeros(obj: Objective) -> dict:
    return {k: (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32)) for k in obj.keys()}


def finalize(obj: Objective, sums: dict) -> dict[str, float]:
    """Host-side: turn accumulated (sum, count) pairs into Keras-style log values."""
    out = {}
    host = jax.device_get(sums)
    for key in obj.keys():
        total, count = host[key]
        mean = float(total) / max(float(count), 1.0)
        # Batch losses were finalized per batch; the epoch loss is their size-weighted mean.
        fin = obj.finalizer(key)
        out[key] = mean if fin is None else float(fin(np.float32(mean)))
    return out


def epoch_logs(obj: Objective, sums: dict, vsums: dict | None = None) -> dict[str, float]:
    """An epoch's logs: the training sums finalized, and the validation sums' as val_*."""
    logs = finalize(obj, sums)
    if vsums is not None:
        logs.update({f"val_{k}": v for k, v in finalize(obj, vsums).items()})
    return logs


def make_loss_fn(model: Model, obj: Objective) -> Callable:
    """(params, state, x, y, w, key) -> (batch loss, (new state, predictions))."""

    def loss_fn(params, state, xb, yb, w, key, sw=None):
        preds, new_state, activity, out_mask = model.apply_with_activity(
            params, state, xb, training=True, key=key, mask=w)
        loss, parts = objective_loss(model, obj, params, yb, preds, w, out_mask, activity,
                                     sw)
        return loss, (new_state, parts)

    return loss_fn


def _take(x, index: jax.Array):
    """Rows of the features on the device: an array, or a mapping of input names to them."""
    return jax.tree_util.tree_map(lambda a: jnp.take(a, index, axis=0), x)


def _padded_batches(order: jax.Array, n: int, batch_size: int):
    """Row indices (steps, batch) of an epoch in `order`, padded with row 0, and 0/1 weights."""
    steps, pad = _batch_plan(n, batch_size)
    idx = jnp.concatenate([order, jnp.zeros((pad,), order.dtype)]).reshape(steps, batch_size)
    w = (jnp.arange(steps * batch_size) < n).astype(jnp.float32).reshape(steps, batch_size)
    return idx, w


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The row order of one epoch: a permutation drawn from (seed, "shuffle", epoch).

    Drawn on the host with numpy (microseconds, no device program to compile) and
    sent to the device, where the batches are gathered from the resident data.
    """
    rng = np.random.default_rng([seed, KEY_STREAMS["shuffle"], epoch])
    return rng.permutation(n).astype(np.int32)


def make_train_step(model: Model, obj: Objective,
                    optimizer: optax.GradientTransformation) -> Callable:
    """`(ts, acc, xb, yb, wb, swb, key, lr_scale) -> (ts, acc)`: one update on a batch,
    its loss and metrics added to `acc`. The resident epoch and the streamed chunks
    (nnrun/train/streaming.py) both scan it, so the two paths compute the same numbers."""
    grad_fn = jax.value_and_grad(make_loss_fn(model, obj), has_aux=True)
    frozen = model.trainable_mask() if model.has_frozen() else None   # static: no retrace
    if model.policy.variable != "float32":   # bfloat16 weights: a float32 update
        optimizer = float32_update(optimizer)

    def step(ts: TrainState, acc, xb, yb, wb, swb, key, lr_scale):
        (loss, (state, parts)), grads = grad_fn(ts.params, ts.state, xb, yb, wb, key, swb)
        updates, opt_state = optimizer.update(grads, ts.opt_state, ts.params,
                                              lr_scale=lr_scale)
        params = model.constrain(optax.apply_updates(ts.params, updates))
        if frozen is not None:   # trainable: false: those weights keep their values
            params = jax.tree_util.tree_map(lambda keep, new, old: new if keep else old,
                                            frozen, params, ts.params)
        acc = _accumulate(acc, obj, loss, parts, jnp.sum(wb))
        return TrainState(params, state, opt_state), acc

    return step


def epoch_dropout_key(seed, epoch) -> jax.Array:
    """The dropout key of one epoch; step i folds in i."""
    return jax.random.fold_in(named_key(seed, "dropout"), epoch)


def make_train_epoch(model: Model, obj: Objective, optimizer: optax.GradientTransformation,
                     n: int, batch_size: int, traces: dict | None = None,
                     weighted: bool = False, shard: BatchSplit = ONE_DEVICE) -> Callable:
    """`(TrainState, x, y, sw, order, seed, epoch, lr_scale) -> (TrainState, sums)`, to be
    jitted. `lr_scale` (a float32 scalar, an argument: no recompile when callbacks change
    it) multiplies the optimizer's learning rate; `sw` (per-row sample weights) is used
    when `weighted`, else ignored (pass None). `shard` constrains each batch's placement
    and runs the recurrences per device (nnrun/train/devices.py, BatchSplit: split over
    a device mesh; nothing on one device).

    `traces["epoch"]` counts how often the function is traced (once per fit).
    """
    step = make_train_step(model, obj, optax.with_extra_args_support(optimizer))

    def epoch_fn(ts: TrainState, x, y, sw, order, seed, epoch, lr_scale):
        if traces is not None:
            traces["epoch"] = traces.get("epoch", 0) + 1
        idx, w = _padded_batches(order, n, batch_size)
        dropout_key = epoch_dropout_key(seed, epoch)
        ts = ts._replace(state=model.reset_states(ts.state))   # stateful RNNs start at 0

        def body(carry, inputs):
            ib, wb, i = inputs
            swb = shard(_take(sw, ib)) if weighted else None
            with shard.rows():
                carry = step(*carry, shard(_take(x, ib)), shard(_take(y, ib)), shard(wb), swb,
                             jax.random.fold_in(dropout_key, i), lr_scale)
            return carry, None

        steps = idx.shape[0]
        (ts, acc), _ = jax.lax.scan(body, (ts, _zeros(obj)), (idx, w, jnp.arange(steps)))
        return ts, acc

    return epoch_fn


def make_eval(model: Model, obj: Objective, n: int, batch_size: int,
              shard: BatchSplit = ONE_DEVICE) -> Callable:
    """`(params, state, x, y) -> sums` in inference mode, batch by batch (to be jitted)."""

    step = make_eval_step(model, obj)

    def evaluate(params, state, x, y):
        idx, w = _padded_batches(jnp.arange(n), n, batch_size)

        def body(carry, inputs):
            ib, wb = inputs
            with shard.rows():
                return step(params, carry, shard(_take(x, ib)), shard(_take(y, ib)),
                            shard(wb)), None

        (acc, _), _ = jax.lax.scan(body, (_zeros(obj), model.reset_states(state)), (idx, w))
        return acc

    return evaluate


def make_eval_step(model: Model, obj: Objective) -> Callable:
    """`(params, (acc, state), xb, yb, wb) -> (acc, state)`: a batch in inference mode; the
    state carries stateful RNNs' states across batches."""

    def step(params, carry, xb, yb, wb):
        acc, state = carry
        preds, state, activity, out_mask = model.apply_with_activity(
            params, state, xb, training=False, mask=wb)
        loss, parts = objective_loss(model, obj, params, yb, preds, wb, out_mask, activity)
        return _accumulate(acc, obj, loss, parts, jnp.sum(wb)), state

    return step


def make_predict(model: Model, n: int, batch_size: int,
                 names: tuple[str, ...] = ()) -> Callable:
    """A jitted `(params, state, x) -> predictions` (n rows), batch by batch; with `names`,
    the outputs of those layers (a tuple) instead of the model's."""

    def predict(params, state, x):
        idx, _ = _padded_batches(jnp.arange(n), n, batch_size)

        def step(state, ib):
            if names:
                preds, state = model.outputs_of(params, state, _take(x, ib), names)
            else:
                preds, state = model.apply(params, state, _take(x, ib), training=False)
            return state, preds

        _, out = jax.lax.scan(step, model.reset_states(state), idx)
        return jax.tree_util.tree_map(lambda o: o.reshape(-1, *o.shape[2:])[:n], out)

    return jax.jit(predict)


@dataclass
class EpochResult:
    epoch: int  # 1-based, as Keras prints
    logs: dict[str, float]
    seconds: float


class BackgroundCompile:
    """`jax.jit(fn)` lowered now for given argument shapes and compiled in a thread.

    Lowering (tracing, Python) runs in the caller's thread; XLA's compile releases the
    GIL, so the programs of one fit compile side by side on a multi-core machine
    while the caller goes on (writing the run directory). Calling the object waits
    for its compile, then runs the executable.
    """

    def __init__(self, fn: Callable, args: tuple, donate_argnums: tuple = (),
                 compiler_options: dict | None = None, out_shardings: Any = None):
        jitted = jax.jit(fn, donate_argnums=donate_argnums) if out_shardings is None else \
            jax.jit(fn, donate_argnums=donate_argnums, out_shardings=out_shardings)
        lowered = jitted.lower(*args)
        self._compiled = None
        self._error: BaseException | None = None
        # Not a daemon: the interpreter's shutdown waits for it (a daemon thread waking
        # in a finalizing interpreter aborts the process); `nnrun` abandons one still
        # running with os._exit (nnrun/cli/main.py entry).
        self._thread = threading.Thread(target=self._compile, args=(lowered, compiler_options),
                                        name="nnrun-compile")
        self._thread.start()

    def _compile(self, lowered, options: dict | None) -> None:
        try:
            self._compiled = lowered.compile(options)
        except BaseException as exc:  # re-raised in the caller's thread
            self._error = exc

    def __call__(self, *args):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._compiled(*args)


def abstract_of(tree):
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)


def count_epoch(fitter, start: float) -> float:
    """A finished epoch's seconds (since `start`), noted on the fitter (tally_epoch)."""
    seconds = time.perf_counter() - start
    tally_epoch(fitter, seconds)
    return seconds


def tally_epoch(fitter, seconds: float) -> None:
    """An epoch of `seconds` noted on the fitter (its first epoch timed from the fitter's
    creation, compiles included), and its epoch counter advanced."""
    if fitter.first_epoch_seconds is None:
        fitter.first_epoch_seconds = time.perf_counter() - fitter.created
    else:
        fitter.epoch_seconds.append(seconds)
    fitter.epoch += 1
