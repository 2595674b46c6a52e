"""Advanced activations as layers: LeakyReLU, PReLU, ELU, ThresholdedReLU, ReLU, Softmax,
and Keras 1's ParametricSoftplus and ThresholdedLinear."""

from __future__ import annotations

from nnrun.config.errors import ConfigError
from nnrun.nn import activations, initializers
from nnrun.nn.initializers import weight_shape
from nnrun.nn.layers.base import LAYER_TYPES, Layer
from nnrun.nn.lazy import jax, jnp


class _Elementwise(Layer):
    """A parameter-free layer applying `fn(x)`."""

    supports_masking = True

    def fn(self, x: jax.Array) -> jax.Array:
        raise NotImplementedError

    def apply(self, params, state, x, *, training, key):
        return self.fn(x), state


@LAYER_TYPES.register("LeakyReLU")
class LeakyReLU(_Elementwise):
    """x for x >= 0, negative_slope * x otherwise (Keras's layer default slope: 0.3)."""

    def fn(self, x):
        return jax.nn.leaky_relu(x, negative_slope=self.args["negative_slope"])


@LAYER_TYPES.register("ELU")
class ELU(_Elementwise):
    def fn(self, x):
        return activations.get({"name": "elu", "alpha": self.args["alpha"]})(x)


@LAYER_TYPES.register("ThresholdedReLU")
class ThresholdedReLU(_Elementwise):
    def fn(self, x):
        return jnp.where(x > self.args["theta"], x, jnp.zeros((), x.dtype))


@LAYER_TYPES.register("ThresholdedLinear")
class ThresholdedLinear(_Elementwise):
    def fn(self, x):
        return jnp.where(jnp.abs(x) >= self.args["theta"], x, jnp.zeros((), x.dtype))


@LAYER_TYPES.register("ReLU")
class ReLU(_Elementwise):
    def fn(self, x):
        return activations.get({"name": "relu", **self.args})(x)


@LAYER_TYPES.register("Softmax")
class Softmax(_Elementwise):
    def output_shape(self, input_shape):
        rank = len(input_shape) + 1
        if not -rank <= self.args["axis"] < rank:
            raise ConfigError(f"axis {self.args['axis']} is out of range for a rank-{rank} "
                              "input", where="axis")
        return input_shape

    def fn(self, x):
        return jax.nn.softmax(x, axis=self.args["axis"])


def _alpha_shape(input_shape, shared_axes) -> tuple[int, ...]:
    shape = list(input_shape)
    for axis in shared_axes or ():
        if not 1 <= axis <= len(shape):
            raise ConfigError(f"shared_axes: axis {axis} is out of range 1..{len(shape)} "
                              "(1-based, the batch axis excluded)", where="shared_axes")
        shape[axis - 1] = 1
    return tuple(shape)


@LAYER_TYPES.register("PReLU")
class PReLU(Layer):
    """relu(x) - alpha * relu(-x), alpha learned per unit (Keras 3)."""

    supports_masking = True

    def __init__(self, name, **args):
        super().__init__(name, **args)
        self.alpha_init = self.resolve("alpha_initializer", initializers.get, "zeros")

    def output_shape(self, input_shape):
        _alpha_shape(input_shape, self.args.get("shared_axes"))
        return input_shape

    def param_shapes(self, input_shape):
        shape = _alpha_shape(input_shape, self.args.get("shared_axes"))
        return {"alpha": weight_shape(self.alpha_init, shape)}, {}

    def init(self, key, input_shape):
        shape = _alpha_shape(input_shape, self.args.get("shared_axes"))
        return {"alpha": self.alpha_init(key, shape, jnp.float32)}, {}, input_shape

    def apply(self, params, state, x, *, training, key):
        return jax.nn.relu(x) - params["alpha"] * jax.nn.relu(-x), state


@LAYER_TYPES.register("ParametricSoftplus")
class ParametricSoftplus(Layer):
    """alpha * softplus(beta * x), alpha and beta learned per unit (Keras 1)."""

    supports_masking = True

    def param_shapes(self, input_shape):
        return {"alpha": tuple(input_shape), "beta": tuple(input_shape)}, {}

    def init(self, key, input_shape):
        params = {"alpha": jnp.full(input_shape, self.args["alpha_init"], jnp.float32),
                  "beta": jnp.full(input_shape, self.args["beta_init"], jnp.float32)}
        return params, {}, input_shape

    def apply(self, params, state, x, *, training, key):
        return params["alpha"] * jax.nn.softplus(params["beta"] * x), state
