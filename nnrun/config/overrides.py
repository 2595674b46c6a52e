"""`--set a.b[0].c=value` overrides: a dotted path and a value in YAML syntax.

Each override replaces one value of the raw config before validation, and the
origins map records `--set ...` as where that value came from.

A bracketed part that is not an integer names a layer: `model.layers[hidden]` is the
item of model.layers whose layer is named `hidden` (its `name:`, or the automatic
`dense`, `dense_1`... that validation gives it), and the layer's class may then be
left out: `model.layers[hidden].units` is `model.layers[hidden].Dense.units`. A
layer's shorthand (`- Flatten`, `- Dense: 8`) and an optimizer given by name
(`optimizer: adam`) become mappings when a path goes into them.
"""

from __future__ import annotations

import re
from typing import Any

from nnrun.config.errors import ConfigError
from nnrun.config.layer_schemas import LAYERS, canonical_type
from nnrun.config.model_spec import layer_names
from nnrun.config.registry import unknown_name_message
from nnrun.config.yamlsrc import LayerName, Origins, PathT, format_path, parse_yaml

_PATH_PART = re.compile(r"([^.\[\]]+)|\[([^\[\]]*)\]")
# Named objects that a path may go into: `optimizer: adam` -> `{name: adam}`.
_NAMED = (("compile", "optimizer"),)
_MISSING = object()


def parse_override_path(text: str) -> PathT:
    """`model.layers[0].Dense.units` -> ("model", "layers", 0, "Dense", "units");
    `model.layers[hidden].units` -> ("model", "layers", LayerName("hidden"), "units")."""
    parts: list[Any] = []
    pos = 0
    for m in _PATH_PART.finditer(text):
        gap = text[pos:m.start()]
        if gap not in ("", ".") or (gap == "" and pos and m.group(1)):
            raise ConfigError(f"cannot parse override path {text!r}", where="--set")
        if m.group(1) is not None:
            parts.append(m.group(1))
        else:
            inside = m.group(2).strip()
            if not inside or re.fullmatch(r"-\d+", inside):
                raise ConfigError(f"cannot parse override path {text!r}: [...] holds a list "
                                  "index (0, 1, ...) or a layer's name", where="--set")
            parts.append(int(inside) if inside.isdigit() else LayerName(inside))
        pos = m.end()
    if not parts or pos != len(text):
        raise ConfigError(f"cannot parse override path {text!r}", where="--set")
    return tuple(parts)


def resolve_path(raw: dict, path: PathT | str, where: str = "--set") -> PathT:
    """The path with its layer names resolved against a raw config: each LayerName
    becomes the index of its list item, and a layer class left out is put in
    (`model.layers[hidden].units` -> ("model", "layers", 1, "Dense", "units")).
    Checked as `--set` would apply it (list items and layer names must exist; keys may
    be new); `raw` is not changed. Problems are ConfigErrors located at `where`."""
    if isinstance(path, str):
        path = parse_override_path(path)
    return _walk(raw, tuple(path), where, None)[0]


def apply_override(raw: dict, assignment: str, origins: Origins) -> None:
    """Apply one `--set a.b=value` (value in YAML syntax) to the raw config."""
    if "=" not in assignment:
        raise ConfigError(f"expected KEY=VALUE, got {assignment!r}", where="--set")
    key, text = assignment.split("=", 1)
    path = parse_override_path(key.strip())
    label = f"--set {assignment}"
    value = parse_yaml(text, label, Origins()) if text.strip() else None
    path, node = _walk(raw, path, label, origins)
    node[path[-1]] = value
    origins.set_subtree(path, label)


def _walk(raw: dict, path: PathT, label: str, origins: Origins | None) -> tuple[PathT, Any]:
    """(the concrete path, the list or mapping that holds its last part). With
    `origins`, the keys the path needs are made in `raw` (and shorthands it goes into
    expanded); without, `raw` is only read."""
    parts = list(path)
    done: list[Any] = []
    node: Any = raw
    i = 0
    while True:
        part = parts[i]
        if isinstance(part, LayerName):
            part = parts[i] = _item_index(node, part, tuple(done), label)
            cls = _layer_class(node[part]) if i + 1 < len(parts) else None
            nxt = parts[i + 1] if i + 1 < len(parts) else None
            if cls is not None and type(nxt) is str and nxt != cls:   # the class left out
                parts.insert(i + 1, cls)
        here = tuple(done) + (part,)
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                raise ConfigError(f"{format_path(here)}: no such list item", where=label)
        elif not isinstance(node, dict):
            raise ConfigError(f"{format_path(tuple(done))} is not a mapping", where=label)
        if i == len(parts) - 1:
            return here, node
        nxt = parts[i + 1]
        child = node[part] if isinstance(part, int) or part in node else _MISSING
        expanded = _expanded(node, part, child, here, nxt)
        if expanded is not None:
            child = expanded
            if origins is not None:
                node[part] = child
                _mark_expanded(origins, here, child)
        elif not isinstance(part, int) and (child is _MISSING or child is None):
            child = [] if isinstance(nxt, (int, LayerName)) else {}
            if origins is not None:
                if part not in node:   # a key the --set makes: a problem with it is the --set's
                    origins.set_subtree(here, label)
                node[part] = child
        node = child
        done.append(part)
        i += 1


def _item_index(node: Any, name: LayerName, at: PathT, label: str) -> int:
    """The index of the item of the list `node` whose layer is named `name.name`."""
    if not isinstance(node, list):
        raise ConfigError(f"{format_path(at)} is not a list of layers: [{name.name}] picks "
                          "a list item by its layer's name", where=label)
    names = layer_names(node, at)
    found = [i for i, n in enumerate(names) if n == name.name]
    if not found:
        known = [n for n in names if n is not None]
        raise ConfigError(f"{format_path(at)}: " + unknown_name_message(
            "layer name", name.name, known), where=label)
    if len(found) > 1:
        raise ConfigError(f"{format_path(at)}: layer name {name.name!r} is used more than "
                          f"once (items {', '.join(map(str, found))}): give the index",
                          where=label)
    return found[0]


def _layer_class(item: Any) -> str | None:
    """The class of a layer as written (`Dense` of `{Dense: {...}}` or of `Flatten`)."""
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and len(item) == 1:
        key = next(iter(item))
        return key if isinstance(key, str) else None
    return None


def _expanded(node: Any, part: Any, child: Any, here: PathT, nxt: Any) -> Any:
    """A shorthand that a path goes into, as the mapping it stands for, or None:
    a layer item `Flatten` -> `{Flatten: null}`, a layer's `Dense: 8` -> `{units: 8}`,
    `optimizer: adam` -> `{name: adam}`."""
    if type(nxt) is not str:
        return None
    in_layers = len(here) >= 2 and here[-2] == "layers" and isinstance(here[-1], int)
    if in_layers and isinstance(child, str) and nxt == child and \
            canonical_type(child) in LAYERS:
        return {child: None}
    item_args = len(here) >= 3 and here[-3] == "layers" and isinstance(here[-2], int)
    if item_args and isinstance(node, dict) and len(node) == 1 and isinstance(part, str) \
            and child is not _MISSING and child is not None and not isinstance(child, dict):
        schema = LAYERS.get(canonical_type(part))
        if schema is not None and schema.args:
            return {schema.args[0].name: child}
    if here in _NAMED and isinstance(child, str):
        return {"name": child}
    return None


def _mark_expanded(origins: Origins, here: PathT, child: dict) -> None:
    """The value a shorthand stood for keeps its origin, one level down."""
    origin = origins.value(here)
    if origin is None:
        return
    key = next(iter(child))
    origins.values[here + (key,)] = origin
    origins.keys[here + (key,)] = origin
    origins.containers.add(here)
