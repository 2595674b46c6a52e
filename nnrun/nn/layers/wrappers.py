"""Wrappers: Bidirectional (a recurrent layer run both ways) and TimeDistributed
(a layer applied to every time step)."""

from __future__ import annotations

from nnrun.config.errors import ConfigError
from nnrun.nn.layers.base import LAYER_TYPES, Layer, get_layer_class
from nnrun.nn.lazy import jax, jnp

RECURRENT = ("SimpleRNN", "LSTM", "GRU")


def _inner(spec: dict, **overrides) -> tuple[str, type, str, dict]:
    ((type_, args),) = spec.items()
    args = dict(args)
    name = args.pop("name")
    args.update(overrides)
    return type_, get_layer_class(type_), name, args


@LAYER_TYPES.register("Bidirectional")
class Bidirectional(Layer):
    """Keras 3: params {forward, backward}; the backward sequence is flipped back."""

    def __init__(self, name, **args):
        super().__init__(name, **args)
        type_, cls, inner, inner_args = _inner(args["layer"])
        if type_ not in RECURRENT:
            raise ConfigError(f"Bidirectional wraps a recurrent layer ({', '.join(RECURRENT)}), "
                              f"not {type_}", where="layer")
        for arg in ("stateful", "return_state"):
            if inner_args.get(arg):
                raise ConfigError(f"{arg} is not supported inside Bidirectional", where="layer")
        self.forward = cls(f"forward_{inner}", **inner_args)
        self.backward = cls(f"backward_{inner}", **{
            **inner_args, "go_backwards": not inner_args.get("go_backwards", False)})
        self.return_sequences = inner_args.get("return_sequences", False)
        for layer in (self.forward, self.backward):   # Keras: zeros at masked steps
            layer.zero_output_for_mask = self.return_sequences
        self.uses_rng = self.forward.uses_rng

    uses_step_mask = True

    def compute_mask(self, x, step_mask):
        return step_mask if self.return_sequences else None

    def output_shape(self, input_shape):
        out = self.forward.output_shape(input_shape)
        if self.args.get("merge_mode", "concat") == "concat":
            return (*out[:-1], 2 * out[-1])
        return out

    def param_shapes(self, input_shape):
        return {"forward": self.forward.param_shapes(input_shape)[0],
                "backward": self.backward.param_shapes(input_shape)[0]}, {}

    def init(self, key, input_shape):
        kf, kb = jax.random.split(key)
        pf, _, _ = self.forward.init(kf, input_shape)
        pb, _, _ = self.backward.init(kb, input_shape)
        return {"forward": pf, "backward": pb}, {}, self.output_shape(input_shape)

    def apply(self, params, state, x, *, training, key, step_mask=None):
        kf = kb = None
        if key is not None:
            kf, kb = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
        yf, _ = self.forward.apply(params["forward"], {}, x, training=training, key=kf,
                                   step_mask=step_mask)
        yb, _ = self.backward.apply(params["backward"], {}, x, training=training, key=kb,
                                    step_mask=step_mask)
        if self.return_sequences:
            yb = yb[:, ::-1]
        mode = self.args.get("merge_mode", "concat")
        if mode == "concat":
            return jnp.concatenate([yf, yb], axis=-1), state
        merged = {"sum": yf + yb, "mul": yf * yb, "ave": (yf + yb) / 2}[mode]
        return merged, state

    def penalty(self, params):
        return self.forward.penalty(params["forward"]) + self.backward.penalty(params["backward"])

    def project(self, params):
        return {"forward": self.forward.project(params["forward"]),
                "backward": self.backward.project(params["backward"])}


@LAYER_TYPES.register("TimeDistributed")
class TimeDistributed(Layer):
    """The wrapped layer on (batch * steps, ...) rows; its params are the wrapped layer's."""

    supports_masking = True   # the time steps' mask passes through, as Keras

    def __init__(self, name, **args):
        super().__init__(name, **args)
        _, cls, inner, inner_args = _inner(args["layer"])
        self.inner = cls(inner, **inner_args)
        self.uses_rng, self.uses_mask = self.inner.uses_rng, self.inner.uses_mask

    def _check(self, input_shape):
        if len(input_shape) < 2:
            raise ConfigError(f"expects (batch, steps, ...) input, got rank {len(input_shape) + 1}")

    def output_shape(self, input_shape):
        self._check(input_shape)
        return (input_shape[0], *self.inner.output_shape(input_shape[1:]))

    def param_shapes(self, input_shape):
        return self.inner.param_shapes(input_shape[1:])

    def init(self, key, input_shape):
        self._check(input_shape)
        params, state, out = self.inner.init(key, input_shape[1:])
        return params, state, (input_shape[0], *out)

    def apply(self, params, state, x, *, training, key, mask=None):
        n, t = x.shape[:2]
        extra = {"mask": None if mask is None else jnp.repeat(mask, t)} \
            if self.inner.uses_mask else {}
        y, state = self.inner.apply(params, state, x.reshape(n * t, *x.shape[2:]),
                                    training=training, key=key, **extra)
        return y.reshape(n, t, *y.shape[1:]), state

    def penalty(self, params):
        return self.inner.penalty(params)

    def project(self, params):
        return self.inner.project(params)
