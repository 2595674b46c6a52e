"""`--set a.b[0].c=value` overrides: a dotted path and a value in YAML syntax.

Each override replaces one value of the raw config before validation, and the
origins map records `--set ...` as where that value came from.
"""

from __future__ import annotations

import re
from typing import Any

from nnrun.config.errors import ConfigError
from nnrun.config.yamlsrc import Origins, PathT, format_path, parse_yaml

_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_override_path(text: str) -> PathT:
    """`model.layers[0].Dense.units` -> ("model", "layers", 0, "Dense", "units")."""
    parts: list[Any] = []
    pos = 0
    for m in _PATH_PART.finditer(text):
        gap = text[pos:m.start()]
        if gap not in ("", ".") or (gap == "" and pos and m.group(1)):
            raise ConfigError(f"cannot parse override path {text!r}", where="--set")
        parts.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    if not parts or pos != len(text):
        raise ConfigError(f"cannot parse override path {text!r}", where="--set")
    return tuple(parts)


def apply_override(raw: dict, assignment: str, origins: Origins) -> None:
    """Apply one `--set a.b=value` (value in YAML syntax) to the raw config."""
    if "=" not in assignment:
        raise ConfigError(f"expected KEY=VALUE, got {assignment!r}", where="--set")
    key, text = assignment.split("=", 1)
    path = parse_override_path(key.strip())
    label = f"--set {assignment}"
    value = parse_yaml(text, label, Origins()) if text.strip() else None
    node: Any = raw
    for i, part in enumerate(path[:-1]):
        nxt = path[i + 1]
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                raise ConfigError(f"{format_path(path[:i + 1])}: no such list item", where=label)
        elif not isinstance(node, dict):
            raise ConfigError(f"{format_path(path[:i])} is not a mapping", where=label)
        elif part not in node or node[part] is None:
            if part not in node:   # a key the --set makes: a problem with it is the --set's
                origins.set_subtree(path[:i + 1], label)
            node[part] = [] if isinstance(nxt, int) else {}
        node = node[part]
    last = path[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise ConfigError(f"{format_path(path)}: no such list item", where=label)
    elif not isinstance(node, dict):
        raise ConfigError(f"{format_path(path[:-1])} is not a mapping", where=label)
    node[last] = value
    origins.set_subtree(path, label)
