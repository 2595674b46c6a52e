"""The package's layout rules (docs/architecture.md), checked on its import graph.

Every `import` and `from ... import` in nnrun/ is read with `ast` (inside functions
and `if TYPE_CHECKING:` blocks too: a lazy import is still a dependency), and:

- the graph of modules has no cycle;
- a wing imports only the wings below it (`ALLOWED`): config at the bottom, the CLI at
  the top, the model never reads data or run directories;
- config/ and data/ never import jax or optax, and nothing imports cli/;
- a module longer than MAX_LINES says why in its docstring ("Longer than ...");
- the file tree in docs/architecture.md names every module, and only those.

`test_rules_catch_*` feed the checks a broken graph, so they are known to fail when a
rule is broken.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "nnrun"

# wing -> the wings it may import (besides itself and the top-level `nnrun`)
ALLOWED = {
    "config": set(),
    "nn": {"config"},
    "data": {"config"},
    "train": {"config", "nn", "data"},
    "runs": {"config", "nn"},
    "keras": {"config", "nn"},
    "api": {"config", "nn", "data", "train", "runs", "keras"},
    "sweep": {"config", "nn", "data", "train", "runs", "api"},
    "tune": {"config", "nn", "data", "train", "runs", "api", "sweep"},
    "cli": {"config", "nn", "data", "train", "runs", "keras", "api", "sweep", "tune"},
}
MAX_LINES = 450
NO_JAX = {"config", "data"}   # wings that must not import jax or optax, even lazily
JAX_ROOTS = {"jax", "jaxlib", "optax"}
# `from nnrun import __version__` reads the version alone: not an edge to the package,
# whose `__getattr__` imports nnrun.api.model (nnrun.load, nnrun.train) when asked.
VERSION = "nnrun.__version__"


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: pathlib.Path, known: set[str]) -> set[str]:
    """The modules `path` imports: nnrun modules by their full name (a `from pkg import
    mod` names the module), others by their top-level name."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module
            for alias in node.names:
                full = f"{prefix}.{alias.name}"
                out.add(full if full in known or full == VERSION else prefix)
    return {m if m.split(".")[0] == "nnrun" else m.split(".")[0] for m in out}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(p) for p in paths}
    graph = {}
    for path in paths:
        deps = set()
        for dep in imports_of(path, known):
            if dep == VERSION:   # a string set before nnrun/__init__.py imports anything
                continue
            while dep.startswith("nnrun.") and dep not in known:   # a name in a module
                dep = dep.rpartition(".")[0]
            deps.add(dep)
        graph[module_name(path)] = deps - {module_name(path)}
    return graph


def wing(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle among nnrun modules, as a path that returns to its start."""
    state: dict[str, int] = {}   # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(d for d in graph.get(node, ()) if d in graph):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def rule_breaks(graph: dict[str, set[str]]) -> list[str]:
    """Every import that goes against the wings' order, jax in config/, or into cli/."""
    breaks = []
    for module, deps in sorted(graph.items()):
        own = wing(module)
        for dep in sorted(deps):
            if own in NO_JAX and dep in JAX_ROOTS:
                breaks.append(f"{module} imports {dep} ({own}/ must stay jax-free)")
            if not dep.startswith("nnrun.") or own is None:
                continue
            other = wing(dep)
            if other == "cli" and own != "cli":
                breaks.append(f"{module} imports {dep} (nothing imports the CLI)")
            elif own in ALLOWED and other != own and other not in ALLOWED[own]:
                breaks.append(f"{module} imports {dep} ({own}/ may import "
                              f"{', '.join(sorted(ALLOWED[own])) or 'no other wing'})")
    return breaks


def test_every_module_is_in_a_wing():
    graph = import_graph()
    loose = [m for m in graph if m != "nnrun" and wing(m) not in ALLOWED]
    assert not loose, f"modules outside the wings of ALLOWED: {loose}"


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_imports_follow_the_flow():
    breaks = rule_breaks(import_graph())
    assert not breaks, "\n".join(breaks)


def test_long_modules_say_why():
    unexplained = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        doc = ast.get_docstring(ast.parse(text)) or ""
        if text.count("\n") > MAX_LINES and "Longer than" not in doc:
            unexplained.append(f"{path.relative_to(PACKAGE.parent)}: {text.count(chr(10))} lines")
    assert not unexplained, "split these or say why at the top: " + ", ".join(unexplained)


def documented_modules(text: str) -> set[str]:
    """The paths of the `.py` files in the tree under "## Files" (folders by indent)."""
    block = text.split("## Files", 1)[1].split("```", 2)[1]
    folders: list[str] = []
    found = set()
    for line in block.splitlines():
        if not line.strip():
            continue
        depth = (len(line) - len(line.lstrip())) // 2
        words = line.split()
        if words[0].endswith("/"):
            folders = folders[:depth] + [words[0].rstrip("/")]
            continue
        prefix = "/".join(folders[:depth])
        found.update(f"{prefix}/{word}" for word in words if word.endswith(".py"))
    return found


def test_the_architecture_page_names_every_module():
    documented = documented_modules((ROOT / "docs" / "architecture.md").read_text())
    actual = {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")
              if p.name != "__init__.py" or p.parent == PACKAGE}
    assert not actual - documented, f"not in docs/architecture.md: {sorted(actual - documented)}"
    assert not documented - actual, f"no such module: {sorted(documented - actual)}"


def test_rules_catch_a_cycle():
    graph = {"nnrun.config.a": {"nnrun.config.b"}, "nnrun.config.b": {"nnrun.config.a"}}
    assert find_cycle(graph) == ["nnrun.config.a", "nnrun.config.b", "nnrun.config.a"]


@pytest.mark.parametrize("module, dep", [
    ("nnrun.nn.model", "nnrun.data.sources"),        # the model reads data
    ("nnrun.nn.model", "nnrun.runs.rundir"),         # ... or a run directory
    ("nnrun.config.spec", "nnrun.nn.losses"),        # config above nn
    ("nnrun.config.spec", "jax"),                    # jax in config
    ("nnrun.train.fitter", "nnrun.api.training"),    # upward
    ("nnrun.api.training", "nnrun.cli.main"),        # into the CLI
])
def test_rules_catch_an_upward_import(module, dep):
    assert rule_breaks({module: {dep}}), f"{module} -> {dep} was not caught"
