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
from nnrun.spec_model import LayerSpec, ModelSpec

Shape = tuple[int, ...]


@dataclass(frozen=True)
class LayerInfo:
    """What summary needs of a layer: its name, type, output shape and (graph models)
    the inputs / layers it takes."""

    name: str
    type: str
    output_shape: Shape
    inbound: tuple[str, ...] = ()


def _dtype(name: str):
    return jnp.int32 if name == "int32" else jnp.float32


class Model:
    """A graph of layers (a Sequential stack is a chain) with pure init and apply
    functions. Layers run in a topological order; each takes its named inputs."""

    def __init__(self, spec: ModelSpec, layers: list[Layer], input_shape: Shape, where):
        self.spec = spec
        self.layers = layers
        self._where = where
        self._by_name = {layer.name: layer for layer in layers}
        if spec.is_graph:
            self.input_names = [i.name for i in spec.inputs]
            self.input_shapes = {i.name: tuple(i.shape) for i in spec.inputs}
            self.input_dtypes = {i.name: _dtype(i.dtype) for i in spec.inputs}
            self.output_names = list(spec.outputs)
            self.wiring = [tuple(lspec.inputs) for lspec in spec.layers]
        else:
            self.input_names = ["input"]
            self.input_shapes = {"input": tuple(input_shape)}
            self.input_dtypes = {"input": _dtype(spec.input_dtype)}
            self.output_names = [layers[-1].name] if layers else ["input"]
            self.wiring = [("input",)] + [(layer.name,) for layer in layers[:-1]]
        self.order = self._topological()
        # The single-input case, which the trainer and the data checks use.
        self.input_shape = self.input_shapes[self.input_names[0]]
        self.input_dtype = self.input_dtypes[self.input_names[0]]
        self.infos: list[LayerInfo] = []
        # One abstract trace of init gives every layer's output shape and the params'
        # shapes, and locates a layer that cannot take its input.
        shapes: dict[str, Shape] = {}
        self._shapes = jax.eval_shape(lambda k: self._init(k, shapes), jax.random.key(0))
        self.infos = [LayerInfo(layer.name, self.spec.layers[i].type, shapes[layer.name],
                                self.wiring[i] if spec.is_graph else ())
                      for i, layer in enumerate(layers)]
        self.output_shapes = [shapes.get(n, self.input_shapes.get(n)) for n in self.output_names]
        self.output_shape = self.output_shapes[0]

    def _topological(self) -> list[int]:
        """Layer indices so that every layer comes after the ones it takes (the spec
        rejected cycles); definition order where it is free."""
        done = set(self.input_names)
        order: list[int] = []
        pending = list(range(len(self.layers)))
        while pending:
            ready = [i for i in pending if all(r in done for r in self.wiring[i])]
            if not ready:   # only reachable for specs built without validation
                raise ConfigError("the layers form a cycle", where=self._where(("model",)))
            for i in ready:
                order.append(i)
                done.add(self.layers[i].name)
            pending = [i for i in pending if i not in ready]
        return order

    def _layer_input(self, i: int, values: dict):
        """The input of layer i: one value, or the list a merge layer takes."""
        layer, refs = self.layers[i], self.wiring[i]
        if layer.multi_input:
            return [values[r] for r in refs]
        if len(refs) != 1:
            lspec = self.spec.layers[i]
            raise ConfigError(f"{lspec.type} takes one input, got {len(refs)} "
                              f"({', '.join(refs)}); merge them first (Concatenate, Add, ...)",
                              where=self._where(lspec.arg_path("inputs")))
        return values[refs[0]]

    def _init_layer(self, i: int, key: jax.Array, shape):
        layer, lspec = self.layers[i], self.spec.layers[i]
        try:
            return layer.init(key, shape)
        except NnrunError as exc:  # exc.where names the argument, if any
            if exc.where and any(c in exc.where for c in ".:["):   # located already (nested)
                raise
            path = lspec.arg_path(exc.where) if exc.where else lspec.path
            raise ConfigError(exc.message, where=self._where(path)) from None
        except (TypeError, ValueError) as exc:
            shown = (", ".join(format_shape(s) for s in shape) if layer.multi_input
                     else format_shape(shape))
            raise ConfigError(f"cannot apply {lspec.type} to input shape {shown}: {exc}",
                              where=self._where(lspec.path)) from None

    def _init(self, key: jax.Array, shapes: dict | None = None) -> tuple[dict, dict]:
        params, state = {}, {}
        known: dict[str, Shape] = dict(self.input_shapes)
        for i in self.order:
            layer = self.layers[i]
            p, s, shape = self._init_layer(i, jax.random.fold_in(key, i),
                                           self._layer_input(i, known))
            known[layer.name] = tuple(shape)
            owner = layer.param_name   # a shared layer's params are made once
            if owner in params or owner in state:
                self._check_shared(i, params.get(owner, {}), p)
                continue
            if p:
                params[owner] = p
            if s:
                state[owner] = s
        if shapes is not None:
            shapes.update(known)
        return params, state

    def _check_shared(self, i: int, existing: dict, new: dict) -> None:
        """A shared layer applied to an input its weights do not fit is a config error."""
        shapes = jax.tree_util.tree_map(jnp.shape, (existing, new))
        if shapes[0] != shapes[1]:
            lspec = self.spec.layers[i]
            raise ConfigError(f"{self.layers[i].param_name!r} cannot be applied to this input "
                              f"with the same weights: they have shapes {shapes[0]}, this "
                              f"input needs {shapes[1]}",
                              where=self._where(lspec.arg_path("inputs")))

    def init(self, key: jax.Array) -> tuple[dict, dict]:
        """Initial (params, state); layer i draws from fold_in(key, i)."""
        return self._init(key)

    def apply(self, params: dict, state: dict, x, *, training: bool = False,
              key: jax.Array | None = None,
              mask: jax.Array | None = None) -> tuple[jax.Array, dict]:
        """Forward pass on a batch; returns (y, new_state). `x`: an array, or for a graph
        model of several inputs a mapping of input names to arrays; `y`: an array, or a
        tuple of them (model outputs' order) for several outputs. `mask`: 0/1 row weights."""
        y, new_state, _, _ = self.apply_with_activity(params, state, x, training=training,
                                                      key=key, mask=mask)
        return y, new_state

    def apply_with_activity(self, params: dict, state: dict, x, *,
                            training: bool = False, key: jax.Array | None = None,
                            mask: jax.Array | None = None) -> tuple:
        """`apply`, plus the layers' activity-regularizer penalties on their outputs (the
        rows weighted by `mask`, divided by the batch size as Keras 3), added to the loss,
        and the output's Keras mask (None, or (batch, steps) when the output is a sequence
        from masked input: the loss and metrics then skip the masked steps, as Keras)."""
        values, step_masks, new_state, activity = self._run(params, state, x, training, key,
                                                            mask)
        outputs = tuple(values[n] for n in self.output_names)
        masks = tuple(step_masks.get(n) for n in self.output_names)
        if len(outputs) == 1:
            return outputs[0], new_state, activity, masks[0]
        return outputs, new_state, activity, masks

    def outputs_of(self, params: dict, state: dict, x, names: tuple[str, ...]) -> tuple:
        """(the named inputs' / layers' outputs, new state) in inference: what
        `predict --output LAYER` reads (e.g. an autoencoder's codes)."""
        values, _, new_state, _ = self._run(params, state, x, False, None, None)
        return tuple(values[n] for n in names), new_state

    def node_names(self) -> list[str]:
        return [*self.input_names, *(layer.name for layer in self.layers)]

    def _run(self, params, state, x, training, key, mask):
        """Every node's output, Keras masks, the new state and the activity penalty."""
        values = dict(x) if isinstance(x, dict) else {self.input_names[0]: x}
        step_masks: dict = {}   # Keras's masks, from Embedding(mask_zero) or Masking
        new_state = dict(state)
        activity = jnp.zeros((), jnp.float32)
        for i in self.order:
            layer = self.layers[i]
            lkey = jax.random.fold_in(key, i) if (training and layer.uses_rng) else None
            extra = {"mask": mask} if layer.uses_mask else {}
            inputs = self._layer_input(i, values)
            step_mask = None if layer.multi_input else step_masks.get(self.wiring[i][0])
            if layer.uses_step_mask and step_mask is not None:
                extra["step_mask"] = step_mask
            out_mask = layer.compute_mask(inputs, step_mask)
            lparams, lstate = params.get(layer.param_name, {}), state.get(layer.param_name, {})
            if getattr(layer, "nested", False):   # a nested model: its activity penalties too
                y, s, inner = layer.apply_with_activity(lparams, lstate, inputs,
                                                        training=training, key=lkey, **extra)
                activity = activity + inner
            else:
                y, s = layer.apply(lparams, lstate, inputs, training=training, key=lkey,
                                   **extra)
            values[layer.name], step_masks[layer.name] = y, out_mask
            if layer.activity is not None:   # Keras 3: divided by the batch size
                if mask is None:
                    activity = activity + layer.activity(y) / y.shape[0]
                else:
                    rows = y * mask.reshape(-1, *([1] * (y.ndim - 1)))
                    activity = activity + layer.activity(rows) / jnp.maximum(jnp.sum(mask), 1)
            if s:
                new_state[layer.param_name] = s
        return values, step_masks, new_state, activity

    def layer(self, name: str) -> Layer:
        """The layer of a node name."""
        return self._by_name[name]

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
    if shape is None and not spec.is_graph:
        raise ConfigError("the model has no input shape: give model.input_shape (or input_dim "
                          "on the first layer), or data to take it from", where=where(("model",)))
    layers = [make_layer(lspec, where, batch_size) for lspec in spec.layers]
    by_name = {layer.name: layer for layer in layers}
    for lspec, layer in zip(spec.layers, layers):   # the spec checked the target exists
        if lspec.type == "Reuse":
            layer.share(by_name[lspec.args["layer"]])
    return Model(spec, layers, tuple(shape or ()), where)


def make_layer(lspec: LayerSpec, where, batch_size: int | None = None) -> Layer:
    """The layer of a spec (its activation, initializer... names resolved; no shapes
    needed). A ConfigError is located with `where(path)` at the argument it names."""
    cls = get_layer_class(lspec.type)
    try:
        layer = cls(lspec.name, **lspec.args)
        if lspec.args.get("return_state"):
            raise ConfigError("return_state gives several outputs (the output and the "
                              "final states), which a layer cannot pass on to the next "
                              "yet: use return_sequences", where="return_state")
    except ConfigError as exc:  # exc.where names the argument, if any
        raise ConfigError(exc.message, where=where(_argument_path(lspec, exc.where))) from None
    layer.batch_size = batch_size
    layer.where = where
    return layer


def _argument_path(lspec: LayerSpec, arg: str | None):
    """The config path of a layer's argument, or of its wrapped layer's (Bidirectional,
    TimeDistributed), as the user wrote it; the layer's own path when unknown."""
    if arg and arg not in lspec.arg_paths and "layer" in lspec.arg_paths:
        wrapped = lspec.args.get("layer")
        if isinstance(wrapped, dict) and len(wrapped) == 1:
            return lspec.arg_paths["layer"] + (next(iter(wrapped)), arg)
    return lspec.arg_path(arg) if arg else lspec.path


def format_shape(shape: Shape) -> str:
    """Keras's way: `(None, 5)`."""
    return "(None, " + ", ".join(str(d) for d in shape) + ")"
