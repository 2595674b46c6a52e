"""Composing a config from several sources: `extends:` and `${...}` interpolation.

- `extends: base.yaml` (or a list of files) deep-merges the named files, each relative
  to the file that names it, under the including file: mappings merge key by key,
  anything else (a scalar, a list) is replaced whole. Bases may extend others.
- `${a.b[0].c}` is another value of the same config, `${vars.x}` a value of the
  top-level `vars:` mapping (read only by interpolation), `${env:NAME}` or
  `${env:NAME,default}` an environment variable; `$${` writes a literal `${`. A
  string that is exactly one `${...}` takes the value's type (an env value is read as
  YAML, like `--set`); inside a longer string it is written as text.

Each value keeps the origin of the file (and line) it came from, so an error in an
included file names that file's line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from nnrun.config.errors import ConfigError
from nnrun.config.registry import did_you_mean
from nnrun.config.yamlsrc import Origins, PathT, format_path, parse_yaml, read_yaml_file

MAX_DEPTH = 16  # nested extends / references before we call it a loop


# ---------------------------------------------------------------- extends

def read_config_file(path: Path, origins: Origins, trail: tuple[Path, ...] = ()) -> dict:
    """Read a config file and the files it extends, merged; origins record every value."""
    trail = (*trail, path.resolve())
    own = Origins()
    raw = read_yaml_file(path, own)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("a config must be a mapping (name:, data:, model:, ...)",
                          where=own.where(()))
    bases = raw.pop("extends", None)
    if bases is None:
        origins.absorb(own, ())
        return raw
    names = bases if isinstance(bases, list) else [bases]
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ConfigError("expected a file name or a list of file names",
                          where=own.where(("extends",)))
    merged: dict = {}
    for i, name in enumerate(names):
        base_path = path.parent / Path(name).expanduser()
        item = own.where(("extends", i) if isinstance(bases, list) else ("extends",))
        if not base_path.is_file():
            raise ConfigError(f"no such file {str(base_path)!r} (relative to "
                              f"{str(path.parent) or '.'})", where=item)
        if base_path.resolve() in trail:
            chain = " -> ".join(str(p) for p in (*trail, base_path.resolve()))
            raise ConfigError(f"the files extend each other: {chain}", where=item)
        base_origins = Origins()
        base = read_config_file(base_path, base_origins, trail)
        merged = deep_merge(merged, origins, base, base_origins, ())
    return deep_merge(merged, origins, raw, own, ())


def deep_merge(base: Any, origins: Origins, over: Any, over_origins: Origins,
               path: PathT) -> Any:
    """`over` merged into `base` (mappings key by key, the rest replaced); `origins`
    (those of `base`) are updated with `over_origins` for what `over` supplies."""
    if not (isinstance(base, dict) and isinstance(over, dict)):
        origins.drop(path)
        origins.absorb(over_origins, path)
        return over
    out = dict(base)
    origins.copy_entry(over_origins, path)
    for key, value in over.items():
        sub = (*path, key)
        if key in out:
            out[key] = deep_merge(out[key], origins, value, over_origins, sub)
        else:
            origins.absorb(over_origins, sub)
            out[key] = value
    return out


# ---------------------------------------------------------------- interpolation

_REF = re.compile(r"\$\$\{|\$\{([^{}]*)\}")
_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def interpolate(raw: dict, origins: Origins, label: str = "") -> dict:
    """Every `${...}` of the config replaced; a `vars:` mapping is read and removed.
    A var that the config file `label` (or a `--set`) defines and nothing refers to is
    an error: it would be a silent no-op. (A base file's vars may serve other configs.)"""
    resolver = _Resolver(raw, origins)
    out = resolver.value(raw, ())
    variables = out.pop("vars", None)
    if variables is not None and not isinstance(variables, dict):
        raise ConfigError("expected a mapping of names to values", where=origins.where(("vars",)))
    for name in variables or {}:
        defined = origins.key(("vars", name)) or ""
        if ("vars", name) not in resolver.used and defined.startswith((f"{label}:", "--set")):
            raise ConfigError(f"vars.{name} is never used; refer to it as ${{vars.{name}}} "
                              "or delete it", where=origins.where(("vars", name), key=True))
    return out


class _Resolver:
    def __init__(self, raw: dict, origins: Origins):
        self.raw, self.origins = raw, origins
        self.used: set[PathT] = set()
        self.active: list[PathT] = []
        self.done: dict[PathT, Any] = {}  # interpolated strings, by path

    def value(self, value: Any, path: PathT) -> Any:
        if isinstance(value, dict):
            return {k: self.value(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v, (*path, i)) for i, v in enumerate(value)]
        if isinstance(value, str) and "${" in value:
            if path not in self.done:
                self.done[path] = self.string(value, path)
            return self.done[path]
        return value

    def string(self, text: str, path: PathT) -> Any:
        matches = list(_REF.finditer(text))
        if len(matches) == 1 and matches[0].group(1) is not None and matches[0].span() == (
                0, len(text)):
            ref = matches[0].group(1).strip()
            value = self.reference(ref, path)
            self._trace(ref, path, value)
            return value
        out, pos = [], 0
        for m in matches:
            out.append(text[pos:m.start()])
            if m.group(1) is None:
                out.append("${")
            else:
                value = self.reference(m.group(1).strip(), path)
                if isinstance(value, (dict, list)):
                    raise ConfigError(f"${{{m.group(1)}}} is a {type(value).__name__}; only a "
                                      "whole value can be one", where=self.origins.where(path))
                out.append(_text(value))
            pos = m.end()
        out.append(text[pos:])
        return "".join(out)

    def _trace(self, ref: str, path: PathT, value: Any) -> None:
        """A value taken whole from elsewhere: its origin is where it was written."""
        here = self.origins.values.get(path)
        if ref.startswith("env:"):
            self.origins.values[path] = f"{here} (${{{ref}}})"
        elif not isinstance(value, (dict, list)):
            source = str(self.origins.value(_parse_ref(ref, here))).split(" (")[0]
            self.origins.values[path] = f"{source} (from ${{{ref}}} at {here})"

    def reference(self, ref: str, path: PathT) -> Any:
        where = self.origins.where(path)
        if ref.startswith("env:"):
            return _env(ref[4:], where)
        target = _parse_ref(ref, where)
        if target in self.active or len(self.active) > MAX_DEPTH:
            chain = " -> ".join(f"${{{format_path(p)}}}" for p in (*self.active, target))
            raise ConfigError(f"the references make a loop: {chain}", where=where)
        node: Any = self.raw
        for i, part in enumerate(target):
            node = self._step(node, part, target[:i], ref, where)
        self.used.add(target[:2] if target[0] == "vars" else target)
        self.active.append(target)
        try:
            return self.value(node, target)
        finally:
            self.active.pop()

    @staticmethod
    def _step(node: Any, part: Any, parent: PathT, ref: str, where: str) -> Any:
        if isinstance(part, int) and isinstance(node, list) and part < len(node):
            return node[part]
        if isinstance(part, str) and isinstance(node, dict) and part in node:
            return node[part]
        keys = [str(k) for k in node] if isinstance(node, dict) else []
        at = format_path(parent) if parent else "the config"
        hint = did_you_mean(str(part), keys)
        listed = f"; allowed: {', '.join(keys)}" if keys else ""
        raise ConfigError(f"${{{ref}}}: {at} has no {part!r}{hint}{listed}", where=where)


def _parse_ref(ref: str, where: str) -> PathT:
    parts, pos = [], 0
    for m in _PART.finditer(ref):
        if ref[pos:m.start()] not in ("", "."):
            break
        parts.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    if not parts or pos != len(ref) or isinstance(parts[0], int):
        raise ConfigError(f"cannot read the reference ${{{ref}}}: expected a dotted path such "
                          "as ${fit.batch_size}, ${vars.width} or ${env:NAME}", where=where)
    return tuple(parts)


def _env(body: str, where: str) -> Any:
    name, _, default = body.partition(",")
    name = name.strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ConfigError(f"${{env:{body}}}: {name!r} is not an environment variable name",
                          where=where)
    text = os.environ.get(name)
    if text is None:
        if not _:
            raise ConfigError(f"environment variable {name} is not set (give a default: "
                              f"${{env:{name},value}})", where=where)
        text = default.strip()
    try:
        return parse_yaml(text, f"${{env:{name}}}", Origins()) if text else ""
    except ConfigError:
        return text


def _text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
