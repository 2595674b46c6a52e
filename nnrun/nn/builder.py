"""The model builder: a ModelSpec -> a `Model` (nnrun/nn/model.py), each layer
instantiated from its spec with its names resolved, then shapes inferred."""

from __future__ import annotations

from nnrun.config.errors import ConfigError
from nnrun.config.model_spec import LayerSpec, ModelSpec
from nnrun.nn.layers import Layer, get_layer_class
from nnrun.nn.model import Model, Shape


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
    if getattr(layer, "nested", False):   # builds its inner model with this builder
        layer.build_model = build_model
    return layer


def _argument_path(lspec: LayerSpec, arg: str | None):
    """The config path of a layer's argument, or of its wrapped layer's (Bidirectional,
    TimeDistributed), as the user wrote it; the layer's own path when unknown."""
    if arg and arg not in lspec.arg_paths and "layer" in lspec.arg_paths:
        wrapped = lspec.args.get("layer")
        if isinstance(wrapped, dict) and len(wrapped) == 1:
            return lspec.arg_paths["layer"] + (next(iter(wrapped)), arg)
    return lspec.arg_path(arg) if arg else lspec.path
