"""Shape layers: Reshape, Permute, RepeatVector, Cropping1D/2D, ZeroPadding1D/2D,
UpSampling1D/2D (channels_last, as Keras's default)."""

from __future__ import annotations

import math

from nnrun.config.errors import ConfigError
from nnrun.nn.layers.base import LAYER_TYPES, Layer, require_rank
from nnrun.nn.lazy import jax, jnp


@LAYER_TYPES.register("Reshape")
class Reshape(Layer):
    def output_shape(self, input_shape):
        target = list(self.args["target_shape"])
        total = math.prod(input_shape)
        unknown = [i for i, d in enumerate(target) if d == -1]
        if len(unknown) > 1 or any(d == 0 or d < -1 for d in target):
            raise ConfigError(f"target_shape {target} may hold positive sizes and one -1",
                              where="target_shape")
        known = math.prod(d for d in target if d != -1)
        if unknown and total % known == 0:
            target[unknown[0]] = total // known
        if math.prod(target) != total:
            raise ConfigError(f"cannot reshape {total} values per sample into "
                              f"{list(self.args['target_shape'])}", where="target_shape")
        return tuple(target)

    def apply(self, params, state, x, *, training, key):
        return x.reshape(x.shape[0], *self.output_shape(x.shape[1:])), state


@LAYER_TYPES.register("Permute")
class Permute(Layer):
    def _dims(self, rank: int) -> tuple[int, ...]:
        dims = tuple(self.args["dims"])
        if sorted(dims) != list(range(1, rank + 1)):
            raise ConfigError(f"dims {list(dims)} must be a permutation of 1..{rank} "
                              "(1-based, the batch axis excluded)", where="dims")
        return dims

    def output_shape(self, input_shape):
        return tuple(input_shape[d - 1] for d in self._dims(len(input_shape)))

    def apply(self, params, state, x, *, training, key):
        return jnp.transpose(x, (0, *self._dims(x.ndim - 1))), state


@LAYER_TYPES.register("RepeatVector")
class RepeatVector(Layer):
    def output_shape(self, input_shape):
        require_rank(input_shape, "(batch, features)")
        return (self.args["n"], input_shape[0])

    def apply(self, params, state, x, *, training, key):
        return jnp.repeat(x[:, None, :], self.args["n"], axis=1), state


class _Spatial(Layer):
    """A layer over the spatial axes between the batch and the channel axes."""

    n_spatial = 1

    def check_rank(self, input_shape):
        require_rank(input_shape, "(batch, rows, cols, channels)" if self.n_spatial == 2
                     else "(batch, steps, channels)")


@LAYER_TYPES.register("Cropping1D")
@LAYER_TYPES.register("Cropping2D")
class Cropping(_Spatial):
    def __init__(self, name, **args):
        super().__init__(name, **args)
        self.n_spatial = len(args["cropping"])

    def output_shape(self, input_shape):
        self.check_rank(input_shape)
        out = []
        for size, (a, b) in zip(input_shape, self.args["cropping"]):
            if a + b >= size:
                raise ConfigError(f"cropping {a}+{b} leaves nothing of an axis of size {size}",
                                  where="cropping")
            out.append(size - a - b)
        return (*out, input_shape[-1])

    def apply(self, params, state, x, *, training, key):
        index = [slice(None)] + [slice(a, x.shape[i + 1] - b)
                                 for i, (a, b) in enumerate(self.args["cropping"])]
        return x[tuple(index)], state


@LAYER_TYPES.register("ZeroPadding1D")
@LAYER_TYPES.register("ZeroPadding2D")
class ZeroPadding(_Spatial):
    def __init__(self, name, **args):
        super().__init__(name, **args)
        self.n_spatial = len(args["padding"])

    def output_shape(self, input_shape):
        self.check_rank(input_shape)
        return (*(size + a + b for size, (a, b) in zip(input_shape, self.args["padding"])),
                input_shape[-1])

    def apply(self, params, state, x, *, training, key):
        return jnp.pad(x, ((0, 0), *self.args["padding"], (0, 0))), state


@LAYER_TYPES.register("UpSampling1D")
class UpSampling1D(_Spatial):
    def output_shape(self, input_shape):
        self.check_rank(input_shape)
        return (input_shape[0] * self.args["size"], input_shape[1])

    def apply(self, params, state, x, *, training, key):
        return jnp.repeat(x, self.args["size"], axis=1), state


@LAYER_TYPES.register("UpSampling2D")
class UpSampling2D(_Spatial):
    n_spatial = 2

    def output_shape(self, input_shape):
        self.check_rank(input_shape)
        rows, cols = self.args["size"]
        return (input_shape[0] * rows, input_shape[1] * cols, input_shape[2])

    def apply(self, params, state, x, *, training, key):
        rows, cols = self.args["size"]
        if self.args.get("interpolation", "nearest") == "nearest":
            return jnp.repeat(jnp.repeat(x, rows, axis=1), cols, axis=2), state
        shape = (x.shape[0], x.shape[1] * rows, x.shape[2] * cols, x.shape[3])
        return jax.image.resize(x, shape, method="bilinear", antialias=False), state
