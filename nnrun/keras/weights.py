"""nnrun weights <-> Keras's weight files, both ways: where each array of a model lives.

Keras 3 (`model.weights.h5` inside a `.keras` archive) stores a layer's variables as
`layers/<group>/vars/0..n`: `<group>` is the layer's class name in snake_case, made
unique by a counter in the order of `model.layers` (for a Functional model the order
Keras's `map_graph` gives: by depth, then by traversal), and the variables in their
creation order, trainable first (Dense: kernel, bias; BatchNormalization: gamma, beta,
moving_mean, moving_variance). Sub-layers nest: `lstm/cell/vars`,
`bidirectional/forward_layer/cell/vars`, `time_distributed/layer/vars`,
`sequential/layers/dense/vars`. Keras 2 `.h5` files store each top-level layer's weights
under `model_weights/<layer name>`, listed in order by its `weight_names` attribute.

`keras_plan(model)` gives every `vars` group with the nnrun weights it holds; the
archive module writes and reads the arrays. Pure Python: no jax, no h5py, no keras.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from nnrun.config.errors import ConfigError
from nnrun.keras.layer_args import fresh_name

RECURRENT = ("LSTM", "GRU", "SimpleRNN")
# A layer's variables in the order Keras creates them (trainable ones first).
ORDER = ("depthwise_kernel", "pointwise_kernel", "kernel", "recurrent_kernel", "bias",
         "embeddings", "gamma", "beta", "alpha", "moving_mean", "moving_variance")


@dataclass
class Group:
    """One Keras `vars` group: its path in model.weights.h5, the top-level layer it
    belongs to, and the nnrun weights it holds in Keras's order, each as
    ("params" | "state", path in that tree)."""

    path: str
    layer: str
    weights: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)


def snake_case(name: str) -> str:
    """Keras's `naming.to_snake_case`: PReLU -> p_re_lu, Conv2D -> conv2d."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def keras_plan(model: dict, params: dict, state: dict) -> list[Group]:
    """Every Keras `vars` group of a resolved nnrun `model:` dict, in Keras's order, with
    the weights of `params` / `state` (trees of arrays or shapes, by layer name) in it.
    A weight that Keras would not hold is a ConfigError naming the layer."""
    groups = [Group("vars", "")]
    if "inputs" in model or any("Reuse" in item for item in model["layers"]):
        graph = model if "inputs" in model else _as_graph(model)
        _container(groups, "layers", graph_order(graph), params, state, ())
    else:
        items = [next(iter(item.items())) for item in model["layers"]]
        _container(groups, "layers", items, params, state, ())
    return groups


def _as_graph(model: dict) -> dict:
    """A Sequential stack with a Reuse as the one-input graph Keras builds for it."""
    names = {args["name"] for item in model["layers"] for args in item.values()}
    previous = fresh_name("input_layer", names)
    inputs, items = {previous: model.get("input_shape")}, []
    for item in model["layers"]:
        type_, args = next(iter(item.items()))
        items.append({type_: {**args, "inputs": [previous]}})
        previous = args["name"]
    return {"inputs": inputs, "layers": items, "outputs": [previous]}


def _container(groups: list[Group], prefix: str, items: list[tuple[str, dict]],
               params: dict, state: dict, tree: tuple[str, ...]) -> None:
    used: dict[str, int] = {}
    for type_, args in items:
        if type_ == "Reuse":
            continue
        base = snake_case("Functional" if type_ == "Model" else type_)
        used[base] = used.get(base, -1) + 1
        name = base if used[base] == 0 else f"{base}_{used[base]}"
        _layer(groups, f"{prefix}/{name}", type_, args, params.get(args["name"], {}),
               state.get(args["name"], {}), (*tree, args["name"]))


def _layer(groups: list[Group], path: str, type_: str, args: dict, p: dict, s: dict,
           tree: tuple[str, ...]) -> None:
    name = args["name"]
    own = Group(f"{path}/vars", tree[0])
    groups.append(own)
    if type_ == "InputLayer":
        return
    if type_ in ("Sequential", "Model"):
        items = graph_order(args["graph"]) if type_ == "Model" else \
            [next(iter(item.items())) for item in args["layers"]]
        _container(groups, f"{path}/layers", items, p, s, tree)
        return
    if type_ == "Bidirectional":
        inner_type, inner = next(iter(args["layer"].items()))
        for side in ("forward", "backward"):
            _layer(groups, f"{path}/{side}_layer", inner_type, {**inner, "name": name},
                   p.get(side, {}), s.get(side, {}), (*tree, side))
        return
    if type_ == "TimeDistributed":
        inner_type, inner = next(iter(args["layer"].items()))
        _layer(groups, f"{path}/layer", inner_type, {**inner, "name": name}, p, s, tree)
        return
    if s and type_ in RECURRENT:
        raise ConfigError(f"layer {name!r}: a stateful {type_}'s carried states have no "
                          "place in a Keras weights file (set stateful: false to export)",
                          where=f"model: layer {name!r}")
    target = Group(f"{path}/cell/vars", tree[0]) if type_ in RECURRENT else own
    if target is not own:
        groups.append(target)
    for kind, weights in (("params", p), ("state", s)):
        for key in sorted(weights, key=lambda k: ORDER.index(k) if k in ORDER else -1):
            if key not in ORDER or isinstance(weights[key], dict):
                raise ConfigError(f"layer {name!r} ({type_}): its weight {key!r} has no "
                                  "known place in a Keras weights file",
                                  where=f"model: layer {name!r}")
            target.weights.append((kind, (*tree, key)))


def graph_order(graph: dict) -> list[tuple[str, dict]]:
    """A graph's layers (inputs as InputLayers, Reuse calls as more calls of their layer)
    in the order of Keras's `Functional.layers`: `keras.src.ops.function.map_graph` (a
    depth-first walk from the outputs numbers the layers; deepest first, then by that
    number)."""
    items = [next(iter(item.items())) for item in graph["layers"]]
    calls: dict[str, int] = {}
    ref: dict[str, tuple[str, int]] = {n: (n, 0) for n in graph["inputs"]}
    node_inputs: dict[tuple[str, int], list[str]] = {(n, 0): [] for n in graph["inputs"]}
    layer_of = {n: ("InputLayer", {"name": n}) for n in graph["inputs"]}
    for type_, args in items:
        owner = args["layer"] if type_ == "Reuse" else args["name"]
        if type_ != "Reuse":
            layer_of[owner] = (type_, args)
        node = (owner, calls.get(owner, 0))
        calls[owner] = node[1] + 1
        ref[args["name"]] = node
        node_inputs[node] = list(args["inputs"])
    index: dict[str, int] = {}
    finished: set = set()
    decreasing: list[tuple[str, int]] = []

    def walk(node: tuple[str, int]) -> None:
        if node in finished:
            return
        index.setdefault(node[0], len(index))
        for name in node_inputs[node]:
            walk(ref[name])
        finished.add(node)
        decreasing.append(node)

    for out in graph["outputs"]:
        walk(ref[out])
    node_depth: dict[tuple[str, int], int] = {}
    op_depth: dict[str, int] = {}
    for node in reversed(decreasing):
        depth = max(node_depth.setdefault(node, 0), op_depth.get(node[0], 0))
        op_depth[node[0]] = node_depth[node] = depth
        for name in node_inputs[node]:
            parent = ref[name]
            node_depth[parent] = max(depth + 1, node_depth.get(parent, 0))
    for name in graph["inputs"]:   # an input no output needs
        if name not in op_depth:
            op_depth[name], index[name] = 0, -1
    order = sorted(op_depth, key=lambda op: (-op_depth[op], index[op]))
    return [layer_of[op] for op in order]
