"""The model: a graph of layers with pure `init` / `apply` functions over a params pytree
(built from a ModelSpec by nnrun/nn/builder.py).

Params and state are dicts keyed by unique layer name (only layers that have
any appear), so checkpoints hold one group per layer.

Building a model runs every layer's shape rules (`output_shape`, `param_shapes`) in
pure Python: the output shapes, the weights' shapes and parameter counts, and every
shape error, located, without importing jax (this is `nnrun check`'s shape check).
`param_shapes()` traces `init` once, when training or loading needs the weights'
abstract values, and checks that the trace agrees with the rules.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnrun.config.errors import ConfigError, NnrunError
from nnrun.config.model_spec import ModelSpec
from nnrun.nn.layers import Layer
from nnrun.nn.lazy import jax, jnp
from nnrun.nn.precision import FLOAT32, Policy, apply_layer, cast_tree
from nnrun.nn.trees import (
    filled,
    given_tree,
    leaves,
    masked_size,
    ordered_leaves,
    shape_tree,
    tree_size,
)

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
        self.spec, self.layers = spec, layers
        self._where = where
        self._by_name = {layer.name: layer for layer in layers}
        if spec.is_graph:
            self.input_names = [i.name for i in spec.inputs]
            self.input_shapes = {i.name: tuple(i.shape) for i in spec.inputs}
            self._dtype_names = {i.name: i.dtype for i in spec.inputs}
            self.output_names = list(spec.outputs)
            self.wiring = [tuple(lspec.inputs) for lspec in spec.layers]
        else:
            self.input_names = ["input"]
            self.input_shapes = {"input": tuple(input_shape)}
            self._dtype_names = {"input": spec.input_dtype}
            self.output_names = [layers[-1].name] if layers else ["input"]
            self.wiring = [("input",)] + [(layer.name,) for layer in layers[:-1]]
        self.order = self._topological()
        self.input_shape = self.input_shapes[self.input_names[0]]   # (trainer, data checks)
        # The layers' shape rules give every node's output shape and the weights' shapes,
        # and locate a layer that cannot take its input; pure Python, no jax.
        self.node_shapes: dict[str, Shape] = {}
        self.weight_shapes = self._walk(self._layer_shapes, self.node_shapes)
        self._deferred = self._deferred_epilogues()
        self._abstract: tuple[Any, Any] | None = None   # param_shapes(), traced when needed
        self.infos = [LayerInfo(layer.name, self.spec.layers[i].type, self.node_shapes[layer.name],
                                self.wiring[i] if spec.is_graph else ())
                      for i, layer in enumerate(layers)]
        self.output_shapes = [self.node_shapes[n] for n in self.output_names]
        self.output_shape = self.output_shapes[0]
        self._given = self._given_weights()
        self.policy = FLOAT32   # compile.precision: set_policy

    def set_policy(self, policy: Policy) -> None:
        """Train and run under a precision policy (nnrun/nn/precision.py); nested models too."""
        self.policy = policy
        for layer in self.layers:
            for inner in getattr(layer, "_models", {}).values():
                inner.set_policy(policy)

    @property
    def input_dtypes(self) -> dict[str, Any]:
        """Each input's jax dtype (int32 for token ids, else float32)."""
        return {name: _dtype(d) for name, d in self._dtype_names.items()}

    @property
    def input_dtype(self) -> Any:
        """The first input's jax dtype (the single-input case)."""
        return _dtype(self._dtype_names[self.input_names[0]])

    def _topological(self) -> list[int]:
        """Layer indices, each layer after the ones it takes (the spec rejected cycles): in
        rounds of the layers whose inputs earlier rounds gave, in definition order (Kahn's)."""
        inputs = set(self.input_names)
        missing = [set(refs) - inputs for refs in self.wiring]   # inputs not yet given
        takers: dict[str, list[int]] = {}
        for i, r in ((i, r) for i, refs in enumerate(missing) for r in refs):
            takers.setdefault(r, []).append(i)
        order, ready = [], [i for i, refs in enumerate(missing) if not refs]
        while ready:
            order += ready
            given, ready = [self.layers[i].name for i in ready], []
            for name in given:
                for j in takers.pop(name, ()):
                    missing[j].discard(name)
                    ready += [] if missing[j] else [j]
            ready.sort()
        if len(order) < len(self.layers):   # only reachable for specs built without validation
            raise ConfigError("the layers form a cycle", where=self._where(("model",)))
        return order

    def _deferred_epilogues(self) -> dict[int, int]:
        """Convolution -> the max pooling after it, where the pooling may come first.

        A convolution whose epilogue (bias, relu or linear activation) commutes with max
        pooling (see `epilogue_commutes_with_max`) and whose output only the pooling
        takes: the model pools the convolution proper and applies the epilogue to the
        pooled values, the same values bit for bit, on a quarter of the cells for a 2x2
        pooling; on the CPU a few passes over the convolution's largest output are saved
        (issue 3's CNN: 3,818 -> 4,119 samples/s, medians of a same-process A/B; only
        for poolings that tile their input exactly, see `goes_before_epilogue`). Where the
        window's maximum ties only after the bias is rounded in, the gradient may go to
        another cell than Keras's (a rounding tie; relu's ties at zero have gradient 0
        either way). Not for a layer with an activity regularizer, or one whose output
        is a model output or taken by another layer; `_run` applies it in float32 runs
        only (a mixed-precision policy casts each layer's output on its own)."""
        takers: dict[str, int] = {}
        for refs in self.wiring:
            for r in refs:
                takers[r] = takers.get(r, 0) + 1
        index = {layer.name: i for i, layer in enumerate(self.layers)}
        pairs = {}
        for j, pool in enumerate(self.layers):
            i = index.get(self.wiring[j][0]) if len(self.wiring[j]) == 1 else None
            if i is None or not hasattr(pool, "goes_before_epilogue"):
                continue
            conv = self.layers[i]
            if (getattr(conv, "epilogue_commutes_with_max", False) and conv.activity is None
                    and takers[conv.name] == 1 and conv.name not in self.output_names
                    and pool.goes_before_epilogue(self.node_shapes[conv.name])):
                pairs[i] = j
        return pairs

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

    def _layer_shapes(self, i: int, shape) -> tuple[dict, dict, Shape]:
        """Layer i's shape rules for this input: (params' shapes, state's shapes, output
        shape), as `init` would give them (nested dicts of tuples)."""
        layer = self.layers[i]
        out = tuple(layer.output_shape(shape))
        return (*layer.param_shapes(shape), out)

    def _located(self, make, i: int, shape) -> tuple[dict, dict, Shape]:
        """`make(i, shape)` (layer i's init or shape rules); an error in it becomes a
        ConfigError located at the layer's config (at its argument, if it names one)."""
        layer, lspec = self.layers[i], self.spec.layers[i]
        try:
            return make(i, shape)
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

    def _walk(self, make, shapes: dict | None = None) -> tuple[dict, dict]:
        """(params, state) of `make(i, input_shape) -> (params, state, output_shape)` on the
        layers in order (their init, or shape rules); every node's shape goes into `shapes`."""
        params, state = {}, {}
        known: dict[str, Shape] = dict(self.input_shapes)
        for i in self.order:
            layer = self.layers[i]
            p, s, shape = self._located(make, i, self._layer_input(i, known))
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

    def _init(self, key: jax.Array, shapes: dict | None = None) -> tuple[dict, dict]:
        return self._walk(lambda i, shape: self.layers[i].init(jax.random.fold_in(key, i),
                                                               shape), shapes)

    def _check_shared(self, i: int, existing: dict, new: dict) -> None:
        """A shared layer applied to an input its weights do not fit is a config error."""
        shapes = (shape_tree(existing), shape_tree(new))
        if shapes[0] != shapes[1]:
            lspec = self.spec.layers[i]
            raise ConfigError(f"{self.layers[i].param_name!r} cannot be applied to this input "
                              f"with the same weights: they have shapes {shapes[0]}, this "
                              f"input needs {shapes[1]}",
                              where=self._where(lspec.arg_path("inputs")))

    def init(self, key: jax.Array) -> tuple[dict, dict]:
        """Initial (params, state); layer i draws from fold_in(key, i); a layer's
        `weights:` (Keras 1's `weights=`) replaces its drawn values."""
        params, state = self._init(key)
        for owner, arrays in self._given.items():
            values = iter(arrays)
            if owner in params:
                params = {**params, owner: given_tree(self.weight_shapes[0][owner], values)}
            if owner in state:
                state = {**state, owner: given_tree(self.weight_shapes[1][owner], values)}
        if self.policy.variable != "float32":   # the bfloat16 policy stores bfloat16
            params, state = cast_tree((params, state), self.policy.variable)
        return params, state

    def _given_weights(self) -> dict[str, list]:
        """Layers' `weights:` as float32 arrays by parameter owner, checked against the
        weights' shapes (params then state, each in Keras's get_weights() order)."""
        given = {}
        for lspec, layer in zip(self.spec.layers, self.layers):
            if lspec.initial_weights is None:
                continue
            owner = layer.param_name
            leaves = [*ordered_leaves(self.weight_shapes[0].get(owner, {})),
                      *ordered_leaves(self.weight_shapes[1].get(owner, {}))]
            arrays = [np.asarray(a, np.float32) for a in lspec.initial_weights]
            if [a.shape for a in arrays] != [tuple(sh) for _, sh in leaves]:
                want = ", ".join(f"{k} {tuple(sh)}" for k, sh in leaves) or "none"
                got = ", ".join(str(a.shape) for a in arrays)
                raise ConfigError(f"{lspec.type} {lspec.name!r} has the weights {want} (in "
                                  f"Keras's get_weights() order); `weights:` gives {got}",
                                  where=self._where(lspec.arg_path("weights")))
            given[owner] = arrays
        return given

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
        if self.policy.casts:   # the loss and predictions are float32, as Keras's
            outputs = cast_tree(outputs, "float32")
        masks = tuple(step_masks.get(n) for n in self.output_names)
        if len(outputs) == 1:
            return outputs[0], new_state, activity, masks[0]
        return outputs, new_state, activity, masks

    def outputs_of(self, params: dict, state: dict, x, names: tuple[str, ...]) -> tuple:
        """(the named inputs' / layers' outputs, new state) in inference: what
        `predict --output LAYER` reads (e.g. an autoencoder's codes)."""
        values, _, new_state, _ = self._run(params, state, x, False, None, None, keep=names)
        outputs = tuple(values[n] for n in names)
        return (cast_tree(outputs, "float32") if self.policy.casts else outputs), new_state

    def node_names(self) -> list[str]:
        return [*self.input_names, *(layer.name for layer in self.layers)]

    def _run(self, params, state, x, training, key, mask, keep=()):
        """Every node's output, Keras masks, the new state and the activity penalty.

        The outputs of the convolutions in `_deferred` are taken before their epilogue
        (which their max pooling applies), unless named in `keep`."""
        deferred = {} if self.policy.casts else {i: j for i, j in self._deferred.items()
                                                 if self.layers[i].name not in keep}
        epilogues: dict[int, Any] = {}   # pooling index -> the epilogue it applies
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
                # A frozen BatchNormalization runs in inference mode, as in Keras 3.
                frozen_bn = (not self.spec.layers[i].trainable
                             and self.spec.layers[i].type == "BatchNormalization")

                def run(inputs, lparams, lstate, layer=layer, lkey=lkey, extra=extra,
                        training=training and not frozen_bn):
                    return layer.apply(lparams, lstate, inputs, key=lkey, training=training,
                                       **extra)

                if i in deferred:     # pooled first: its pooling applies the epilogue
                    y, s = layer.compute(lparams, inputs), {}
                    epilogues[deferred[i]] = functools.partial(layer.epilogue, lparams)
                else:
                    y, s = (apply_layer(self.policy, self.spec.layers[i].type, run, inputs,
                                        lparams, lstate) if self.policy.casts
                            else run(inputs, lparams, lstate))
                if i in epilogues:
                    y = epilogues.pop(i)(y)
            values[layer.name], step_masks[layer.name] = y, out_mask
            if layer.activity is not None and self.policy.casts:   # penalties in float32
                y = y.astype(jnp.float32)
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
        """(params, state) as ShapeDtypeStructs, without computing anything: one abstract
        trace of `init` (its key made inside: made outside, it compiles two programs), on
        the first call. It must give the shapes the layers' shape rules gave (what `nnrun
        check` and summary report); rules that disagree with init are a bug, reported."""
        if self._abstract is None:
            traced: dict[str, Shape] = {}
            abstract = jax.eval_shape(lambda: self._init(jax.random.key(0), traced))
            if traced != self.node_shapes or shape_tree(abstract) != shape_tree(
                    self.weight_shapes):
                raise NnrunError(_disagreement(self, traced, abstract))
            self._abstract = abstract
        if self.policy.variable != "float32":
            return cast_tree(self._abstract, self.policy.variable)
        return self._abstract

    def count_params(self) -> dict[str, tuple[int, int]]:
        """Per layer name: number of trainable and non-trainable values (a frozen
        layer's weights are non-trainable, as Keras's `trainable = False`)."""
        params, state = self.weight_shapes
        mask = self.trainable_mask()
        counts = {}
        for layer in self.layers:
            p, m = params.get(layer.name, {}), mask.get(layer.name, {})
            counts[layer.name] = (masked_size(p, m, True), masked_size(p, m, False) + tree_size(
                layer.counted_state(state.get(layer.name, {}))))
        return counts

    def trainable_mask(self) -> dict:
        """The params' structure with a bool per weight: False for the weights of layers
        with `trainable: false` (all of a frozen nested model's; a shared layer's when
        any of its uses is frozen). Static: the train step keeps those weights unchanged."""
        params, _ = self.weight_shapes
        frozen = {layer.param_name for layer, lspec in zip(self.layers, self.spec.layers)
                  if not lspec.trainable}
        mask: dict = {}
        for layer in self.layers:
            name = layer.param_name
            if name not in params or name in mask:
                continue
            if name not in frozen and getattr(layer, "nested", False):
                mask[name] = layer.model_for_summary().trainable_mask()
            else:
                mask[name] = filled(params[name], name not in frozen)
        return mask

    def has_frozen(self) -> bool:
        """Whether any weight is frozen."""
        return not all(leaves(self.trainable_mask()))


def _disagreement(model: Model, traced: dict, abstract: tuple) -> str:
    """The message for shape rules that disagree with init (a bug in a layer)."""
    for name, shape in traced.items():
        if model.node_shapes.get(name) != shape:
            return (f"internal error: layer {name!r}'s shape rule gives "
                    f"{model.node_shapes.get(name)}, its init {shape}")
    rules, init = shape_tree(model.weight_shapes), shape_tree(abstract)
    for which, got, want in zip(("params", "state"), rules, init):
        for name in sorted(set(got) | set(want)):
            if got.get(name) != want.get(name):
                return (f"internal error: layer {name!r}'s {which} by its shape rules are "
                        f"{got.get(name)}, by its init {want.get(name)}")
    return "internal error: the shape rules disagree with init"


def format_shape(shape: Shape) -> str:
    """Keras's way: `(None, 5)`."""
    return "(None, " + ", ".join(str(d) for d in shape) + ")"
