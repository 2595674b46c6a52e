"""Precision policies (`compile.precision`), as Keras 3's dtype policies.

- `float32`: everything float32 (the default; no cast anywhere).
- `mixed` (Keras's "mixed_bfloat16"): weights, optimizer state and loss float32; each
  layer casts its floating inputs and weights to bfloat16 and computes in bfloat16
  (Keras's layer autocast); BatchNormalization and LayerNormalization compute in
  float32 and give bfloat16, as Keras's do; the model's outputs are cast to float32
  before the loss (Keras's losses compute in floatx), so the gradients of the float32
  weights are float32.
- `bfloat16` (Keras's "bfloat16"): as `mixed`, but the weights, the layers' state
  (BatchNorm statistics) and the optimizer state are stored in bfloat16 too; the
  optimizer's arithmetic runs in float32 (`float32_update`), the results rounded to
  bfloat16 when stored.

bfloat16 has float32's exponent range, so gradients do not underflow as in float16:
no loss scaling is needed, and none is done (Keras scales the loss only for float16
policies). Jax is imported on first use (nnrun.nn.lazy): the names are jax-free.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nnrun.config.checks import PRECISIONS
from nnrun.nn.lazy import jax, jnp, optax

# Layers that compute in float32 whatever the policy (Keras 3 upcasts their inputs and
# does not autocast their weights), then cast their output to the compute dtype.
FLOAT32_LAYERS = frozenset({"BatchNormalization", "LayerNormalization"})


@dataclass(frozen=True)
class Policy:
    """`compute`: the dtype layers compute in; `variable`: the dtype weights, state and
    optimizer state are stored in."""

    name: str
    compute: str
    variable: str

    @property
    def casts(self) -> bool:
        """Whether anything is cast (float32: the forward pass is left untouched)."""
        return self.name != "float32"


POLICIES = {"float32": Policy("float32", "float32", "float32"),
            "mixed": Policy("mixed", "bfloat16", "float32"),
            "bfloat16": Policy("bfloat16", "bfloat16", "bfloat16")}
assert tuple(POLICIES) == PRECISIONS
FLOAT32 = POLICIES["float32"]


def get_policy(name: str | Policy | None) -> Policy:
    """The policy of a `compile.precision` value (validated by the spec)."""
    if isinstance(name, Policy):
        return name
    return POLICIES[name or "float32"]


def _floating(dtype) -> bool:
    return jnp.issubdtype(dtype, jnp.floating)


def cast_tree(tree: Any, dtype) -> Any:
    """`tree` with its floating arrays (or ShapeDtypeStructs) cast to `dtype`; integer
    arrays (token ids) and PRNG keys unchanged."""
    dtype = jnp.dtype(dtype)

    def cast(a):
        if a is None or not _floating(a.dtype) or a.dtype == dtype:
            return a
        if isinstance(a, jax.ShapeDtypeStruct):
            return jax.ShapeDtypeStruct(a.shape, dtype)
        return a.astype(dtype)

    return jax.tree_util.tree_map(cast, tree)


def like_tree(tree: Any, reference: Any) -> Any:
    """`tree` with each floating leaf cast to the dtype of `reference`'s leaf (same
    structure): state and optimizer state keep their stored dtype across steps."""
    return jax.tree_util.tree_map(
        lambda a, ref: a.astype(ref.dtype) if _floating(a.dtype) and a.dtype != ref.dtype
        else a, tree, reference)


def apply_layer(policy: Policy, layer_type: str, fn: Callable, inputs, params, state):
    """`fn(inputs, params, state) -> (y, new_state)` (a layer's apply) under the policy:
    inputs and weights cast to the compute dtype (float32 for FLOAT32_LAYERS), the
    output to the compute dtype, the new state to the stored state's dtypes."""
    compute = "float32" if layer_type in FLOAT32_LAYERS else policy.compute
    y, new_state = fn(cast_tree(inputs, compute), cast_tree(params, compute),
                      cast_tree(state, "float32") if compute == "float32" else state)
    return cast_tree(y, policy.compute), like_tree(new_state, state) if state else new_state


def float32_update(optimizer: optax.GradientTransformation) -> optax.GradientTransformation:
    """`optimizer` for bfloat16-stored weights: the update is computed in float32 (its
    state, the gradients and the weights cast up), the new state stored back in its
    bfloat16 (so the epoch's scan carry keeps its dtypes); `optax.apply_updates` adds
    the float32 update to the weights and rounds the sum to bfloat16 once.

    Keras casts the update's constants to the variable's dtype instead: in bfloat16
    Adam's beta_2 = 0.999 rounds to 1.0, so sqrt(1 - beta_2^t) = 0 and no weight
    ever changes. That is not reproduced."""

    def update(updates, opt_state, params=None, **extra):
        new_updates, new_state = optimizer.update(
            cast_tree(updates, "float32"), cast_tree(opt_state, "float32"),
            None if params is None else cast_tree(params, "float32"), **extra)
        return new_updates, like_tree(new_state, opt_state)

    return optax.GradientTransformationExtraArgs(optimizer.init, update)
