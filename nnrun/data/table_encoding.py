"""Encoding a table's columns: the cells of a column, the training source's fitted
encoding (column roles, vocabularies, fill values, class names: a JSON-able dict) and
the encoding of any table's columns with it. numpy only."""

from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Any

import numpy as np

from nnrun.config.errors import DataError
from nnrun.data.arrays import F32_MAX

MISSING = frozenset({"", "na", "nan", "null", "none", "?"})   # compared lower-cased
RULES = ("mean", "median", "most_frequent")
_SHOWN = 8   # known categories listed in an unknown-category error


@dataclasses.dataclass
class TableOptions:
    """A CSV/TSV source's keys, checked (nothing read)."""

    delimiter: str
    header: bool
    target: dict | None         # {None or output name: [columns]}
    features: dict | None       # {None or input name: [columns]}
    categorical: dict           # {column: one_hot | index}
    fill: dict                  # {column: rule or constant}
    fill_all: Any               # a rule or number for every feature column, or None
    sample_weight: str | None


def is_constant(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


@dataclasses.dataclass
class Cells:
    """One column's cells, with what error messages need to locate a cell."""

    name: str
    cells: np.ndarray
    path: pathlib.Path
    lines: list[int]

    def fail(self, r: int, what: str) -> DataError:
        return DataError(f"row {r + 1} (line {self.lines[r]}), column {self.name!r}: {what}",
                         where=str(self.path))

    def missing(self) -> np.ndarray:
        return np.isin(np.char.lower(self.cells), list(MISSING))

    def numbers(self, missing: np.ndarray) -> np.ndarray:
        """float64 values, NaN where missing; a DataError at the first non-number."""
        out = np.full(len(self.cells), np.nan)
        try:
            out[~missing] = self.cells[~missing].astype(np.float64)
        except ValueError:
            for r, cell in enumerate(self.cells.tolist()):
                try:
                    float(cell)
                except ValueError:
                    raise self.fail(r, f"{cell!r} is not a number (if the column holds "
                                       f"categories, declare it: categorical: "
                                       f"[{self.name}])") from None
        bad = np.flatnonzero(~missing & ~np.isfinite(out))
        if len(bad):
            raise self.fail(int(bad[0]), f"{str(self.cells[bad[0]])!r}: NaN or inf")
        huge = np.flatnonzero(~missing & (np.abs(out) > F32_MAX))   # NaN compares False
        if len(huge):
            raise self.fail(int(huge[0]), f"{str(self.cells[huge[0]])!r} overflows float32 "
                                          f"(the largest magnitude it holds is about "
                                          f"{F32_MAX:.1e}); rescale the column")
        return out

    def missing_error(self, r: int) -> DataError:
        cell = str(self.cells[r])
        what = "empty cell" if not cell else f"missing value {cell!r} (NaN)"
        return self.fail(r, f"{what}; missing values (empty, NA, NaN, null, None, ?) need a "
                            f"rule: fill: {{{self.name}: mean}} (or median, most_frequent, "
                            "a constant)")

    def is_labels(self) -> bool:
        """Whether a target column holds class names (text) rather than numbers; a
        column of both is a DataError (a typo, or undeclared categories)."""
        values = self.cells[~self.missing()]
        try:
            values.astype(np.float64)
            return False
        except ValueError:
            pass
        numbers = [r for r, v in enumerate(self.cells.tolist()) if _number(v)]
        if numbers:
            text = next(r for r, v in enumerate(self.cells.tolist()) if not _number(v)
                        and v.lower() not in MISSING)
            raise self.fail(text, f"{str(self.cells[text])!r} is not a number, but row "
                                  f"{numbers[0] + 1} holds one; declare the column "
                                  f"categorical: [{self.name}] to treat every value as a "
                                  "class name")
        return True


def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


# ---------------------------------------------------------------- fitting


def _vocabulary(values: list[str]) -> list[str]:
    """Sorted distinct values: numerically when they are all numbers."""
    distinct = set(values)
    try:
        return sorted(distinct, key=lambda v: (float(v), v))
    except ValueError:
        return sorted(distinct)


def _fit_fill(col: Cells, rule: Any, categorical: bool) -> Any:
    """The value `rule` fills column `col` with, from its (training) cells."""
    present = col.cells[~col.missing()]
    if rule in RULES:
        if len(present) == 0:
            raise DataError(f"column {col.name!r} has no values to take the {rule} of",
                            where=str(col.path))
        if rule == "most_frequent":
            values, counts = np.unique(present, return_counts=True)
            best = str(values[int(np.argmax(counts))])
            return best if categorical else float(best)
        if categorical:
            raise DataError(f"column {col.name!r} holds categories: fill it with "
                            "most_frequent or a constant", where=str(col.path))
        nums = col.numbers(col.missing())
        return float(np.nanmean(nums) if rule == "mean" else np.nanmedian(nums))
    if categorical:
        return format(rule, "g") if is_constant(rule) else str(rule)
    try:
        return float(rule)
    except ValueError:
        raise DataError(f"fill value {rule!r} for column {col.name!r} is not a number",
                        where=str(col.path)) from None


def check_columns(names: list[str], groups: dict | None, kind: str, path) -> None:
    for n in (c for cols in (groups or {}).values() for c in cols):
        if n not in names:
            raise DataError(f"no {kind} column {n!r}; columns: {', '.join(names)}",
                            where=str(path))


def _pairs(groups: dict | None) -> list | None:
    return None if groups is None else [[k, v] for k, v in groups.items()]


def unpairs(pairs: list | None) -> dict | None:
    return None if pairs is None else {k: list(v) for k, v in pairs}


def fit_encoding(opts: TableOptions, names: list[str], cells: np.ndarray, lines: list[int],
                 path: pathlib.Path, dtype: str, drop: list[str] = ()) -> dict:
    """The encoding of a training table: roles, vocabularies and fill values."""
    col = {n: Cells(n, cells[:, i], path, lines) for i, n in enumerate(names)}
    check_columns(names, opts.target, "target", path)
    check_columns(names, opts.features, "feature", path)
    check_columns(names, {None: list(opts.categorical)}, "categorical", path)
    if opts.sample_weight is not None:
        check_columns(names, {None: [opts.sample_weight]}, "sample_weight", path)
    targets = [c for cols in (opts.target or {}).values() for c in cols]
    taken = {*targets, opts.sample_weight, *drop}
    features = opts.features or {None: [c for c in names if c not in taken]}
    if not any(features.values()):
        raise DataError("no feature columns left after taking the targets", where=str(path))
    used = [c for cols in features.values() for c in cols] + targets
    kinds = {c: opts.categorical[c] for c in used if c in opts.categorical}
    kinds.update({c: "index" for c in targets if c not in kinds and col[c].is_labels()})
    rules = dict(opts.fill)
    if opts.fill_all is not None:
        for c in (c for cols in features.values() for c in cols):
            rule = opts.fill_all
            if c in kinds and rule in ("mean", "median"):
                rule = "most_frequent"
            rules.setdefault(c, rule)
    fills = {c: _fit_fill(col[c], r, c in kinds) for c, r in rules.items() if c in col}
    categorical = {}
    for c, mode in kinds.items():
        vocab = col[c].cells[~col[c].missing()].tolist()
        if c in fills:
            vocab.append(fills[c])
        categorical[c] = {"encoding": mode, "vocabulary": _vocabulary(vocab)}
    class_names = categorical[targets[0]]["vocabulary"] \
        if len(targets) == 1 and targets[0] in categorical else None
    return {"format": "nnrun-table", "version": 1, "header": opts.header, "columns": names,
            "features": _pairs(features), "target": _pairs(opts.target),
            "sample_weight": opts.sample_weight, "dtype": dtype,
            "categorical": categorical, "fill": fills, "class_names": class_names,
            "feature_names": _feature_names(features, categorical),
            "rules": {"categorical": opts.categorical,
                      "fill": opts.fill if opts.fill_all is None else opts.fill_all}}


def _feature_names(features: dict, categorical: dict) -> list[str]:
    out = []
    for c in (c for cols in features.values() for c in cols):
        cat = categorical.get(c)
        if cat and cat["encoding"] == "one_hot":
            out += [f"{c}={v}" for v in cat["vocabulary"]]
        else:
            out.append(c)
    return out


# ---------------------------------------------------------------- encoding


def encode_column(col: Cells, encoding: dict) -> np.ndarray:
    """float64 (n, width): a number, a category's id, or its one-hot row."""
    missing = col.missing()
    fill = encoding["fill"].get(col.name)
    if fill is None and missing.any():
        raise col.missing_error(int(np.argmax(missing)))
    cat = encoding["categorical"].get(col.name)
    if cat is None:
        nums = col.numbers(missing)
        nums[missing] = fill if fill is not None else np.nan
        return nums[:, None]
    vocab = cat["vocabulary"]
    lookup = {v: i for i, v in enumerate(vocab)}
    values = np.where(missing, str(fill), col.cells) if missing.any() else col.cells
    ids = np.fromiter((lookup.get(v, -1) for v in values.tolist()), np.int64, len(values))
    bad = np.flatnonzero(ids < 0)
    if len(bad):
        shown = ", ".join(map(repr, vocab[:_SHOWN])) + (", ..." if len(vocab) > _SHOWN else "")
        raise col.fail(int(bad[0]), f"unknown category {str(values[bad[0]])!r} (the training "
                                    f"data's {len(vocab)}: {shown})")
    if cat["encoding"] == "one_hot":
        return np.eye(len(vocab))[ids]
    return ids[:, None].astype(np.float64)


def encode_target(cols: list[str], col: dict[str, Cells], encoding: dict) -> np.ndarray:
    """int32 class ids (n,) for one index-encoded column, float32 (n, k) otherwise."""
    cat = encoding["categorical"]
    if len(cols) == 1 and cols[0] in cat:
        arr = encode_column(col[cols[0]], encoding)
        return arr[:, 0].astype(np.int32) if cat[cols[0]]["encoding"] == "index" \
            else arr.astype(np.float32)
    for c in cols:
        if c in cat:
            raise DataError(f"target column {c!r} holds categories; a target of several "
                            "columns must be numbers", where=str(col[c].path))
    return np.concatenate([encode_column(col[c], encoding) for c in cols], 1).astype(np.float32)


def encode_sample_weight(col: Cells, encoding: dict) -> np.ndarray:
    weights = encode_column(col, encoding)[:, 0]
    negative = np.flatnonzero(weights < 0)
    if len(negative):
        raise col.fail(int(negative[0]), f"sample weight {weights[negative[0]]:g} is negative")
    return weights.astype(np.float32)
