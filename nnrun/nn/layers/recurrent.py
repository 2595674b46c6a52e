"""Recurrent layers: SimpleRNN, LSTM (gates i, f, c, o) and GRU (gates z, r, h; reset_after),
with Keras 3's weight layouts, each a `lax.scan` over the time axis.

Masked time steps (a Keras mask from Embedding(mask_zero) or Masking) keep the previous
state and repeat the previous output, as Keras 3. A `stateful` layer starts each batch
from the state the previous batch ended with (non-trainable model state, reset at the
start of every pass over the data); its batch size is the config's fit.batch_size.
"""

from __future__ import annotations

from nnrun.config.errors import ConfigError
from nnrun.nn import activations, initializers
from nnrun.nn.initializers import weight_shape
from nnrun.nn.layers.base import LAYER_TYPES, Layer, require_rank
from nnrun.nn.layers.core import keep_mask
from nnrun.nn.layers.lstm_scan import lstm_scan
from nnrun.nn.lazy import jax, jnp
from nnrun.nn.rows import by_rows


class _Recurrent(Layer):
    """Shared by the three: weights, the scan over time, return_sequences, go_backwards."""

    gates = 1  # blocks of `units` columns in the kernels
    uses_rng = True  # dropout / recurrent_dropout masks in training
    uses_step_mask = True
    zero_output_for_mask = False   # Bidirectional sets it with return_sequences, as Keras
    batch_size: int | None = None  # set by the model builder; needed when stateful

    def __init__(self, name, **args):
        super().__init__(name, **args)
        self.act = self.resolve("activation", activations.get, "tanh")
        self.rec_act = self.resolve("recurrent_activation", activations.get, "sigmoid")
        self.inits = {n: self.resolve(f"{n}_initializer", initializers.get, d) for n, d in (
            ("kernel", "glorot_uniform"), ("recurrent", "orthogonal"), ("bias", "zeros"))}

    def output_shape(self, input_shape):
        require_rank(input_shape, "(batch, steps, features)")
        units = self.args["units"]
        return (input_shape[0], units) if self.args.get("return_sequences") else (units,)

    def compute_mask(self, x, step_mask):
        return step_mask if self.args.get("return_sequences") else None

    @property
    def stateful(self) -> bool:
        return bool(self.args.get("stateful"))

    def state_names(self) -> tuple[str, ...]:
        """The carried states, in Keras's order (LSTM: h, c)."""
        return ("h",)

    def bias_shape(self) -> tuple[int, ...]:
        return (self.gates * self.args["units"],)

    def init_bias(self, key):
        return self.inits["bias"](key, self.bias_shape(), jnp.float32)

    def param_shapes(self, input_shape):
        u, g = self.args["units"], self.gates
        params = {"kernel": weight_shape(self.inits["kernel"], (input_shape[-1], g * u)),
                  "recurrent_kernel": weight_shape(self.inits["recurrent"], (u, g * u))}
        if self.args.get("use_bias", True):
            params["bias"] = weight_shape(self.inits["bias"], self.bias_shape())
        return params, {name: shape for name, shape in self._state_shapes()}

    def _state_shapes(self) -> list[tuple[str, tuple[int, int]]]:
        """A stateful layer's carried states, (batch, units) each; none otherwise."""
        if not self.stateful:
            return []
        if self.batch_size is None:
            raise ConfigError("a stateful recurrent layer needs a fixed batch size "
                              "(fit.batch_size)", where="stateful")
        return [(name, (self.batch_size, self.args["units"])) for name in self.state_names()]

    def init(self, key, input_shape):
        out = self.output_shape(input_shape)
        u, g = self.args["units"], self.gates
        k1, k2, k3 = jax.random.split(key, 3)
        params = {"kernel": self.inits["kernel"](k1, (input_shape[-1], g * u), jnp.float32),
                  "recurrent_kernel": self.inits["recurrent"](k2, (u, g * u), jnp.float32)}
        if self.args.get("use_bias", True):
            params["bias"] = self.init_bias(k3)
        return params, self.reset_state({}), out

    def reset_state(self, state: dict) -> dict:
        """A stateful layer's zero states ((batch, units) each); {} otherwise."""
        if not self.stateful:
            return state
        return {name: jnp.zeros(shape, jnp.float32) for name, shape in self._state_shapes()}

    def counted_state(self, state: dict) -> dict:
        return {}   # carried states are not weights (Keras counts none)

    def initial_carry(self, batch: int, dtype):
        return jnp.zeros((batch, self.args["units"]), dtype)

    def carry_of(self, states: tuple):
        return states[0]

    def states_of(self, carry) -> tuple:
        return (carry,)

    def cell(self, cp: dict, z, rec, carry):
        """One time step from z = x_t @ kernel [+ bias] and rec = feed(carry) @
        recurrent_kernel: -> (carry, h_t). `cp`: the params it uses (cell_params)."""
        raise NotImplementedError

    def cell_params(self, params: dict) -> dict:
        return {}

    def feed(self, carry, rec_mask):
        """What multiplies the recurrent kernel: the previous output (times the
        recurrent-dropout mask, if any)."""
        return _masked(self.states_of(carry)[0], rec_mask)

    def step(self, params, carry, z, rec_mask):
        """One time step: (carry, z) -> (carry, h_t)."""
        rec = self.feed(carry, rec_mask) @ params["recurrent_kernel"]
        return self.cell(self.cell_params(params), z, rec, carry)

    def masked(self, step, carry, z, keep):
        """`step(carry, z)`, except where `keep` is 0 (a masked time step): there the
        carry is kept and the previous output repeated (zeros for a Bidirectional's
        sequences), as Keras 3."""
        new, out = step(carry, z)
        if keep is None:
            return new, out
        prev = jnp.zeros_like(out) if self.zero_output_for_mask else self.states_of(carry)[0]
        new = jax.tree_util.tree_map(lambda a, b: jnp.where(keep > 0, a, b), new, carry)
        return new, jnp.where(keep > 0, out, prev)

    def input_projection(self, params, x):
        """x (steps, batch, features) time-major -> (steps, batch, gates * units)."""
        z = jnp.einsum("tbf,fg->tbg", x, params["kernel"])
        bias = params.get("bias")
        if bias is not None and bias.ndim == 1:
            z = z + bias
        return z

    def recur(self, params, carry, xt, keep, rec_mask, sequences: bool):
        """The input projection (one product) and the loop over time, from the
        time-major input `xt` -> (carry, every step's output (steps, batch, units) or
        None when not `sequences`, the last step's output)."""
        projected = self.input_projection(params, xt)
        unroll = projected.shape[0] if self.args.get("unroll") else 1
        carry, hs = jax.lax.scan(
            lambda c, inputs: self.masked(lambda cc, z: self.step(params, cc, z, rec_mask),
                                          c, *inputs),
            carry, (projected, keep), unroll=unroll)
        return carry, hs, hs[-1]

    def dropout_masks(self, key, batch: int, features: int):
        """Keras's masks: one per sequence (the same at every step), kept values 1/(1-rate)."""
        masks = []
        for i, (rate, width) in enumerate(((self.args.get("dropout", 0.0), features),
                                           (self.args.get("recurrent_dropout", 0.0),
                                            self.args["units"]))):
            if key is None or not rate:
                masks.append(None)
                continue
            keep = keep_mask(jax.random.fold_in(key, i), (batch, width), 1.0 - rate)
            masks.append(keep.astype(jnp.float32) / (1.0 - rate))
        return masks

    def apply(self, params, state, x, *, training, key, step_mask=None):
        """(output, state); with return_state the output is [output, *final states]."""
        in_mask, rec_mask = self.dropout_masks(key if training else None, x.shape[0],
                                               x.shape[-1])
        if in_mask is not None:
            x = x * in_mask[:, None, :]
        xt = jnp.swapaxes(x, 0, 1)   # time-major before the product: x is transposed, not z
        keep = None if step_mask is None else \
            jnp.swapaxes(step_mask, 0, 1)[..., None].astype(jnp.float32)
        if self.args.get("go_backwards"):
            xt = xt[::-1]
            keep = None if keep is None else keep[::-1]
        if self.stateful:
            carry = self.carry_of(tuple(state[n] for n in self.state_names()))
        else:
            carry = self.initial_carry(x.shape[0], x.dtype)

        sequences = bool(self.args.get("return_sequences"))
        # each row's recurrence is its own: under data parallelism, run per device
        carry, hs, last = by_rows(
            lambda p, c, x, k, m: self.recur(p, c, x, k, m, sequences),
            params, (carry, xt, keep, rec_mask), (0, 1, 1, 0), (0, 1, 0))
        if self.stateful:
            state = dict(zip(self.state_names(), self.states_of(carry)))
        y = jnp.swapaxes(hs, 0, 1) if sequences else last
        if self.args.get("return_state"):
            return [y, *self.states_of(carry)], state
        return y, state


def _masked(h, mask):
    return h if mask is None else h * mask


@LAYER_TYPES.register("SimpleRNN")
class SimpleRNN(_Recurrent):
    def cell(self, cp, z, rec, h):
        h = self.act(z + rec)
        return h, h


@LAYER_TYPES.register("LSTM")
class LSTM(_Recurrent):
    gates = 4

    def init_bias(self, key):
        bias = super().init_bias(key)
        if self.args.get("unit_forget_bias", True):
            u = self.args["units"]
            bias = jnp.concatenate([bias[:u], jnp.ones((u,), bias.dtype), bias[2 * u:]])
        return bias

    def initial_carry(self, batch, dtype):
        zeros = super().initial_carry(batch, dtype)
        return (zeros, zeros)

    def state_names(self):
        return ("h", "c")

    def carry_of(self, states):
        return tuple(states)

    def states_of(self, carry):
        return tuple(carry)

    def recur(self, params, carry, xt, keep, rec_mask, sequences):
        """The default cell (tanh, sigmoid) with no step mask, recurrent dropout or
        unroll runs nnrun/layers/lstm_scan.py (same numbers, a faster program)."""
        if (keep is None and rec_mask is None and not self.args.get("unroll")
                and self.act is activations.tanh and self.rec_act is activations.sigmoid):
            bias = params.get("bias")
            if bias is None:
                bias = jnp.zeros((params["kernel"].shape[-1],), params["kernel"].dtype)
            hs, h, c = lstm_scan(sequences, xt, params["kernel"], bias,
                                 params["recurrent_kernel"], *carry)
            return (h, c), hs, h
        return super().recur(params, carry, xt, keep, rec_mask, sequences)

    def cell(self, cp, z, rec, carry):
        h, c = carry
        z = z + rec
        i, f, g, o = jnp.split(z, 4, axis=-1)
        c = self.rec_act(f) * c + self.rec_act(i) * self.act(g)
        h = self.rec_act(o) * self.act(c)
        return (h, c), h


@LAYER_TYPES.register("GRU")
class GRU(_Recurrent):
    gates = 3

    def bias_shape(self):
        u3 = 3 * self.args["units"]
        return (2, u3) if self.args.get("reset_after", True) else (u3,)

    def input_projection(self, params, x):
        z = super().input_projection(params, x)
        if "bias" in params and params["bias"].ndim == 2:
            z = z + params["bias"][0]   # input bias; the recurrent one is added per step
        return z

    def cell_params(self, params):
        return {"bias": params["bias"][1]} if "bias" in params else {}

    def cell(self, cp, z, rec, h_prev):
        u = self.args["units"]
        if "bias" in cp:
            rec = rec + cp["bias"]   # the recurrent bias, inside the reset gate's product
        x_z, x_r, x_h = z[:, :u], z[:, u:2 * u], z[:, 2 * u:]
        r_z, r_r, r_h = rec[:, :u], rec[:, u:2 * u], rec[:, 2 * u:]
        zg = self.rec_act(x_z + r_z)
        r = self.rec_act(x_r + r_r)
        h = zg * h_prev + (1 - zg) * self.act(x_h + r * r_h)
        return h, h

    def step(self, params, h_prev, z, rec_mask):
        if self.args.get("reset_after", True):
            return super().step(params, h_prev, z, rec_mask)
        # reset_after=False: r multiplies h before the kernel's candidate block
        u = self.args["units"]
        kernel = params["recurrent_kernel"]
        h = _masked(h_prev, rec_mask)   # Keras: the dropped h_tm1 feeds the recurrent terms
        x_z, x_r, x_h = z[:, :u], z[:, u:2 * u], z[:, 2 * u:]
        zg = self.rec_act(x_z + h @ kernel[:, :u])
        r = self.rec_act(x_r + h @ kernel[:, u:2 * u])
        r_h = (r * h) @ kernel[:, 2 * u:]
        h = zg * h_prev + (1 - zg) * self.act(x_h + r_h)
        return h, h
