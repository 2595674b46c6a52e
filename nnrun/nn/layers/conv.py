"""Convolution and pooling layers (channels last, Keras 3 semantics; kernels HWIO as
Keras). The numerical work — patches, the convolution product and its gradient, the
pooling max and its gradient — is in nnrun/layers/conv_ops.py.
"""

from __future__ import annotations

import math
from typing import Any

from nnrun.config.errors import ConfigError
from nnrun.nn import activations, initializers
from nnrun.nn.initializers import weight_shape
from nnrun.nn.layers.base import LAYER_TYPES, Layer, require_rank
from nnrun.nn.layers.conv_ops import (
    correlate,
    depthwise,
    first_max,
    out_size,
    transpose_pads,
    window_slices,
)
from nnrun.nn.lazy import jax, jnp

SPATIAL = {1: "(batch, steps, channels)", 2: "(batch, rows, cols, channels)",
           3: "(batch, dim1, dim2, dim3, channels)"}


class _ConvBase(Layer):
    """Geometry, bias and activation shared by the convolutions."""

    rank = 2

    def __init__(self, name, **args):
        super().__init__(name, **args)
        self.activation = self.resolve("activation", activations.get)
        self.bias_init = self.resolve("bias_initializer", initializers.get, "zeros")
        if args.get("padding") == "causal" and self.rank != 1:
            raise ConfigError("padding 'causal' is for Conv1D only", where="padding")

    def _no_strided_dilation(self):
        """Keras 3's convolutions and transposed convolutions (not the depthwise and
        separable ones, which compute both) refuse strides > 1 with dilation_rate > 1."""
        strides, dilation = self.args["strides"], self.args["dilation_rate"]
        if max(strides) > 1 and max(dilation) > 1:
            raise ConfigError(f"strides > 1 is not supported with dilation_rate > 1, as in "
                              f"Keras 3 (strides {list(strides)}, dilation_rate "
                              f"{list(dilation)})", where="dilation_rate")

    def _geometry(self, input_shape):
        require_rank(input_shape, SPATIAL[self.rank])
        a = self.args
        return a["kernel_size"], a["strides"], a["dilation_rate"], a.get("padding", "valid")

    def out_channels(self, channels: int) -> int:
        return self.args["filters"]

    def spatial_out(self, input_shape) -> tuple[int, ...]:
        k, st, d, padding = self._geometry(input_shape)
        return tuple(out_size(s, kk, ss, dd, padding) for s, kk, ss, dd in
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
        return self.epilogue(params, self.compute(params, x)), state

    def epilogue(self, params, y) -> jax.Array:
        """The bias and the activation, after the convolution proper (`compute`)."""
        if "bias" in params:
            y = y + params["bias"]
        return self.activation(y)

    @property
    def epilogue_commutes_with_max(self) -> bool:
        """Whether max pooling may come before `epilogue` with the same values: adding a
        bias and relu are monotone, and floating-point rounding keeps them so, so the max of
        the results is the result of the max, bit for bit. The model then pools the
        convolution's output before its bias and activation (model.py, `_deferred`)."""
        return self.activation in (activations.relu, activations.linear)


class _Conv(_ConvBase):
    def __init__(self, name, **args):
        super().__init__(name, **args)
        self._no_strided_dilation()

    def kernels(self, channels):
        init = self.resolve("kernel_initializer", initializers.get, "glorot_uniform")
        return {"kernel": ((*self.args["kernel_size"], channels, self.args["filters"]), init)}

    def compute(self, params, x):
        k, st, d, padding = self._geometry(x.shape[1:])
        return correlate(x, params["kernel"], st, d, padding)


class _ConvTranspose(_ConvBase):
    """The input dilated by `strides` and padded as Keras 3, then a stride-1 correlation
    with the kernel flipped (kernel (*window, filters, in) as Keras)."""

    def __init__(self, name, **args):
        super().__init__(name, **args)
        self._no_strided_dilation()
        for axis, (op, st) in enumerate(zip(args.get("output_padding") or (), args["strides"])):
            if op >= st:
                raise ConfigError(f"output_padding must be less than strides on every axis, "
                                  f"as in Keras 3: on axis {axis} it is {op} with strides {st}",
                                  where="output_padding")

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


class _Pool(Layer):
    rank = 2
    kind = "max"

    def goes_before_epilogue(self, input_shape) -> bool:
        """Whether a convolution's epilogue (bias, relu) should come after this pooling:
        a max pooling whose windows tile the input exactly. Where they leave cells out
        (Conv2D 64's 11x11 in issue 3's CNN), pooling first was slower on the CPU (the
        cropped input is copied on its own: 3,611 vs 3,818 samples/s); overlapping and
        'same' windows were not measured, so they keep the epilogue in place too."""
        size, strides, padding = self._geometry(input_shape)
        return (self.kind == "max" and padding == "valid" and tuple(strides) == tuple(size)
                and all(n % k == 0 for n, k in zip(input_shape[:-1], size)))

    def _geometry(self, input_shape):
        require_rank(input_shape, SPATIAL[self.rank])
        size = self.args["pool_size"]
        strides = self.args.get("strides") or size
        return size, strides, self.args.get("padding", "valid")

    def output_shape(self, input_shape):
        size, strides, padding = self._geometry(input_shape)
        out = tuple(out_size(s, k, st, 1, padding) for s, k, st in
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
