"""The LSTM recurrence (gates i, f, c, o; tanh / sigmoid) with a hand-written gradient.

Numerically the same cell as `LSTM.cell` (c = f*c + i*g, h = o*tanh(c), Keras's
formulas); what differs is how XLA's CPU backend is given the work, measured on the
issue-3 benchmark (benchmarks/README.md):

- every gate lives in its own buffer: one product h @ U_k per gate and the projected
  inputs split per gate before the loop. An XLA CPU loop fusion that reads several
  column slices of one (batch, 4*units) buffer and applies tanh/sigmoid to them ran
  about 7x slower than the same fusion over separate buffers (157 vs 21 us per step
  for the cell's elementwise part, batch 64, 64 units);
- the backward pass is one `lax.scan` whose step is one product (dz @ U^T) and a few
  fusions; the kernel's and the recurrent kernel's gradients are one product over all
  steps after the loop ([x, h_{t-1}]^T dz), instead of one accumulation per step.

Used by `LSTM` when nothing needs the general path: default activations, no step
mask, no recurrent dropout, no unroll (nnrun/layers/recurrent.py decides).
"""

from __future__ import annotations

import functools

from nnrun.nn.lazy import jax, jnp


def _split4(a, axis=-1):
    u = a.shape[axis] // 4
    return tuple(jax.lax.slice_in_dim(a, k * u, (k + 1) * u, axis=axis) for k in range(4))


def lstm_scan(sequences: bool, x, kernel, bias, recurrent_kernel, h0, c0):
    """The layer's work from its time-major input x (steps, batch, features): z = x @
    kernel + bias, then the recurrence.

    -> (every h (steps, batch, units) if `sequences` else None, last h, last c)."""
    return _lstm()(sequences, x, kernel, bias, recurrent_kernel, h0, c0)


@functools.cache
def _lstm():
    """The custom-gradient function, built on first use (importing this module must not
    import jax: `nnrun check` stays jax-free)."""
    @functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
    def run(sequences, x, kernel, bias, uk, h0, c0):
        return _forward(sequences, x, kernel, bias, uk, h0, c0)[0]

    run.defvjp(_forward, _backward)
    return run


def _forward(sequences, x, kernel, bias, uk, h0, c0):
    z = jnp.einsum("tbf,fg->tbg", x, kernel) + bias
    kernels = _split4(uk)

    def step(carry, zt):
        h, c = carry
        i, f, g, o = (act(zk + h @ uk_k) for act, zk, uk_k in
                      zip((jax.nn.sigmoid, jax.nn.sigmoid, jnp.tanh, jax.nn.sigmoid),
                          zt, kernels))
        c = f * c + i * g
        h = o * jnp.tanh(c)
        return (h, c), (i, f, g, o, c) + ((h,) if sequences else ())

    (h, c), saved = jax.lax.scan(step, (h0, c0), _split4(z))
    hs = saved[5] if sequences else None
    # h is not kept per step unless it is the output: one write less per step
    return (hs, h, c), (x, kernel, bias, uk, *saved[:5], hs, h0, c0)


def _backward(sequences, residuals, cotangents):
    x, kernel, bias, uk, i_s, f_s, g_s, o_s, cs, hs, h0, c0 = residuals
    d_hs, dh, dc = cotangents
    c_prev = jnp.concatenate([c0[None], cs[:-1]], 0)
    uk_t = uk.T

    def step(carry, xs):
        dh, dc = carry
        i, f, g, o, c, cp = xs[:6]
        if sequences:
            dh = dh + xs[6]
        tc = jnp.tanh(c)
        dc = dc + dh * o * (1 - tc * tc)
        dz = jnp.concatenate([dc * g * i * (1 - i), dc * cp * f * (1 - f),
                              dc * i * (1 - g * g), dh * tc * o * (1 - o)], -1)
        return (dz @ uk_t, dc * f), dz

    xs = (i_s, f_s, g_s, o_s, cs, c_prev) + ((d_hs,) if sequences else ())
    (dh0, dc0), dz = jax.lax.scan(step, (dh.astype(h0.dtype), dc.astype(c0.dtype)), xs,
                                  reverse=True)
    if hs is None:
        hs = o_s * jnp.tanh(cs)
    h_prev = jnp.concatenate([h0[None], hs[:-1]], 0)
    features, units, width = x.shape[-1], h0.shape[-1], dz.shape[-1]
    flat_dz = dz.reshape(-1, width)
    # both kernels' gradients as one product over every step and row
    both = jnp.concatenate([x.reshape(-1, features), h_prev.reshape(-1, units)], -1).T @ flat_dz
    dx = jnp.einsum("tbg,fg->tbf", dz, kernel)      # dropped by XLA when x is the data
    return (dx.astype(x.dtype), both[:features].astype(kernel.dtype),
            flat_dz.sum(0).astype(bias.dtype), both[features:].astype(uk.dtype), dh0, dc0)
