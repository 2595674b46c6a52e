"""Property-based tests: whatever the config, `nnrun check` never prints a traceback.

Valid example configs (configs/*.yaml) are mutated — keys deleted at any depth, values
replaced by random ones of any type (unicode strings, huge and negative integers, nan
and inf, booleans, null, lists, mappings), keys inserted, layers of any type with
arguments of plausible values put anywhere — and random YAML text and bytes are fed in
as well. The check must either pass (exit 0) or report problems (exit 2, each with a
message); exit 1 ("unexpected ...") is a bug in nnrun.
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nnrun.cli.main import main
from nnrun.config.layer_schemas import LAYERS

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {p.name: yaml.safe_load(p.read_text(encoding="utf-8"))
            for p in sorted((ROOT / "configs").glob("*.yaml"))}

# Words nnrun gives meaning to, so that random values often reach deep checks.
WORDS = ["Dense", "Conv2D", "LSTM", "Sequential", "Model", "Reuse", "Merge", "Concatenate",
         "Bidirectional", "TimeDistributed", "Embedding", "Flatten", "Reshape", "Dropout",
         "relu", "softmax", "adam", "sgd", "mse", "accuracy", "glorot_uniform", "l2",
         "max_norm", "xor", "blobs", "pairs", "name", "units", "inputs", "outputs", "layers",
         "layer", "mode", "sum", "x", "y", "builtin", "path", "input_shape", "input_dim",
         "shape", "dtype", "int32", "channels_first", "same", "valid", "out", "trunk",
         "left", "right", "cls", "recon", "encoder", "learning_rate", "train.csv", ""]
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(-3, 40), st.integers(-(2 ** 70), 2 ** 70),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT, st.sampled_from(WORDS),
)
KEYS = st.one_of(st.sampled_from(WORDS), TEXT, st.integers(-2, 5), st.booleans())
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=6,
)
MUTATIONS = st.sampled_from(["delete", "replace", "insert"])
# Values a layer argument plausibly takes, to get past the type checks to the builder.
PLAUSIBLE = st.one_of(
    st.integers(-2, 9), st.sampled_from([0.0, 0.5, 1.0, 1.5, -0.5]), st.booleans(), st.none(),
    st.lists(st.one_of(st.integers(-2, 6), st.none()), min_size=1, max_size=4),
    st.lists(st.lists(st.integers(0, 3), min_size=2, max_size=2), min_size=1, max_size=3),
    st.sampled_from(WORDS),
)
NAMED = {"activation": ["relu", "tanh", "softmax", "sigmoid"],
         "initializer": ["zeros", "glorot_uniform", "orthogonal", "he_normal"],
         "regularizer": ["l2", "l1"], "constraint": ["max_norm", "non_neg"]}
BY_CHECKER = {
    "positive_int": st.integers(1, 6), "non_negative_int": st.integers(0, 4),
    "integer": st.integers(-3, 3), "axes": st.integers(-3, 3),
    "number": st.sampled_from([0.0, 0.1, 1.0, 2.0]), "rate": st.sampled_from([0.0, 0.3]),
    "boolean": st.booleans(), "check_sizes": st.integers(1, 3),
    "check_pairs": st.integers(0, 2), "int_list": st.lists(st.integers(-1, 4), min_size=1,
                                                             max_size=3),
    "dot_axes": st.integers(-2, 2), "noise_shape": st.just([None, 1]),
    "channels_last": st.just("channels_last"),
}


def _arg_value(draw, arg) -> Any:
    """A value for a layer argument: usually one of the type it takes (to reach the shape
    check), sometimes anything plausible."""
    check = getattr(arg.check, "inner", arg.check)
    if draw(st.integers(0, 4)) == 0:
        return draw(PLAUSIBLE)
    if getattr(check, "choices", None):
        return draw(st.sampled_from(list(check.choices)))
    if check.__name__ == "check_named":   # an initializer, regularizer, constraint...
        return draw(st.sampled_from(NAMED.get(check.kind, NAMED["activation"])))
    if check.__name__ == "identifier":
        kind = next((k for k in NAMED if arg.name.endswith(k)), "activation")
        return draw(st.sampled_from(NAMED[kind]))
    return draw(BY_CHECKER.get(check.__name__, PLAUSIBLE))


@st.composite
def random_layer(draw, depth: int = 0) -> dict:
    """`{Type: {arg: value, ...}}` of a random layer type: its required arguments and a
    few others, mostly of the types they take."""
    type_ = draw(st.sampled_from(sorted(t for t in LAYERS if depth == 0 or t != "Sequential")))
    schema = LAYERS[type_]
    chosen = draw(st.lists(st.sampled_from(schema.names()), max_size=3, unique=True)) \
        if schema.names() else []
    args: dict[str, Any] = {}
    for arg in schema.args:
        if not (arg.required or arg.name in chosen):
            continue
        if arg.name == "layer" and type_ != "Reuse":
            args["layer"] = {draw(st.sampled_from(["LSTM", "GRU", "Dense"])):
                             {"units": draw(st.integers(1, 4))}}
        elif arg.name == "layers":
            args["layers"] = [draw(random_layer(depth + 1))]
        elif arg.name == "graph":
            args["graph"] = {"inputs": {"a": draw(st.sampled_from([[4], [3, 2]]))},
                             "layers": [draw(random_layer(depth + 1))]}
        elif arg.name == "layer":   # Reuse: an earlier layer's name, or not
            args["layer"] = draw(st.sampled_from(["dense", "l", "trunk", "encoder", "nope"]))
        else:
            args[arg.name] = _arg_value(draw, arg)
    return {type_: args}


# Sized for a slow 2-core machine: about 200 examples in all, well under a minute.
# NNRUN_FUZZ_SCALE=10 runs ten times as many (a longer local hunt).
SCALE = int(os.environ.get("NNRUN_FUZZ_SCALE", "1"))
FUZZ = settings(max_examples=60 * SCALE, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
RANDOM_TEXT = settings(FUZZ, max_examples=30 * SCALE)


def _paths(value: Any, path: tuple = ()) -> list[tuple]:
    """Every (container path, key) of a nested config, the root's keys included."""
    items = value.items() if isinstance(value, dict) else (
        enumerate(value) if isinstance(value, list) else ())
    out = []
    for key, child in items:
        out.append(path + (key,))
        out += _paths(child, path + (key,))
    return out


def _at(config: Any, path: tuple) -> Any:
    for key in path:
        config = config[key]
    return config


def mutate(config: dict, draw) -> dict:
    """One random mutation: delete a key or item, replace a value, or insert a key."""
    config = copy.deepcopy(config)
    paths = _paths(config)
    kind = draw(MUTATIONS)
    path = draw(st.sampled_from(paths))
    parent, key = _at(config, path[:-1]), path[-1]
    if kind == "delete":
        del parent[key]
    elif kind == "replace":
        parent[key] = draw(VALUES)
    else:
        target = _at(config, path)
        if isinstance(target, dict):
            target[draw(KEYS)] = draw(VALUES)
        elif isinstance(target, list):
            target.insert(draw(st.integers(0, len(target))), draw(VALUES))
        else:
            parent[key] = {draw(KEYS): draw(VALUES)}
    return config


def run_check(path: Path, as_json: bool) -> None:
    """`nnrun check` exits 0, or 2 with located messages; never a traceback."""
    args = ["check", str(path)] + (["--json"] if as_json else [])
    result = CliRunner().invoke(main, args)
    output = result.output
    assert "Traceback" not in output, output
    assert "error: unexpected" not in output, output
    assert result.exit_code in (0, 2), (result.exit_code, output, result.exception)
    if as_json:
        (report,) = json.loads(output)
        assert report["ok"] == (result.exit_code == 0)
        if not report["ok"]:
            assert report["problems"]
            assert all(p["message"].strip() for p in report["problems"]), report
    elif result.exit_code == 2:
        assert "problem(s)" in output and len(output.strip().splitlines()) >= 2


def _dump(config: Any) -> str:
    return yaml.safe_dump(config, allow_unicode=True, sort_keys=False)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder holding copies of the example configs, which configs that `extends:` one
    of them find there; beside it a copy of data/ (configs/fruit.yaml's table)."""
    folder = tmp_path_factory.mktemp("fuzz") / "configs"
    folder.mkdir()
    for path in (ROOT / "data").glob("*.csv"):
        (folder.parent / "data").mkdir(exist_ok=True)
        (folder.parent / "data" / path.name).write_bytes(path.read_bytes())
    for path in (ROOT / "configs").glob("*.yaml"):
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


def test_example_configs_pass_the_check(workdir):
    for name, config in EXAMPLES.items():   # the unmutated configs, dumped the same way
        path = workdir / f"dumped_{name}"
        path.write_text(_dump(config), encoding="utf-8")
        result = CliRunner().invoke(main, ["check", "--json", str(path)])
        assert result.exit_code == 0, result.output


@FUZZ
@given(name=st.sampled_from(sorted(EXAMPLES)), steps=st.integers(1, 3), as_json=st.booleans(),
       data=st.data())
def test_mutated_configs_never_crash(workdir, name, steps, as_json, data):
    config = EXAMPLES[name]
    for _ in range(steps):
        if not isinstance(config, dict) or not config:
            break
        config = mutate(config, data.draw)
    path = workdir / "mutated.yaml"
    path.write_text(_dump(config), encoding="utf-8")
    run_check(path, as_json)


@FUZZ
@given(name=st.sampled_from(["cnn.yaml", "gru.yaml", "mlp.yaml", "two_inputs.yaml",
                             "autoencoder.yaml", "embedding_lstm.yaml"]),
       layers=st.lists(st.tuples(st.integers(0, 9), random_layer()), min_size=1, max_size=2))
def test_random_layers_in_a_valid_config_never_crash(workdir, name, layers):
    """Layers of any type with arguments of plausible values, put anywhere in a model:
    the shape check either builds the model or says which layer does not fit."""
    config = copy.deepcopy(EXAMPLES[name])
    stack = config["model"]["layers"]
    for position, layer in layers:
        stack.insert(min(position, len(stack)), layer)
    path = workdir / "layers.yaml"
    path.write_text(_dump(config), encoding="utf-8")
    run_check(path, as_json=True)


@RANDOM_TEXT
@given(document=st.one_of(
    VALUES.map(_dump),
    TEXT,
    st.text(st.sampled_from("{}[]:-,#&*!|>'\"%@`\t\n ?abc01."), max_size=40),
))
def test_random_yaml_text_never_crashes(workdir, document):
    path = workdir / "random.yaml"
    path.write_text(document, encoding="utf-8")
    run_check(path, as_json=True)


@RANDOM_TEXT
@given(blob=st.binary(max_size=64))
def test_random_bytes_never_crash(workdir, blob):
    path = workdir / "bytes.yaml"
    path.write_bytes(blob)
    run_check(path, as_json=True)


def test_special_numbers_are_reported_not_crashed(workdir):
    """nan, inf and numbers too large for any array, where integers belong."""
    config = EXAMPLES["cnn.yaml"]
    for value in (math.nan, math.inf, -math.inf, 2 ** 80, -(2 ** 80), 10 ** 30):
        for path in (("fit", "batch_size"), ("model", "input_shape"), ("seed",),
                     ("model", "layers", 0, "Conv2D", "filters"),
                     ("compile", "optimizer", "learning_rate")):
            mutated = yaml.safe_load(_dump(config))
            _at(mutated, path[:-1])[path[-1]] = value
            (workdir / "special.yaml").write_text(_dump(mutated), encoding="utf-8")
            run_check(workdir / "special.yaml", as_json=True)
