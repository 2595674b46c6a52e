"""nnrun: declarative neural-network training on JAX.

Importing this package does not import jax; the modules that compute do.
"""

__version__ = "0.1.0"
