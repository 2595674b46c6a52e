"""Convolution and pooling (channels last, Keras 3 semantics; kernels HWIO as Keras).

A convolution is computed as patches + one matrix product: the patches are strided
slices of the (padded) input, so the gradient is slicing's (pad + add). On the CPU
XLA's convolution gradient inside the whole-epoch `lax.scan` ran ~15x slower than
outside it; this form does not have that trap. Pooling likewise takes the max or
mean over stacked window slices.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp

from nnrun import activations, initializers
from nnrun.errors import ConfigError
from nnrun.layers import LAYER_TYPES, Layer, require_rank

SPATIAL = {1: "(batch, steps, channels)", 2: "(batch, rows, cols, channels)"}


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


class _Conv(Layer):
    rank = 2

    def __init__(self, name, **args):
        super().__init__(name, **args)
        self.activation = self.resolve("activation", activations.get)
        self.kernel_init = self.resolve("kernel_initializer", initializers.get, "glorot_uniform")
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

    def output_shape(self, input_shape):
        k, st, d, padding = self._geometry(input_shape)
        out = tuple(_out_size(s, kk, ss, dd, padding) for s, kk, ss, dd in
                    zip(input_shape[:-1], k, st, d))
        if any(n <= 0 for n in out):
            raise ConfigError(f"kernel {tuple(k)} does not fit the input "
                              f"{tuple(input_shape[:-1])} with padding {padding!r}")
        return (*out, self.args["filters"])

    def init(self, key, input_shape):
        out = self.output_shape(input_shape)
        k1, k2 = jax.random.split(key)
        shape = (*self.args["kernel_size"], input_shape[-1], self.args["filters"])
        params = {"kernel": self.kernel_init(k1, shape, jnp.float32)}
        if self.args.get("use_bias", True):
            params["bias"] = self.bias_init(k2, (self.args["filters"],), jnp.float32)
        return params, {}, out

    def apply(self, params, state, x, *, training, key):
        k, st, d, padding = self._geometry(x.shape[1:])
        slices, out = window_slices(x, k, st, d, padding)
        patches = jnp.stack(slices, axis=-2)                       # (N, *out, K, C)
        kernel = params["kernel"]
        flat = patches.reshape(x.shape[0], *out, -1)              # (K, C) row-major as HWIO
        y = flat @ kernel.reshape(-1, kernel.shape[-1])
        if "bias" in params:
            y = y + params["bias"]
        return self.activation(y), state


@LAYER_TYPES.register("Conv1D")
class Conv1D(_Conv):
    rank = 1


@LAYER_TYPES.register("Conv2D")
class Conv2D(_Conv):
    rank = 2


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
            return jnp.max(jnp.stack(slices), axis=0), state
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
        return jnp.max(tiles, axis=axes) if self.kind == "max" else jnp.mean(tiles, axis=axes)


for _rank in (1, 2):
    for _kind, _prefix in (("max", "Max"), ("avg", "Average")):
        LAYER_TYPES.add(f"{_prefix}Pooling{_rank}D",
                        type(f"{_prefix}Pooling{_rank}D", (_Pool,), {"rank": _rank, "kind": _kind}))


class _GlobalPool(Layer):
    rank = 2
    kind = "max"

    def output_shape(self, input_shape):
        require_rank(input_shape, SPATIAL[self.rank])
        if self.args.get("keepdims"):
            return (*([1] * self.rank), input_shape[-1])
        return (input_shape[-1],)

    def apply(self, params, state, x, *, training, key):
        axes = tuple(range(1, x.ndim - 1))
        fn = jnp.max if self.kind == "max" else jnp.mean
        return fn(x, axis=axes, keepdims=bool(self.args.get("keepdims"))), state


for _rank in (1, 2):
    for _kind, _prefix in (("max", "GlobalMax"), ("avg", "GlobalAverage")):
        LAYER_TYPES.add(f"{_prefix}Pooling{_rank}D",
                        type(f"{_prefix}Pooling{_rank}D", (_GlobalPool,),
                             {"rank": _rank, "kind": _kind}))
