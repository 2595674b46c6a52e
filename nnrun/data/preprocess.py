"""Preprocessing declared in `data.preprocess:` and saved in the run
(`<run>/preprocessing.json`) so that evaluate and predict apply the same.

Features: `standardize` ((x - mean) / std) or `minmax` ((x - min) / (max - min)), per
feature along the last axis (as Keras's Normalization layer, axis=-1), statistics from
the training split only, accumulated in float64 over any number of chunks
(`update` / `finish`, or `fit`), so data larger than memory can stream through. A
constant feature gets scale 1. Targets: `one_hot` (class ids -> one-hot rows) or
`sparse` (one-hot rows -> ids). numpy only (no jax).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from nnrun.config.data_spec import X_METHODS, Y_METHODS
from nnrun.config.errors import ConfigError, DataError
from nnrun.config.registry import unknown_name_message
from nnrun.data.rowsource import RowSource, is_lazy, row_chunks

FORMAT = 1


class FeatureScaler:
    """Per-feature statistics of one array (last axis), accumulated over chunks."""

    def __init__(self, method: str, *, offset=None, scale=None, count: int = 0):
        if method not in ("standardize", "minmax"):
            raise ValueError(f"unknown method {method!r}")
        self.method = method
        self.count = count
        self.offset = None if offset is None else np.asarray(offset, np.float64)
        self.scale = None if scale is None else np.asarray(scale, np.float64)
        self._mean = self._m2 = self._min = self._max = None

    def update(self, chunk: np.ndarray) -> None:
        """Add a chunk of rows (any leading shape; features on the last axis)."""
        chunk = np.asarray(chunk)
        flat = chunk.reshape(-1, chunk.shape[-1] if chunk.ndim > 1 else 1).astype(np.float64)
        if len(flat) == 0:
            return
        lo, hi = flat.min(axis=0), flat.max(axis=0)
        mean = flat.mean(axis=0)
        m2 = ((flat - mean) ** 2).sum(axis=0)
        if self._mean is None:
            self._mean, self._m2, self._min, self._max = mean, m2, lo, hi
            self.count = len(flat)
            return
        if mean.shape != self._mean.shape:
            raise DataError(f"a chunk has {mean.shape[0]} features, earlier ones "
                            f"{self._mean.shape[0]}")
        n_a, n_b = self.count, len(flat)   # Chan et al.'s pairwise update
        total = n_a + n_b
        delta = mean - self._mean
        self._mean = self._mean + delta * (n_b / total)
        self._m2 = self._m2 + m2 + delta**2 * (n_a * n_b / total)
        self._min, self._max = np.minimum(self._min, lo), np.maximum(self._max, hi)
        self.count = total

    def finish(self) -> FeatureScaler:
        """Fix offset and scale from the chunks seen (a constant feature: scale 1)."""
        if self._mean is None:
            raise DataError("no rows to compute preprocessing statistics from")
        constant = self._max == self._min
        if self.method == "standardize":
            offset, scale = self._mean, np.sqrt(self._m2 / self.count)
        else:
            offset, scale = self._min, self._max - self._min
        self.offset = offset
        self.scale = np.where(constant | (scale == 0), 1.0, scale)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """(x - offset) / scale as float32, computed in float64."""
        if self.offset is None:
            raise RuntimeError("finish() the statistics before transforming")
        if isinstance(x, RowSource):   # left on disk: transformed as its chunks are read
            return x.with_transform(self.transform)
        x = np.asarray(x)
        width = x.shape[-1] if x.ndim > 1 else 1
        if width != len(self.offset):
            raise DataError(f"features have {width} columns on the last axis; the "
                            f"preprocessing statistics are for {len(self.offset)}")
        shaped = x if x.ndim > 1 else x.reshape(-1, 1)
        out = (shaped.astype(np.float64) - self.offset) / self.scale
        return out.astype(np.float32).reshape(x.shape)

    def to_json(self) -> dict:
        return {"method": self.method, "count": int(self.count),
                "offset": [float(v) for v in self.offset],
                "scale": [float(v) for v in self.scale]}

    @classmethod
    def from_json(cls, d: dict) -> FeatureScaler:
        return cls(d["method"], offset=d["offset"], scale=d["scale"], count=d.get("count", 0))


class Preprocessing:
    """The whole `data.preprocess:`: a scaler per feature array (`None` key for a single
    array, else input names) and a target transform per output (`None` key likewise).

    Streaming use: `pre = Preprocessing.from_config(cfg, x_names)`, then
    `pre.update(x_chunk, y_chunk)` for every training chunk, `pre.finish()`, and
    `pre.transform_x(chunk)` / `pre.transform_y(chunk)` on any chunk of any split."""

    def __init__(self, x: dict | None = None, y: dict | None = None):
        self.x: dict[str | None, FeatureScaler] = x or {}
        self.y: dict[str | None, dict] = y or {}   # {"method", "classes"}
        self._max_id: dict[str | None, int] = {}

    @classmethod
    def from_config(cls, config: dict | None, x_names: list[str] | None = None,
                    y_names: list[str] | None = None) -> Preprocessing:
        """Unfitted preprocessing for features of these input names (None: one array)
        and targets of these output names. Unknown names are a ConfigError at
        "preprocess.x.<name>" / "preprocess.y.<name>"."""
        config = config or {}
        x = _per_name(config.get("x"), x_names, "x", X_METHODS)
        y = _per_name(config.get("y"), y_names, "y", Y_METHODS)
        return cls({k: FeatureScaler(m) for k, m in x.items()},
                   {k: {"method": m, "classes": None} for k, m in y.items()})

    def update(self, x: Any, y: Any = None) -> None:
        """Accumulate the statistics of a chunk of training rows."""
        for name, scaler in self.x.items():
            arr = _pick(x, name, "features")
            if not np.issubdtype(np.asarray(arr).dtype, np.floating):
                raise ConfigError(f"{scaler.method} needs float features; "
                                  f"{_what(name, 'input')} has integer values (token ids?)",
                                  where=_key("x", name))
            scaler.update(arr)
        for name, t in self.y.items():
            if t["method"] == "one_hot" and y is not None:
                ids = _ids(_pick(y, name, "targets"), name)
                if len(ids):
                    self._max_id[name] = max(self._max_id.get(name, -1), int(ids.max()))

    def finish(self, num_classes: int | dict | None = None) -> Preprocessing:
        """Fix the statistics. `num_classes` (the model's output width, per output name
        or one int) fixes one_hot's width; else it is the largest training id + 1."""
        for scaler in self.x.values():
            scaler.finish()
        for name, t in self.y.items():
            if t["method"] == "one_hot":
                given = num_classes.get(name) if isinstance(num_classes, dict) else num_classes
                t["classes"] = int(given or self._max_id.get(name, -1) + 1)
        return self

    def fit(self, chunks: Iterable[tuple[Any, Any]], num_classes=None) -> Preprocessing:
        """update() over (x, y) chunks of the training split, then finish()."""
        for x, y in chunks:
            self.update(x, y)
        return self.finish(num_classes)

    def transform_x(self, x: Any) -> Any:
        """Features (an array or a mapping by input name) transformed."""
        if not self.x:
            return x
        if isinstance(x, dict):
            return {k: self.x[k].transform(v) if k in self.x else v for k, v in x.items()}
        return self.x[None].transform(x) if None in self.x else x

    def transform_y(self, y: Any) -> Any:
        """Targets (an array or a mapping by output name) transformed."""
        if not self.y or y is None:
            return y
        if isinstance(y, dict):
            return {k: _transform_y(v, self.y[k], k) if k in self.y else v
                    for k, v in y.items()}
        return _transform_y(y, self.y[None], None) if None in self.y else y

    def to_json(self) -> dict:
        return {"format": FORMAT,
                "x": {_json_key(k): s.to_json() for k, s in self.x.items()},
                "y": {_json_key(k): dict(t) for k, t in self.y.items()}}

    @classmethod
    def from_json(cls, d: dict) -> Preprocessing:
        if d.get("format") != FORMAT:
            raise DataError(f"unsupported preprocessing.json format {d.get('format')!r}")
        return cls({_name_key(k): FeatureScaler.from_json(v) for k, v in d["x"].items()},
                   {_name_key(k): dict(v) for k, v in d["y"].items()})


def _json_key(name: str | None) -> str:
    return "" if name is None else name


def _name_key(key: str) -> str | None:
    return None if key == "" else key


def _key(part: str, name: str | None) -> str:
    return f"preprocess.{part}" + ("" if name is None else f".{name}")


def _what(name: str | None, kind: str) -> str:
    return f"{kind} {name!r}" if name is not None else kind


def _per_name(value: Any, names: list[str] | None, part: str,
              methods: tuple[str, ...]) -> dict[str | None, str]:
    """{array name (None: the one array): method}, "none" left out."""
    if value is None:
        return {}
    if isinstance(value, dict):
        if names is None:
            raise ConfigError(f"a mapping by name is for a model of several "
                              f"{'inputs' if part == 'x' else 'outputs'}; the data have one "
                              f"array: give one method ({', '.join(methods)})",
                              where=f"preprocess.{part}")
        for key in value:
            if key not in names:
                kind = "input" if part == "x" else "output"
                raise ConfigError(unknown_name_message(kind, str(key), names),
                                  where=f"preprocess.{part}.{key}")
        chosen = {str(k): v for k, v in value.items()}
    else:
        chosen = {n: value for n in (names or [None])}
    for key, method in chosen.items():
        if method not in methods:
            raise ConfigError(unknown_name_message(f"preprocess.{part} method", str(method),
                                                   list(methods)), where=_key(part, key))
    return {k: m for k, m in chosen.items() if m != "none"}


def _pick(arrays: Any, name: str | None, what: str) -> np.ndarray:
    if name is None:
        if isinstance(arrays, dict):
            raise DataError(f"one preprocessing for one array, but the {what} are several "
                            f"({', '.join(arrays)})")
        return arrays
    if not isinstance(arrays, dict) or name not in arrays:
        raise DataError(f"no {what} array {name!r} to preprocess")
    return arrays[name]


def _ids(y: np.ndarray, name: str | None) -> np.ndarray:
    """Integer class ids of shape (n,) from (n,) or (n, 1) targets (one_hot's input)."""
    y = np.asarray(y)
    flat = y.reshape(len(y), -1) if y.ndim > 1 else y.reshape(-1, 1)
    whole = np.issubdtype(y.dtype, np.integer) or np.array_equal(flat, np.round(flat))
    if flat.shape[1] != 1 or not whole or (len(flat) and flat.min() < 0):
        raise DataError(f"y: one_hot needs integer class ids >= 0 of shape (n,) or (n, 1); "
                        f"{_what(name, 'output')} targets have shape {tuple(y.shape[1:])}"
                        + ("" if whole else " and non-integer values"))
    return flat[:, 0].astype(np.int64)


def _transform_y(y: np.ndarray, t: dict, name: str | None) -> np.ndarray:
    y = np.asarray(y)
    if t["method"] == "one_hot":
        ids, k = _ids(y, name), int(t["classes"])
        if len(ids) and ids.max() >= k:
            raise DataError(f"class id {int(ids.max())} of {_what(name, 'output')} targets "
                            f"is not below y: one_hot's {k} classes (the model's output "
                            "width, else the largest training id + 1)")
        return np.eye(k, dtype=np.float32)[ids]
    flat = y.reshape(len(y), -1)
    if y.ndim != 2 or flat.shape[1] < 2 or not (np.isin(flat, (0, 1)).all()
                                                and (flat.sum(axis=1) == 1).all()):
        raise DataError(f"y: sparse needs one-hot rows (n, classes); {_what(name, 'output')} "
                        f"targets have shape {tuple(y.shape[1:])} or are not one-hot")
    return flat.argmax(axis=1).astype(np.int32)


def fit_preprocessing(config: dict | None, x: Any, y: Any = None,
                      num_classes=None) -> Preprocessing:
    """Preprocessing fitted to one (training) split: held in memory, or with features
    left on disk (RowSources), read a chunk at a time."""
    x_names = sorted(x) if isinstance(x, dict) else None
    y_names = sorted(y) if isinstance(y, dict) else None
    pre = Preprocessing.from_config(config, x_names, y_names)
    return pre.fit(row_chunks(x, y) if is_lazy(x) else [(x, y)], num_classes)
