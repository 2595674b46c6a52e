"""`nnrun diff`'s config part: what a person changed between two configs. Layers are
matched by name (explicit, or the automatic dense, dense_1, ... the spec assigns), an
argument at its layer's default on both sides is left out, and an added or removed
layer is one row. Jax-free."""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

from nnrun.config.layer_schemas import COMMON_ALIASES, LAYERS, canonical_type

_ABSENT = object()
# Arguments every layer takes, at their defaults (layer_schemas.COMMON_ARGS).
_COMMON_DEFAULTS = {"trainable": True, "weights": None, "input_shape": None,
                    "input_dim": None, "input_length": None, "batch_input_shape": None}


def _plain(value: Any) -> Any:
    """Tuples (the schemas' defaults) as lists, as a config holds them."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _snake(name: str) -> str:
    """Keras's automatic layer names: Dense -> dense, MaxPooling2D -> max_pooling2d."""
    name = re.sub(r"(.)([A-Z][a-z0-9]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _layer(item: Any) -> tuple[str, dict] | None:
    """A layer entry -> (canonical type, arguments in canonical names), or None."""
    if isinstance(item, str):
        type_, args = item, {}
    elif isinstance(item, dict) and len(item) == 1:
        type_, args = next(iter(item.items()))
    else:
        return None
    if not isinstance(type_, str) or canonical_type(type_) not in LAYERS:
        return None
    type_ = canonical_type(type_)
    schema = LAYERS[type_]
    if not isinstance(args, dict):   # `Dense: 8`, `Activation: relu`
        args = {schema.args[0].name: args} if schema.args else {}
    return type_, {_canonical(schema, k): v for k, v in args.items()}


def _canonical(schema: Any, key: str) -> str:
    """An argument's Keras 3 name, as the spec resolves it (a name the layer has is
    its own, as Embedding's output_dim)."""
    if schema.arg(key):
        return key
    return schema.aliases.get(key) or COMMON_ALIASES.get(key, key)


def _is_layer_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_layer(v) for v in value)


def _named_layers(items: list) -> dict[str, tuple[str, dict]]:
    """{name: (type, arguments)} in order; unnamed layers get the spec's names."""
    counts: dict[str, int] = {}
    out: dict[str, tuple[str, dict]] = {}
    for item in items:
        type_, args = _layer(item)
        name = args.get("name")
        if not isinstance(name, str) or not name:
            base = _snake(type_)
            n = counts.get(base, 0)
            counts[base] = n + 1
            name = base if n == 0 else f"{base}_{n}"
        out[name] = (type_, {k: v for k, v in args.items() if k != "name"})
    return out


def defaults_of(type_: str) -> dict[str, Any]:
    """A layer type's arguments at their defaults (the required ones have none)."""
    schema = LAYERS.get(type_)
    args = {a.name: _plain(a.default) for a in schema.args if not a.required} if schema else {}
    return {**_COMMON_DEFAULTS, **args}


def layer_value(type_: str, args: dict) -> dict:
    """A layer as a config holds it, its arguments at their defaults left out."""
    defaults = defaults_of(type_)
    return {type_: {k: v for k, v in args.items()
                    if k not in defaults or _plain(v) != defaults[k]}}


def _row(rows: list, path: str, old: Any, new: Any, *, layer: bool = False) -> None:
    change = "added" if old is _ABSENT else "removed" if new is _ABSENT else "changed"
    row = {"path": path, "old": None if old is _ABSENT else old,
           "new": None if new is _ABSENT else new, "change": change}
    if layer:
        row["layer"] = True
    rows.append(row)


def _diff(old: Any, new: Any, path: str, rows: list) -> None:
    if _plain(old) == _plain(new):
        return
    if isinstance(old, dict) and isinstance(new, dict) and _layer(old) and _layer(new):
        _diff_layer(_layer(old), _layer(new), path, rows)   # a wrapper's layer
    elif isinstance(old, dict) and isinstance(new, dict):
        for key in [*old, *(k for k in new if k not in old)]:
            sub = f"{path}.{key}" if path else str(key)
            if key not in new:
                _row(rows, sub, old[key], _ABSENT)
            elif key not in old:
                _row(rows, sub, _ABSENT, new[key])
            else:
                _diff(old[key], new[key], sub, rows)
    elif _is_layer_list(old) and _is_layer_list(new):
        _diff_layers(_named_layers(old), _named_layers(new), path, rows)
    elif (isinstance(old, list) and isinstance(new, list)
          and any(isinstance(v, (dict, list)) for v in old + new)):
        for i in range(max(len(old), len(new))):
            _diff(old[i] if i < len(old) else _ABSENT, new[i] if i < len(new) else _ABSENT,
                  f"{path}[{i}]", rows)
    else:
        _row(rows, path, old, new)


def _diff_layer(old: tuple[str, dict], new: tuple[str, dict], where: str,
                rows: list) -> None:
    """One layer's arguments, each compared with its default where a side lacks it."""
    (type_a, args_a), (type_b, args_b) = old, new
    args_a = {k: v for k, v in args_a.items() if k != "name"}
    args_b = {k: v for k, v in args_b.items() if k != "name"}
    if type_a != type_b:
        _row(rows, where, layer_value(*old), layer_value(*new), layer=True)
        return
    defaults = defaults_of(type_a)
    for key in [*args_a, *(k for k in args_b if k not in args_a)]:
        a = args_a.get(key, defaults.get(key, _ABSENT))
        b = args_b.get(key, defaults.get(key, _ABSENT))
        _diff(a, b, f"{where}.{key}", rows)


def _diff_layers(old: dict, new: dict, path: str, rows: list) -> None:
    """Layers matched by name, in the order of both stacks merged; a layer on one side
    only is one row; a change of the common layers' order is one row more."""
    a_names, b_names = list(old), list(new)
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a_names, b=b_names,
                                                       autojunk=False).get_opcodes():
        for name in a_names[i1:i2]:
            if name not in new:
                _row(rows, f"{path}[{name}]", layer_value(*old[name]), _ABSENT, layer=True)
            else:
                _diff_layer(old[name], new[name], f"{path}[{name}]", rows)
        if tag == "equal":
            continue
        for name in b_names[j1:j2]:
            if name not in old:
                _row(rows, f"{path}[{name}]", _ABSENT, layer_value(*new[name]), layer=True)
    common_a = [n for n in a_names if n in new]
    common_b = [n for n in b_names if n in old]
    if common_a != common_b:
        _row(rows, f"{path} (order)", a_names, b_names)


def diff_configs(old: dict, new: dict) -> list[dict[str, Any]]:
    """The values that differ: [{path, old, new, change: changed | added | removed}],
    `layer: true` on a row that is a whole layer ({Type: non-default arguments})."""
    rows: list[dict[str, Any]] = []
    _diff(old, new, "", rows)
    return rows


def show(value: Any, layer: bool = False) -> str:
    """A value as the diff prints it: JSON, a layer as Type(arg=value, ...)."""
    if layer and isinstance(value, dict) and len(value) == 1:
        type_, args = next(iter(value.items()))
        return f"{type_}({', '.join(f'{k}={json.dumps(v)}' for k, v in args.items())})"
    return json.dumps(value)
