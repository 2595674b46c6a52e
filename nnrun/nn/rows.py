"""Row-independent work run per device under data parallelism (issue 21).

With `fit.devices` above 1 (nnrun/train/devices.py), each batch's rows are split over
a device mesh and XLA's SPMD partitioner places the rest of the program. Given a
recurrence (a `lax.scan` over time), it does not split the loop: on a 2-core CPU made
2 devices, an LSTM 64's training step took 6.85 ms, against 6.14 ms on one device
(benchmarks/lstm_devices.py). Each row's recurrence depends on no other row, so the
recurrent layers run it per device instead, with `shard_map`: every device loops over
its own rows, and the weights' gradients are summed over the devices by
`shard_map`'s transpose. The same step then took 4.43 ms.

The training and validation programs trace their steps inside `split_over(mesh,
axis)` (`BatchSplit.rows` in nnrun/train/devices.py); a layer calls `by_rows`, which
is a plain call outside that context (one device, evaluate, predict): those programs
are unchanged, bit for bit."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

from nnrun.nn.lazy import jax

_SPLIT: contextvars.ContextVar[tuple[Any, str] | None] = contextvars.ContextVar(
    "nnrun_row_split", default=None)


@contextlib.contextmanager
def split_over(mesh: Any, axis: str) -> Iterator[None]:
    """While tracing inside: `by_rows` splits rows over `mesh` along its `axis` (a mesh
    of None: no split)."""
    token = _SPLIT.set(None if mesh is None else (mesh, axis))
    try:
        yield
    finally:
        _SPLIT.reset(token)


def by_rows(fn: Callable, shared: Any, rows: tuple, row_axes: tuple[int, ...],
            out_axes: Any) -> Any:
    """`fn(shared, *rows)`, where nothing in a row depends on another row.

    `rows[i]` (a pytree, or None) has its batch rows along axis `row_axes[i]`;
    `out_axes` is a prefix of the output's pytree giving each output's row axis.
    Inside `split_over`, each device runs `fn` on its own rows (`shared`, the weights,
    replicated); elsewhere this is `fn(shared, *rows)`."""
    split = _SPLIT.get()
    if split is None:
        return fn(shared, *rows)
    mesh, axis = split
    from jax.sharding import PartitionSpec

    def spec(row_axis: int) -> PartitionSpec:
        return PartitionSpec(*([None] * row_axis), axis)

    in_specs = (PartitionSpec(), *(spec(a) for a in row_axes))
    out_specs = jax.tree_util.tree_map(spec, out_axes)
    return _shard_map(fn, mesh, in_specs, out_specs)(shared, *rows)


def _shard_map(fn: Callable, mesh: Any, in_specs: tuple, out_specs: Any) -> Callable:
    """jax.shard_map without its replication checks (they reject the LSTM's custom
    gradient; the inputs' specs are exact), on old and new JAX."""
    if hasattr(jax, "shard_map"):
        return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs,
                             check_vma=False)
    from jax.experimental.shard_map import shard_map  # JAX before 0.6

    return shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_rep=False)
