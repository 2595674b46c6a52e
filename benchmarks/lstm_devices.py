"""An LSTM 64's training step over 2 CPU devices, by how the batch is split (issue 21).

    python benchmarks/lstm_devices.py [--repeat 10]

nnrun's LSTM (`lstm_scan`, batch 64 x 50 steps x 32 features, a Dense 1 sigmoid on the
last output), 10 steps of plain gradient descent per call, on JAX's CPU backend made
2 devices (jax_num_cpu_devices). Prints, per way of splitting, the median wall and
CPU milliseconds per step and the largest difference of the weights after the 10
steps from the one-device weights:

  one device        no split
  partitioner       the batch constrained to split (with_sharding_constraint), the
                    rest left to XLA's SPMD partitioner (nnrun's data parallelism
                    before nnrun/nn/rows.py)
  shard_map step    the whole step in shard_map, gradients summed with psum
  rows (nnrun)      the partitioner, with only the LSTM in shard_map (nnrun/nn/rows.py)
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_num_cpu_devices", 2)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from nnrun.nn import rows  # noqa: E402
from nnrun.nn.layers.lstm_scan import lstm_scan  # noqa: E402

T, B, F, U = 50, 64, 32, 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(T, B, F)).astype(np.float32))
    weights = (jnp.asarray(rng.normal(size=(F, 4 * U)).astype(np.float32) * 0.2),
               jnp.asarray(rng.normal(size=(4 * U,)).astype(np.float32) * 0.1),
               jnp.asarray(rng.normal(size=(U, 4 * U)).astype(np.float32) * 0.2))
    w_out = jnp.asarray(rng.normal(size=(U,)).astype(np.float32) * 0.1)
    mesh = Mesh(np.array(jax.devices()[:2]), ("data",))
    split = NamedSharding(mesh, P(None, "data"))

    def lstm(weights, x):
        kernel, bias, uk = weights
        zeros = jnp.zeros((x.shape[1], U))
        return lstm_scan(False, x, kernel, bias, uk, zeros, zeros)[1]

    def loss(weights, x):
        return jnp.sum(jax.nn.sigmoid(lstm(weights, x) @ w_out))

    def plain(weights, x):
        return jax.grad(loss)(weights, x)

    def partitioner(weights, x):
        return plain(weights, jax.lax.with_sharding_constraint(x, split))

    def whole(weights, x):
        def per_device(weights, x):
            return jax.tree_util.tree_map(lambda g: jax.lax.psum(g, "data"), plain(weights, x))
        return rows._shard_map(per_device, mesh, (P(), P(None, "data")), P())(weights, x)

    def by_rows(weights, x):
        def loss_rows(weights, x):
            x = jax.lax.with_sharding_constraint(x, split)
            with rows.split_over(mesh, "data"):
                h = rows.by_rows(lambda w, x: lstm(w, x), weights, (x,), (1,), 0)
            return jnp.sum(jax.nn.sigmoid(h @ w_out))
        return jax.grad(loss_rows)(weights, x)

    def ten_steps(grad):
        @jax.jit
        def run(weights):
            def body(w, _):
                g = grad(w, x)
                return jax.tree_util.tree_map(lambda a, b: a - 1e-3 * b, w, g), None
            return jax.lax.scan(body, weights, None, length=10)[0]
        return run

    ways = {"one device": plain, "partitioner": partitioner, "shard_map step": whole,
            "rows (nnrun)": by_rows}
    runs = {name: ten_steps(grad) for name, grad in ways.items()}
    finals = {name: jax.block_until_ready(run(weights)) for name, run in runs.items()}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for _ in range(args.repeat):
        for name, run in runs.items():   # interleaved
            wall, cpu = time.perf_counter(), time.process_time()
            jax.block_until_ready(run(weights))
            times[name].append(((time.perf_counter() - wall) / 10,
                                (time.process_time() - cpu) / 10))
    print(f"{'split':<16} {'ms/step':>8} {'CPU ms':>8}  max |w - w(one device)|")
    for name, ts in times.items():
        wall, cpu = np.median(np.array(ts), axis=0) * 1e3
        diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                   zip(finals[name], finals["one device"]))
        print(f"{name:<16} {wall:8.2f} {cpu:8.2f}  {diff:.1e}")


if __name__ == "__main__":
    main()
