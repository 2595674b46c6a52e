"""Micro-benchmarks behind issue 3's custom gradients (benchmarks/README.md, "Issue 3").

    python benchmarks/issue3_micro.py

Prints, on this machine's XLA CPU backend, best of a few runs each:

1. the LSTM cell's elementwise work per time step inside a `lax.scan`, reading the
   four gates as column slices of one (64, 256) buffer vs from four separate buffers;
2. Conv2D 64 of the benchmark CNN inside a 10-step `fori_loop` (as in the epoch's
   compiled loop): forward, input gradient and kernel gradient, by XLA's convolution
   and by patches + one matrix product;
3. the gradient of a 2x2 max pooling routed to each window's first maximum: the
   masked min-reduction of cell ranks used before vs nnrun's `first_max` now.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from nnrun.nn.layers.conv_ops import correlate, first_max, patches


def best_of(fn, *args, n: int = 5) -> float:
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(n):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def lstm_cell_slices() -> None:
    sig, steps = jax.nn.sigmoid, 50

    def cell(c, i, f, g, o):
        c = sig(f) * c + sig(i) * jnp.tanh(g)
        return sig(o) * jnp.tanh(c) + c * 1e-3

    def run(step, xs):
        return jax.lax.scan(lambda c, x: (step(c, x), None), jnp.zeros((64, 64)), xs)[0]

    key = jax.random.key(0)
    z = jax.random.normal(key, (steps, 64, 256))
    parts = tuple(z[..., k * 64:(k + 1) * 64] for k in range(4))
    one = jax.jit(lambda z: run(lambda c, zt: cell(c, *(zt[:, k * 64:(k + 1) * 64]
                                                        for k in range(4))), z))
    four = jax.jit(lambda parts: run(lambda c, ps: cell(c, *ps), parts))
    print("1. LSTM cell, elementwise, per step (batch 64, 64 units)")
    print(f"   gates as slices of one buffer: {best_of(one, z) / steps * 1e6:7.1f} us")
    print(f"   gates in four buffers:         {best_of(four, parts) / steps * 1e6:7.1f} us")


def conv_in_loop() -> None:
    key = jax.random.key(0)
    x = jax.random.normal(key, (128, 13, 13, 32))
    w = jax.random.normal(key, (3, 3, 32, 64)) * 0.1
    dy = jax.random.normal(key, (128, 11, 11, 64))
    numbers = ("NHWC", "HWIO", "NHWC")

    def lax_conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=numbers)

    def patch_conv(x, w):
        p = patches(x, (3, 3), (1, 1), (1, 1), "valid")
        return p.reshape(*p.shape[:-2], -1) @ w.reshape(-1, w.shape[-1])

    def flipped_conv(dy, w):   # the input gradient as nnrun computes it now
        wf = jnp.swapaxes(w[::-1, ::-1], -1, -2)
        return jax.lax.conv_general_dilated(dy, wf, (1, 1), ((2, 2), (2, 2)),
                                            dimension_numbers=numbers)

    cases = {
        "forward, XLA convolution": (lax_conv, (x, w)),
        "forward, patches @ kernel": (patch_conv, (x, w)),
        "input gradient, XLA convolution (flipped kernel)": (flipped_conv, (dy, w)),
        "input gradient, autodiff of patches @ kernel":
            (lambda dy, w: jax.vjp(lambda v: patch_conv(v, w), x)[1](dy)[0], (dy, w)),
        "kernel gradient, autodiff of XLA convolution":
            (lambda x, dy: jax.vjp(lambda v: lax_conv(x, v), w)[1](dy)[0], (x, dy)),
        "kernel gradient, patches^T @ dy":
            (lambda x, dy: jax.vjp(lambda v: correlate(x, v, (1, 1), (1, 1), "valid"),
                                   w)[1](dy)[0], (x, dy)),
    }
    print("2. Conv2D 64 (128 x 13x13x32 -> 11x11x64) inside a 10-step fori_loop, per step")
    for name, (fn, args) in cases.items():
        def loop(a, b, fn=fn):
            def body(i, acc):
                return acc + fn(a + i.astype(a.dtype) * 1e-9, b).sum()
            return jax.lax.fori_loop(0, 10, body, 0.0)
        print(f"   {name:50s} {best_of(jax.jit(loop), *args, n=3) / 10 * 1e3:8.2f} ms")


def rank_min_first_max(t, axes):
    """The formulation used before: each cell's row-major rank, min over the hits."""
    @jax.custom_vjp
    def f(t):
        return jnp.max(t, axis=axes)

    def fwd(t):
        y = jnp.max(t, axis=axes)
        return y, (t, y)

    def bwd(res, g):
        t, y = res
        rank = jnp.zeros((), jnp.int32)
        for a in axes:
            shape = [1] * t.ndim
            shape[a] = t.shape[a]
            rank = rank * t.shape[a] + jnp.arange(t.shape[a], dtype=jnp.int32).reshape(shape)
        hit = t == jnp.expand_dims(y, axes)
        first = jnp.min(jnp.where(hit, rank, jnp.iinfo(jnp.int32).max), axis=axes,
                        keepdims=True)
        return (jnp.where(rank == first, jnp.expand_dims(g, axes), 0.0),)

    f.defvjp(fwd, bwd)
    return f(t)


def pooling_gradient() -> None:
    print("3. 2x2 max pooling, gradient to the first maximum (input after a ReLU, ties)")
    for shape in ((128, 26, 26, 32), (128, 11, 11, 64)):
        key = jax.random.key(0)
        x = jnp.round(jax.nn.relu(jax.random.normal(key, shape)) * 4) / 4
        n1, n2 = shape[1] // 2, shape[2] // 2
        g = jax.random.normal(key, (shape[0], n1, n2, shape[3]))

        def tiles(x, n1=n1, n2=n2):
            return x[:, :2 * n1, :2 * n2].reshape(x.shape[0], n1, 2, n2, 2, x.shape[-1])

        for name, pool in (("rank min-reduction (before)", rank_min_first_max),
                           ("cells in order (first_max)", first_max)):
            fn = jax.jit(lambda x, g, pool=pool, tiles=tiles:
                         jax.vjp(lambda v: pool(tiles(v), (2, 4)), x)[1](g)[0])
            print(f"   {str(shape):18s} {name:28s} {best_of(fn, x, g, n=10) * 1e3:7.3f} ms")


if __name__ == "__main__":
    lstm_cell_slices()
    conv_in_loop()
    pooling_gradient()
