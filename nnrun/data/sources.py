"""Data sources: a `data:` entry (a built-in dataset, a CSV/TSV table, .npy / .npz /
HDF5 arrays, or .npy / HDF5 features left on disk and streamed) loaded into a
`Dataset`, and the features `nnrun predict --input` reads.

numpy only (no jax): every array leaves this module as a host numpy array.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
from typing import Any

import numpy as np

from nnrun.config.data_spec import STREAMABLE
from nnrun.config.errors import ConfigError, DataError
from nnrun.config.registry import unknown_name_message
from nnrun.data import rowsource
from nnrun.data.arrays import (
    ArrayHeader,
    Dataset,
    array_headers,
    as_features,
    as_targets,
    file_record,
    file_record_soon,
    load_arrays,
    load_npy,
    npy_header,
    rows,
)
from nnrun.data.datasets import DATASETS, check_options, generate
from nnrun.data.rowsource import (
    check_finite,
    open_features,
)
from nnrun.data.tables import (
    TABLE_KEYS,
    check_sample_weight,
    column_problems,
    load_table,
    parse_options,
)

_SOURCE_KEYS = {
    ".npz": ("path", "x", "y", "dtype", "sample_weight"),
    ".h5": ("path", "x", "y", "dtype", "sample_weight"),
    ".hdf5": ("path", "x", "y", "dtype", "sample_weight"),
    ".npy": ("path", "target", "dtype", "sample_weight"),
    ".csv": TABLE_KEYS,
    ".tsv": TABLE_KEYS,
}


def _check_keys(spec: dict, allowed: tuple[str, ...] | list[str], what: str) -> None:
    for key in spec:
        if key not in allowed:
            raise ConfigError(
                unknown_name_message(f"key for {what}", key, list(allowed)), where=str(key)
            )


def path_source_file(spec: dict, base_dir: pathlib.Path) -> tuple[pathlib.Path, str, str]:
    """(path, suffix, dtype) of a `{path: ...}` source, its keys checked (nothing read)."""
    raw = spec["path"]
    if not isinstance(raw, (str, os.PathLike)):
        raise ConfigError(f"expected a file path, got {raw!r}", where="path")
    try:
        path = (base_dir / pathlib.Path(raw).expanduser()).resolve()
    except (OSError, RuntimeError, ValueError) as exc:   # NUL bytes, ~unknown_user
        raise ConfigError(f"not a usable file path {str(raw)!r}: {exc}", where="path") from None
    suffix = path.suffix.lower()
    if suffix not in _SOURCE_KEYS:
        raise ConfigError(
            f"unsupported data file type {suffix or '(none)'!r} for {raw}; "
            f"supported: {', '.join(_SOURCE_KEYS)}",
            where="path",
        )
    _check_keys(spec, _SOURCE_KEYS[suffix], f"a {suffix} source")
    dtype = spec.get("dtype", "float32")
    if dtype not in ("float32", "int32"):
        raise ConfigError(f"expected float32 or int32, got {dtype!r}", where="dtype")
    return path, suffix, dtype


def _unnamed(groups):
    """{None: array} -> the array: one input / output."""
    return groups[None] if groups is not None and None in groups else groups


def _load_path_source(spec: dict, base_dir: pathlib.Path, encoding: dict | None) -> Dataset:
    path, suffix, dtype = path_source_file(spec, base_dir)
    record = file_record_soon(path)   # hashed while it is read
    try:
        dataset = _read_path_source(spec, base_dir, encoding, path, suffix, dtype)
    except BaseException:
        with contextlib.suppress(Exception):   # the reading's error is the one to report
            record()
        raise
    dataset.files.insert(0, record())
    return dataset


def _read_path_source(spec: dict, base_dir: pathlib.Path, encoding: dict | None,
                      path: pathlib.Path, suffix: str, dtype) -> Dataset:
    files: list[dict] = []   # the other files read (targets, weights); path's comes first
    weights, class_names, lines = None, None, None
    if suffix in (".csv", ".tsv"):
        table = load_table(path, spec, dtype, encoding)
        x = _unnamed({k: as_features(v, dtype, f"features {k!r}" if k else "features", path)
                      for k, v in table.x.items()})
        y, weights, class_names = _unnamed(table.y), table.sample_weight, table.class_names
        encoding, y_path, lines = table.encoding, path, table.lines
    elif suffix in (".npz", ".h5", ".hdf5"):
        x_name, y_name = spec.get("x", "x"), spec.get("y", "y")
        named = isinstance(x_name, dict)   # a graph model's inputs: {input: array name}
        x_names = list(x_name.values()) if named else [x_name]
        y_names = list(y_name.values()) if isinstance(y_name, dict) else [y_name]
        for key, value in [("x", v) for v in x_names] + [("y", v) for v in y_names]:
            if not (isinstance(value, str) or (key == "y" and value is None)):
                also = " (or a mapping of input names to array names)" if key == "x" else ""
                raise ConfigError(f"expected an array name{also}, got {value!r}", where=key)
        required = x_names + ([v for v in y_names if v] if "y" in spec else [])
        weight_name = spec.get("sample_weight")
        required += [weight_name] if weight_name is not None else []
        arrays = load_arrays(path, required, [y_name] if "y" not in spec else [],
                             weight=weight_name)
        if weight_name is not None:
            weights = (arrays[weight_name], f"array {weight_name!r} (sample_weight)", path)
        if named:   # the same number of rows in each: load_arrays checked the headers
            x = {str(k): as_features(arrays[v], dtype, f"array {v!r}", path)
                 for k, v in x_name.items()}
        else:
            x = as_features(arrays[x_name], dtype, f"array {x_name!r}", path)
        if isinstance(y_name, dict):   # several outputs: {output: array name}
            y = {str(k): as_targets(arrays[v], f"array {v!r}", path) for k, v in y_name.items()}
        else:
            y = as_targets(arrays[y_name], f"array {y_name!r}", path) \
                if y_name in arrays else None
        y_path = path
    else:
        y_path = w_path = None
        if spec.get("target") is not None:
            if not isinstance(spec["target"], (str, os.PathLike)):
                raise ConfigError(
                    f"expected a .npy file path, got {spec['target']!r}", where="target"
                )
            y_path = (base_dir / pathlib.Path(spec["target"]).expanduser()).resolve()
            files.append(file_record(y_path))
        if spec.get("sample_weight") is not None:
            w_path = (base_dir / pathlib.Path(spec["sample_weight"]).expanduser()).resolve()
            files.append(file_record(w_path))
        _check_npy_rows(path, y_path)   # from the headers: before either is read
        x = as_features(load_npy(path), dtype, "features", path)
        y = as_targets(load_npy(y_path), "targets", y_path) if y_path else None
        weights = (load_npy(w_path), "sample_weight", w_path) if w_path else None
        y_path = y_path or path
    if isinstance(weights, tuple):   # an array: one finite weight >= 0 per row
        weights = check_sample_weight(weights[0], rows(x), weights[1], weights[2])
    if y is not None and rows(y) != rows(x):
        raise DataError(
            f"{rows(x)} rows of features but {rows(y)} rows of targets"
            + (f" in {y_path}" if y_path != path else ""),
            where=str(path),
        )
    if suffix not in (".csv", ".tsv"):
        encoding = None   # a table's encoding applies to tables only
    return Dataset(x=x, y=y, source=str(spec["path"]), files=files, class_names=class_names,
                   sample_weight=weights, encoding=encoding, lines=lines)


def _check_npy_rows(path: pathlib.Path, y_path: pathlib.Path | None) -> None:
    n_x = (npy_header(path)[0].shape or (None,))[0]
    n_y = (npy_header(y_path)[0].shape or (None,))[0] if y_path else None
    if None not in (n_x, n_y) and n_x != n_y:
        raise DataError(f"{n_x} rows of features but {n_y} rows of targets in {y_path}",
                        where=str(path))


def peek_features(source: dict, base_dir: pathlib.Path):
    """The shape and dtype the features of a `{path: ...}` source will have (an
    ArrayHeader, or {input: ArrayHeader} for `x:` a mapping), from the file's headers
    alone — nothing else read or decompressed — to match them to the model before the
    data is loaded (they have `.shape`, as arrays). None for a builtin or a table."""
    if "path" not in source:
        return None
    path, suffix, dtype = path_source_file(source, base_dir)
    if suffix in (".csv", ".tsv"):
        return None
    file_record(path) if not path.is_file() else None   # "file not found", "not a file"
    if suffix == ".npy":
        headers = {None: npy_header(path)[0]}
    else:
        x_name = source.get("x", "x")
        names = x_name if isinstance(x_name, dict) else {None: x_name}
        found = array_headers(path, list(names.values()))
        headers = {k: found[v] for k, v in names.items()}
    out = {k: ArrayHeader((*h.shape[:1], *(h.shape[1:] or (1,))), np.dtype(dtype))
           for k, h in headers.items()}
    return out[None] if None in out else {str(k): v for k, v in out.items()}


def load_source(
    source: dict, *, seed: int, base_dir: pathlib.Path, where: str | None = None,
    encoding: dict | None = None,
) -> Dataset:
    """Load one data source of the config: `{builtin: ...}` or `{path: ...}`.

    `seed` seeds a builtin unless the source gives its own; relative paths resolve
    against `base_dir`. `where` (e.g. "data.train") prefixes ConfigError locations.
    `encoding`: the training source's (Dataset.encoding), to encode a validation or
    test table alike (vocabularies, fill values, column order); None fits one.
    """
    try:
        _check_source_kind(source)
        if "builtin" in source:
            options = dict(source)
            name = options.pop("builtin")
            samples = options.pop("samples", None)
            rename = options.pop("x", None)
            targets = _builtin_targets(options.pop("y", None))
            seed = options.pop("seed", seed)
            check_options(name, samples, seed, options)   # before **options: any key type
            x, y = generate(name, samples, seed, **options)
            if rename is not None:
                x = _rename_inputs(x, rename, name)
            arrays = {"x": x, "y": y}
            if isinstance(targets, dict):
                y = {str(k): arrays[v].copy() for k, v in targets.items()}
            elif targets is not None:
                y = arrays[targets].copy()
            return Dataset(x=x, y=y, source=f"builtin:{DATASETS.canonical(name)}")
        return _load_path_source(source, pathlib.Path(base_dir), encoding)
    except ConfigError as e:
        if where is None:
            raise
        inner = f"{where}.{e.where}" if e.where else where
        raise ConfigError(e.message, where=inner) from e


def check_source(source: Any) -> None:
    """A data source checked without reading or generating anything (`nnrun check`): a
    builtin's name and options, a file's type, keys and dtype. ConfigError `where`
    names the key."""
    _check_source_kind(source)
    if "builtin" in source:
        options = dict(source)
        name = options.pop("builtin")
        samples = options.pop("samples", None)
        options.pop("x", None)
        _builtin_targets(options.pop("y", None))
        check_options(name, samples, options.pop("seed", 0), options)
    else:
        _, suffix, _ = path_source_file(source, pathlib.Path("."))
        if suffix in (".csv", ".tsv"):
            parse_options(source, suffix)
        elif source.get("sample_weight") is not None and \
                not isinstance(source["sample_weight"], str):
            what = "a .npy file path" if suffix == ".npy" else "an array name"
            raise ConfigError(f"expected {what}, got {source['sample_weight']!r}",
                              where="sample_weight")


def file_problems(source: Any, base_dir: pathlib.Path) -> list[tuple[tuple, str]]:
    """A `{path: ...}` source's files checked without reading their data (`nnrun
    check`): each one there, and a table's header naming the columns the source uses
    (tables.column_problems): [(key path in the source, message)]. A builtin, or keys
    check_source refuses: []."""
    if not isinstance(source, dict) or "path" not in source:
        return []
    try:
        base_dir = pathlib.Path(base_dir)
        path, suffix, _ = path_source_file(source, base_dir)
    except ConfigError:
        return []
    files = [(("path",), path)]
    if suffix == ".npy":
        files += [((key,), (base_dir / pathlib.Path(source[key]).expanduser()).resolve())
                  for key in ("target", "sample_weight") if isinstance(source.get(key), str)]
    problems = [(key, f"file not found: {f}" if not f.exists() else f"not a file: {f}")
                for key, f in files if not f.is_file()]
    if not problems and suffix in (".csv", ".tsv"):
        problems += column_problems(path, source)
    return problems


def _check_source_kind(source: Any) -> None:
    if not isinstance(source, dict) or ("builtin" in source) == ("path" in source):
        raise ConfigError(f"expected a mapping with 'builtin' or 'path', got {source!r}")


def _builtin_targets(targets: Any) -> Any:
    """A builtin's `y:`: x, y, or a mapping of output names to x or y (or None)."""
    picks = list(targets.values()) if isinstance(targets, dict) else [targets]
    if not all(t in (None, "x", "y") for t in picks):
        raise ConfigError(f"a builtin's `y:` is x (the features as targets, for an "
                          "autoencoder), y, or a mapping of output names to x or y, "
                          f"got {targets!r}", where="y")
    return targets


def _rename_inputs(x, rename: Any, name: str) -> dict[str, np.ndarray]:
    """A builtin of several arrays given to a graph model's inputs: {input: array name}."""
    if not isinstance(x, dict):
        raise ConfigError(f"dataset {name!r} gives one array: `x:` (a mapping of input names "
                          "to its arrays) is for datasets of several, such as pairs",
                          where="x")
    if not isinstance(rename, dict) or not all(isinstance(v, str) for v in rename.values()):
        raise ConfigError(f"expected a mapping of input names to array names ({', '.join(x)})"
                          f", got {rename!r}", where="x")
    for v in rename.values():
        if v not in x:
            raise ConfigError(unknown_name_message(f"array of dataset {name!r}", v, list(x)),
                              where="x")
    return {str(k): x[v] for k, v in rename.items()}


def load_features(
    path: pathlib.Path, *, drop_columns: list[str] | None = None, dtype: str = "float32",
    encoding: dict | None = None, header: bool | None = None,
) -> np.ndarray | dict[str, np.ndarray]:
    """Features for `nnrun predict --input FILE`: a CSV/TSV (columns in `drop_columns`,
    e.g. targets, are dropped when present), a .npy, or a .npz / HDF5 (array "x"); a
    .npy / HDF5 over rowsource.STREAM_THRESHOLD_BYTES is left on disk (a RowSource). With
    `encoding` (the run's training table's), a CSV/TSV is encoded as the training data
    was (its target and sample_weight columns may be left out). `header`: whether a
    CSV/TSV's line 1 is its header (None: `tables.input_header`; a line 1 of numbers
    read as a header is then a DataError)."""
    path = pathlib.Path(path).expanduser().resolve()
    suffix = path.suffix.lower()
    if suffix not in _SOURCE_KEYS:
        raise ConfigError(
            f"unsupported input file type {suffix or '(none)'!r}; supported: "
            f"{', '.join(_SOURCE_KEYS)}",
            where=str(path),
        )
    file_record(path)
    if suffix in (".csv", ".tsv"):
        dtype = encoding["dtype"] if encoding else dtype
        spec = {"path": str(path), **({} if header is None else {"header": header})}
        table = load_table(path, spec, dtype, encoding, predict=True,
                           drop=list(drop_columns or []))
        x = {k: as_features(v, dtype, f"features {k!r}" if k else "features", path)
             for k, v in table.x.items()}
        return _unnamed(x) if None in x or len(x) > 1 else next(iter(x.values()))
    if suffix in (".npy", ".h5", ".hdf5"):   # larger than memory: left on disk
        source = open_features(path, None if suffix == ".npy" else "x", dtype)
        if source.nbytes > rowsource.STREAM_THRESHOLD_BYTES:
            check_finite(source)
            return source
    if suffix in (".npz", ".h5", ".hdf5"):
        arr, what = load_arrays(path, ["x"])["x"], "array 'x'"
    else:
        arr, what = load_npy(path), "features"
    return as_features(arr, dtype, what, path)


def load_named_features(path: pathlib.Path, names: list[str]) -> dict[str, np.ndarray]:
    """Features of a model of several inputs for `nnrun predict --input FILE.npz`: one
    array per input name."""
    path = pathlib.Path(path).expanduser().resolve()
    if path.suffix.lower() != ".npz":
        raise ConfigError(f"a model of several inputs ({', '.join(names)}) predicts from a "
                          ".npz file with one array per input name", where=str(path))
    file_record(path)
    arrays = load_arrays(path, names)
    return {n: as_features(arrays[n], "float32", f"array {n!r}", path) for n in names}


def load_streamed(source: dict, base_dir: pathlib.Path, stream: bool | None):
    """A `{path: FILE.npy | FILE.h5}` source with its features left on disk, or None when
    it should be read whole (`stream` false, another file type, or, with `stream` None,
    features under STREAM_THRESHOLD_BYTES). Targets and sample weights are read whole."""
    if stream is False or "path" not in source:
        return None
    path, suffix, dtype = path_source_file(source, base_dir)
    if suffix not in STREAMABLE:
        if stream:
            raise ConfigError(f"only .npy and HDF5 files can be streamed, not {suffix} "
                              "(data.stream: true)", where="path")
        return None
    if not path.is_file():
        file_record(path)   # the loaders' "file not found" / "not a regular file"
    if suffix == ".npy":
        x = open_features(path, None, dtype)
    else:
        x_name = source.get("x", "x")
        names = x_name if isinstance(x_name, dict) else {None: x_name}
        opened = {k: open_features(path, v, dtype) for k, v in names.items()}
        x = opened[None] if None in opened else opened
    parts = x if isinstance(x, dict) else {"x": x}
    if stream is None and sum(v.nbytes for v in parts.values()) <= \
            rowsource.STREAM_THRESHOLD_BYTES:
        return None   # read whole by the ordinary loader (which hashes the file once)
    counts = {k: len(v) for k, v in parts.items()}
    if len(set(counts.values())) > 1:
        raise DataError(f"the inputs' arrays have different row counts: {counts}",
                        where=str(path))
    files = [file_record(path)]
    for v in parts.values():
        check_finite(v)
    y = _targets(source, path, suffix, base_dir, files)
    if y is not None and rows(y) != rows(x):
        raise DataError(f"{rows(x)} rows of features but {rows(y)} rows of "
                        "targets", where=str(path))
    return Dataset(x=x, y=y, source=str(source["path"]), files=files,
                            sample_weight=_sample_weight(source, path, suffix, base_dir,
                                                         files, next(iter(counts.values()))))


def _sample_weight(source: dict, path: pathlib.Path, suffix: str, base_dir: pathlib.Path,
                   files: list[dict], n: int):
    """A streamed source's `sample_weight:` (an array of the file, or a .npy), read whole."""
    name = source.get("sample_weight")
    if name is None:
        return None
    if suffix == ".npy":
        w_path = (pathlib.Path(base_dir) / pathlib.Path(name).expanduser()).resolve()
        files.append(file_record(w_path))
        return check_sample_weight(load_npy(w_path), n, "sample_weight", w_path)
    arr = load_arrays(path, [name])[name]
    return check_sample_weight(arr, n, f"array {name!r} (sample_weight)", path)


def _targets(source: dict, path: pathlib.Path, suffix: str, base_dir: pathlib.Path,
             files: list[dict]):
    """The targets of a streamed source, read whole (None when it has none)."""
    if suffix == ".npy":
        target = source.get("target")
        if target is None:
            return None
        y_path = (pathlib.Path(base_dir) / pathlib.Path(target).expanduser()).resolve()
        files.append(file_record(y_path))
        return as_targets(load_npy(y_path), "targets", y_path)
    y_name = source.get("y", "y")
    names = y_name if isinstance(y_name, dict) else {None: y_name}
    required = list(names.values()) if "y" in source else []
    arrays = load_arrays(path, required, [] if required else [y_name])
    y = {k: as_targets(arrays[v], f"array {v!r}", path)
         for k, v in names.items() if v in arrays}
    if not y:
        return None
    return y[None] if None in y else y
