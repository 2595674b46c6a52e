"""CSV/TSV tables: reading, the columns' roles (features, target, sample weights),
categorical encodings and missing-value fills.

What is learnt from the training source (column order, vocabularies, fill values, class
names) is the *encoding*, a JSON-able dict: validation, test and `nnrun predict` input
are encoded with the training source's, and the run keeps it in `data_encoding.json`.
numpy only (no jax); every array leaves as float64 (features), or as the targets' final
dtype, for nnrun.data to finish.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import pathlib
from typing import Any

import numpy as np

from nnrun.config.errors import ConfigError, DataError
from nnrun.config.registry import did_you_mean
from nnrun.data.table_encoding import (
    RULES,
    Cells,
    TableOptions,
    check_columns,
    encode_column,
    encode_sample_weight,
    encode_target,
    fit_encoding,
    is_constant,
    unpairs,
)

ENCODINGS = ("one_hot", "index")
ENCODING_FILE = "data_encoding.json"
TABLE_KEYS = ("path", "target", "features", "delimiter", "dtype", "header", "categorical",
              "fill", "sample_weight")


@dataclasses.dataclass
class Table:
    x: dict                     # group -> float64 (n, k)
    y: dict | None              # group -> int32 ids (n,) or float32 (n, k)
    sample_weight: np.ndarray | None
    class_names: list[str] | None
    encoding: dict
    lines: list[int] = dataclasses.field(default_factory=list)   # each row's file line


# ---------------------------------------------------------------- options


def _column(value: Any, key: str, header: bool) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and not header and value >= 0:
        return str(value)
    if isinstance(value, str) and value:
        return value
    hint = "" if header else " or a 0-based position"
    raise ConfigError(f"expected a column name{hint}, got {value!r}"
                      + (" (positions need header: false)" if header and
                         isinstance(value, int) else ""), where=key)


def _columns(value: Any, key: str, header: bool) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ConfigError("expected a column name or a list of names, got []", where=key)
    return [_column(v, key, header) for v in items]


def _groups(value: Any, key: str, header: bool) -> dict | None:
    """Columns as {None: [...]}, or {name: [...]} for a mapping by input / output name."""
    if value is None:
        return None
    if isinstance(value, dict):
        return {str(k): _columns(v, f"{key}.{k}", header) for k, v in value.items()}
    return {None: _columns(value, key, header)}


def _categorical(value: Any, header: bool) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, dict):
        out = {}
        for col, mode in value.items():
            if mode not in ENCODINGS:
                raise ConfigError(f"expected one_hot or index, got {mode!r}",
                                  where=f"categorical.{col}")
            out[_column(col, "categorical", header)] = mode
        return out
    return {c: "one_hot" for c in _columns(value, "categorical", header)}


def _fill(value: Any, header: bool, categorical: dict) -> tuple[dict, Any]:
    if value is None:
        return {}, None
    if value in RULES or is_constant(value):
        return {}, value
    if not isinstance(value, dict):
        raise ConfigError(f"expected mean, median, most_frequent, a number, or a mapping "
                          f"{{column: rule or constant}}, got {value!r}", where="fill")
    out = {}
    for col, rule in value.items():
        name = _column(col, "fill", header)
        if not (is_constant(rule) or (isinstance(rule, str) and rule)):
            raise ConfigError(f"expected mean, median, most_frequent or a constant (a number "
                              f"or a string), got {rule!r}", where=f"fill.{col}")
        if rule in ("mean", "median") and name in categorical:
            raise ConfigError(f"column {name!r} is categorical: fill it with most_frequent "
                              "or a constant", where=f"fill.{col}")
        out[name] = rule
    return out, None


def parse_options(spec: dict, suffix: str) -> TableOptions:
    """A CSV/TSV source's keys checked by type (`nnrun check`): ConfigError naming the key."""
    delimiter = spec.get("delimiter", "\t" if suffix == ".tsv" else ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise ConfigError(f"expected one character, got {delimiter!r}", where="delimiter")
    header = spec.get("header", True)
    if not isinstance(header, bool):
        raise ConfigError(f"expected true or false, got {header!r}", where="header")
    categorical = _categorical(spec.get("categorical"), header)
    fill, fill_all = _fill(spec.get("fill"), header, categorical)
    weight = spec.get("sample_weight")
    return TableOptions(
        delimiter, header, _groups(spec.get("target"), "target", header),
        _groups(spec.get("features"), "features", header), categorical, fill, fill_all,
        None if weight is None else _column(weight, "sample_weight", header))


# ---------------------------------------------------------------- the header line


def _named(key: str, value: Any) -> list[tuple[tuple, Any]]:
    """The columns a source key names, each with its place under the key."""
    if value is None:
        return []
    if isinstance(value, dict):
        if key == "categorical":   # {column: encoding}
            return [((c,), c) for c in value]
        return [((k, *inner), c) for k, v in value.items() for inner, c in _named(key, v)]
    if isinstance(value, list):
        return [((i,), c) for i, c in enumerate(value)]
    return [((), value)]


def column_problems(path: pathlib.Path, spec: dict) -> list[tuple[tuple, str]]:
    """The columns a table source names (target, features, sample_weight, categorical)
    checked against its header line, or with `header: false` against the number of cells
    of its first line, reading nothing more (`nnrun check`): [(key path in the source,
    message)]. Options check_source refuses, an unreadable file: [] (said elsewhere)."""
    try:
        opts = parse_options(spec, path.suffix.lower())
        with open(path, encoding="utf-8-sig", newline="") as f:
            first = next((row for row in csv.reader(f, delimiter=opts.delimiter) if row), [])
    except (ConfigError, OSError, UnicodeDecodeError, csv.Error):
        return []
    names = [c.strip() for c in first] if opts.header else [str(i) for i in range(len(first))]
    problems = []
    for key in ("target", "features", "sample_weight", "categorical"):
        for inner, col in _named(key, spec.get(key)):
            if str(col) in names or not names:
                continue
            if opts.header:
                message = (f"no column {col!r} in the header of {path.name}"
                           f"{did_you_mean(str(col), names)}; its columns: {', '.join(names)}")
            else:
                message = (f"no column {col} in {path.name}: its first line has {len(names)} "
                           f"cells (columns 0..{len(names) - 1}; header: false)")
            problems.append(((key, *inner), message))
    return problems


# ---------------------------------------------------------------- reading


def read_table(path: pathlib.Path, delimiter: str, header: bool = True
               ) -> tuple[list[str], np.ndarray, list[int]]:
    """Column names, the cells (stripped strings, (n, k)) and each row's line number.
    Without a header the columns are named by 0-based position."""
    try:
        text = path.read_text(encoding="utf-8-sig")
        reader = csv.reader(io.StringIO(text), delimiter=delimiter)
        names = [h.strip() for h in next(reader, [])] if header else None
        rows, lines = [], []
        for row in reader:
            if not row:
                continue
            if names is None:
                names = [str(i) for i in range(len(row))]
            if len(row) != len(names):
                width = f"the header has {len(names)}" if header else \
                    f"line {lines[0]} has {len(names)}"
                raise DataError(f"line {reader.line_num} has {len(row)} cells but {width}",
                                where=str(path))
            rows.append([c.strip() for c in row])
            lines.append(reader.line_num)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read file: {e}", where=str(path)) from e
    if not names:
        raise DataError("empty file (no header row)" if header else "empty file (no rows)",
                        where=str(path))
    if len(set(names)) != len(names):
        hint = ""
        if all(_is_number(n) or not n for n in names):
            hint = ("; line 1 holds only numbers: a row of data, not a header line? "
                    "(`header: false` in the config; `--no-header` for nnrun predict)")
        raise DataError(f"duplicate column names in the header: {names}{hint}",
                        where=str(path))
    if not rows:
        raise DataError("no data rows after the header", where=str(path))
    return names, np.array(rows, dtype=str), lines


# ---------------------------------------------------------------- encoding


def check_sample_weight(arr: np.ndarray, rows: int, what: str, path) -> np.ndarray:
    """Per-row loss weights: float32 (n,), finite and >= 0, else a DataError."""
    arr = np.asarray(arr)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise DataError(f"{what} has dtype {arr.dtype}; expected numbers", where=str(path))
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or len(arr) != rows:
        raise DataError(f"{what} has shape {arr.shape}; expected ({rows},), one weight per "
                        "row", where=str(path))
    with np.errstate(over="ignore", invalid="ignore"):   # the error below says it
        out = arr.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(out) | (out < 0))
    if len(bad) and np.isfinite(arr[bad[0]]) and out[bad[0]] > 0:   # finite, now inf
        raise DataError(f"{what}: weight {float(arr[bad[0]]):.6g} at index {int(bad[0])} "
                        "overflows float32 (sample weights must be finite and >= 0)",
                        where=str(path))
    if len(bad):
        raise DataError(f"{what}: weight {out[bad[0]]} at index {int(bad[0])} (sample weights "
                        "must be finite and >= 0)", where=str(path))
    return out


def _check_rules(spec: dict, opts: TableOptions, encoding: dict) -> None:
    mine = {"categorical": opts.categorical,
            "fill": opts.fill if opts.fill_all is None else opts.fill_all}
    for key, value in mine.items():
        if key in spec and value != encoding["rules"][key]:
            raise ConfigError(f"{value!r} differs from the training source's "
                              f"{encoding['rules'][key]!r}; the training source's rules "
                              "apply to every split (leave the key out)", where=key)


def _predict_names(names: list[str], encoding: dict, path) -> list[str]:
    """Header-less predict input may omit the target and sample_weight columns: its
    columns are then the training columns without them, in order."""
    trained = encoding["columns"]
    if len(names) == len(trained):
        return trained
    omitted = {c for _, cols in encoding["target"] or [] for c in cols}
    omitted.add(encoding["sample_weight"])
    rest = [c for c in trained if c not in omitted]
    if len(names) != len(rest):
        raise DataError(f"{len(names)} columns; the training data had {len(trained)} "
                        f"({len(rest)} without the target and sample_weight)", where=str(path))
    return rest


def input_header(header: bool | None, encoding: dict | None) -> bool:
    """Whether `nnrun predict --input` reads a table's line 1 as its header: as
    --header/--no-header says, else as the run's training table did (a header unless it
    had `header: false`), else (a run trained on other data) yes."""
    if header is not None:
        return header
    return bool(encoding["header"]) if encoding is not None else True


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _check_header_line(names: list[str], encoding: dict | None, path) -> None:
    """A predict input's header line (read as one by default) made only of numbers is
    almost surely a row of data: a DataError asking for --no-header or --header, rather
    than a row silently lost. Numeric names the training table had are a header."""
    if encoding is not None and encoding["header"] and \
            {c for cols in unpairs(encoding["features"]).values() for c in cols} <= set(names):
        return
    if any(_is_number(n) for n in names) and all(_is_number(n) or not n for n in names):
        shown = ",".join(names) if len(names) <= 8 else ",".join(names[:8]) + ",..."
        raise DataError(f"line 1 ({shown}) holds only numbers: a row of data, not a header "
                        "line? Give --no-header if every line is a row (or --header if line "
                        "1 is the header)", where=str(path))


def load_table(path: pathlib.Path, spec: dict, dtype: str, encoding: dict | None = None, *,
               predict: bool = False, drop: list[str] = ()) -> Table:
    """A CSV/TSV source read and encoded: with `encoding` (the training source's) as it
    says, else with one fitted here. `predict`: features only (targets and weights are
    not needed); `drop`: columns left out of the default features."""
    opts = parse_options(spec, path.suffix.lower())
    header = opts.header if encoding is None or "header" in spec else encoding["header"]
    names, cells, lines = read_table(path, opts.delimiter, header)
    if predict and header and "header" not in spec:
        _check_header_line(names, encoding, path)
    if encoding is None:
        encoding = fit_encoding(opts, names, cells, lines, path, dtype, drop)
    else:
        _check_rules(spec, opts, encoding)
        if predict and not (header and encoding["header"]):   # columns by position
            names = _predict_names(names, encoding, path)
    col = {n: Cells(n, cells[:, i], path, lines) for i, n in enumerate(names)}
    features = opts.features or unpairs(encoding["features"])
    target = None if predict else (opts.target or unpairs(encoding["target"]))
    weight = None if predict else (opts.sample_weight or encoding["sample_weight"])
    check_columns(names, features, "feature", path)
    check_columns(names, target, "target", path)
    if weight is not None:
        check_columns(names, {None: [weight]}, "sample_weight", path)
    x = {k: np.concatenate([encode_column(col[c], encoding) for c in cols], 1)
         for k, cols in features.items()}
    y = {k: encode_target(cols, col, encoding) for k, cols in target.items()} \
        if target else None
    sw = encode_sample_weight(col[weight], encoding) if weight is not None else None
    return Table(x, y, sw, encoding.get("class_names"), encoding, lines)


def read_encoding(run: pathlib.Path) -> dict | None:
    """A run's data_encoding.json, or None when its training data was not a table."""
    path = pathlib.Path(run) / ENCODING_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read the run's data encoding: {e}", where=str(path)) from e
