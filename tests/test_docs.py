"""The README and docs/ pages against the code, so they cannot drift:

- every ```yaml block is a config `nnrun check` accepts, unless the line before it marks
  it: `<!-- fragment -->` (a piece that is not checked), `<!-- fragment of
  configs/X.yaml -->` (checked merged over that config, as `extends:` would) or
  `<!-- same as configs/X.yaml -->` (checked, and it must hold that file's values);
- every relative link and #anchor leads somewhere;
- the exit-code tables list the codes nnrun/config/errors.py defines;
- the README's "Your own CSV" commands (the ```bash block after `<!-- test: own-csv -->`)
  run as written, from a copy of configs/fruit.yaml and data/, to predictions.csv;
- data/fruit*.csv are what data/make_fruit.py writes.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from nnrun import api
from nnrun.cli.main import main
from nnrun.config import errors
from nnrun.config.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"<!--\s*(.*?)\s*-->")


@dataclasses.dataclass
class Block:
    page: Path
    line: int       # the opening fence's line, 1-based
    lang: str
    text: str
    marker: str     # the `<!-- ... -->` on the line before the fence, or ""

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def fenced_blocks(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").split("\n")
    found, i = [], 0
    while i < len(lines):
        fence = re.match(r"^```(\S*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = MARKER.fullmatch(lines[i - 1].strip()) if i else None
        found.append(Block(page, i + 1, fence.group(1), "\n".join(lines[i + 1:end]) + "\n",
                           before.group(1) if before else ""))
        i = end + 1
    return found


BLOCKS = [b for page in PAGES for b in fenced_blocks(page)]
YAML_BLOCKS = [b for b in BLOCKS if b.lang == "yaml"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """configs/ and data/ copied; blocks are written to docs/, so that `../configs/...`
    and `../data/...` resolve as from a config in configs/."""
    folder = tmp_path_factory.mktemp("docs")
    shutil.copytree(ROOT / "configs", folder / "configs")
    shutil.copytree(ROOT / "data", folder / "data",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "docs").mkdir()
    return folder


def test_the_pages_have_yaml_blocks_and_every_marker_is_known():
    assert {b.page.name for b in YAML_BLOCKS} >= {"README.md", "configuration.md", "data.md",
                                                  "training.md", "graph-models.md", "scale.md"}
    for block in YAML_BLOCKS:
        assert re.fullmatch(r"|fragment|fragment of configs/\S+\.yaml|same as configs/\S+\.yaml",
                            block.marker), f"{block.where}: unknown marker <!-- {block.marker} -->"


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=[b.where for b in YAML_BLOCKS])
def test_every_yaml_block_is_a_config_nnrun_check_accepts(block, workspace, monkeypatch):
    monkeypatch.setenv("NNRUN_PROCESS_ID", "0")   # docs/scale.md: each host sets it
    if block.marker == "fragment":
        yaml.safe_load(block.text)   # a piece of a config, but YAML all the same
        return
    text = block.text
    if block.marker.startswith("fragment of "):
        text = f"extends: ../{block.marker.removeprefix('fragment of ')}\n{text}"
    if block.marker.startswith("same as "):
        shown = ROOT / block.marker.removeprefix("same as ")
        assert yaml.safe_load(block.text) == yaml.safe_load(shown.read_text()), \
            f"{block.where}: the block no longer shows {shown.relative_to(ROOT)}"
    path = workspace / "docs" / f"{block.page.stem}-{block.line}.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        api.check(path)
    except ConfigError as exc:
        pytest.fail(f"{block.where}: nnrun check fails on this yaml block (if it is a piece "
                    f"of a config, mark it <!-- fragment --> or <!-- fragment of "
                    f"configs/X.yaml --> on the line before):\n"
                    + "\n".join(f"  {where}: {message}" for where, message in exc.problems))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    inside, found = False, set()
    for line in page.read_text(encoding="utf-8").split("\n"):
        inside ^= line.startswith("```")
        if not inside and (m := re.match(r"^#{1,6} (.+)$", line)):
            found.add(slug(m.group(1)))
    return found


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_relative_link_and_anchor_leads_somewhere(page):
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (page.parent / file).resolve() if file else page
        assert linked.exists(), f"{page.name}: link to {target}: no such file"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{page.name}: link to {target}: no such heading"


def exit_codes(page: Path, heading: str) -> set[int]:
    section = page.read_text(encoding="utf-8").split(f"\n{heading}\n", 1)[1]
    section = re.split(r"\n#{1,2} ", section, maxsplit=1)[0]
    return {int(code) for code in re.findall(r"^\| (\d+) \|", section, flags=re.M)}


def test_the_exit_code_tables_list_the_codes_nnrun_uses():
    codes = {v for k, v in vars(errors).items() if k.startswith("EXIT_")}
    assert exit_codes(ROOT / "README.md", "## Exit codes") == codes
    assert exit_codes(ROOT / "docs" / "training.md", "## Exit codes and errors") == codes


def test_the_example_configs_table_lists_every_example_config():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `configs/(\S+\.yaml)` \|", readme, flags=re.M))
    assert listed == {p.name for p in (ROOT / "configs").glob("*.yaml")}


def test_the_own_csv_walk_runs_as_written(tmp_path, monkeypatch):
    """The README's commands, from the CSV to predictions on new rows, in a folder that
    holds copies of what they name."""
    (walk,) = [b for b in BLOCKS if b.marker == "test: own-csv"]
    assert walk.page.name == "README.md" and walk.lang == "bash"
    (tmp_path / "configs").mkdir()
    shutil.copy(ROOT / "configs" / "fruit.yaml", tmp_path / "configs")
    shutil.copytree(ROOT / "data", tmp_path / "data", ignore=shutil.ignore_patterns("*.py"))
    monkeypatch.chdir(tmp_path)
    outputs = []
    for line in walk.text.splitlines():
        argv = shlex.split(line, comments=True)
        if not argv:
            continue
        assert argv[0] == "nnrun", f"{walk.where}: {line}"
        result = CliRunner().invoke(main, argv[1:])
        assert result.exit_code == 0, f"{line}\n{result.output}"
        assert "Traceback" not in result.output
        outputs.append(result.output)
    check, train, evaluate, predict = outputs
    assert check.strip() == "configs/fruit.yaml: ok (2 layers, 131 parameters, output (3,))"
    run = Path(train.strip().splitlines()[-1])
    assert run.name.startswith("fruit-") and (tmp_path / "runs" / "latest").resolve() == \
        (tmp_path / run).resolve()
    assert "confusion matrix" in evaluate
    report = json.loads((run / "eval.json").read_text())
    assert (report["data"], report["samples"]) == ("validation", 48)
    assert report["accuracy"] > 0.85   # the README says 0.92
    new_rows = (tmp_path / "data" / "fruit_new.csv").read_text().splitlines()[1:]
    written = (tmp_path / "predictions.csv").read_text().splitlines()
    (shown,) = [b for b in BLOCKS if b.marker == "predictions.csv"]
    assert written[0] == shown.text.splitlines()[0]   # the header the README shows
    assert len(written) - 1 == len(new_rows) == 6
    assert {row.split(",")[-1] for row in written[1:]} <= {"apple", "lemon", "orange"}
    assert f"wrote {len(new_rows)} predictions" in predict


def test_the_fruit_files_are_what_make_fruit_writes(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("make_fruit", ROOT / "data" / "make_fruit.py")
    make_fruit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_fruit)
    monkeypatch.setattr(make_fruit, "HERE", tmp_path)
    make_fruit.main()
    for name in ("fruit.csv", "fruit_new.csv"):
        assert (tmp_path / name).read_bytes() == (ROOT / "data" / name).read_bytes(), name
