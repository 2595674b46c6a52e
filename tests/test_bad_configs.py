"""The broken-config corpus (tests/configs/bad/): each file is run through `nnrun check
--json` and must fail with exit 2, no traceback, and every problem its header expects.

Header lines of a corpus file (comments at its top):

    # kind: unknown-activation          what kind of mistake it shows (one or more lines)
    # problems: 2                       how many problems nnrun reports, exactly
    # expect: 9:37 model.layers[1].Dense.activation: unknown activation 'sigmod'

An `expect` line is LINE:COL, the dotted config path (`-` for none, as for YAML syntax
errors, which have only a position), then a substring of the message of the problem
reported at exactly `<file>:LINE:COL: <path>`. A file may expect several problems:
`nnrun check` reports them all at once.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from nnrun.cli.main import main

BAD = Path(__file__).resolve().parent / "configs" / "bad"
CORPUS = sorted(BAD.glob("*.yaml"))

# Every kind of mistake the corpus must show at least once.
KINDS = {
    "unknown-key", "unread-section", "unknown-layer", "unknown-activation", "unknown-loss",
    "unknown-optimizer", "unknown-metric", "unknown-initializer", "unknown-regularizer",
    "unknown-constraint", "unknown-dataset", "unknown-merge-mode", "wrong-type",
    "out-of-range", "missing-required", "invalid-yaml", "alias-twice", "data-source",
    "graph", "shape", "compile-outputs", "version", "channels-first", "nested",
    "several-problems", "extends", "interpolation", "unknown-callback", "callback-argument",
}

_EXPECT = re.compile(r"# expect: (?P<line>\d+):(?P<col>\d+) (?P<path>\S+): (?P<text>.+)$")


@dataclass(frozen=True)
class Expected:
    line: int
    col: int
    path: str | None   # None: a position only (a YAML syntax error)
    text: str

    def where(self, file: Path) -> str:
        at = f"{file}:{self.line}:{self.col}"
        return at if self.path is None else f"{at}: {self.path}"


@dataclass(frozen=True)
class Header:
    kinds: tuple[str, ...]
    count: int | None
    expected: tuple[Expected, ...]


def read_header(path: Path) -> Header:
    kinds, count, expected = [], None, []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        if line.startswith("# kind: "):
            kinds.append(line.removeprefix("# kind: ").strip())
        elif line.startswith("# problems: "):
            count = int(line.removeprefix("# problems: "))
        elif line.startswith("# expect:"):
            m = _EXPECT.match(line)
            assert m, f"{path.name}: malformed expect line {line!r}"
            expected.append(Expected(int(m["line"]), int(m["col"]),
                                     None if m["path"] == "-" else m["path"], m["text"]))
    return Header(tuple(kinds), count, tuple(expected))


def check_json(path: Path) -> tuple[int, str, list[dict]]:
    result = CliRunner().invoke(main, ["check", "--json", str(path)])
    reports = json.loads(result.output) if result.exit_code in (0, 2) else []
    problems = [p for r in reports for p in r.get("problems", [])]
    return result.exit_code, result.output, problems


@pytest.fixture(autouse=True)
def _unset_corpus_env(monkeypatch):
    """interp_env_unset.yaml refers to a variable that must not be set."""
    monkeypatch.delenv("NNRUN_CORPUS_UNSET", raising=False)


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_bad_config_reports_the_expected_problems(path):
    header = read_header(path)
    assert header.expected, f"{path.name} declares no expected problem"
    code, output, problems = check_json(path)
    assert "Traceback" not in output
    assert code == 2, output
    shown = "\n".join(f"{p['where']}: {p['message']}" for p in problems)
    for exp in header.expected:
        at = [p["message"] for p in problems if p["where"] == exp.where(path)]
        assert at, f"nothing reported at {exp.where(path)}; got:\n{shown}"
        assert any(exp.text in m for m in at), f"{exp.text!r} not in {at}"
        if "did you mean" in exp.text:   # an unknown name lists the allowed ones
            assert any(exp.text in m and "; allowed: " in m for m in at), at
    if header.count is not None:
        assert len(problems) == header.count, shown


def test_the_corpus_is_large_and_covers_every_kind_of_mistake():
    assert len(CORPUS) >= 40
    headers = {p.name: read_header(p) for p in CORPUS}
    for name, header in headers.items():
        assert header.kinds, f"{name} declares no kind"
        assert set(header.kinds) <= KINDS | {"unknown-name"}, (name, header.kinds)
        first = (BAD / name).read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# ") and not first.startswith(
            ("# kind:", "# problems:", "# expect:")), f"{name}: first say what is wrong"
    covered = {k for h in headers.values() for k in h.kinds}
    assert KINDS <= covered, f"no corpus file for {sorted(KINDS - covered)}"
    several = [n for n, h in headers.items() if len(h.expected) >= 2]
    assert len(several) >= 5, several


def test_check_prints_one_located_line_per_problem_when_not_on_a_terminal():
    path = BAD / "many_mistakes.yaml"
    header = read_header(path)
    result = CliRunner().invoke(main, ["check", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.output.splitlines()
    assert lines[0] == f"{path}: {len(header.expected)} problem(s)"
    located = [line for line in lines[1:] if line.startswith(f"{path}:")]
    assert len(located) == len(header.expected) == len(lines) - 1   # no snippets, no extras
    for exp in header.expected:
        assert any(line.startswith(f"{exp.where(path)}: ") and exp.text in line
                   for line in located), exp
    assert all(re.match(rf"{re.escape(str(path))}:\d+:\d+: \S+: .+", line) for line in located)
