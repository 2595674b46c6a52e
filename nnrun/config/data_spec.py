"""Validation of the data options of `data:` (no data read): shuffle_split, stratify,
preprocess and class_weight. Jax-free, as all of config checking."""

from __future__ import annotations

from typing import Any

from nnrun.config.checks import Problems, typed_field
from nnrun.config.registry import unknown_name_message
from nnrun.config.values import ArgTypeError, boolean, got, number
from nnrun.config.yamlsrc import PathT

OPTION_KEYS = ("shuffle_split", "stratify", "preprocess", "class_weight")
PREPROCESS_KEYS = ("x", "y")

STREAMABLE = (".npy", ".h5", ".hdf5")   # the file types whose features can stay on disk
X_METHODS = ("standardize", "minmax", "none")   # data.preprocess.x
Y_METHODS = ("one_hot", "sparse", "none")       # data.preprocess.y


def validate_data_options(data: dict, split: float | None, problems: Problems) -> dict:
    """{key: checked value or None} for OPTION_KEYS; shuffle_split and stratify need a
    validation_split (in data: or fit:), each problem located at its key."""
    path: PathT = ("data",)
    out: dict[str, Any] = {}
    for key in ("shuffle_split", "stratify"):
        out[key] = typed_field(data, key, boolean, None, path, problems)
        if out[key] and split is None:
            problems.add(path + (key,), f"{key} applies to validation_split, which this "
                                        "config does not give (in data: or fit:)", key=True)
    out["preprocess"] = _preprocess(data.get("preprocess"), path + ("preprocess",), problems)
    out["class_weight"] = _class_weight(data.get("class_weight"), path + ("class_weight",),
                                        problems)
    return out


def _preprocess(value: Any, path: PathT, problems: Problems) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        problems.add(path, "expected a mapping such as {x: standardize, y: one_hot}, "
                           f"{got(value)}")
        return None
    ok = True
    for key in value:
        if key not in PREPROCESS_KEYS:
            problems.add(path + (key,), unknown_name_message("key in data.preprocess", key,
                                                             list(PREPROCESS_KEYS)), key=True)
            ok = False
    for key, methods in (("x", X_METHODS), ("y", Y_METHODS)):
        if key in value:
            ok = _methods(value[key], methods, path + (key,), problems) and ok
    return dict(value) if ok else None


def _methods(value: Any, methods: tuple[str, ...], path: PathT, problems: Problems) -> bool:
    """One method name, or a mapping {input / output name: method name}."""
    kind = "inputs" if path[-1] == "x" else "outputs"
    items = value.items() if isinstance(value, dict) else [(None, value)]
    ok = True
    for name, method in items:
        where = path if name is None else path + (name,)
        if not isinstance(method, str):
            also = f", or a mapping of {kind} names to them" if name is None else ""
            problems.add(where, f"expected one of {', '.join(methods)}{also}, {got(method)}")
            ok = False
        elif method not in methods:
            problems.add(where, unknown_name_message(f"data.preprocess.{path[-1]} method",
                                                     method, list(methods)))
            ok = False
        elif name is not None and not isinstance(name, str):
            problems.add(where, f"expected the name of one of the model's {kind}, "
                                f"{got(name)}", key=True)
            ok = False
    return ok


def _class_weight(value: Any, path: PathT, problems: Problems) -> Any:
    if value is None:
        return None
    if isinstance(value, str):
        if value != "balanced":
            problems.add(path, unknown_name_message("class_weight", value, ["balanced"])
                         + " (or give a mapping {class: weight})")
            return None
        return value
    if not isinstance(value, dict) or not value:
        problems.add(path, "expected balanced or a mapping {class id or name: weight}, "
                           f"{got(value)}")
        return None
    ok = True
    for key, weight in value.items():
        if isinstance(key, bool) or not isinstance(key, (int, str)) or (
                isinstance(key, int) and key < 0):
            problems.add(path + (key,), f"expected a class id (0, 1, ...) or class name, "
                                        f"{got(key)}", key=True)
            ok = False
            continue
        try:
            if number(weight) < 0:
                raise ArgTypeError(f"expected a weight >= 0, got {weight!r}")
        except ArgTypeError as exc:
            problems.add(path + (key,), str(exc))
            ok = False
    return dict(value) if ok else None


def preprocess_name_problems(spec) -> list[tuple[str | None, str]]:
    """`preprocess.x` / `.y` mappings checked against a graph model's input and output
    names (no data read): every unknown name, located at its key."""
    pre = spec.data.preprocess or {}
    if not spec.model.is_graph:
        return []
    names = {"x": [i.name for i in spec.model.inputs], "y": list(spec.model.outputs or ())}
    problems = []
    for part, kind in (("x", "input"), ("y", "output")):
        value = pre.get(part)
        if not isinstance(value, dict):
            continue
        for key in value:
            if key not in names[part]:
                problems.append((spec.origins.where(("data", "preprocess", part, key),
                                                    key=True),
                                 unknown_name_message(kind, key, names[part])))
    return problems
