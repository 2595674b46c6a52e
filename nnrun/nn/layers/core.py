"""Core layers: Dense, Activation, Dropout, Flatten (Keras 3 semantics)."""

from __future__ import annotations

import math

from nnrun.config.errors import ConfigError
from nnrun.nn import activations, initializers
from nnrun.nn.initializers import weight_shape
from nnrun.nn.layers.base import LAYER_TYPES, Layer, Shape
from nnrun.nn.lazy import jax, jnp
from nnrun.nn.traced import dropout_threshold, lookup


@LAYER_TYPES.register("Dense")
class Dense(Layer):
    """y = activation(x @ kernel + bias) on the last axis; kernel is (in, units) as Keras."""

    supports_masking = True

    def __init__(self, name: str, **args):
        super().__init__(name, **args)
        self.activation = self.resolve("activation", activations.get)
        self.kernel_init = self.resolve("kernel_initializer", initializers.get, "glorot_uniform")
        self.bias_init = self.resolve("bias_initializer", initializers.get, "zeros")

    def output_shape(self, input_shape: Shape) -> Shape:
        return (*input_shape[:-1], self.args["units"])

    def param_shapes(self, input_shape):
        units = self.args["units"]
        params = {"kernel": weight_shape(self.kernel_init, (input_shape[-1], units))}
        if self.args.get("use_bias", True):
            params["bias"] = weight_shape(self.bias_init, (units,))
        return params, {}

    def init(self, key, input_shape):
        units = self.args["units"]
        k_kernel, k_bias = jax.random.split(key)
        params = {"kernel": self.kernel_init(k_kernel, (input_shape[-1], units), jnp.float32)}
        if self.args.get("use_bias", True):
            params["bias"] = self.bias_init(k_bias, (units,), jnp.float32)
        return params, {}, self.output_shape(input_shape)

    def apply(self, params, state, x, *, training, key):
        y = jnp.matmul(x, params["kernel"])
        if "bias" in params:
            y = y + params["bias"]
        return self.activation(y), state


@LAYER_TYPES.register("Activation")
class Activation(Layer):
    """Applies an activation function."""

    supports_masking = True

    def __init__(self, name: str, **args):
        super().__init__(name, **args)
        self.fn = self.resolve("activation", activations.get)

    def apply(self, params, state, x, *, training, key):
        return self.fn(x), state


def _lowbias32(x: jax.Array) -> jax.Array:
    """A 32-bit integer hash with strong avalanche (C. Wellons' lowbias32)."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def keep_mask(key: jax.Array, shape: tuple[int, ...], keep_prob: float,
              threshold: jax.Array | None = None) -> jax.Array:
    """Boolean mask, True with probability `keep_prob` (to 1/65536), one draw per element.

    Counter-based: two words drawn from `key` seed a hash of the element index, and
    each 32-bit hash gives two 16-bit draws. About 3x cheaper on the CPU than
    `jax.random.bernoulli` (threefry), which matters for dropout on every step.
    """
    n = math.prod(shape)
    half = (n + 1) // 2
    seed = jax.random.bits(key, (2,), jnp.uint32)
    h = _lowbias32(jax.lax.iota(jnp.uint32, half) * jnp.uint32(0x9E3779B9) + seed[0])
    h = _lowbias32(h ^ seed[1])
    draws = jnp.concatenate([h & jnp.uint32(0xFFFF), h >> 16])[:n]
    threshold = jnp.uint32(dropout_threshold(keep_prob)) if threshold is None else threshold
    return (draws < threshold).reshape(shape)


def check_noise_shape(noise, input_shape) -> None:
    """A dropout's noise_shape (batch axis first) must broadcast against its input."""
    if noise is None:
        return
    if len(noise) != len(input_shape) + 1 or noise[0] not in (None, 1) or any(
            n not in (None, 1, d) for n, d in zip(noise[1:], input_shape)):
        raise ConfigError(f"noise_shape {list(noise)} does not fit the input "
                          f"(None, {', '.join(map(str, input_shape))}): one entry per axis, "
                          "each null, 1 or the input's size", where="noise_shape")


@LAYER_TYPES.register("Dropout")
class Dropout(Layer):
    """Inverted dropout: in training, zero a fraction `rate` and scale the rest by 1/(1-rate)."""

    uses_rng = True
    supports_masking = True

    def output_shape(self, input_shape):
        check_noise_shape(self.args.get("noise_shape"), input_shape)
        return input_shape

    def apply(self, params, state, x, *, training, key):
        rate = self.args["rate"]
        if not training or rate == 0.0:
            return x, state
        shape = x.shape
        noise = self.args.get("noise_shape")
        if noise is not None:
            shape = tuple(d if n is None else n for d, n in zip(x.shape, noise))
        if self.args.get("seed") is not None:
            key = jax.random.fold_in(key, self.args["seed"])
        return dropout(x, key, shape, self.name, rate), state


def dropout(x: jax.Array, key: jax.Array, shape: tuple[int, ...], layer: str,
            rate: float) -> jax.Array:
    """Inverted dropout of `x` with a keep mask of `shape` (broadcast against x). The
    rate is a constant, or a value of the program while `nnrun.nn.traced` says so."""
    keep_prob = lookup(f"{layer}/keep", None)
    if keep_prob is None:
        return jnp.where(keep_mask(key, shape, 1.0 - rate), x / (1.0 - rate),
                         jnp.zeros((), x.dtype))
    keep = keep_mask(key, shape, 0.0, lookup(f"{layer}/threshold", None))
    return jnp.where(keep, x / keep_prob.astype(x.dtype), jnp.zeros((), x.dtype))


@LAYER_TYPES.register("Flatten")
class Flatten(Layer):
    """Flattens every axis but the batch axis."""

    def output_shape(self, input_shape):
        return (math.prod(input_shape),)

    def apply(self, params, state, x, *, training, key):
        return x.reshape(x.shape[0], -1), state


@LAYER_TYPES.register("Embedding")
class Embedding(Layer):
    """Looks up rows of an (input_dim, output_dim) table; ids outside the table give zeros."""

    def __init__(self, name: str, **args):
        super().__init__(name, **args)
        self.init_fn = self.resolve("embeddings_initializer", initializers.get, "uniform")

    def output_shape(self, input_shape):
        return (*input_shape, self.args["output_dim"])

    def param_shapes(self, input_shape):
        table = (self.args["input_dim"], self.args["output_dim"])
        return {"embeddings": weight_shape(self.init_fn, table)}, {}

    def init(self, key, input_shape):
        table = self.init_fn(key, (self.args["input_dim"], self.args["output_dim"]), jnp.float32)
        return {"embeddings": table}, {}, self.output_shape(input_shape)

    def compute_mask(self, x, step_mask):
        return x != 0 if self.args.get("mask_zero") else None

    def apply(self, params, state, x, *, training, key):
        # .at[].get: the same gather as jnp.take(mode="fill"), and one jax2onnx converts
        return params["embeddings"].at[x.astype(jnp.int32)].get(mode="fill",
                                                                 fill_value=0.0), state


@LAYER_TYPES.register("Masking")
class Masking(Layer):
    """Keras's Masking: time steps whose features all equal `mask_value` are masked for
    the layers after (recurrent layers skip them) and set to zero."""

    def compute_mask(self, x, step_mask):
        return jnp.any(x != self.args.get("mask_value", 0.0), axis=-1)

    def apply(self, params, state, x, *, training, key):
        keep = jnp.any(x != self.args.get("mask_value", 0.0), axis=-1, keepdims=True)
        return x * keep.astype(x.dtype), state


@LAYER_TYPES.register("Reuse")
class Reuse(Layer):
    """Another layer (`layer:`) applied again with the same params and state: a shared
    layer. The model builder sets `target`; everything is delegated to it."""

    target: Layer

    def share(self, target: Layer) -> None:
        self.target = target
        self.activity = target.activity
        for attr in ("uses_rng", "uses_mask", "uses_step_mask", "multi_input",
                     "supports_masking"):
            setattr(self, attr, getattr(target, attr))

    @property
    def param_name(self):
        return self.target.param_name

    def compute_mask(self, x, step_mask):
        return self.target.compute_mask(x, step_mask)

    def output_shape(self, input_shape):
        return self.target.output_shape(input_shape)

    def param_shapes(self, input_shape):
        return self.target.param_shapes(input_shape)

    def init(self, key, input_shape):
        return self.target.init(key, input_shape)

    def apply(self, params, state, x, **kwargs):
        return self.target.apply(params, state, x, **kwargs)
