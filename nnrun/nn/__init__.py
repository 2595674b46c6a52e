"""The network: layers, activations, initializers, regularizers and constraints,
losses, metrics, optimizers and schedules, precision policies, and the model builder
(`builder.build_model`: a ModelSpec -> a `model.Model`, pure init/apply functions over
a params pytree).

Each kind has a registry with `get(name)`. jax is imported lazily (`lazy`), so the
shape rules run without it (`nnrun check`). May import config/ only: the model never
reads data, files or run directories.
"""
