"""The data: sources (CSV/TSV tables, .npy, .npz, HDF5, built-in and scikit-learn
datasets) loaded into host numpy arrays, their encodings, validation splits, class
weights, preprocessing, rows streamed from disk (`rowsource`) and target checks.

`sources.load_source` is the entry point. May import config/ only; never jax (arrays
reach the device in train/).
"""
