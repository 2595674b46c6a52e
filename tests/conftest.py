"""Shared test settings: Keras (the numerical reference) runs on its JAX backend."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("NNRUN_NO_COMPILE_CACHE", "1")
