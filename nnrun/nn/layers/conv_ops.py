"""The numerical kernels of convolution and pooling, channels last (Keras 3 semantics;
kernels HWIO as Keras): window geometry, patches, the convolution as patches + one
matrix product with its hand-written gradient, depthwise products, and the max over a
window's cells whose gradient goes to the first maximum.

Why the custom gradients (measured on the CPU, inside the whole-epoch `lax.scan`;
benchmarks/README.md, issue 3): XLA's convolution gradient with respect to the kernel
runs ~50x slower there than a patches product, while its gradient with respect to the
input is faster than the patches' (pad + add); a masked reduction over a window axis
was ~5x slower than comparing the window's cells one after the other.
"""

from __future__ import annotations

import functools
import itertools
import math

from nnrun.config.errors import ConfigError
from nnrun.nn.lazy import jax, jnp


def out_size(size: int, k: int, stride: int, dilation: int, padding: str) -> int:
    if padding in ("same", "causal"):
        return math.ceil(size / stride)
    return (size - (k - 1) * dilation - 1) // stride + 1


def _pads(size: int, k: int, stride: int, dilation: int, padding: str) -> tuple[int, int]:
    """Keras/TF padding: 'same' puts the odd cell after; 'causal' pads before only."""
    if padding == "valid":
        return (0, 0)
    total = max((out_size(size, k, stride, dilation, "same") - 1) * stride
                + (k - 1) * dilation + 1 - size, 0)
    if padding == "causal":
        return ((k - 1) * dilation, 0)
    return (total // 2, total - total // 2)


def window_slices(x: jax.Array, window, strides, dilation, padding: str,
                  pad_value: float = 0.0) -> tuple[list[jax.Array], tuple[int, ...]]:
    """The strided slices of x (N, *spatial, C), one per window offset (row-major)."""
    spatial = x.shape[1:-1]
    pads = [_pads(s, k, st, d, padding) for s, k, st, d in zip(spatial, window, strides, dilation)]
    out = tuple(out_size(s, k, st, d, padding) for s, k, st, d in
                zip(spatial, window, strides, dilation))
    if any(n <= 0 for n in out):
        raise ConfigError(f"the window {tuple(window)} does not fit the input {tuple(spatial)}")
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=pad_value)
    slices = []
    for offsets in itertools.product(*(range(k) for k in window)):
        index = [slice(None)]
        for o, d, n, st in zip(offsets, dilation, out, strides):
            index.append(slice(o * d, o * d + (n - 1) * st + 1, st))
        slices.append(x[tuple(index + [slice(None)])])
    return slices, out


def patches(x: jax.Array, window, strides, dilation, padding: str) -> jax.Array:
    """(N, *out, K, C): every window's cells, K = prod(window) in row-major order."""
    slices, _ = window_slices(x, window, strides, dilation, padding)
    return jnp.stack(slices, axis=-2)


def correlate(x: jax.Array, kernel: jax.Array, strides, dilation, padding: str) -> jax.Array:
    """Keras's conv: x (N, *spatial, C) with kernel (*window, C, F), as one matrix product
    of the input's patches with the kernel.

    Its gradient (a `jax.custom_vjp`) takes the kernel's part from the same patches (one
    product) and the input's part from XLA's own convolution (`lax.conv_general_dilated`'s
    transpose). Measured inside the epoch's compiled loop on the CPU (issue 3's CNN,
    benchmarks/README.md): XLA's convolution is the faster way to the input gradient
    (6.5 vs 8.5 ms for Conv2D 64's) and by far the slower to the kernel gradient
    (574 vs 11 ms), so each part takes the faster road."""
    geometry = (tuple(strides), tuple(dilation), padding, tuple(x.shape[1:-1]), x.dtype)
    return _correlate_vjp()(x, kernel, geometry)


def _flat_patches(x, window, strides, dilation, padding):
    p = patches(x, window, strides, dilation, padding)
    return p.reshape(*p.shape[:-2], -1)                     # (K, C) row-major as HWIO


@functools.cache
def _correlate_vjp():
    """`correlate` as a `jax.custom_vjp` function, made on first use (importing this
    module must not import jax)."""
    fn = jax.custom_vjp(_correlate_value, nondiff_argnums=(2,))
    fn.defvjp(_correlate_fwd, _correlate_bwd)
    return fn


def _correlate_value(x, kernel, geometry):
    return _correlate_fwd(x, kernel, geometry)[0]


def _correlate_fwd(x, kernel, geometry):
    strides, dilation, padding, _, _ = geometry
    flat = _flat_patches(x, kernel.shape[:-2], strides, dilation, padding)
    return flat @ kernel.reshape(-1, kernel.shape[-1]), (flat, kernel)


def _correlate_bwd(geometry, res, dy):
    strides, dilation, padding, spatial, x_dtype = geometry
    flat, kernel = res
    window = kernel.shape[:-2]
    d_kernel = (flat.reshape(-1, flat.shape[-1]).T @ dy.reshape(-1, dy.shape[-1]))
    # the input's gradient: dy (dilated by the strides) correlated with the kernel
    # flipped and its in/out channels swapped, padded to give back the input's size
    pad_pairs, crop = [], []
    for n, k, st, d, m in zip(spatial, window, strides, dilation, dy.shape[1:-1]):
        lo, _ = _pads(n, k, st, d, padding)
        reach = (k - 1) * d
        before = reach - lo
        after = n - (m - 1) * st - 1 - before + reach
        pad_pairs.append((before, max(after, 0)))
        crop.append(slice(0, n))
    spec = "DHW"[-len(window):]
    flipped = jnp.swapaxes(kernel[(slice(None, None, -1),) * len(window)], -1, -2)
    dx = jax.lax.conv_general_dilated(dy, flipped, (1,) * len(window), pad_pairs,
                                      lhs_dilation=strides, rhs_dilation=dilation,
                                      dimension_numbers=(f"N{spec}C", f"{spec}IO", f"N{spec}C"))
    dx = dx[(slice(None), *crop, slice(None))]
    return dx.astype(x_dtype), d_kernel.reshape(kernel.shape).astype(kernel.dtype)


def depthwise(x: jax.Array, kernel: jax.Array, strides, dilation, padding: str) -> jax.Array:
    """Each channel c with its own filters: kernel (*window, C, M) -> (N, *out, C * M),
    output channel c * M + m as Keras (TF)."""
    p = patches(x, kernel.shape[:-2], strides, dilation, padding)      # (N, *out, K, C)
    k = kernel.reshape(-1, *kernel.shape[-2:])                          # (K, C, M)
    y = jnp.einsum("...kc,kcm->...cm", p, k)
    return y.reshape(*y.shape[:-2], -1)


def transpose_pads(k: int, stride: int, dilation: int, padding: str,
                   output_padding: int | None) -> tuple[int, int]:
    """Keras 3's padding of the stride-dilated input of a transposed convolution."""
    k = (k - 1) * dilation + 1
    if padding == "valid":
        extra = max(k, stride) - k if output_padding is None else output_padding
        return k - 1, k - 1 + extra
    total = stride + k - 2 if output_padding is None else k + k % 2 - 2 + output_padding
    left = min(total // 2 + total % 2, k - 1)
    return left, total - left


def first_max(t: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """max over `axes`, whose gradient goes to the first maximum (row-major over `axes`)
    alone, as XLA's max pooling (Keras's `lax.reduce_window`) routes it; `jnp.max`'s own
    gradient would split it among ties.

    The value is a plain reduction over `axes`: XLA materializes it once. Written as an
    elementwise max of the window's cells, XLA fused that max into each of its
    consumers, and a following convolution's 9 patch slices each recomputed the pooling
    from the 4x larger input (issue 3's CNN: 3,570 vs 4,044 samples/s, benchmarks/
    README.md). The gradient compares the window's cells one after the other: on XLA's
    CPU backend, for a 2x2 max pooling of (128, 26, 26, 32), about a quarter of the time
    of the masked min-reduction of each cell's rank used before."""
    return _first_max_vjp()(t, tuple(axes))


@functools.cache
def _first_max_vjp():
    """`first_max` as a `jax.custom_vjp` function, made on first use (not at import:
    the shape check imports this module without jax)."""
    fn = jax.custom_vjp(_first_max_value, nondiff_argnums=(1,))
    fn.defvjp(_first_max_fwd, _first_max_bwd)
    return fn


def _cells(t, axes):
    """t's slices at every offset of `axes`, row-major (the window's cells)."""
    cells = []
    for offsets in itertools.product(*(range(t.shape[a]) for a in axes)):
        index = [slice(None)] * t.ndim
        for a, o in zip(axes, offsets):
            index[a] = o
        cells.append(t[tuple(index)])
    return cells


def _first_max_value(t, axes):
    return jnp.max(t, axis=axes)


def _first_max_fwd(t, axes):
    y = _first_max_value(t, axes)
    return y, (t, y)


def _first_max_bwd(axes, res, g):
    t, y = res
    zero = jnp.zeros((), g.dtype)
    taken, grads = None, []
    for cell in _cells(t, axes):     # the first cell equal to the max takes the gradient
        hit = cell == y if taken is None else (cell == y) & ~taken
        grads.append(jnp.where(hit, g, zero))
        taken = hit if taken is None else taken | hit
    # (window offsets..., other axes...) back to t's axis order
    stacked = jnp.stack(grads).reshape(*(t.shape[a] for a in axes), *g.shape)
    order = list(axes) + [d for d in range(t.ndim) if d not in axes]
    return (jnp.transpose(stacked, [order.index(d) for d in range(t.ndim)]),)
