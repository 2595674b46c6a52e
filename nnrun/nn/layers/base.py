"""The layer base class, the layer-type registry and shape helpers shared by every layer
module (each registers its classes here with `@LAYER_TYPES.register`)."""


from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nnrun.config.errors import ConfigError
from nnrun.config.registry import Registry
from nnrun.nn.lazy import jax

LAYER_TYPES = Registry("layer type")

Shape = tuple[int, ...]

class Layer:
    """Base class. Subclasses set `uses_rng` when `apply` needs a PRNG key in training,
    and `uses_mask` when it takes `mask=`: the 0/1 weights of the batch's rows (the
    padded rows of a last partial batch are 0), as batch statistics must skip them."""

    uses_rng = False
    uses_mask = False
    multi_input = False   # merge layers: apply/init/output_shape take lists
    # Keras masks (a 0/1 or boolean (batch, steps) array marking the real time steps, made
    # by Embedding(mask_zero) or Masking): a layer that `supports_masking` passes its
    # input's mask on unchanged; one that `uses_step_mask` takes it as `step_mask=`.
    supports_masking = False
    uses_step_mask = False
    # Argument prefixes whose parameter has another name (Keras: recurrent_regularizer).
    param_of = {"recurrent": "recurrent_kernel"}

    def __init__(self, name: str, **args: Any):
        self.name = name
        self.args = args
        seed = args.get("seed")
        if seed is not None and not 0 <= seed < 2 ** 32:   # folded into a key as a uint32
            raise ConfigError(f"expected an integer in [0, 2**32), got {seed!r}", where="seed")
        self.regularizers, self.constraints = self._weight_options()
        self.activity = None
        if args.get("activity_regularizer") is not None:
            from nnrun.nn.regularizers import get_regularizer

            self.activity = self.resolve("activity_regularizer", get_regularizer)

    def _weight_options(self) -> tuple[dict, dict]:
        """`<weight>_regularizer` / `<weight>_constraint` args, keyed by param name."""
        from nnrun.nn.regularizers import get_constraint, get_regularizer

        regs, cons = {}, {}
        self.regularizer_args: dict[str, str] = {}   # param -> its <weight>_regularizer arg
        for arg, value in self.args.items():
            if value is None:
                continue
            for suffix, getter, table in (("_regularizer", get_regularizer, regs),
                                          ("_constraint", get_constraint, cons)):
                if arg.endswith(suffix) and arg != "activity_regularizer":
                    weight = arg[: -len(suffix)]
                    table[self.param_of.get(weight, weight)] = self.resolve(arg, getter)
                    if table is regs:
                        self.regularizer_args[self.param_of.get(weight, weight)] = arg
        return regs, cons

    def resolve(self, arg: str, getter: Callable[[Any], Any], default: Any = None) -> Any:
        """`getter(self.args[arg])` (a registry lookup); a ConfigError names the argument."""
        try:
            return getter(self.args.get(arg, default))
        except ConfigError as exc:
            raise ConfigError(exc.message, where=arg) from None

    def penalty(self, params: dict) -> jax.Array | float:
        """The weight regularizers' penalty on this layer's params."""
        return sum((fn(params[k], f"{self.name}/{self.regularizer_args[k]}")
                    for k, fn in self.regularizers.items() if k in params), 0.0)

    def project(self, params: dict) -> dict:
        """This layer's params with its constraints applied."""
        if not self.constraints:
            return params
        return {k: self.constraints[k](v) if k in self.constraints else v
                for k, v in params.items()}

    def compute_mask(self, x: jax.Array, step_mask: jax.Array | None) -> jax.Array | None:
        """The Keras mask of this layer's output (None: no mask), as Keras's compute_mask."""
        return step_mask if self.supports_masking else None

    @property
    def param_name(self) -> str:
        """The name its params and state are kept under (a Reuse: the reused layer's)."""
        return self.name

    def counted_state(self, state: dict) -> dict:
        """The part of this layer's state that summary counts as non-trainable weights."""
        return state

    def reset_state(self, state: dict) -> dict:
        """The state at the start of a pass over the data (a stateful RNN's zeros)."""
        return state

    def init(self, key: jax.Array, input_shape: Shape) -> tuple[dict, dict, Shape]:
        return {}, {}, self.output_shape(input_shape)

    def output_shape(self, input_shape: Shape) -> Shape:
        """The output shape for this input shape (no batch axis); a ConfigError if the
        layer cannot take it."""
        return input_shape

    def param_shapes(self, input_shape: Shape) -> tuple[dict, dict]:
        """The shapes of the (params, state) `init` makes for this input, as nested dicts
        of tuples; called after `output_shape` accepted the input."""
        return {}, {}

    def apply(self, params: dict, state: dict, x: jax.Array, *, training: bool,
              key: jax.Array | None) -> tuple[jax.Array, dict]:
        raise NotImplementedError


def require_rank(input_shape: Shape, layout: str) -> None:
    """ConfigError unless the input (batch axis included) has as many axes as `layout`,
    e.g. "(batch, steps, channels)"."""
    rank = layout.count(",") + 1
    if len(input_shape) + 1 != rank:
        raise ConfigError(f"expects a rank-{rank} input {layout}, got rank "
                          f"{len(input_shape) + 1}")


def format_shapes(shapes) -> str:
    """Input shapes the Keras way, batch axis included: `[(None, 8), (None, 4)]`."""
    return "[" + ", ".join("(None, " + ", ".join(str(d) for d in s) + ")" for s in shapes) + "]"


def get_layer_class(type_name: str) -> type[Layer]:
    return LAYER_TYPES.get(type_name)
