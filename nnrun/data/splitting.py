"""Validation splits (last rows as Keras, a seeded random fraction, stratified by class)
and class weights turned into per-row sample weights.

numpy only (no jax). Random draws use the seed's "split" stream on the host, as
`trainer.epoch_order` draws the "shuffle" stream: np.random.default_rng([seed, 3]).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from nnrun.config.errors import ConfigError, DataError
from nnrun.config.registry import unknown_name_message
from nnrun.data.arrays import Dataset, source_rows_of, take_rows

SPLIT_STREAM = 3   # trainer.KEY_STREAMS["split"] (not imported: trainer imports jax)


def class_ids(y: Any, key: str) -> np.ndarray:
    """The class id of each row of targets: integer ids of shape (n,) or (n, 1), one-hot
    rows (n, k), or one column of 0/1 (or other whole, non-negative) values. Several
    outputs or non-integer (regression) targets are a ConfigError at `key` (the config
    key that needs classes, e.g. "stratify")."""
    if isinstance(y, dict):
        raise ConfigError(f"{key} needs the class targets of one output; the data have "
                          f"several ({', '.join(y)})", where=key)
    y = np.asarray(y)
    flat = y.reshape(len(y), -1)
    if flat.shape[1] > 1:
        if y.ndim == 2 and _is_one_hot(flat):
            return flat.argmax(axis=1).astype(np.int64)
        raise ConfigError(f"{key} needs class targets (integer ids, one-hot rows or one 0/1 "
                          f"column); the targets have shape {tuple(y.shape[1:])} and are not "
                          "one-hot rows", where=key)
    ids = flat[:, 0]
    if np.issubdtype(ids.dtype, np.floating) and not np.array_equal(ids, np.round(ids)):
        raise ConfigError(f"{key} needs class targets; the targets have non-integer values "
                          "(a regression?)", where=key)
    if ids.min() < 0:
        raise ConfigError(f"{key} needs class ids >= 0; the targets have {ids.min():g}",
                          where=key)
    return ids.astype(np.int64)


def _is_one_hot(flat: np.ndarray) -> bool:
    return bool(np.isin(flat, (0, 1)).all() and (flat.sum(axis=1) == 1).all())


# ---------------------------------------------------------------- splitting


def split_rows(n: int, fraction: float, *, seed: int = 0, shuffle: bool = False,
               classes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows), each in increasing order. The validation set has
    n - int(n * (1 - fraction)) rows, as Keras's validation_split: the last rows, or with
    `shuffle` rows drawn from (seed, "split"). With `classes` (an id per row) each class
    gives its share (largest remainders, ties to the lower id): its last rows, or drawn."""
    n_val = n - int(n * (1 - fraction))
    rng = np.random.default_rng([seed, SPLIT_STREAM]) if shuffle else None
    if classes is None:
        val = rng.permutation(n)[:n_val] if rng is not None else np.arange(n - n_val, n)
    else:
        val = _stratified(classes, n_val, rng)
    mask = np.zeros(n, dtype=bool)
    mask[val] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def _stratified(classes: np.ndarray, n_val: int, rng) -> np.ndarray:
    """`n_val` rows, each class's count its share rounded by largest remainder."""
    ids, counts = np.unique(classes, return_counts=True)
    ideal = counts * n_val / len(classes)
    take = np.floor(ideal).astype(np.int64)
    extra = n_val - int(take.sum())
    order = sorted(range(len(ids)), key=lambda i: (-(ideal[i] - take[i]), ids[i]))
    for i in order[:extra]:
        take[i] += 1
    picked = []
    for cid, k in zip(ids, take):
        rows = np.flatnonzero(classes == cid)
        picked.append(rng.permutation(rows)[:k] if rng is not None else rows[len(rows) - k:])
    return np.concatenate(picked) if picked else np.zeros(0, np.int64)


def validation_split(ds: Dataset, fraction: float, *, seed: int = 0, shuffle: bool = False,
                     stratify: bool = False) -> tuple[Dataset, Dataset]:
    """(train, validation) of a dataset: the last `fraction` of the rows as Keras, or a
    random fraction (`shuffle`, from the seed's "split" stream), or per class (`stratify`:
    each class keeps its share; needs class targets, else ConfigError at "stratify")."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
            or not 0 < fraction < 1:
        raise ConfigError(f"expected a number strictly between 0 and 1, got {fraction!r}",
                          where="validation_split")
    n = len(ds)
    classes = None
    if stratify:
        if ds.y is None:
            raise ConfigError("stratify needs targets; the data have none", where="stratify")
        classes = class_ids(ds.y, "stratify")
    train, val = split_rows(n, fraction, seed=seed, shuffle=shuffle, classes=classes)
    if len(train) == 0 or len(val) == 0:
        raise DataError(f"validation_split={fraction} of {n} rows leaves {len(train)} "
                        f"training and {len(val)} validation rows", where=ds.source)
    if not shuffle and classes is None:   # slices: features streamed from disk stay there
        return _part(ds, slice(0, len(train))), _part(ds, slice(len(train), n))
    return _part(ds, train), _part(ds, val)


def _part(ds: Dataset, index: np.ndarray | slice) -> Dataset:
    y = None if ds.y is None else take_rows(ds.y, index)
    sw = None if ds.sample_weight is None else ds.sample_weight[index]
    return dataclasses.replace(ds, x=take_rows(ds.x, index), y=y, sample_weight=sw,
                               source_rows=source_rows_of(ds, index))


# ---------------------------------------------------------------- class weights


def class_weight_table(ids: np.ndarray, class_weight: Any,
                       class_names: list[str] | None = None,
                       num_classes: int = 0) -> dict[int, float]:
    """{class id: weight}. "balanced" is scikit-learn's n_samples / (n_classes * count)
    over the classes present; a mapping's keys are class ids or (when the data name
    their classes) class names; ids below `num_classes` (e.g. the width of one-hot
    rows), the training ids and the names are known. Unknown classes are a ConfigError at
    "class_weight.<key>"; classes a mapping leaves out weigh 1, as in Keras."""
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ConfigError(unknown_name_message("class_weight", class_weight, ["balanced"]),
                              where="class_weight")
        present, counts = np.unique(ids, return_counts=True)
        weights = len(ids) / (len(present) * counts.astype(np.float64))
        return {int(c): float(w) for c, w in zip(present, weights)}
    known = max(int(ids.max()) + 1 if len(ids) else 0, num_classes)
    if class_names:
        known = max(known, len(class_names))
    table = {}
    for key, weight in class_weight.items():
        cid = _class_key(key, known, class_names)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) \
                or not np.isfinite(weight) or weight < 0:
            raise ConfigError(f"expected a weight >= 0, got {weight!r}",
                              where=f"class_weight.{key}")
        table[cid] = float(weight)
    return table


def _class_key(key: Any, known: int, class_names: list[str] | None) -> int:
    names = list(class_names or [])
    if isinstance(key, str) and key in names:
        return names.index(key)
    if isinstance(key, str) and key.strip().lstrip("-").isdigit():
        key = int(key)
    if isinstance(key, int) and not isinstance(key, bool) and 0 <= key < known:
        return key
    choices = names or [str(i) for i in range(known)]
    raise ConfigError(unknown_name_message("class", str(key), choices),
                      where=f"class_weight.{key}")


def row_class_weights(y: Any, class_weight: Any,
                      class_names: list[str] | None = None) -> np.ndarray:
    """The weight of each row, float32 (n,), as Keras's fit(class_weight=...) turns
    class weights into sample weights (one-hot rows by argmax, one column rounded)."""
    ids = class_ids(y, "class_weight")
    width = np.shape(y)[1] if np.ndim(y) == 2 and np.shape(y)[1] > 1 else 0
    table = class_weight_table(ids, class_weight, class_names, width)
    lookup = np.ones(max([int(ids.max()) + 1, *[c + 1 for c in table]]), dtype=np.float64)
    for cid, weight in table.items():
        lookup[cid] = weight
    return lookup[ids].astype(np.float32)


def apply_class_weight(ds: Dataset, class_weight: Any) -> Dataset:
    """The training split with its sample weights multiplied by the class weights."""
    weights = row_class_weights(ds.y, class_weight, ds.class_names)
    if ds.sample_weight is not None:
        weights = (np.asarray(ds.sample_weight, np.float32) * weights).astype(np.float32)
    return dataclasses.replace(ds, sample_weight=weights)


# ---------------------------------------------------------------- the config's data options

PREPROCESSING_FILE = "preprocessing.json"


def prepare_splits(spec, train: Dataset | None, validation: Dataset | None,
                   test: Dataset | None, *, preprocessing=None, num_classes=None) -> tuple:
    """(train, validation, test, preprocessing) as `spec.data` says: validation_split
    (shuffle_split, stratify), then preprocessing (fitted on the training split unless
    `preprocessing`, e.g. a run's, is given; `num_classes` for one_hot), then
    class_weight into the training split's sample weights. ConfigErrors are located at
    the config key."""
    from nnrun.data.preprocess import fit_preprocessing

    data = spec.data
    try:
        if data.validation_split and train is not None:
            train, validation = validation_split(
                train, data.validation_split, seed=spec.seed,
                shuffle=bool(data.shuffle_split), stratify=bool(data.stratify))
        pre = preprocessing
        if pre is None and data.preprocess is not None and train is not None:
            pre = _sourced(train, lambda: fit_preprocessing(data.preprocess, train.x, train.y,
                                                            num_classes))
        if pre is not None:
            train, validation, test = (None if ds is None else _sourced(ds, lambda ds=ds: (
                dataclasses.replace(ds, x=pre.transform_x(ds.x), y=pre.transform_y(ds.y))))
                for ds in (train, validation, test))
        if data.class_weight is not None and train is not None:
            train = apply_class_weight(train, data.class_weight)
    except ConfigError as exc:
        raise ConfigError(exc.message, where=locate(spec, exc.where)) from None
    return train, validation, test, pre


def _sourced(ds: Dataset, fn):
    """fn(), a DataError without a location given the dataset's source."""
    try:
        return fn()
    except DataError as exc:
        if exc.where is None:
            raise DataError(exc.message, where=ds.source) from None
        raise


def locate(spec, where: str | None) -> str:
    """`file:line:col: data.<key path>` for a ConfigError `where` relative to data:
    ("class_weight.3"), matching each part to the config's own key (3 an int)."""
    path: list = ["data"]
    node: Any = spec.resolved.get("data", {})
    for part in (where or "").split(".") if where else []:
        key = next((k for k in node if str(k) == part), part) if isinstance(node, dict) \
            else part
        path.append(key)
        node = node.get(key) if isinstance(node, dict) else None
    return spec.origins.where(tuple(path), key=True)


def run_preprocessing(run):
    """The preprocessing saved in a run directory, or None when it has none."""
    import json
    import pathlib

    from nnrun.data.preprocess import Preprocessing

    path = pathlib.Path(run) / PREPROCESSING_FILE
    if not path.exists():
        return None
    try:
        return Preprocessing.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"cannot read {PREPROCESSING_FILE}: {exc}", where=str(path)) from None


def preprocess_input(pre, x: Any, source: str) -> Any:
    """`nnrun predict`'s features through a run's preprocessing (`pre`; None: none)."""
    if pre is None:
        return x
    try:
        return pre.transform_x(x)
    except DataError as exc:
        raise DataError(exc.message, where=exc.where or source) from None


def output_classes(model) -> int | dict | None:
    """The width of the model's output(s) when over 1 (one_hot's number of classes),
    per output name for several; None without a model."""
    if model is None:
        return None
    widths = {n: int(s[-1]) for n, s in zip(model.output_names, model.output_shapes) if s}
    widths = {n: w for n, w in widths.items() if w > 1}
    if len(model.output_names) == 1:
        return next(iter(widths.values()), None)
    return widths
