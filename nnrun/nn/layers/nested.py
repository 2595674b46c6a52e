"""Nested models: a Sequential stack of layers used as one layer (the founding notes'
autoencoder: an encoder and a decoder). Its params are one group per inner layer, under
the nested model's name."""

from __future__ import annotations

from nnrun.config.errors import ConfigError
from nnrun.config.model_spec import ModelSpec
from nnrun.nn.layers.base import LAYER_TYPES, Layer, format_shapes


@LAYER_TYPES.register("Sequential")
class Sequential(Layer):
    """The inner model is built for the input shape it is given (cached per shape)."""

    nested = True
    uses_mask = True   # the batch's row weights reach a BatchNormalization inside
    supports_masking = False

    def __init__(self, name, **args):
        super().__init__(name, **args)
        self._models: dict = {}
        self.where = None   # the outer builder's locator, set with batch_size
        # nnrun.nn.builder.build_model, set by the builder that makes this layer (a layer
        # module does not import the model builder: the builder imports the layers)
        self.build_model = None

    def model(self, input_shape):
        shape = tuple(input_shape)
        if shape not in self._models:
            self._models[shape] = self.build_model(
                ModelSpec(shape, "float32", tuple(self.args["layers"])), where=self.where,
                batch_size=self.batch_size)
        return self._models[shape]

    @property
    def uses_rng(self) -> bool:   # built (by the outer model's shape rules) before apply
        return any(layer.uses_rng for m in self._models.values() for layer in m.layers)

    def output_shape(self, input_shape):
        return self.model(input_shape).output_shape

    def param_shapes(self, input_shape):
        return self.model(input_shape).weight_shapes

    def init(self, key, input_shape):
        inner = self.model(input_shape)
        params, state = inner.init(key)
        return params, state, inner.output_shape

    def apply_with_activity(self, params, state, x, *, training, key, mask=None):
        y, state, activity, _ = self.model(x.shape[1:]).apply_with_activity(
            params, state, x, training=training, key=key, mask=mask)
        return y, state, activity

    def apply(self, params, state, x, *, training, key, mask=None):
        y, state, _ = self.apply_with_activity(params, state, x, training=training, key=key,
                                               mask=mask)
        return y, state

    def _only_model(self):
        if len(self._models) != 1:
            raise ConfigError("a nested model used at several input shapes", where="layers")
        return next(iter(self._models.values()))

    def model_for_summary(self):
        return self._only_model()

    def penalty(self, params):
        return self._only_model().regularization(params)

    def project(self, params):
        return self._only_model().constrain(params)

    def reset_state(self, state):
        return self._only_model().reset_states(state)


@LAYER_TYPES.register("Model")
class NestedGraph(Sequential):
    """A graph model used as a layer: its inputs take the layer's inputs in order (one
    input: the value itself), its one output is the layer's output."""

    def __init__(self, name, **args):
        super().__init__(name, **args)
        graph = args["graph"]
        self.input_names = [i.name for i in graph.inputs]
        self.multi_input = len(self.input_names) > 1

    def model(self, input_shape):
        shapes = [tuple(s) for s in input_shape] if self.multi_input else [tuple(input_shape)]
        graph = self.args["graph"]
        want = [tuple(i.shape) for i in graph.inputs]
        if shapes != want:
            raise ConfigError(f"the nested model takes {format_shapes(want)}, got "
                              f"{format_shapes(shapes)}", where="graph")
        if "model" not in self._models:
            self._models["model"] = self.build_model(graph, where=self.where,
                                                batch_size=self.batch_size)
        return self._models["model"]

    def _inputs(self, x):
        return dict(zip(self.input_names, x)) if self.multi_input else x

    def init(self, key, input_shape):
        inner = self.model(input_shape)
        params, state = inner.init(key)
        return params, state, inner.output_shape

    def apply_with_activity(self, params, state, x, *, training, key, mask=None):
        inner = self._only_model()
        y, state, activity, _ = inner.apply_with_activity(
            params, state, self._inputs(x), training=training, key=key, mask=mask)
        return y, state, activity
