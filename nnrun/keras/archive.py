"""Keras model files with weights, written and read without keras: a Keras 3 `.keras`
archive (a zip of config.json, metadata.json and model.weights.h5) and the weights of a
Keras 3 `.keras` or Keras 2 `.h5` file, placed by `nnrun.keras.weights.keras_plan`.

Every HDF5 file read here is opened by `_open_h5`, the one place to check an untrusted
file before any byte of a dataset is read. Nothing in a file is run: JSON is parsed with
`json`, arrays are read as plain numbers.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from nnrun.config import h5gate
from nnrun.config.errors import ConfigError
from nnrun.config.files import atomic_write
from nnrun.keras.weights import Group

KERAS_VERSION = "3.15.1"   # the Keras the layout was checked against (metadata.json)
MAX_WEIGHTS_BYTES = 16 * 2 ** 30


def _open_h5(source: str | io.BytesIO, where: str) -> h5py.File:
    """An HDF5 file (a path, or model.weights.h5 read from an archive) opened read-only,
    as untrusted data. The one opening of a Keras weights file, through the reading gate
    (nnrun.config.h5gate: external links, external storage, virtual datasets of other
    files and implausible sizes refused, a ConfigError naming the object)."""
    return h5gate.open_untrusted(source, where, ConfigError,
                                 unreadable="not a readable HDF5 file")


def _storable(value: Any) -> np.ndarray:
    value = np.asarray(value)
    return value.astype(np.float32) if value.dtype.name == "bfloat16" else value


def _get(tree: dict, path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _put(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def write_keras_archive(path: Path, config: dict, groups: list[Group], params: dict,
                        state: dict) -> None:
    """A `.keras` file that `keras.saving.load_model` opens: `config` (the Keras model
    config, with compile_config), and the weights as `groups` place them. No optimizer
    state: Keras compiles the model with a fresh optimizer (and says it skipped loading
    the optimizer's variables)."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.create_group("layers")
        for group in groups:
            g = f.require_group(group.path)
            for i, (kind, where) in enumerate(group.weights):
                g.create_dataset(str(i), data=_storable(_get(params if kind == "params"
                                                                else state, where)))
    metadata = {"keras_version": KERAS_VERSION,
                "date_saved": time.strftime("%Y-%m-%d@%H:%M:%S")}
    with atomic_write(Path(path)) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        archive.writestr("metadata.json", json.dumps(metadata))
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", buffer.getvalue(),
                         compress_type=zipfile.ZIP_STORED)


def has_weights(path: Path) -> bool:
    """Whether a Keras model file holds weights: a .keras archive's model.weights.h5, or
    a Keras 2 .h5 file's model_weights (an .h5 of model_config alone has none)."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return "model.weights.h5" in archive.namelist()
    if not h5py.is_hdf5(path):   # a to_json() file
        return False
    with _open_h5(str(path), str(path)) as f:
        return "model_weights" in f or "layer_names" in f.attrs


def read_keras_weights(path: Path, groups: list[Group], params: dict, state: dict
                       ) -> tuple[dict, dict]:
    """The weights of a `.keras` archive or a Keras 2 `.h5` model file as nnrun trees
    shaped as `params` / `state` (skeletons with .shape and .dtype): every array checked
    against the model before it is used. A file that does not match is a ConfigError."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            try:
                info = archive.getinfo("model.weights.h5")
            except KeyError:
                raise ConfigError("a .keras file without model.weights.h5: no weights to "
                                  "import", where=str(path)) from None
            if info.file_size > MAX_WEIGHTS_BYTES:
                raise ConfigError("model.weights.h5 is implausibly large", where=str(path))
            data = io.BytesIO(archive.read(info))
        where = f"{path}:model.weights.h5"
        with _open_h5(data, where) as f:
            arrays = {g.path: _keras3_arrays(f, g, where) for g in groups}
    else:
        with _open_h5(str(path), str(path)) as f:
            arrays = _keras2_arrays(f, groups, str(path))
    out: dict[str, dict] = {"params": {}, "state": {}}
    for group in groups:
        for (kind, tree_path), value in zip(group.weights, arrays[group.path], strict=True):
            want = _get(params if kind == "params" else state, tree_path)
            if tuple(value.shape) != tuple(want.shape):
                raise ConfigError(f"{group.path}: layer {tree_path[0]!r}: "
                                  f"{'/'.join(tree_path[1:])} has shape {value.shape} in the "
                                  f"file, the model expects {tuple(want.shape)}",
                                  where=str(path))
            _put(out[kind], tree_path, value.astype(want.dtype))
    return out["params"], out["state"]


def _read(ds: Any, where: str, name: str) -> np.ndarray:
    if not isinstance(ds, h5py.Dataset) or not np.issubdtype(ds.dtype, np.number):
        raise ConfigError(f"{name}: expected an array of numbers", where=where)
    return np.asarray(ds[()])


def _keras3_arrays(f: h5py.File, group: Group, where: str) -> list[np.ndarray]:
    if not group.weights:
        return []
    g = f.get(group.path)
    if not isinstance(g, h5py.Group):
        raise ConfigError(f"{group.path}: missing (the weights do not match the model of "
                          "config.json)", where=where)
    if len(g) != len(group.weights):
        raise ConfigError(f"{group.path}: {len(g)} arrays, the layer "
                          f"{group.layer!r} has {len(group.weights)}", where=where)
    return [_read(g.get(str(i)), where, f"{group.path}/{i}")
            for i in range(len(group.weights))]


def _keras2_arrays(f: h5py.File, groups: list[Group], where: str
                   ) -> dict[str, list[np.ndarray]]:
    """Keras 2 (and Keras 3's legacy `.h5`): model_weights/<layer> lists its weights in
    `weight_names`, trainable before non-trainable across the layer's sub-layers."""
    root = f.get("model_weights", f)
    by_layer: dict[str, list[tuple[int, int, Group]]] = {}
    for group in groups:
        for i, (kind, _) in enumerate(group.weights):
            by_layer.setdefault(group.layer, []).append((kind != "params", i, group))
    out: dict[str, list] = {g.path: [None] * len(g.weights) for g in groups}
    for layer, slots in by_layer.items():
        g = root.get(layer)
        names = [] if not isinstance(g, h5py.Group) else [
            n.decode() if isinstance(n, bytes) else str(n)
            for n in g.attrs.get("weight_names", [])]
        if len(names) != len(slots):
            raise ConfigError(f"model_weights/{layer}: {len(names)} weights in the file, "
                              f"the model's layer has {len(slots)}", where=where)
        ordered = [(i, group) for _, i, group in sorted(slots, key=lambda t: t[0])]
        for name, (i, group) in zip(names, ordered, strict=True):
            out[group.path][i] = _read(g.get(name), where, f"model_weights/{layer}/{name}")
    return out
