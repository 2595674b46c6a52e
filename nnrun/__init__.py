"""nnrun: declarative neural-network training on JAX.

Importing this package does not import jax; the modules that compute do. The Python API
(nnrun/api/model.py, docs/python-api.md) is imported on first use: `nnrun.load(run)` and
`nnrun.train(config, **overrides)`.

`nnrun.train` is also the name of the training wing (nnrun/train/). The package keeps
`nnrun.train` the API's call when that wing is imported, and the call object hands
attribute lookups to the wing, so `nnrun.train(...)` and `nnrun.train.fitter` both work.
"""

import importlib
import sys
import types

__version__ = "0.1.0"


class _Train:
    """`nnrun.train(config, **overrides)`: train a config file or dict (see
    nnrun.api.model.train); its attributes are the nnrun/train/ wing's."""

    def __call__(self, config, **kwargs):
        from nnrun.api.model import train

        return train(config, **kwargs)

    def __getattr__(self, name: str):
        return getattr(importlib.import_module("nnrun.train"), name)

    def __repr__(self) -> str:
        return "<function nnrun.train>"


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value) -> None:
        if name == "train" and isinstance(value, types.ModuleType):
            return   # the wing, imported: in sys.modules; nnrun.train stays the call
        super().__setattr__(name, value)

    def __getattr__(self, name: str):
        if name == "load":
            from nnrun.api.model import load

            return load
        raise AttributeError(f"module 'nnrun' has no attribute {name!r}")

    def __dir__(self) -> list[str]:
        return sorted([*super().__dir__(), "load"])


train = _Train()
sys.modules[__name__].__class__ = _Package
