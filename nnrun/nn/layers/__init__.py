"""Layer implementations: each a pair of pure functions, `init` and `apply`.

`init(key, input_shape) -> (params, state, output_shape)` threads shapes
(without the batch axis) through a stack without running data;
`apply(params, state, x, *, training, key) -> (y, state)` computes.

Each layer also has shape rules in pure Python: `output_shape(input_shape)`, which
raises a ConfigError for an input the layer cannot take, and `param_shapes(input_shape)`,
the shapes of the params and state `init` makes. The model builder runs them (no jax
needed: `nnrun check`); tests/test_shape_rules.py checks they equal what `init` gives.

The classes live in one module per family; importing this package imports them
all, which registers them in `LAYER_TYPES` (nnrun/nn/layers/base.py).
"""

from nnrun.nn.layers import (  # noqa: F401  (registers the layers)
    activation_layers,
    conv,
    core,
    merge,
    nested,
    norm_noise,
    recurrent,
    shape_layers,
    wrappers,
)
from nnrun.nn.layers.base import LAYER_TYPES, Layer, Shape, format_shapes, get_layer_class

__all__ = ["LAYER_TYPES", "Layer", "Shape", "format_shapes", "get_layer_class"]
