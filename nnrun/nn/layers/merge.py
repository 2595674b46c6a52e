"""Merge layers (graph models): Add, Subtract, Multiply, Average, Maximum, Minimum,
Concatenate and Dot, with Keras 3 semantics. Each takes a list of inputs."""

from __future__ import annotations

import functools

from nnrun.config.errors import ConfigError
from nnrun.nn.layers.base import LAYER_TYPES, Layer, Shape, format_shapes
from nnrun.nn.lazy import jax, jnp


class _Merge(Layer):
    """A layer of several inputs; `init`/`output_shape` take the list of input shapes."""

    multi_input = True
    supports_masking = False
    min_inputs = 2
    max_inputs: int | None = None

    def check_count(self, shapes: list[Shape]) -> None:
        n = len(shapes)
        if n < self.min_inputs or (self.max_inputs is not None and n > self.max_inputs):
            want = (f"exactly {self.min_inputs}" if self.max_inputs == self.min_inputs
                    else f"at least {self.min_inputs}")
            raise ConfigError(f"{type(self).__name__} takes {want} inputs, got {n}")

    def init(self, key, input_shape):
        return {}, {}, self.output_shape(input_shape)


class _Elementwise(_Merge):
    """Inputs of one shape (or broadcastable, as Keras), combined elementwise."""

    def op(self, xs: list[jax.Array]) -> jax.Array:
        raise NotImplementedError

    def output_shape(self, input_shape):
        shapes = [tuple(s) for s in input_shape]
        self.check_count(shapes)
        out = shapes[0]
        for s in shapes[1:]:
            if len(s) != len(out) or any(a != b and 1 not in (a, b) for a, b in zip(s, out)):
                raise ConfigError(f"{type(self).__name__} needs inputs of one shape, got "
                                  f"{format_shapes(shapes)}")
            out = tuple(max(a, b) for a, b in zip(s, out))
        return out

    def apply(self, params, state, x, *, training, key):
        return self.op(list(x)), state


def _register(name: str, op, *, exactly: int | None = None) -> None:
    attrs = {"op": lambda self, xs: op(xs)}
    if exactly is not None:
        attrs.update(min_inputs=exactly, max_inputs=exactly)
    LAYER_TYPES.add(name, type(name, (_Elementwise,), attrs))


_register("Add", lambda xs: functools.reduce(jnp.add, xs))
_register("Subtract", lambda xs: xs[0] - xs[1], exactly=2)
_register("Multiply", lambda xs: functools.reduce(jnp.multiply, xs))
_register("Average", lambda xs: functools.reduce(jnp.add, xs) / len(xs))
_register("Maximum", lambda xs: functools.reduce(jnp.maximum, xs))
_register("Minimum", lambda xs: functools.reduce(jnp.minimum, xs))


@LAYER_TYPES.register("Concatenate")
class Concatenate(_Merge):
    """Joins the inputs along `axis` (Keras counts the batch axis as 0; default -1)."""

    def _axis(self, rank: int) -> int:
        axis = self.args.get("axis", -1)
        full = axis if axis < 0 else axis - 1   # without the batch axis
        if not -rank <= full < rank or axis == 0:
            raise ConfigError(f"axis {axis} is out of range for inputs of rank {rank + 1} "
                              "(the batch axis 0 cannot be joined)", where="axis")
        return full % rank

    def output_shape(self, input_shape):
        shapes = [tuple(s) for s in input_shape]
        self.check_count(shapes)
        rank = len(shapes[0])
        if any(len(s) != rank for s in shapes):
            raise ConfigError(f"Concatenate needs inputs of one rank, got {format_shapes(shapes)}")
        axis = self._axis(rank)
        for s in shapes[1:]:
            if any(a != b for i, (a, b) in enumerate(zip(s, shapes[0])) if i != axis):
                raise ConfigError(f"Concatenate on axis {self.args.get('axis', -1)} needs the "
                                  f"other axes equal, got {format_shapes(shapes)}")
        return tuple(sum(s[axis] for s in shapes) if i == axis else d
                     for i, d in enumerate(shapes[0]))

    def apply(self, params, state, x, *, training, key):
        return jnp.concatenate(list(x), axis=1 + self._axis(x[0].ndim - 1)), state


@LAYER_TYPES.register("Dot")
class Dot(_Merge):
    """Keras's batch dot product of two inputs over `axes` (one per input, batch axis
    counted as 0); `normalize` l2-normalises along them first (cosine similarity)."""

    min_inputs = max_inputs = 2

    def _axes(self, shapes) -> tuple[int, int]:
        axes = self.args["axes"]
        pair = (axes, axes) if isinstance(axes, int) else tuple(axes)
        out = []
        for a, s in zip(pair, shapes):
            rank = len(s) + 1
            a = a + rank if a < 0 else a   # -1: the last axis; below -rank: out of range
            if not 1 <= a < rank:
                raise ConfigError(f"axes {self.args['axes']} out of range for inputs "
                                  f"{format_shapes(shapes)} (the batch axis 0 cannot be "
                                  "contracted)", where="axes")
            out.append(a)
        return out[0], out[1]

    def output_shape(self, input_shape):
        shapes = [tuple(s) for s in input_shape]
        self.check_count(shapes)
        a, b = self._axes(shapes)
        if shapes[0][a - 1] != shapes[1][b - 1]:
            raise ConfigError(f"Dot over axes ({a}, {b}) needs equal sizes there, got "
                              f"{format_shapes(shapes)}")
        out = tuple(d for i, d in enumerate(shapes[0]) if i != a - 1) + \
            tuple(d for i, d in enumerate(shapes[1]) if i != b - 1)
        return out or (1,)

    def apply(self, params, state, x, *, training, key):
        u, v = x
        a, b = self._axes([u.shape[1:], v.shape[1:]])
        if self.args.get("normalize"):   # Keras: x / max(||x||, 1e-7)
            u = u / jnp.maximum(jnp.linalg.norm(u, axis=a, keepdims=True), 1e-7)
            v = v / jnp.maximum(jnp.linalg.norm(v, axis=b, keepdims=True), 1e-7)
        y = jax.lax.dot_general(u, v, (((a,), (b,)), ((0,), (0,))))
        return (y[:, None] if y.ndim == 1 else y), state
