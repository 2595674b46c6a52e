"""Data parallelism over devices with XLA's SPMD partitioner (`jax.sharding`).

A one-axis mesh named "data" over the devices `fit.devices` picks; the parameters,
optimizer state and resident data are replicated, every batch is split along its
first axis (`with_sharding_constraint` inside the compiled step), and XLA inserts the
all-reduce of the gradients. The recurrent layers' loops over time run per device
instead (`shard_map`, nnrun/nn/rows.py): the partitioner's own split of them was no
faster than one device. With one device nothing is placed or constrained: the
programs are exactly the single-device ones.

Several processes (`distributed:` in the config, nnrun/train/distributed.py) join one
mesh over all processes' devices; each process puts its own devices' shards (and,
for streamed data, reads only their rows).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from nnrun.config.errors import ConfigError
from nnrun.nn.rows import split_over

AXIS = "data"


def make_cpu_devices(n: int) -> None:
    """`fit.devices: n` on the CPU: JAX's CPU backend as n devices (jax_num_cpu_devices),
    where n is 2 up to the core count, XLA_FLAGS sets no count, and JAX has run nothing
    yet; otherwise nothing (resolve_devices's error then says how). One CPU device is
    JAX's default, and XLA's CPU backend runs a recurrence's small per-step products
    on one core: an LSTM 64 trained 1.5x faster over 2 devices on 2 cores (issue 21;
    benchmarks/README.md). A process-level setting: only `nnrun train`, which runs one
    config, makes it. Accelerators are not affected (their devices are the ones
    fit.devices counts)."""
    if not 2 <= n <= (os.cpu_count() or 1):
        return
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except (AttributeError, RuntimeError):   # an old JAX; or a backend already started
        pass


def resolve_devices(asked: int | str, batch_size: int, where: Callable) -> list:
    """The devices of `fit.devices` ("all" or a number), checked: enough of them, and a
    batch that divides evenly over them. ConfigErrors are located with `where(path)`."""
    available = jax.devices()
    n = len(available) if asked == "all" else int(asked)
    if n > len(available):
        kind = available[0].platform
        cores = os.cpu_count() or 1
        hint = (f" (on the CPU, `nnrun train` makes up to {cores}, this machine's cores, "
                "by itself where XLA_FLAGS sets no count; "
                "XLA_FLAGS=--xla_force_host_platform_device_count=N makes N)"
                if kind == "cpu" else "")
        raise ConfigError(f"{n} devices asked, {len(available)} {kind} device"
                          f"{'s' if len(available) > 1 else ''} available{hint}",
                          where=where(("fit", "devices")))
    if batch_size % n:
        raise ConfigError(f"batch_size {batch_size} does not split evenly over {n} devices "
                          f"(data parallelism gives each device batch_size / {n} rows); use "
                          f"a multiple of {n}, or fit.devices: a divisor of {batch_size}",
                          where=where(("fit", "batch_size")))
    return available[:n]


class BatchSplit:
    """What a compiled step does with its batches, passed to the programs that run it:

    - called on a batch (a pytree, rows first; None leaves pass through) inside the
      program, it constrains the batch to split over the mesh;
    - `with split.rows():` around a step's tracing, the recurrent layers run each
      device's rows on that device (nnrun/nn/rows.py).

    Both do nothing on one device (mesh None)."""

    def __init__(self, mesh: Mesh | None = None):
        self.mesh = mesh

    def __call__(self, tree: Any) -> Any:
        if self.mesh is None:
            return tree
        sharding = NamedSharding(self.mesh, PartitionSpec(AXIS))
        return jax.tree_util.tree_map(
            lambda a: jax.lax.with_sharding_constraint(a, sharding), tree)

    def rows(self) -> contextlib.AbstractContextManager:
        return split_over(self.mesh, AXIS)


ONE_DEVICE = BatchSplit()


class Placement:
    """Where arrays live: one device (the identity everywhere), or a data mesh."""

    def __init__(self, devices: list | None = None):
        self.devices = list(devices or jax.devices()[:1])
        self.n = len(self.devices)
        self.mesh = Mesh(np.array(self.devices), (AXIS,)) if self.n > 1 else None
        self.shard_batch = BatchSplit(self.mesh)

    @property
    def replicated(self) -> NamedSharding | None:
        return None if self.mesh is None else NamedSharding(self.mesh, PartitionSpec())

    def batch_sharding(self, axis: int = 0) -> NamedSharding | None:
        """Split along `axis` (0: a batch; 1: chunks of batches)."""
        if self.mesh is None:
            return None
        return NamedSharding(self.mesh, PartitionSpec(*([None] * axis), AXIS))

    def replicate(self, tree: Any) -> Any:
        """Host or device arrays placed on every device of the mesh (on one device: as
        given). Works across processes: each process fills its own devices."""
        if self.mesh is None or tree is None:
            return tree
        sharding = self.replicated
        return jax.tree_util.tree_map(lambda a: _global(np.asarray(a), sharding), tree)

    def put_rows(self, arrays: tuple, rows: np.ndarray, w: np.ndarray, gather: Callable
                 ) -> tuple:
        """A chunk of batches (rows (k * batch,) of each of `arrays`, and weights w (k,
        batch)) as global arrays split along the batch axis, each process reading
        (`gather(array, rows)`) only the rows of its own devices' parts."""
        sharding = self.batch_sharding(axis=1)
        k, batch = w.shape
        grid = rows.reshape(k, batch)

        def one(a):
            if a is None:
                return None
            if isinstance(a, dict):
                return {name: one(v) for name, v in a.items()}

            def part(index):
                picked = grid[index[0], index[1]]
                return gather(a, picked.reshape(-1)).reshape(*picked.shape, *a.shape[1:])

            return jax.make_array_from_callback((k, batch, *a.shape[1:]), sharding, part)

        return (*(one(a) for a in arrays), _global(w, sharding))

    def abstract(self, tree: Any) -> Any:
        """ShapeDtypeStructs (replicated on the mesh) of arrays or ShapeDtypeStructs."""
        sharding = self.replicated
        return jax.tree_util.tree_map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), tree)

    def describe(self) -> dict:
        """What run.json records."""
        return {"count": self.n, "platform": self.devices[0].platform,
                "processes": jax.process_count(), "mesh": {AXIS: self.n}}


def _global(host: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from a host array every process holds whole: each process puts
    the slices its own devices need."""
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
