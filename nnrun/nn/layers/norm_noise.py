"""LayerNormalization and the noise layers: GaussianNoise, GaussianDropout, AlphaDropout,
SpatialDropout1D/2D (Keras 3 formulas; the noise layers act in training only)."""

from __future__ import annotations

import math

from nnrun.config.errors import ConfigError
from nnrun.nn import initializers
from nnrun.nn.initializers import weight_shape
from nnrun.nn.layers.base import LAYER_TYPES, Layer, require_rank
from nnrun.nn.layers.core import check_noise_shape, dropout, keep_mask
from nnrun.nn.lazy import jax, jnp


def batch_axis_free(axis: int, rank: int) -> int:
    """A Keras axis (the batch axis is 0; negative from the end) as a positive index that
    is not the batch axis; ConfigError otherwise."""
    full = axis + rank if axis < 0 else axis
    if not 1 <= full < rank:
        raise ConfigError(f"axis {axis} is not a non-batch axis of a rank-{rank} input",
                          where="axis")
    return full


SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


@LAYER_TYPES.register("LayerNormalization")
class LayerNormalization(Layer):
    """(x - mean) / sqrt(var + epsilon) over `axis` per sample, then gamma * . + beta."""

    supports_masking = True

    def __init__(self, name, **args):
        super().__init__(name, **args)
        self.gamma_init = self.resolve("gamma_initializer", initializers.get, "ones")
        self.beta_init = self.resolve("beta_initializer", initializers.get, "zeros")

    def _axes(self, rank: int) -> tuple[int, ...]:
        """Axes of the full input (batch = 0), as positive indices."""
        return tuple(sorted(batch_axis_free(a, rank) for a in self.args.get("axis", (-1,))))

    def _param_shape(self, input_shape) -> tuple[int, ...]:
        return tuple(input_shape[a - 1] for a in self._axes(len(input_shape) + 1))

    def output_shape(self, input_shape):
        self._param_shape(input_shape)   # the axes exist
        return input_shape

    def param_shapes(self, input_shape):
        shape = self._param_shape(input_shape)
        return {name: weight_shape(init, shape) for name, init, flag in (
            ("gamma", self.gamma_init, "scale"), ("beta", self.beta_init, "center"))
            if self.args.get(flag, True)}, {}

    def init(self, key, input_shape):
        param_shape = self._param_shape(input_shape)
        k_gamma, k_beta = jax.random.split(key)
        params = {}
        if self.args.get("scale", True):
            params["gamma"] = self.gamma_init(k_gamma, param_shape, jnp.float32)
        if self.args.get("center", True):
            params["beta"] = self.beta_init(k_beta, param_shape, jnp.float32)
        return params, {}, input_shape

    def apply(self, params, state, x, *, training, key):
        axes = self._axes(x.ndim)
        shape = [1] * x.ndim
        for a in axes:
            shape[a] = x.shape[a]
        mean = jnp.mean(x, axis=axes, keepdims=True)
        variance = jnp.var(x, axis=axes, keepdims=True)
        inv = jax.lax.rsqrt(variance + self.args.get("epsilon", 1e-3))
        if "gamma" in params:
            inv = inv * params["gamma"].reshape(shape)
        res = -mean * inv
        if "beta" in params:
            res = res + params["beta"].reshape(shape)
        return x * inv + res, state


class _Noise(Layer):
    """A layer that changes its input in training only, with its own PRNG key."""

    uses_rng = True
    supports_masking = True

    def noise(self, x: jax.Array, key: jax.Array) -> jax.Array:
        raise NotImplementedError

    def apply(self, params, state, x, *, training, key):
        if not training or self.args.get("rate", 1.0) == 0.0:
            return x, state
        if self.args.get("seed") is not None:
            key = jax.random.fold_in(key, self.args["seed"])
        return self.noise(x, key), state


@LAYER_TYPES.register("GaussianNoise")
class GaussianNoise(_Noise):
    def noise(self, x, key):
        return x + self.args["stddev"] * jax.random.normal(key, x.shape, x.dtype)


@LAYER_TYPES.register("GaussianDropout")
class GaussianDropout(_Noise):
    def noise(self, x, key):
        rate = self.args["rate"]
        stddev = math.sqrt(rate / (1.0 - rate))
        return x * (1.0 + stddev * jax.random.normal(key, x.shape, x.dtype))


@LAYER_TYPES.register("AlphaDropout")
class AlphaDropout(_Noise):
    """Keras 3: kept values stay, dropped ones become -alpha*scale, then an affine fix-up."""

    def output_shape(self, input_shape):
        check_noise_shape(self.args.get("noise_shape"), input_shape)
        return input_shape

    def noise(self, x, key):
        rate = self.args["rate"]
        shape = x.shape
        if self.args.get("noise_shape") is not None:
            shape = tuple(d if n is None else n for d, n in zip(x.shape, self.args["noise_shape"]))
        kept = keep_mask(key, shape, 1.0 - rate).astype(x.dtype)
        alpha_p = -SELU_ALPHA * SELU_SCALE
        a = ((1 - rate) * (1 + rate * alpha_p ** 2)) ** -0.5
        b = -a * alpha_p * rate
        return a * (x * kept + alpha_p * (1 - kept)) + b


class _SpatialDropout(_Noise):
    """Dropout of whole channels: one draw per sample and channel, scaled by 1/(1-rate)."""

    layout = "(batch, steps, channels)"

    def output_shape(self, input_shape):
        require_rank(input_shape, self.layout)
        return input_shape

    def noise(self, x, key):
        shape = (x.shape[0], *([1] * (x.ndim - 2)), x.shape[-1])
        return dropout(x, key, shape, self.name, self.args["rate"])


@LAYER_TYPES.register("SpatialDropout1D")
class SpatialDropout1D(_SpatialDropout):
    layout = "(batch, steps, channels)"


@LAYER_TYPES.register("SpatialDropout2D")
class SpatialDropout2D(_SpatialDropout):
    layout = "(batch, rows, cols, channels)"


@LAYER_TYPES.register("BatchNormalization")
class BatchNormalization(Layer):
    """Keras 3 BatchNormalization: moving_x = moving_x * momentum + batch_x * (1 - momentum)."""

    uses_mask = True
    supports_masking = True
    uses_step_mask = True   # batch statistics over the unmasked steps only, as Keras 3

    def __init__(self, name, **args):
        super().__init__(name, **args)
        self.inits = {n: self.resolve(f"{n}_initializer", initializers.get, d) for n, d in (
            ("gamma", "ones"), ("beta", "zeros"), ("moving_mean", "zeros"),
            ("moving_variance", "ones"))}

    def _axis(self, rank: int) -> int:
        return batch_axis_free(self.args.get("axis", -1), rank)

    def _size(self, input_shape) -> tuple[int]:
        return (input_shape[self._axis(len(input_shape) + 1) - 1],)

    def output_shape(self, input_shape):
        self._size(input_shape)   # the axis exists
        return input_shape

    def param_shapes(self, input_shape):
        shapes = {n: weight_shape(init, self._size(input_shape))
                  for n, init in self.inits.items()}
        params = {n: shapes[n] for n, flag in (("gamma", "scale"), ("beta", "center"))
                  if self.args.get(flag, True)}
        return params, {n: shapes[n] for n in ("moving_mean", "moving_variance")}

    def init(self, key, input_shape):
        size = self._size(input_shape)
        keys = jax.random.split(key, 4)
        make = {n: self.inits[n](k, size, jnp.float32) for n, k in zip(self.inits, keys)}
        params = {n: make[n] for n, flag in (("gamma", "scale"), ("beta", "center"))
                  if self.args.get(flag, True)}
        state = {"moving_mean": make["moving_mean"], "moving_variance": make["moving_variance"]}
        return params, state, input_shape

    def apply(self, params, state, x, *, training, key, mask=None, step_mask=None):
        axis = self._axis(x.ndim)
        shape = [1] * x.ndim
        shape[axis] = x.shape[axis]
        if training:
            mean, variance = self._moments(x, axis, _weights(x, mask, step_mask))
            m = self.args.get("momentum", 0.99)
            state = {"moving_mean": state["moving_mean"] * m + mean * (1 - m),
                     "moving_variance": state["moving_variance"] * m + variance * (1 - m)}
        else:
            mean, variance = state["moving_mean"], state["moving_variance"]
        inv = jax.lax.rsqrt(variance + self.args.get("epsilon", 1e-3))
        if "gamma" in params:
            inv = inv * params["gamma"]
        res = -mean * inv
        if "beta" in params:
            res = res + params["beta"]
        return x * inv.reshape(shape) + res.reshape(shape), state

    @staticmethod
    def _moments(x, axis, w):
        """Mean and (population) variance over every axis but `axis`, weighted by `w`."""
        axes = tuple(a for a in range(x.ndim) if a != axis)
        if w is None:
            return jnp.mean(x, axis=axes), jnp.var(x, axis=axes)
        count = jnp.maximum(jnp.sum(w * jnp.ones_like(x), axis=axes), 1.0)
        mean = jnp.sum(w * x, axis=axes) / count
        centred = x - mean.reshape([x.shape[a] if a == axis else 1 for a in range(x.ndim)])
        return mean, jnp.sum(w * centred ** 2, axis=axes) / count


def _weights(x: jax.Array, mask, step_mask) -> jax.Array | None:
    """The 0/1 weights of x's cells from the batch's row mask and a Keras (batch, steps)
    mask, broadcastable to x; None when there is neither."""
    w = None
    if mask is not None:
        w = mask.reshape(-1, *([1] * (x.ndim - 1))).astype(x.dtype)
    if step_mask is not None and x.ndim > step_mask.ndim:
        steps = step_mask.reshape(*step_mask.shape, *([1] * (x.ndim - step_mask.ndim)))
        w = steps.astype(x.dtype) if w is None else w * steps.astype(x.dtype)
    return w
