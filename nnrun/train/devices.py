"""Data parallelism over devices with XLA's SPMD partitioner (`jax.sharding`).

A one-axis mesh named "data" over the devices `fit.devices` picks; the parameters,
optimizer state and resident data are replicated, every batch is split along its
first axis (`with_sharding_constraint` inside the compiled step), and XLA inserts the
all-reduce of the gradients. With one device nothing is placed or constrained: the
programs are exactly the single-device ones.

Several processes (`distributed:` in the config, nnrun/train/distributed.py) join one
mesh over all processes' devices; each process puts its own devices' shards (and,
for streamed data, reads only their rows).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from nnrun.config.errors import ConfigError

AXIS = "data"


def resolve_devices(asked: int | str, batch_size: int, where: Callable) -> list:
    """The devices of `fit.devices` ("all" or a number), checked: enough of them, and a
    batch that divides evenly over them. ConfigErrors are located with `where(path)`."""
    available = jax.devices()
    n = len(available) if asked == "all" else int(asked)
    if n > len(available):
        kind = available[0].platform
        hint = (" (on the CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N makes N)"
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


class Placement:
    """Where arrays live: one device (the identity everywhere), or a data mesh."""

    def __init__(self, devices: list | None = None):
        self.devices = list(devices or jax.devices()[:1])
        self.n = len(self.devices)
        self.mesh = Mesh(np.array(self.devices), (AXIS,)) if self.n > 1 else None

    @property
    def replicated(self) -> NamedSharding | None:
        return None if self.mesh is None else NamedSharding(self.mesh, PartitionSpec())

    def batch_sharding(self, axis: int = 0) -> NamedSharding | None:
        """Split along `axis` (0: a batch; 1: chunks of batches)."""
        if self.mesh is None:
            return None
        return NamedSharding(self.mesh, PartitionSpec(*([None] * axis), AXIS))

    def shard_batch(self, tree: Any) -> Any:
        """Inside a compiled program: constrain a batch (rows first) to split over the
        mesh; None leaves pass through. The identity on one device."""
        if self.mesh is None:
            return tree
        sharding = self.batch_sharding()
        return jax.tree_util.tree_map(
            lambda a: jax.lax.with_sharding_constraint(a, sharding), tree)

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
