"""YAML text to plain Python values, remembering where each value came from.

Only PyYAML's SafeLoader is used (no `yaml.load`): the composed node tree is
walked once to build plain dicts/lists/scalars and a map from each value's
path (a tuple of keys and indices) to its `file:line:col`.

Hostile YAML is refused, located, before anything is built (issue 17): a document
nested more than MAX_DEPTH levels deep (PyYAML's composer recurses), one that
expands to more than MAX_VALUES values once its aliases are repeated (a "billion
laughs"), an alias inside its own anchor (a cycle), and a tag on a mapping or a list
(`!!python/object/apply:...`, `!!set`, `!foo [1]`), as tags on values are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nnrun.config.errors import ConfigError

PathT = tuple  # a config path: ("model", "layers", 2, "Dense", "units")


@dataclass(frozen=True)
class LayerName:
    """A part `[hidden]` of an override path: the list item whose layer is named
    `hidden` (nnrun/config/overrides.py resolves it to the item's index)."""

    name: str


# Far above any real config, keys and values counted: a Sequential stack of 20,000
# layers has 60,000, a graph of 20,000 layers 200,000 (175 MB while it is read). A
# config past either limit is refused before it is built.
MAX_VALUES = 500_000
MAX_DEPTH = 100
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"


class SafeLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, reading `1e-3` as a float (YAML 1.2) rather than a string,
    and refusing (ConfigError, located) a document nested more than MAX_DEPTH levels
    deep while it composes it (the composer recurses once per level)."""

    label = "<yaml>"
    _depth = 0

    def compose_node(self, parent, index):
        if self._depth >= MAX_DEPTH:
            mark = self.peek_event().start_mark
            raise ConfigError(f"nested more than {MAX_DEPTH} levels deep",
                              where=f"{self.label}:{mark.line + 1}:{mark.column + 1}")
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)
SafeLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:float"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
SafeLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT,
                                 list("-+0123456789."))


def format_path(path: PathT) -> str:
    """`("model", "layers", 2, "Dense")` -> `model.layers[2].Dense`; a LayerName part
    is written `[name]`."""
    out = ""
    for part in path:
        if isinstance(part, (int, LayerName)):
            out += f"[{part.name if isinstance(part, LayerName) else part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<root>"


class Origins:
    """Where each value of a config came from: `file:line:col`, `--set`, or a default."""

    def __init__(self) -> None:
        self.values: dict[PathT, str] = {}
        self.keys: dict[PathT, str] = {}
        self.containers: set[PathT] = set()  # the paths of mappings and lists

    def value(self, path: PathT) -> str | None:
        """The origin of the value at `path`, or of its nearest ancestor."""
        for n in range(len(path), -1, -1):
            if path[:n] in self.values:
                return self.values[path[:n]]
        return None

    def key(self, path: PathT) -> str | None:
        """The origin of the key that holds `path` (for unknown-key errors)."""
        return self.keys.get(path) or self.value(path)

    def where(self, path: PathT, *, key: bool = False) -> str:
        origin = self.key(path) if key else self.value(path)
        dotted = format_path(path)
        return f"{origin}: {dotted}" if origin else dotted

    def set_subtree(self, path: PathT, origin: str) -> None:
        """Mark `path` and everything under it as coming from `origin` (an override)."""
        self.drop(path)
        self.values[path] = origin
        self.keys[path] = origin

    def drop(self, path: PathT) -> None:
        """Forget `path` and everything under it."""
        for table in (self.values, self.keys):
            for p in [p for p in table if p[: len(path)] == path]:
                del table[p]
        self.containers = {p for p in self.containers if p[: len(path)] != path}

    def absorb(self, other: Origins, path: PathT) -> None:
        """Take `other`'s origins of `path` and everything under it."""
        n = len(path)
        for mine, theirs in ((self.values, other.values), (self.keys, other.keys)):
            mine.update({p: o for p, o in theirs.items() if p[:n] == path})
        self.containers |= {p for p in other.containers if p[:n] == path}

    def copy_entry(self, other: Origins, path: PathT) -> None:
        """Take `other`'s origin of `path` itself (a mapping merged into this one)."""
        for mine, theirs in ((self.values, other.values), (self.keys, other.keys)):
            if path in theirs:
                mine[path] = theirs[path]
        if path in other.containers:
            self.containers.add(path)

    def given(self, path: PathT) -> str | None:
        """Where the value at `path` was written, or None for a value nnrun filled in (a
        default). A value derived from a shorthand (`train: data.csv`) has the
        shorthand's origin."""
        for n in range(len(path), -1, -1):
            if path[:n] in self.values:
                if n == len(path) or path[:n] not in self.containers:
                    return self.values[path[:n]]
                return None
        return None


def _mark(label: str, node: yaml.Node) -> str:
    return f"{label}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _shown_tag(tag: str) -> str:
    return "!!" + tag[len("tag:yaml.org,2002:"):] if tag.startswith("tag:yaml.org,2002:") \
        else tag


def _measure(root: yaml.Node, label: str) -> None:
    """Refuse, located, what `_build` must not walk: a tag on a mapping or a list, an
    alias inside its own anchor, a tree (aliases expanded) of more than MAX_VALUES
    values or more than MAX_DEPTH levels. One pass over the distinct nodes (an alias is
    the node it names), without recursion: a bomb is measured, never expanded."""
    if isinstance(root, yaml.ScalarNode):
        return
    # id(node) -> values / levels under a mapping or list, itself included, aliases
    # repeated (capped); a scalar is 1 and 1, and is not kept.
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    opened: set[int] = set()
    stack: list[tuple[yaml.Node, list | None]] = [(root, None)]
    while stack:
        node, kids = stack.pop()
        key = id(node)
        if kids is not None:   # its mappings and lists are measured
            size[key] = min(1 + sum(size.get(id(k), 1) for k in kids), MAX_VALUES + 1)
            height[key] = min(1 + max((height.get(id(k), 1) for k in kids), default=0),
                              MAX_DEPTH + 1)
            continue
        if key in size:
            continue
        if key in opened:   # reached again from below itself
            raise ConfigError("an alias refers to the mapping or list that contains it "
                              "(a structure that never ends)", where=_mark(label, node))
        opened.add(key)
        tag = _MAP_TAG if isinstance(node, yaml.MappingNode) else _SEQ_TAG
        if node.tag != tag:
            kind = "mapping" if tag == _MAP_TAG else "list"
            raise ConfigError(f"invalid YAML: the tag {_shown_tag(node.tag)!r} cannot be "
                              f"used: a config holds plain mappings, lists and values "
                              f"(remove the tag of this {kind})", where=_mark(label, node))
        kids = _children(node)
        stack.append((node, kids))
        stack.extend((k, None) for k in reversed(kids) if not isinstance(k, yaml.ScalarNode))
    if size[id(root)] > MAX_VALUES:
        node = root   # the smallest mapping or list that alone is too large
        while (big := [k for k in _children(node) if size.get(id(k), 1) > MAX_VALUES]):
            node = big[0]
        raise ConfigError(f"config too large: more than {MAX_VALUES:,} values once its "
                          "aliases are expanded (an alias repeated too many times?)",
                          where=_mark(label, node))
    if height[id(root)] > MAX_DEPTH:
        node, level = root, 1   # down the deepest branch to its level MAX_DEPTH + 1
        while level <= MAX_DEPTH:
            node = max(_children(node), key=lambda k: height.get(id(k), 1))
            level += 1
        raise ConfigError(f"nested more than {MAX_DEPTH} levels deep (through aliases)",
                          where=_mark(label, node))


def _build(node: yaml.Node, path: PathT, label: str, origins: Origins,
           constructor: SafeLoader) -> Any:
    origins.values[path] = _mark(label, node)
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
        origins.containers.add(path)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = constructor.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                raise ConfigError(f"mapping keys must be plain scalars, got {key!r}",
                                  where=f"{_mark(label, key_node)}: {format_path(path)}")
            if key in out:
                first = origins.keys[path + (key,)].rsplit(":", 2)[-2:]
                raise ConfigError(f"duplicate key {key!r} (first given at line {first[0]}, "
                                  f"column {first[1]}): YAML would silently keep the last "
                                  f"one", where=f"{_mark(label, key_node)}: "
                                                f"{format_path(path + (key,))}")
            origins.keys[path + (key,)] = _mark(label, key_node)
            out[key] = _build(value_node, path + (key,), label, origins, constructor)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(v, path + (i,), label, origins, constructor)
                for i, v in enumerate(node.value)]
    return constructor.construct_object(node, deep=True)


def parse_yaml(text: str, label: str, origins: Origins, root: PathT = ()) -> Any:
    """Parse YAML text; record origins under `root`. Syntax errors become ConfigError."""
    loader = None
    try:
        loader = SafeLoader(text)
        loader.label = label
        try:
            node = loader.get_single_node()
            if node is None:  # an empty document
                origins.values[root] = f"{label}:1:1"
                return None
            _measure(node, label)
            return _build(node, root, label, origins, loader)
        finally:
            loader.dispose()
    except RecursionError:   # MAX_DEPTH keeps it away; a last guard for a deep caller
        mark = loader.get_mark() if loader is not None else None
        where = f"{label}:{mark.line + 1}:{mark.column + 1}" if mark else label
        raise ConfigError("nested too deeply to read", where=where) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{label}:{mark.line + 1}:{mark.column + 1}" if mark else label
        raise ConfigError(f"invalid YAML: {_yaml_problem(exc)}", where=where) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", where=label) from None


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    """PyYAML's problem, with what usually causes it and where an open bracket began."""
    problem = str(exc.problem or exc.context)
    hint = ""
    if "'\\t'" in problem or "\t" in problem:
        hint = "tabs cannot indent YAML: use spaces"
    elif problem.startswith("expected <block end>"):
        hint = ("this line is indented differently from the lines above it: the keys of "
                "one mapping (and the items of one list) must start in the same column")
    elif problem.startswith("mapping values are not allowed"):
        hint = ("a `key: value` where a plain value was expected: check the indentation "
                "of this line, or quote a value that contains ': '")
    opened = exc.context_mark
    if exc.context and "flow" in exc.context and opened is not None:
        kind = "{" if "mapping" in exc.context else "["
        hint = (f"the {kind} opened at line {opened.line + 1}, column {opened.column + 1} "
                "is not closed (or a comma is missing)")
    return f"{problem} ({hint})" if hint else problem


def read_yaml_file(path: Path, origins: Origins, root: PathT = ()) -> Any:
    """Read and parse a YAML (or JSON) file, errors naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", where=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", where=str(path)) from None
    return parse_yaml(text, str(path), origins, root)


def snippet(where: str | None) -> list[str]:
    """For a location `file:line:col: path`, the YAML line and a caret under the column
    (what `nnrun check` and the other commands show on a terminal); [] otherwise."""
    m = re.match(r"(?P<file>.+?):(?P<line>\d+):(?P<col>\d+)(?::| |$)", where or "")
    if not m:
        return []
    try:
        lines = Path(m["file"]).read_text(encoding="utf-8").splitlines()
        text = lines[int(m["line"]) - 1]
    except (OSError, IndexError, UnicodeDecodeError):
        return []
    number = m["line"]
    gutter = " " * len(number)
    return [f"  {number} | {text}", f"  {gutter} | {' ' * (int(m['col']) - 1)}^"]


def describe(exc, *, snippets: bool = False) -> str:
    """The error as printed: one line per problem, each followed (with `snippets`) by
    the YAML line it points at."""
    problems = getattr(exc, "problems", None) or [(exc.where, exc.message)]
    out = []
    for where, message in problems:
        out.append(f"{where}: {message}" if where else message)
        if snippets:
            out.extend(snippet(where))
    return "\n".join(out)
