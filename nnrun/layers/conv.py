"""Convolution and pooling (channels last, Keras 3 semantics; kernels HWIO as Keras).

A convolution is computed as patches + one matrix product: the patches are strided
slices of the (padded) input, so the gradient is slicing's (pad + add). On the CPU
XLA's convolution gradient inside the whole-epoch `lax.scan` ran ~15x slower than
outside it; this form does not have that trap. Pooling likewise takes the max or
mean over stacked window slices.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any

from nnrun import activations, initializers
from nnrun.errors import ConfigError
from nnrun.initializers import weight_shape
from nnrun.layers import LAYER_TYPES, Layer, require_rank
from nnrun.lazy import jax, jnp

SPATIAL = {1: "(batch, steps, channels)", 2: "(batch, rows, cols, channels)",
           3: "(batch, dim1, dim2, dim3, channels)"}


def _out_size(size: int, k: int, stride: int, dilation: int, padding: str) -> int:
    if padding in ("same", "causal"):
        return math.ceil(size / stride)
    return (size - (k - 1) * dilation - 1) // stride + 1


def _pads(size: int, k: int, stride: int, dilation: int, padding: str) -> tuple[int, int]:
    """Keras/TF padding: 'same' puts the odd cell after; 'causal' pads before only."""
    if padding == "valid":
        return (0, 0)
    total = max((_out_size(size, k, stride, dilation, "same") - 1) * stride
                + (k - 1) * dilation + 1 - size, 0)
    if padding == "causal":
        return ((k - 1) * dilation, 0)
    return (total // 2, total - total // 2)


def window_slices(x: jax.Array, window, strides, dilation, padding: str,
                  pad_value: float = 0.0) -> tuple[list[jax.Array], tuple[int, ...]]:
    """The strided slices of x (N, *spatial, C), one per window offset (row-major)."""
    spatial = x.shape[1:-1]
    pads = [_pads(s, k, st, d, padding) for s, k, st, d in zip(spatial, window, strides, dilation)]
    out = tuple(_out_size(s, k, st, d, padding) for s, k, st, d in
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


class _ConvBase(Layer):
    """Geometry, bias and activation shared by the convolutions."""

    rank = 2

    def __init__(self, name, **args):
        super().__init__(name, **args)
        self.activation = self.resolve("activation", activations.get)
        self.bias_init = self.resolve("bias_initializer", initializers.get, "zeros")
        if args.get("padding") == "causal" and self.rank != 1:
            raise ConfigError("padding 'causal' is for Conv1D only", where="padding")
        if any(d > 1 for d in args["dilation_rate"]) and any(s > 1 for s in args["strides"]):
            raise ConfigError("strides > 1 and dilation_rate > 1 cannot be combined (as in Keras)",
                              where="dilation_rate")

    def _geometry(self, input_shape):
        require_rank(input_shape, SPATIAL[self.rank])
        a = self.args
        return a["kernel_size"], a["strides"], a["dilation_rate"], a.get("padding", "valid")

    def out_channels(self, channels: int) -> int:
        return self.args["filters"]

    def spatial_out(self, input_shape) -> tuple[int, ...]:
        k, st, d, padding = self._geometry(input_shape)
        return tuple(_out_size(s, kk, ss, dd, padding) for s, kk, ss, dd in
                     zip(input_shape[:-1], k, st, d))

    def output_shape(self, input_shape):
        out = self.spatial_out(input_shape)
        if any(n <= 0 for n in out):
            raise ConfigError(f"kernel {tuple(self.args['kernel_size'])} does not fit the input "
                              f"{tuple(input_shape[:-1])} with padding "
                              f"{self.args.get('padding', 'valid')!r}")
        return (*out, self.out_channels(input_shape[-1]))

    def kernels(self, channels: int) -> dict[str, tuple[tuple[int, ...], Any]]:
        """The kernels for `channels` input channels: name -> (shape, initializer)."""
        raise NotImplementedError

    def param_shapes(self, input_shape):
        params = {name: weight_shape(init, shape)
                  for name, (shape, init) in self.kernels(input_shape[-1]).items()}
        if self.args.get("use_bias", True):
            params["bias"] = weight_shape(self.bias_init,
                                          (self.out_channels(input_shape[-1]),))
        return params, {}

    def init(self, key, input_shape):
        out = self.output_shape(input_shape)
        k1, k2 = jax.random.split(key)
        kernels = self.kernels(input_shape[-1])
        keys = [k1] if len(kernels) == 1 else jax.random.split(k1, len(kernels))
        params = {name: init(k, shape, jnp.float32)
                  for k, (name, (shape, init)) in zip(keys, kernels.items())}
        if self.args.get("use_bias", True):
            params["bias"] = self.bias_init(k2, (out[-1],), jnp.float32)
        return params, {}, out

    def compute(self, params, x) -> jax.Array:
        raise NotImplementedError

    def apply(self, params, state, x, *, training, key):
        y = self.compute(params, x)
        if "bias" in params:
            y = y + params["bias"]
        return self.activation(y), state


class _Conv(_ConvBase):
    def kernels(self, channels):
        init = self.resolve("kernel_initializer", initializers.get, "glorot_uniform")
        return {"kernel": ((*self.args["kernel_size"], channels, self.args["filters"]), init)}

    def compute(self, params, x):
        k, st, d, padding = self._geometry(x.shape[1:])
        return correlate(x, params["kernel"], st, d, padding)


class _ConvTranspose(_ConvBase):
    """The input dilated by `strides` and padded as Keras 3, then a stride-1 correlation
    with the kernel flipped (kernel (*window, filters, in) as Keras)."""

    def _pads(self, input_shape):
        k, st, d, padding = self._geometry(input_shape)
        op = self.args.get("output_padding") or (None,) * self.rank
        return [transpose_pads(kk, ss, dd, padding, o) for kk, ss, dd, o in zip(k, st, d, op)]

    def spatial_out(self, input_shape):
        k, st, d, _ = self._geometry(input_shape)
        return tuple((n - 1) * ss + lo + hi - (kk - 1) * dd + 1 for n, kk, ss, dd, (lo, hi) in
                     zip(input_shape[:-1], k, st, d, self._pads(input_shape)))

    def kernels(self, channels):
        init = self.resolve("kernel_initializer", initializers.get, "glorot_uniform")
        return {"kernel": ((*self.args["kernel_size"], self.args["filters"], channels), init)}

    def compute(self, params, x):
        _, st, d, _ = self._geometry(x.shape[1:])
        config = [(0, 0, 0), *((lo, hi, s - 1) for (lo, hi), s in
                               zip(self._pads(x.shape[1:]), st)), (0, 0, 0)]
        dilated = jax.lax.pad(x, jnp.zeros((), x.dtype), config)
        kernel = params["kernel"][(slice(None, None, -1),) * self.rank]
        return correlate(dilated, jnp.swapaxes(kernel, -1, -2), (1,) * self.rank, d, "valid")


class _DepthwiseConv(_ConvBase):
    param_of = {"depthwise": "kernel"}   # Keras names its depthwise kernel `kernel`
    def out_channels(self, channels):
        return channels * self.args["depth_multiplier"]

    def kernels(self, channels):
        init = self.resolve("depthwise_initializer", initializers.get, "glorot_uniform")
        shape = (*self.args["kernel_size"], channels, self.args["depth_multiplier"])
        return {"kernel": (shape, init)}

    def compute(self, params, x):
        _, st, d, padding = self._geometry(x.shape[1:])
        return depthwise(x, params["kernel"], st, d, padding)


class _SeparableConv(_ConvBase):
    param_of = {"depthwise": "depthwise_kernel", "pointwise": "pointwise_kernel"}

    def kernels(self, channels):
        m, f = self.args["depth_multiplier"], self.args["filters"]
        dinit = self.resolve("depthwise_initializer", initializers.get, "glorot_uniform")
        pinit = self.resolve("pointwise_initializer", initializers.get, "glorot_uniform")
        return {"depthwise_kernel": ((*self.args["kernel_size"], channels, m), dinit),
                "pointwise_kernel": ((*(1,) * self.rank, channels * m, f), pinit)}

    def compute(self, params, x):
        _, st, d, padding = self._geometry(x.shape[1:])
        y = depthwise(x, params["depthwise_kernel"], st, d, padding)
        pointwise = params["pointwise_kernel"]
        return y @ pointwise.reshape(-1, pointwise.shape[-1])


for _rank in (1, 2, 3):
    LAYER_TYPES.add(f"Conv{_rank}D", type(f"Conv{_rank}D", (_Conv,), {"rank": _rank}))
    LAYER_TYPES.add(f"Conv{_rank}DTranspose",
                    type(f"Conv{_rank}DTranspose", (_ConvTranspose,), {"rank": _rank}))
for _rank in (1, 2):
    LAYER_TYPES.add(f"DepthwiseConv{_rank}D",
                    type(f"DepthwiseConv{_rank}D", (_DepthwiseConv,), {"rank": _rank}))
    LAYER_TYPES.add(f"SeparableConv{_rank}D",
                    type(f"SeparableConv{_rank}D", (_SeparableConv,), {"rank": _rank}))


def first_max(t: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """max over `axes`, whose gradient goes to the first maximum (row-major over `axes`)
    alone, as XLA's max pooling (Keras's `lax.reduce_window`) routes it; `jnp.max`
    would split it among ties.

    Computed over the window's cells (one slice of `t` per window offset) elementwise,
    not as a reduction over the window axes: on XLA's CPU backend the gradient of a 2x2
    max pooling of (128, 26, 26, 32) took about a quarter of the time of the masked
    min-reduction of each cell's rank used before (benchmarks/README.md, issue 3)."""
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
    return functools.reduce(jnp.maximum, _cells(t, axes))


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


class _Pool(Layer):
    rank = 2
    kind = "max"

    def _geometry(self, input_shape):
        require_rank(input_shape, SPATIAL[self.rank])
        size = self.args["pool_size"]
        strides = self.args.get("strides") or size
        return size, strides, self.args.get("padding", "valid")

    def output_shape(self, input_shape):
        size, strides, padding = self._geometry(input_shape)
        out = tuple(_out_size(s, k, st, 1, padding) for s, k, st in
                    zip(input_shape[:-1], size, strides))
        if any(n <= 0 for n in out):
            raise ConfigError(f"pool_size {tuple(size)} does not fit the input "
                              f"{tuple(input_shape[:-1])}")
        return (*out, input_shape[-1])

    def apply(self, params, state, x, *, training, key):
        size, strides, padding = self._geometry(x.shape[1:])
        if padding == "valid" and tuple(strides) == tuple(size):
            return self._tiled(x, size), state
        ones = (1,) * self.rank
        if self.kind == "max":
            slices, _ = window_slices(x, size, strides, ones, padding, pad_value=-jnp.inf)
            return first_max(jnp.stack(slices), (0,)), state
        slices, _ = window_slices(x, size, strides, ones, padding)
        total = jnp.sum(jnp.stack(slices), axis=0)
        if padding == "valid":
            return total / math.prod(size), state
        # 'same': the mean over the cells inside the input only, as Keras.
        counts, _ = window_slices(jnp.ones((1, *x.shape[1:-1], 1), x.dtype), size, strides,
                                  ones, padding)
        return total / jnp.sum(jnp.stack(counts), axis=0), state


    def _tiled(self, x, size):
        """Non-overlapping windows: crop to whole tiles, reshape, reduce (cheap gradient)."""
        out = [s // k for s, k in zip(x.shape[1:-1], size)]
        x = x[(slice(None), *(slice(0, n * k) for n, k in zip(out, size)), slice(None))]
        shape = [x.shape[0]]
        for n, k in zip(out, size):
            shape += [n, k]
        tiles = x.reshape(*shape, x.shape[-1])
        axes = tuple(2 + 2 * i for i in range(self.rank))
        return first_max(tiles, axes) if self.kind == "max" else jnp.mean(tiles, axis=axes)


for _rank in (1, 2):
    for _kind, _prefix in (("max", "Max"), ("avg", "Average")):
        LAYER_TYPES.add(f"{_prefix}Pooling{_rank}D",
                        type(f"{_prefix}Pooling{_rank}D", (_Pool,), {"rank": _rank, "kind": _kind}))


class _GlobalPool(Layer):
    rank = 2
    kind = "max"

    @property
    def uses_step_mask(self) -> bool:   # Keras 3: GlobalAveragePooling1D averages the
        return self.rank == 1 and self.kind == "avg"   # unmasked steps only

    def output_shape(self, input_shape):
        require_rank(input_shape, SPATIAL[self.rank])
        if self.args.get("keepdims"):
            return (*([1] * self.rank), input_shape[-1])
        return (input_shape[-1],)

    def apply(self, params, state, x, *, training, key, step_mask=None):
        axes = tuple(range(1, x.ndim - 1))
        keepdims = bool(self.args.get("keepdims"))
        if step_mask is not None:
            w = step_mask.astype(x.dtype)[..., None]
            total = jnp.sum(x * w, axis=1, keepdims=keepdims)
            return total / jnp.sum(w, axis=1, keepdims=keepdims), state
        fn = jnp.max if self.kind == "max" else jnp.mean
        return fn(x, axis=axes, keepdims=keepdims), state


for _rank in (1, 2):
    for _kind, _prefix in (("max", "GlobalMax"), ("avg", "GlobalAverage")):
        LAYER_TYPES.add(f"{_prefix}Pooling{_rank}D",
                        type(f"{_prefix}Pooling{_rank}D", (_GlobalPool,),
                             {"rank": _rank, "kind": _kind}))
