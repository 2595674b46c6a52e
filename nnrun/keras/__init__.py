"""Keras interop, no keras needed: Keras model JSON to nnrun's `model:` and back
(`model_json`, `importer`), one layer's arguments both ways (`layer_args`) and the
name tables of initializers, activations, optimizers and losses (`names`).

May import config/ and nn/ (its registries); nothing above.
"""
