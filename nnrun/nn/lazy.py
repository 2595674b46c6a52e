"""jax, jax.numpy and optax, imported on first use.

`import jax` alone takes about a second, longer than everything else `nnrun check`
does; the check resolves names and infers shapes in pure Python, so the modules it
needs (layers, activations, initializers, losses, metrics, regularizers, optimizers,
schedules, the model builder) take these stand-ins instead of importing jax at the top:

    from nnrun.nn.lazy import jax, jnp, optax

Each is a proxy that imports its module on the first attribute read (`jnp.zeros`,
`jax.random`), so code reads as before. At import time such a module must not read
an attribute: type aliases use `Array` (below) and the `jax.custom_vjp` functions are
made on first call. For type checkers the names are the real modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any


class LazyModule:
    """A module imported (with `importlib.import_module`) when an attribute is read.

    Until then the module is not in `sys.modules`; unlike `importlib.util.LazyLoader`,
    nothing is registered before the first use.
    """

    __slots__ = ("_name", "_module")

    def __init__(self, name: str):
        self._name = name
        self._module = None

    def __getattr__(self, attr: str) -> Any:
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attr)

    def __repr__(self) -> str:
        state = "imported" if self._module is not None else "not imported yet"
        return f"<lazy module {self._name!r} ({state})>"


if TYPE_CHECKING:
    import jax
    import jax.numpy as jnp
    import optax
    from jax import Array
else:
    jax = LazyModule("jax")
    jnp = LazyModule("jax.numpy")
    optax = LazyModule("optax")
    Array = Any   # jax.Array, for annotations and aliases evaluated at import

__all__ = ["Array", "LazyModule", "jax", "jnp", "optax"]
