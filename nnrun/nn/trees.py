"""Nested dicts of weights or of their shapes (params and state, keyed by layer name):
shapes, sizes, masks and Keras's get_weights() order."""

from __future__ import annotations

import math
from typing import Any

from nnrun.nn.lazy import jnp


def shape_tree(tree: Any) -> Any:
    """A nested dict of arrays (or of ShapeDtypeStructs, or of shape tuples) as the same
    dicts of shape tuples, keys sorted (as jax's tree functions order them)."""
    if isinstance(tree, dict):
        return {k: shape_tree(tree[k]) for k in sorted(tree)}
    if isinstance(tree, (tuple, list)) and not hasattr(tree, "shape"):
        if all(isinstance(d, int) for d in tree):
            return tuple(tree)
        return type(tree)(shape_tree(t) for t in tree)
    return tuple(tree.shape)


def filled(tree: Any, value: bool) -> Any:
    """A nested dict of shapes with every leaf replaced by `value`."""
    if isinstance(tree, dict):
        return {k: filled(v, value) for k, v in tree.items()}
    return value


def leaves(tree: Any) -> list:
    if isinstance(tree, dict):
        return [leaf for v in tree.values() for leaf in leaves(v)]
    return [tree]


def masked_size(tree: Any, mask: Any, keep: bool) -> int:
    """The number of values in `tree` (of shapes) whose mask leaf is `keep`."""
    if isinstance(tree, dict):
        return sum(masked_size(v, mask.get(k, True) if isinstance(mask, dict) else mask,
                                keep) for k, v in tree.items())
    return math.prod(tree) if bool(mask) == keep else 0


def tree_size(tree: Any) -> int:
    """The number of values in a nested dict of shape tuples."""
    if isinstance(tree, dict):
        return sum(tree_size(v) for v in tree.values())
    return math.prod(tree)


def ordered_leaves(tree, prefix: str = "") -> list[tuple[str, tuple]]:
    """(path, shape) of a nested dict of shape tuples, in insertion order (Keras's
    get_weights() order; jax's own flattening sorts keys)."""
    out = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out += ordered_leaves(value, path + "/")
        else:
            out.append((path, tuple(value)))
    return out


def given_tree(shapes: dict, values) -> dict:
    """`shapes`' nested dict with the next of `values` at each leaf, in insertion order."""
    return {k: given_tree(v, values) if isinstance(v, dict) else jnp.asarray(next(values))
            for k, v in shapes.items()}
