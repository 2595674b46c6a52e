"""The model builder: a ModelSpec -> pure `init` / `apply` functions over a params pytree.

Params and state are dicts keyed by unique layer name (only layers that have
any appear), so checkpoints hold one group per layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nnrun.errors import ConfigError, NnrunError
from nnrun.layers import Layer, get_layer_class
from nnrun.spec import ModelSpec

Shape = tuple[int, ...]


@dataclass(frozen=True)
class LayerInfo:
    """What summary needs of a layer: its name, type and output shape."""

    name: str
    type: str
    output_shape: Shape


class Model:
    """A Sequential stack of layers with pure init and apply functions."""

    def __init__(self, spec: ModelSpec, layers: list[Layer], input_shape: Shape, where):
        self.spec = spec
        self.layers = layers
        self.input_shape = input_shape
        self.input_dtype = jnp.int32 if spec.input_dtype == "int32" else jnp.float32
        self._where = where
        self._by_name = {layer.name: layer for layer in layers}
        self.infos: list[LayerInfo] = []
        # One abstract trace of init gives every layer's output shape and the params'
        # shapes, and locates a layer that cannot take its input.
        self._shapes = jax.eval_shape(lambda k: self._init(k, self.infos), jax.random.key(0))
        self.output_shape = self.infos[-1].output_shape if self.infos else input_shape

    def _init_layer(self, i: int, key: jax.Array, shape: Shape):
        layer, lspec = self.layers[i], self.spec.layers[i]
        try:
            return layer.init(key, shape)
        except NnrunError as exc:  # exc.where names the argument, if any
            path = lspec.arg_path(exc.where) if exc.where else lspec.path
            raise ConfigError(exc.message, where=self._where(path)) from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"cannot apply {lspec.type} to input shape "
                              f"{format_shape(shape)}: {exc}",
                              where=self._where(lspec.path)) from None

    def _init(self, key: jax.Array, infos: list[LayerInfo] | None = None) -> tuple[dict, dict]:
        params, state, shape = {}, {}, self.input_shape
        for i, layer in enumerate(self.layers):
            p, s, shape = self._init_layer(i, jax.random.fold_in(key, i), shape)
            shape = tuple(shape)
            if infos is not None:
                infos.append(LayerInfo(layer.name, self.spec.layers[i].type, shape))
            if p:
                params[layer.name] = p
            if s:
                state[layer.name] = s
        return params, state

    def init(self, key: jax.Array) -> tuple[dict, dict]:
        """Initial (params, state); layer i draws from fold_in(key, i)."""
        return self._init(key)

    def apply(self, params: dict, state: dict, x: jax.Array, *, training: bool = False,
              key: jax.Array | None = None,
              mask: jax.Array | None = None) -> tuple[jax.Array, dict]:
        """Forward pass on a batch; returns (y, new_state). `mask`: 0/1 row weights."""
        y, new_state, _, _ = self.apply_with_activity(params, state, x, training=training,
                                                      key=key, mask=mask)
        return y, new_state

    def apply_with_activity(self, params: dict, state: dict, x: jax.Array, *,
                            training: bool = False, key: jax.Array | None = None,
                            mask: jax.Array | None = None) -> tuple:
        """`apply`, plus the layers' activity-regularizer penalties on their outputs (the
        rows weighted by `mask`, divided by the batch size as Keras 3), added to the loss,
        and the output's Keras mask (None, or (batch, steps) when the output is a sequence
        from masked input: the loss and metrics then skip the masked steps, as Keras)."""
        new_state = dict(state)
        activity = jnp.zeros((), jnp.float32)
        step_mask = None   # Keras's mask, from Embedding(mask_zero) or Masking
        for i, layer in enumerate(self.layers):
            lkey = jax.random.fold_in(key, i) if (training and layer.uses_rng) else None
            extra = {"mask": mask} if layer.uses_mask else {}
            if layer.uses_step_mask and step_mask is not None:
                extra["step_mask"] = step_mask
            out_mask = layer.compute_mask(x, step_mask)
            x, s = layer.apply(params.get(layer.name, {}), state.get(layer.name, {}), x,
                               training=training, key=lkey, **extra)
            step_mask = out_mask
            if layer.activity is not None:   # Keras 3: divided by the batch size
                if mask is None:
                    activity = activity + layer.activity(x) / x.shape[0]
                else:
                    rows = x * mask.reshape(-1, *([1] * (x.ndim - 1)))
                    activity = activity + layer.activity(rows) / jnp.maximum(jnp.sum(mask), 1)
            if s:
                new_state[layer.name] = s
        return x, new_state, activity, step_mask

    def reset_states(self, state: dict) -> dict:
        """The state at the start of a pass over the data: stateful recurrent layers'
        carried states set to zero (between epochs, and before evaluate / predict)."""
        return {name: self._by_name[name].reset_state(s) for name, s in state.items()}

    def regularization(self, params: dict) -> jax.Array:
        """The sum of the weight regularizers' penalties (added to the loss, as Keras)."""
        total = jnp.zeros((), jnp.float32)
        for layer in self.layers:
            if layer.name in params:
                total = total + layer.penalty(params[layer.name])
        return total

    def constrain(self, params: dict) -> dict:
        """Params with each layer's constraints applied (after an update, as Keras)."""
        return {name: self._by_name[name].project(p) for name, p in params.items()}

    def param_shapes(self) -> tuple[Any, Any]:
        """(params, state) as ShapeDtypeStructs, without computing anything."""
        return self._shapes

    def count_params(self) -> dict[str, int]:
        """Per layer name: number of trainable and non-trainable values."""
        params, state = self.param_shapes()
        counts = {}
        for layer in self.layers:
            trainable = sum(int(np.prod(v.shape)) for v in
                            jax.tree_util.tree_leaves(params.get(layer.name, {})))
            fixed = sum(int(np.prod(v.shape)) for v in jax.tree_util.tree_leaves(
                layer.counted_state(state.get(layer.name, {}))))
            counts[layer.name] = (trainable, fixed)
        return counts


def build_model(spec: ModelSpec, *, input_shape: Shape | None = None, where=None,
                batch_size: int | None = None) -> Model:
    """Instantiate each layer from its spec and infer shapes.

    `input_shape` (without the batch axis) is used when the spec has none (it is
    then taken from the data); `batch_size` (fit.batch_size) sizes the states of
    stateful recurrent layers. Errors are ConfigErrors located with `where(path)`.
    """
    where = where or (lambda path: None)
    shape = spec.input_shape or input_shape
    if shape is None:
        raise ConfigError("the model has no input shape: give model.input_shape (or input_dim "
                          "on the first layer), or data to take it from", where=where(("model",)))
    layers = []
    for lspec in spec.layers:
        cls = get_layer_class(lspec.type)
        try:
            layer = cls(lspec.name, **lspec.args)
            if lspec.args.get("return_state"):
                raise ConfigError("return_state gives several outputs (the output and the "
                                  "final states), which a Sequential stack cannot pass on: "
                                  "use return_sequences, or a graph model", where="return_state")
            layer.batch_size = batch_size
            layers.append(layer)
        except ConfigError as exc:  # exc.where names the argument, if any
            path = lspec.arg_path(exc.where) if exc.where else lspec.path
            raise ConfigError(exc.message, where=where(path)) from None
    return Model(spec, layers, tuple(shape), where)


def format_shape(shape: Shape) -> str:
    """Keras's way: `(None, 5)`."""
    return "(None, " + ", ".join(str(d) for d in shape) + ")"
