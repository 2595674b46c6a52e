"""Where each value of a resolved config came from: `nnrun config --origin`.

The resolved config uses canonical names (Keras 3 argument names, canonical layer
types, defaults filled in), so its paths differ from the ones written in the YAML
where an alias was used; the layer specs remember the written paths, and the
origins map knows the file, line and column (or `--set`) of each written value.
"""

from __future__ import annotations

from typing import Any

import yaml

from nnrun.config.model_spec import LayerSpec, ModelSpec
from nnrun.config.spec import Spec
from nnrun.config.yamlsrc import PathT, format_path

DEFAULT = "default"
_NOT_WRITTEN: PathT = ("<default>",)


def value_origins(spec: Spec) -> dict[PathT, str]:
    """Resolved config path -> `file:line:col`, `--set KEY=VALUE` or `default`, for every
    scalar (and list of scalars) of `spec.resolved`."""
    written = _written_paths(spec)
    out: dict[PathT, str] = {}

    def visit(value: Any, path: PathT) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                visit(item, (*path, key))
        elif isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
            for i, item in enumerate(value):
                visit(item, (*path, i))
        else:
            out[path] = spec.origins.given(_raw_path(path, written)) or DEFAULT

    visit(spec.resolved, ())
    return out


def _raw_path(path: PathT, written: dict[PathT, PathT]) -> PathT:
    for n in range(len(path), 0, -1):
        if path[:n] in written:
            raw = written[path[:n]]
            return raw if raw == _NOT_WRITTEN else (*raw, *path[n:])
    return path


def _written_paths(spec: Spec) -> dict[PathT, PathT]:
    """Resolved paths whose written path differs (aliases, defaults, moved keys)."""
    written: dict[PathT, PathT] = {}
    origins = spec.origins
    if ("data", "validation_split") not in origins.values:
        written[("data", "validation_split")] = ("fit", "validation_split")
    model = spec.model
    if model.input_shape is not None:
        written[("model", "input_shape")] = _input_shape_path(spec, model)
    _model_paths(model, ("model",), written, origins)
    return written


def _input_shape_path(spec: Spec, model: ModelSpec) -> PathT:
    for key in ("input_shape", "input_dim"):
        if ("model", key) in spec.origins.values:
            return ("model", key)
    first = model.layers[0] if model.layers else None
    for key in ("input_shape", "batch_input_shape", "input_dim", "input_length"):
        if first is not None and key in first.arg_paths:
            return first.arg_paths[key]
    return _NOT_WRITTEN


def _model_paths(model: ModelSpec, prefix: PathT, written: dict, origins) -> None:
    for i, layer in enumerate(model.layers):
        _layer_paths(layer, (*prefix, "layers", i), written, origins)


def _layer_paths(layer: LayerSpec, prefix: PathT, written: dict, origins) -> None:
    written[prefix] = layer.path
    type_keys = [p for p in origins.keys if len(p) == len(layer.path) + 1
                 and p[: len(layer.path)] == layer.path]
    type_path = type_keys[0] if type_keys else _NOT_WRITTEN
    written[(*prefix, layer.type)] = type_path
    for arg, value in layer.args.items():
        at = (*prefix, layer.type, arg)
        written[at] = layer.arg_paths.get(arg, _NOT_WRITTEN)
        if isinstance(value, tuple) and value and isinstance(value[0], LayerSpec):
            for j, inner in enumerate(value):
                _layer_paths(inner, (*at, j), written, origins)
        elif isinstance(value, ModelSpec):
            _model_paths(value, at, written, origins)
    for key in ("name", "inputs"):
        written[(*prefix, layer.type, key)] = layer.arg_paths.get(key, _NOT_WRITTEN)


def origin_yaml(spec: Spec) -> str:
    """The resolved config as YAML, each value followed by `# where it came from`."""
    origins = value_origins(spec)
    return "\n".join(_emit(spec.resolved, (), 0, origins)) + "\n"


def origin_table(spec: Spec) -> dict[str, str]:
    """`dotted.path -> origin` (for `nnrun config --origin --json`)."""
    return {format_path(p): o for p, o in value_origins(spec).items()}


def _flow(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text[:-4].strip() if text.endswith("\n...") else text.removesuffix("...").strip()


def _emit(value: Any, path: PathT, indent: int, origins: dict[PathT, str]) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        sub = (*path, key)
        head = f"{pad}{_flow(key)}:" if isinstance(value, dict) else f"{pad}-"
        if sub in origins:
            lines.append(f"{head} {_flow(item)}  # {origins[sub]}")
        elif isinstance(value, dict) or not isinstance(item, dict):
            lines.append(head)
            lines += _emit(item, sub, indent + 2, origins)
        else:  # a mapping in a list: its first key on the dash's line
            inner = _emit(item, sub, indent + 2, origins)
            lines.append(f"{pad}- {inner[0].lstrip()}" if inner else f"{head} {{}}")
            lines += inner[1:]
    return lines
