"""Configs that are hostile, huge or only fail once training runs (issue 17, "every exit
is clean"): each is refused by `nnrun check` with exit 2 and a located problem, never a
traceback, a hang or an exit after the first epoch.

- YAML: an alias bomb, nesting hundreds of levels deep (directly or through aliases),
  an alias inside its own anchor, tags on mappings and lists (nnrun/config/yamlsrc.py);
- cost: checking a config is linear in its layers (nnrun/nn/model.py `_topological`,
  nnrun/config/model_spec.py), asserted by counting operations, not by a clock;
- what training refused late: a callback monitor that is not logged, a ModelCheckpoint
  filepath outside the run's checkpoints/ folder or naming a value not logged, a run
  name too long (or unusable) for a directory name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from nnrun.api import prepare
from nnrun.cli.main import main
from nnrun.config.spec import spec_from_dict
from nnrun.nn.model import Model
from nnrun.train.callbacks import logged_keys

BASE = """\
name: {name}
data:
  train: {{builtin: xor, samples: 100}}
{validation}model:
  input_shape: [2]
  layers:
    - Dense: {{units: 4, activation: relu}}
    - Dense: 1
compile:
  optimizer: sgd
  loss: mse
  metrics: [accuracy]
fit:
  batch_size: 10
  epochs: 1
{fit}"""


def config(name: str = "hostile", validation: bool = True, fit: str = "") -> str:
    return BASE.format(name=name, fit=fit,
                       validation="  validation_split: 0.2\n" if validation else "")


def check(tmp_path: Path, text: str, file: str = "c.yaml") -> tuple[int, list[dict], str]:
    """`nnrun check --json` of a config: (exit code, its problems, the output)."""
    path = tmp_path / file
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(main, ["check", "--json", str(path)])
    assert "Traceback" not in result.output
    reports = json.loads(result.output) if result.exit_code in (0, 2) else []
    return result.exit_code, [p for r in reports for p in r.get("problems", [])], \
        result.output


def at(text: str, needle: str) -> str:
    """`line:col` of the first `needle` in a config's text."""
    for n, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return f"{n}:{line.index(needle) + 1}"
    raise AssertionError(needle)


def one_problem(tmp_path: Path, text: str, file: str = "c.yaml") -> dict:
    code, problems, output = check(tmp_path, text, file)
    assert code == 2, output
    assert len(problems) == 1, problems
    return problems[0]


def bomb(levels: int) -> str:
    """The "billion laughs": each level a list of nine aliases of the level before."""
    names = "abcdefghijklmnop"[:levels]
    lines = [f"{names[0]}: &{names[0]} [x, x, x, x, x, x, x, x, x]"]
    lines += [f"{c}: &{c} [" + ", ".join([f"*{p}"] * 9) + "]" for p, c in zip(names, names[1:])]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- item 5: hostile YAML

def test_an_alias_bomb_is_refused_at_the_alias_that_makes_it_too_large(tmp_path):
    # 9 ** 6 = 531,441 values once expanded (968 bytes of YAML at 6 levels of 9)
    problem = one_problem(tmp_path, bomb(6))
    assert problem["where"] == f"{tmp_path / 'c.yaml'}:6:4"
    assert problem["message"].startswith("config too large: more than 500,000 values")


def test_a_billion_laughs_exits_2_at_once_with_one_error_line(tmp_path):
    """9 levels (387 million values) through the real command: refused before anything
    is built; the limit on memory (4 GB) turns a regression into a failure, not a swap
    storm."""
    (tmp_path / "bomb.yaml").write_text(bomb(9))

    def limit_memory():
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    out = subprocess.run([sys.executable, "-m", "nnrun.cli", "train", "bomb.yaml"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         preexec_fn=limit_memory, env={**os.environ, "NO_COLOR": "1"})
    lines = (out.stdout + out.stderr).strip().splitlines()
    assert out.returncode == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error: bomb.yaml:6:4: config too large")


@pytest.mark.parametrize("text, where", [
    ("model: " + "[" * 600 + "]" * 600 + "\n", "1:107"),
    ("model: " + "{a: " * 600 + "1" + "}" * 600 + "\n", "1:401"),
    ("model:\n" + "".join("  " * i + "-\n" for i in range(1, 300)) + "  " * 300 + "- 1\n",
     "101:201"),
], ids=["lists", "mappings", "block-lists"])
def test_deep_nesting_is_a_located_config_error(tmp_path, text, where):
    problem = one_problem(tmp_path, text)
    assert problem["where"] == f"{tmp_path / 'c.yaml'}:{where}"
    assert problem["message"] == "nested more than 100 levels deep"


def test_nesting_through_a_chain_of_aliases_is_refused_too(tmp_path):
    text = "l0: &l0 [x]\n" + "".join(f"l{i}: &l{i} [*l{i - 1}]\n" for i in range(1, 300))
    problem = one_problem(tmp_path, text)
    assert problem["message"].startswith("nested more than 100 levels deep")
    assert problem["where"].startswith(f"{tmp_path / 'c.yaml'}:")


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path):
    problem = one_problem(tmp_path, "a: &a [1, *a]\n")
    assert problem["where"] == f"{tmp_path / 'c.yaml'}:1:4"
    assert "refers to the mapping or list that contains it" in problem["message"]


@pytest.mark.parametrize("text, where, tag", [
    ("data: !!python/object/apply:os.system {args: [ls]}\n", "1:7",
     "!!python/object/apply:os.system"),
    ("data: !!set {a, b}\n", "1:7", "!!set"),
    ("model:\n  layers: !foo [1]\n", "2:11", "!foo"),
    ("fit: !!omap [{epochs: 1}]\n", "1:6", "!!omap"),
], ids=["python-object", "set", "local-tag", "omap"])
def test_tags_on_mappings_and_lists_are_refused_as_on_values(tmp_path, text, where, tag):
    problem = one_problem(tmp_path, text)
    assert problem["where"] == f"{tmp_path / 'c.yaml'}:{where}"
    assert problem["message"].startswith(f"invalid YAML: the tag {tag!r} cannot be used")
    # the standard tags of a mapping and a list are what they would be anyway
    plain = config(fit="  callbacks: !!seq [{EarlyStopping: {patience: 2}}]\n")
    assert check(tmp_path, plain.replace("compile:\n", "compile: !!map\n"), "ok.yaml")[0] == 0


# ---------------------------------------------------------------- item 6: linear cost

class _Counted(list):
    """A list that counts how often its items are read."""

    reads = 0

    def __getitem__(self, i):
        _Counted.reads += 1
        return super().__getitem__(i)

    def __iter__(self):
        for item in super().__iter__():
            _Counted.reads += 1
            yield item


@pytest.mark.parametrize("graph", [False, True], ids=["stack", "graph-last-first"])
def test_the_layer_order_reads_each_layers_inputs_a_bounded_number_of_times(graph):
    n = 3000
    names = [f"d{i}" for i in range(n)]
    wiring = [("x",)] + [(names[i - 1],) for i in range(1, n)]
    if graph:   # a chain given last layer first
        names, wiring = names[::-1], wiring[::-1]
    model = SimpleNamespace(input_names=["x"], wiring=_Counted(wiring),
                            layers=[SimpleNamespace(name=x) for x in names],
                            _where=lambda path: None)
    _Counted.reads = 0
    order = Model._topological(model)
    assert [names[i] for i in order] == [f"d{i}" for i in range(n)]
    assert _Counted.reads <= 2 * n


class _Name(str):
    """A layer name that counts its comparisons: a scan of a list of names compares
    with every name, a set or a dict compares with one."""

    compared = 0

    def __eq__(self, other):
        _Name.compared += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def _graph_chain(n: int, reverse: bool) -> dict:
    layers = [{"Dense": {"units": 2, "name": _Name(f"d{i}"),
                         "inputs": [_Name("x" if i == 0 else f"d{i - 1}")]}} for i in range(n)]
    return {"model": {"inputs": {"x": [2]}, "layers": layers[::-1] if reverse else layers,
                      "outputs": [_Name(f"d{n - 1}")]},
            "compile": {"optimizer": "sgd", "loss": "mse"}}


@pytest.mark.parametrize("reverse", [False, True], ids=["in-order", "last-first"])
def test_checking_a_graph_compares_each_name_a_bounded_number_of_times(reverse):
    """Validation (duplicate names, references, cycles), the builder and the model's
    order compare names through sets and dicts: not one scan of all names per layer.
    A chain given last layer first is as cheap (and no recursion one level per layer)."""
    n = 3000
    raw = _graph_chain(n, reverse)
    _Name.compared = 0
    spec = spec_from_dict(raw)
    model = prepare.checked_model(spec)
    assert len(model.layers) == n and model.count_params()
    assert _Name.compared <= 20 * n, _Name.compared


def test_a_20000_layer_graph_checks(tmp_path):
    """A chain of 20,000 layers given last layer first, through YAML: far below the YAML
    limits, no recursion one level per layer (before: a RecursionError, exit 1), and
    linear all the way (a Sequential stack of 20,000: more than 100 s before, 4 s now)."""
    n = 20000

    def layer(i: int) -> str:
        return f"    - Dense: {{units: 4, name: d{i}, inputs: {f'd{i - 1}' if i else 'x'}}}\n"

    layers = "".join(layer(i) for i in reversed(range(n)))
    path = tmp_path / "big.yaml"
    path.write_text(f"model:\n  inputs: {{x: [2]}}\n  outputs: [d{n - 1}]\n  layers:\n{layers}"
                    "compile: {optimizer: sgd, loss: mse}\n")
    assert prepare.check(path)["detail"].startswith("20000 layers")


# ---------------------------------------------------------------- item 9: check = train

@pytest.mark.parametrize("validation, monitor, where_text", [
    (False, "val_loss", "val_* needs validation data"),
    (True, "val_auc", "logged: loss, accuracy, val_loss, val_accuracy"),
    (False, "accuracy_typo", "logged: loss, accuracy"),
], ids=["no-validation", "not-a-metric", "typo"])
def test_a_monitor_that_is_not_logged_is_refused_by_check(tmp_path, validation, monitor,
                                                          where_text):
    text = config(validation=validation,
                  fit=f"  callbacks: [{{EarlyStopping: {{monitor: {monitor}}}}}]\n")
    problem = one_problem(tmp_path, text)
    assert problem["where"] == f"{tmp_path / 'c.yaml'}:{at(text, monitor + '}')}: " \
                               "fit.callbacks[0].EarlyStopping.monitor"
    assert f"monitors {monitor!r}, which is not logged" in problem["message"]
    assert where_text in problem["message"]
    assert ("needs validation data" in problem["message"]) == \
        (monitor.startswith("val_") and not validation)


def test_a_checkpoint_without_validation_monitors_val_loss_by_default(tmp_path):
    text = config(validation=False, fit="  callbacks: [{ModelCheckpoint: {filepath: a.h5}}]\n")
    problem = one_problem(tmp_path, text)
    assert problem["where"] == f"{tmp_path / 'c.yaml'}:{at(text, '{filepath')}: " \
                               "fit.callbacks[0].ModelCheckpoint.monitor"
    assert "'val_loss', which is not logged" in problem["message"]


def test_logged_keys_of_several_outputs_are_trainings():
    spec = spec_from_dict({
        "data": {"train": {"builtin": "xor"}, "validation_split": 0.2},
        "model": {"inputs": {"x": [2]}, "outputs": ["a", "b"], "layers": [
            {"Dense": {"name": "a", "units": 1, "inputs": "x"}},
            {"Dense": {"name": "b", "units": 1, "inputs": "x"}}]},
        "compile": {"optimizer": "sgd", "loss": {"a": "mse", "b": "mae"},
                    "metrics": {"b": ["mae", {"name": "mse"}]}}})
    keys = ["loss", "a_loss", "b_loss", "b_mae", "b_mse"]
    assert logged_keys(spec) == keys + [f"val_{k}" for k in keys]


@pytest.mark.parametrize("filepath, message", [
    ("/tmp/escape.h5", "expected a file name inside the run's checkpoints/ folder"),
    ("../escape.h5", "expected a file name inside the run's checkpoints/ folder"),
    ("a/../../escape.h5", "expected a file name inside the run's checkpoints/ folder"),
    ("./", "expected a file name inside the run's checkpoints/ folder"),
    ("w-{epoch.real}.h5", "got {epoch.real}"),
    ("w-{}.h5", "got {}"),
    ("w-{val_acc:.2f}.h5", "names {val_acc}, which is not logged"),
    ("w-{epoch:s}.h5", "cannot be formatted"),
])
def test_a_checkpoint_filepath_that_would_fail_in_training_is_refused(tmp_path, filepath,
                                                                       message):
    text = config(fit=f"  callbacks: [{{ModelCheckpoint: {{filepath: '{filepath}'}}}}]\n")
    problem = one_problem(tmp_path, text)
    assert problem["where"] == f"{tmp_path / 'c.yaml'}:{at(text, repr(filepath))}: " \
                               "fit.callbacks[0].ModelCheckpoint.filepath"
    assert message in problem["message"]
    good = config(fit="  callbacks: [{ModelCheckpoint: "
                      "{filepath: 'keep/w-{epoch:02d}-{val_accuracy:.3f}.h5'}}]\n")
    assert check(tmp_path, good, "good.yaml")[0] == 0


@pytest.mark.parametrize("name, message", [
    ("é" * 101, "at most 200 bytes (it names the run directory, with a date after it), "
                "got 202 bytes"),
    ("a" * 300, "got 300 bytes"),
    ('"a\\ud800b"', "a name a file system can take"),
], ids=["202-bytes", "300-bytes", "lone-surrogate"])
def test_a_run_name_that_cannot_name_a_directory_is_refused(tmp_path, name, message):
    problem = one_problem(tmp_path, config(name=name))
    assert problem["where"] == f"{tmp_path / 'c.yaml'}:1:7: name"
    assert message in problem["message"]
    longest = "é" * 100   # 200 bytes; with -YYYYmmdd-HHMMSS-999 (or -sweep-...) under 255
    assert check(tmp_path, config(name=longest), "ok.yaml")[0] == 0
    (tmp_path / f"{longest}-sweep-20250101-000000-999").mkdir()


def test_a_config_file_name_too_long_for_its_runs_needs_a_name(tmp_path):
    text = config().replace("name: hostile\n", "")
    problem = one_problem(tmp_path, text, file="x" * 210 + ".yaml")
    assert "the config's file name cannot name its runs" in problem["message"]
    assert "give `name:`" in problem["message"]
