"""Keras 3's optimizer update rules as optax gradient transformations, and their registry.

Each rule follows keras/src/optimizers/<name>.py operation by operation (the same
constants, the same float32 operations in the same order), so that given the same
gradients the parameters match Keras 3 to float32 rounding. Clipping and weight decay
are transformations of their own; `nnrun.nn.optimizers` chains them from a config.

Keras decays the *variable* (var -= var * wd * lr) before the rule runs; no rule reads
the variable, so in delta form the decay is added after the rule (see `keras_weight_decay`).

Every rule's state is a NamedTuple whose first fields are `count` (updates done) and
`learning_rate` (the rate the schedule gives the next update). States hold arrays only.
Rules and weight decay take an extra argument `lr_scale` (optax's extra args): the rate
used is the schedule's times it, so callbacks (ReduceLROnPlateau, LearningRateScheduler)
change the rate between epochs without a recompile.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from nnrun.config.registry import Registry
from nnrun.nn.lazy import Array, jax, jnp, optax

Schedule = Callable[[Array], Any]
LearningRate = float | Schedule

OPTIMIZERS = Registry("optimizer")

CLIP_OPTIONS = ("clipnorm", "clipvalue", "global_clipnorm")
BASE_DEFAULTS: dict[str, Any] = {"weight_decay": None, "clipnorm": None, "clipvalue": None,
                                 "global_clipnorm": None}
class OptimizerDef(NamedTuple):
    """A registered optimizer: its rule and its parameters with Keras 3 defaults."""

    rule: Callable[..., optax.GradientTransformation]  # (learning_rate, **rule params)
    defaults: dict[str, Any]  # learning_rate, the rule's parameters, then BASE_DEFAULTS


# ---------------------------------------------------------------- rule machinery


def _as_schedule(learning_rate: LearningRate) -> Schedule:
    if callable(learning_rate):
        return learning_rate
    value = float(learning_rate)
    return lambda count: value


def _lr_at(schedule: Schedule, count: jax.Array) -> jax.Array:
    # Keras keeps a float learning rate in a float32 variable; strongly typed so that
    # the state's dtypes never change between init and update (lax.scan carries).
    return jnp.asarray(schedule(count), jnp.float32)


def _keras_rule(state_cls: type, learning_rate: LearningRate, leaf_step: Callable,
                slots: dict[str, Callable | None], *, scalars: dict[str, Callable] | None = None,
                advance: Callable | None = None) -> optax.GradientTransformation:
    """A transformation that runs `leaf_step` on every leaf, the way Keras does.

    slots: state name -> init(param) -> array; None marks a slot the settings switch off,
      stored as () because Keras creates no variable for it.
    scalars: state name -> init(dtype) -> scalar (Nadam's u_product).
    advance(state, t) -> new scalars, run before the leaves (Keras's _backend_update_step).
    leaf_step(g, *active slots, lr=, t=, **scalars) -> (delta, *new active slots), where
      lr and t (Keras's local_step = iterations + 1) come cast to the leaf's dtype.
    """
    schedule = _as_schedule(learning_rate)
    active = [name for name, init in slots.items() if init is not None]

    def init(params):
        leaves = jax.tree.leaves(params)
        dtype = leaves[0].dtype if leaves else jnp.float32
        fields = {name: jax.tree.map(f, params) if f else () for name, f in slots.items()}
        fields.update({name: f(dtype) for name, f in (scalars or {}).items()})
        count = jnp.zeros([], jnp.int32)
        return state_cls(count=count, learning_rate=_lr_at(schedule, count), **fields)

    def update(updates, state, params=None, *, lr_scale=None, **extra):
        del params, extra
        lr = _scaled(jnp.asarray(schedule(state.count)), lr_scale)
        t = state.count + 1
        new_scalars = advance(state, t) if advance else {}
        grads, treedef = jax.tree.flatten(updates)
        slot_leaves = [treedef.flatten_up_to(getattr(state, name)) for name in active]
        outs = [leaf_step(g, *s, lr=lr.astype(g.dtype), t=t.astype(g.dtype), **new_scalars)
                for g, *s in zip(grads, *slot_leaves, strict=True)]
        columns = list(zip(*outs, strict=True)) if outs else [()] * (1 + len(active))
        new_slots = {name: treedef.unflatten(col)
                     for name, col in zip(active, columns[1:], strict=True)}
        count = optax.safe_increment(state.count)
        new_state = state._replace(count=count, learning_rate=_lr_at(schedule, count),
                                   **new_slots, **new_scalars)
        return treedef.unflatten(columns[0]), new_state

    return optax.GradientTransformationExtraArgs(init, update)


def _scaled(lr: jax.Array, lr_scale: Any) -> jax.Array:
    """The schedule's rate times the callbacks' scale (float32, as Keras's variable)."""
    if lr_scale is None:
        return lr
    return (lr.astype(jnp.float32) * jnp.asarray(lr_scale, jnp.float32)).astype(lr.dtype)


def _zeros(p):
    return jnp.zeros_like(p)


def _register(name: str, *aliases: str, learning_rate: float, weight_decay: float | None = None,
              **rule_defaults: Any) -> Callable:
    def add(rule: Callable) -> Callable:
        defaults = {"learning_rate": learning_rate, **rule_defaults, **BASE_DEFAULTS,
                    "weight_decay": weight_decay}
        OPTIMIZERS.add(name, OptimizerDef(rule, defaults), *aliases)
        return rule

    return add


# ---------------------------------------------------------------- the rules


class SgdState(NamedTuple):
    count: jax.Array
    learning_rate: jax.Array
    momentum: Any


@_register("sgd", "SGD", learning_rate=0.01, momentum=0.0, nesterov=False)
def sgd_rule(learning_rate: LearningRate, momentum: float = 0.0,
             nesterov: bool = False) -> optax.GradientTransformation:
    """Keras 3 SGD: m = m*momentum - g*lr; var += m (nesterov: m*momentum - g*lr)."""

    def step(g, *m, lr, t):
        if momentum == 0:
            return (-(g * lr),)
        m = m[0] * momentum - g * lr
        return (m * momentum - g * lr if nesterov else m), m

    return _keras_rule(SgdState, learning_rate, step,
                       {"momentum": _zeros if momentum != 0 else None})


class AdagradState(NamedTuple):
    count: jax.Array
    learning_rate: jax.Array
    accumulator: Any


@_register("adagrad", "Adagrad", learning_rate=0.001, initial_accumulator_value=0.1,
           epsilon=1e-7)
def adagrad_rule(learning_rate: LearningRate, initial_accumulator_value: float = 0.1,
                 epsilon: float = 1e-7) -> optax.GradientTransformation:
    """Keras 3 Adagrad: acc += g^2; var -= lr*g / sqrt(acc + eps)."""

    def step(g, acc, *, lr, t):
        acc = acc + jnp.square(g)
        return -((lr * g) / jnp.sqrt(acc + epsilon)), acc

    return _keras_rule(AdagradState, learning_rate, step, {
        "accumulator": lambda p: jnp.full_like(p, initial_accumulator_value)})


class AdadeltaState(NamedTuple):
    count: jax.Array
    learning_rate: jax.Array
    accumulated_grad: Any
    accumulated_delta_var: Any


@_register("adadelta", "Adadelta", learning_rate=0.001, rho=0.95, epsilon=1e-7)
def adadelta_rule(learning_rate: LearningRate, rho: float = 0.95,
                  epsilon: float = 1e-7) -> optax.GradientTransformation:
    """Keras 3 Adadelta; note the learning rate still scales the step (Keras default 0.001)."""

    def rms(x):
        return jnp.sqrt(x + epsilon)

    def step(g, acc_grad, acc_delta, *, lr, t):
        acc_grad = rho * acc_grad + (1 - rho) * jnp.square(g)
        delta_var = -((rms(acc_delta) * g) / rms(acc_grad))
        acc_delta = rho * acc_delta + (1 - rho) * jnp.square(delta_var)
        return lr * delta_var, acc_grad, acc_delta

    return _keras_rule(AdadeltaState, learning_rate, step,
                       {"accumulated_grad": _zeros, "accumulated_delta_var": _zeros})


class RmspropState(NamedTuple):
    count: jax.Array
    learning_rate: jax.Array
    velocity: Any
    momentum: Any
    average_gradient: Any


@_register("rmsprop", "RMSprop", learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7,
           centered=False)
def rmsprop_rule(learning_rate: LearningRate, rho: float = 0.9, momentum: float = 0.0,
                 epsilon: float = 1e-7, centered: bool = False) -> optax.GradientTransformation:
    """Keras 3 RMSprop: epsilon inside the square root; momentum accumulates lr*g/rms."""

    def step(g, v, *rest, lr, t):
        rest = list(rest)
        mom = rest.pop(0) if momentum > 0 else None
        avg = rest.pop(0) if centered else None
        v = rho * v + (1 - rho) * jnp.square(g)
        if centered:
            avg = rho * avg + (1 - rho) * g
            denominator = v - jnp.square(avg) + epsilon
        else:
            denominator = v + epsilon
        increment = (lr * g) / jnp.sqrt(denominator)
        if momentum > 0:
            mom = momentum * mom + increment
            increment = mom
        return (-increment, v) + tuple(s for s in (mom, avg) if s is not None)

    return _keras_rule(RmspropState, learning_rate, step, {
        "velocity": _zeros, "momentum": _zeros if momentum > 0 else None,
        "average_gradient": _zeros if centered else None})


class AdamState(NamedTuple):
    count: jax.Array
    learning_rate: jax.Array
    momentum: Any
    velocity: Any
    velocity_hat: Any


def adam_rule(learning_rate: LearningRate, beta_1: float = 0.9, beta_2: float = 0.999,
              epsilon: float = 1e-7, amsgrad: bool = False) -> optax.GradientTransformation:
    """Keras 3 Adam, which is not optax's: epsilon is added to sqrt(v) and the bias
    corrections are folded into alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)."""

    def step(g, m, v, *v_hat, lr, t):
        beta_1_power = jnp.power(jnp.asarray(beta_1, g.dtype), t)
        beta_2_power = jnp.power(jnp.asarray(beta_2, g.dtype), t)
        alpha = lr * jnp.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        m = m + (g - m) * (1 - beta_1)
        v = v + (jnp.square(g) - v) * (1 - beta_2)
        extra = ()
        v_used = v
        if amsgrad:
            v_used = jnp.maximum(v_hat[0], v)
            extra = (v_used,)
        return (-((m * alpha) / (jnp.sqrt(v_used) + epsilon)), m, v) + extra

    return _keras_rule(AdamState, learning_rate, step, {
        "momentum": _zeros, "velocity": _zeros, "velocity_hat": _zeros if amsgrad else None})


_ADAM_DEFAULTS = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "amsgrad": False}
_register("adam", "Adam", learning_rate=0.001, **_ADAM_DEFAULTS)(adam_rule)
# AdamW is Adam with the base optimizer's weight decay on by default.
_register("adamw", "AdamW", learning_rate=0.001, weight_decay=0.004, **_ADAM_DEFAULTS)(adam_rule)


class AdamaxState(NamedTuple):
    count: jax.Array
    learning_rate: jax.Array
    momentum: Any
    norm: Any


@_register("adamax", "Adamax", learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7)
def adamax_rule(learning_rate: LearningRate, beta_1: float = 0.9, beta_2: float = 0.999,
                epsilon: float = 1e-7) -> optax.GradientTransformation:
    """Keras 3 Adamax: u = max(beta_2*u, |g|); var -= lr*m / ((1 - beta_1^t) * (u + eps))."""

    def step(g, m, u, *, lr, t):
        beta_1_power = jnp.power(jnp.asarray(beta_1, g.dtype), t)
        m = m + (g - m) * (1 - beta_1)
        u = jnp.maximum(beta_2 * u, jnp.abs(g))
        return -((lr * m) / ((1 - beta_1_power) * (u + epsilon))), m, u

    return _keras_rule(AdamaxState, learning_rate, step, {"momentum": _zeros, "norm": _zeros})


class NadamState(NamedTuple):
    count: jax.Array
    learning_rate: jax.Array
    u_product: jax.Array
    momentum: Any
    velocity: Any


@_register("nadam", "Nadam", learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7)
def nadam_rule(learning_rate: LearningRate, beta_1: float = 0.9, beta_2: float = 0.999,
               epsilon: float = 1e-7) -> optax.GradientTransformation:
    """Keras 3 Nadam, with momentum schedule u_t = beta_1 * (1 - 0.5 * 0.96^t) and the
    running product of the u_t kept in the state (updated before the leaves, as in Keras)."""

    def advance(state, t):
        u = state.u_product
        return {"u_product": u * beta_1 * (1.0 - 0.5 * jnp.power(0.96, t.astype(u.dtype)))}

    def step(g, m, v, *, lr, t, u_product):
        decay = jnp.asarray(0.96, g.dtype)
        b1, b2 = jnp.asarray(beta_1, g.dtype), jnp.asarray(beta_2, g.dtype)
        u_t = b1 * (1.0 - 0.5 * jnp.power(decay, t))
        u_t_1 = b1 * (1.0 - 0.5 * jnp.power(decay, t + 1))
        u_product_t = u_product.astype(g.dtype)
        u_product_t_1 = u_product_t * u_t_1
        beta_2_power = jnp.power(b2, t)
        m = m + (g - m) * (1 - b1)
        v = v + (jnp.square(g) - v) * (1 - b2)
        m_hat = (u_t_1 * m) / (1 - u_product_t_1) + ((1 - u_t) * g) / (1 - u_product_t)
        v_hat = v / (1 - beta_2_power)
        return -((m_hat * lr) / (jnp.sqrt(v_hat) + epsilon)), m, v

    return _keras_rule(NadamState, learning_rate, step, {"momentum": _zeros, "velocity": _zeros},
                       scalars={"u_product": lambda dtype: jnp.ones([], dtype)}, advance=advance)


# ---------------------------------------------------------------- base-optimizer options


def keras_clip_by_norm(clipnorm: float) -> optax.GradientTransformation:
    """Keras `clipnorm`: each gradient scaled by clipnorm / max(its L2 norm, clipnorm)."""

    def clip(g):
        l2sum = jnp.sum(jnp.square(g), keepdims=True)
        positive = l2sum > 0
        l2norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, l2sum, 1.0)), l2sum)
        return (g * clipnorm) / jnp.maximum(l2norm, clipnorm)

    return optax.stateless(lambda updates, params=None: jax.tree.map(clip, updates))


def keras_clip_by_global_norm(global_clipnorm: float) -> optax.GradientTransformation:
    """Keras `global_clipnorm`: all gradients scaled together; NaN if the norm is not finite."""

    def clip(updates, params=None):
        leaves = jax.tree.leaves(updates)
        if not leaves:
            return updates
        norm = jnp.sqrt(jnp.sum(jnp.stack([jnp.sum(jnp.square(g)) for g in leaves])))
        scale = global_clipnorm * jnp.minimum(1.0 / norm, 1.0 / global_clipnorm) + (norm - norm)
        return jax.tree.map(lambda g: g * scale, updates)

    return optax.stateless(clip)


def keras_clip_by_value(clipvalue: float) -> optax.GradientTransformation:
    """Keras `clipvalue`: each gradient element clipped to [-clipvalue, clipvalue]."""
    return optax.stateless(
        lambda updates, params=None: jax.tree.map(
            lambda g: jnp.clip(g, -clipvalue, clipvalue), updates))


class WeightDecayState(NamedTuple):
    count: jax.Array


def keras_weight_decay(weight_decay: float,
                       learning_rate: LearningRate) -> optax.GradientTransformation:
    """Keras weight decay: var -= var * wd * lr (current lr) before the rule runs.

    Placed after the rule in the chain: it turns the rule's delta into
    (decayed + delta) - var, which `apply_updates` turns back into Keras's
    decayed + delta without further rounding whenever the step is small.
    """
    schedule = _as_schedule(learning_rate)

    def init(params):
        del params
        return WeightDecayState(count=jnp.zeros([], jnp.int32))

    def update(updates, state, params=None, *, lr_scale=None, **extra):
        del extra
        if params is None:
            raise ValueError(optax.NO_PARAMS_MSG)
        lr = _scaled(jnp.asarray(schedule(state.count)), lr_scale)

        def decay(delta, p):
            decayed = p - p * weight_decay * lr.astype(p.dtype)
            return (decayed + delta) - p

        new_state = WeightDecayState(count=optax.safe_increment(state.count))
        return jax.tree.map(decay, updates, params), new_state

    return optax.GradientTransformationExtraArgs(init, update)


CLIPPERS = {"clipnorm": keras_clip_by_norm, "clipvalue": keras_clip_by_value,
             "global_clipnorm": keras_clip_by_global_norm}
