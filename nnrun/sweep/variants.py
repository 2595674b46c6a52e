"""The variants of `nnrun sweep` (`--vary KEY=V1,V2,...`) and their grouping; no jax.

Every combination of the varied values is one variant: the config loaded with the
base `--set` overrides and then `KEY=VALUE` for each varied key, exactly as
`nnrun train CONFIG --set ... --set KEY=VALUE` would load it. `fit.seed` is accepted
as another name of the top-level `seed:`.

Variants that differ only in *traced* values share one compiled program (one group):
the seed (init, dropout and shuffle keys are values in the program) and a numeric
`compile.optimizer.learning_rate` (the optimizer is built with rate 1.0 and each
variant's rate is its `lr_scale`, the per-step factor the callbacks use, so the update
computes float32(rate) exactly as a single run does). Any other varied key changes the
program (shapes or static structure): such variants form groups of their own, trained
one group after another. A group's key is its *static signature*: the resolved config
without the traced values.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnrun.config.errors import ConfigError
from nnrun.config.overrides import parse_override_path
from nnrun.config.yamlsrc import Origins, format_path, parse_yaml

SEED_ALIASES = {"fit.seed": "seed"}   # the spelling; the config's seed is top-level
LR_KEYS = ("learning_rate", "lr")     # lr: the Keras 1 alias
MAX_VARIANTS = 1024


@dataclass
class Axis:
    """One `--vary KEY=V1,V2,...`: the key and each value's YAML text and value."""

    key: str
    path: tuple
    texts: list[str]
    values: list[Any]


@dataclass
class Variant:
    index: int
    values: dict[str, Any]          # varied key -> value
    texts: dict[str, str]           # varied key -> its YAML text
    overrides: tuple[str, ...]      # every --set applied to the config file
    spec: Any                       # nnrun.config.spec.Spec
    learning_rate: float | None     # traced: the optimizer is built with rate 1.0

    @property
    def label(self) -> str:
        return ",".join(f"{key.split('.')[-1]}={text}" for key, text in self.texts.items())

    @property
    def dirname(self) -> str:
        name = re.sub(r"[^A-Za-z0-9._=+-]+", "_", self.label.replace(",", "-"))
        return f"{self.index:02d}-{name}"[:120]


@dataclass
class Group:
    """Variants that share one compiled program, in variant order."""

    variants: list[Variant] = field(default_factory=list)

    @property
    def traced_lr(self) -> bool:
        return self.variants[0].learning_rate is not None


def split_values(text: str) -> list[str]:
    """`a,[1,2],{x: 1}` -> ["a", "[1,2]", "{x: 1}"]: commas outside brackets and quotes."""
    out, depth, quote, start = [], 0, None, 0
    for i, c in enumerate(text):
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        elif c == "," and depth == 0:
            out.append(text[start:i].strip())
            start = i + 1
    out.append(text[start:].strip())
    return out


def parse_vary(items: tuple[str, ...] | list[str]) -> list[Axis]:
    """The `--vary` options, each `KEY=V1,V2,...` (values in YAML syntax, as --set)."""
    axes: list[Axis] = []
    for item in items:
        where = f"--vary {item}"
        if "=" not in item:
            raise ConfigError(f"expected KEY=V1,V2,..., got {item!r}", where="--vary")
        key, text = (s.strip() for s in item.split("=", 1))
        key = SEED_ALIASES.get(key, key)
        path = parse_override_path(key)
        texts = split_values(text)
        if not text or any(t == "" for t in texts):
            raise ConfigError("expected one or more values separated by commas",
                              where=where)
        if any(a.key == key for a in axes):
            raise ConfigError(f"{key} is varied twice; give its values in one --vary",
                              where=where)
        values = [parse_yaml(t, where, Origins()) for t in texts]
        if len(set(texts)) < len(texts):
            raise ConfigError("a value is given twice", where=where)
        axes.append(Axis(key, path, texts, values))
    if not axes:
        raise ConfigError("give at least one --vary KEY=V1,V2,...", where="--vary")
    count = 1
    for axis in axes:
        count *= len(axis.values)
    if count > MAX_VARIANTS:
        raise ConfigError(f"{count} variants; at most {MAX_VARIANTS} in one sweep",
                          where="--vary")
    return axes


def _override_prefix(base, axes: list[Axis]) -> tuple[str, ...]:
    """An optimizer given by name (`optimizer: sgd`) becomes `{name: sgd}` so that its
    parameters can be varied."""
    opt = base.compile.optimizer
    if isinstance(opt, str) and any(a.path[:2] == ("compile", "optimizer") and
                                    len(a.path) > 2 for a in axes):
        return (f"compile.optimizer={{name: {json.dumps(opt)}}}",)
    return ()


def expand(config: Path, axes: list[Axis], overrides: tuple[str, ...] = ()) -> list[Variant]:
    """Every combination of the varied values, loaded and validated as a config."""
    from nnrun.api import load_checked

    base = load_checked(config, overrides)
    for axis in axes:
        for o in overrides:
            if SEED_ALIASES.get(o.split("=", 1)[0].strip(), o.split("=", 1)[0].strip()) \
                    == axis.key:
                raise ConfigError(f"{axis.key} is both --set and --vary", where="--vary")
    prefix = _override_prefix(base, axes)
    variants = []
    for index, combo in enumerate(itertools.product(*(range(len(a.values)) for a in axes))):
        texts = {a.key: a.texts[i] for a, i in zip(axes, combo)}
        sets = tuple(f"{key}={text}" for key, text in texts.items())
        spec = load_checked(config, (*overrides, *prefix, *sets))
        variants.append(Variant(index, {a.key: a.values[i] for a, i in zip(axes, combo)},
                                texts, (*overrides, *prefix, *sets), spec,
                                traced_rate(spec, [a.path for a in axes])))
    return variants


def traced_rate(spec, varied: list[tuple]) -> float | None:
    """The variant's learning rate when it is varied (one of the `varied` config paths)
    and can be a traced value: a number (not a schedule), and no Keras 1 `decay` (which
    makes it a schedule)."""
    if not any(path[:2] == ("compile", "optimizer") and tuple(path[2:]) in
               ((k,) for k in LR_KEYS) for path in varied):
        return None
    opt = spec.compile.optimizer
    if not isinstance(opt, dict) or opt.get("decay"):
        return None
    value = next((opt[k] for k in LR_KEYS if k in opt), None)
    try:
        value = float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None
    return value


DROPOUT_LAYERS = ("Dropout", "SpatialDropout1D", "SpatialDropout2D")


def _traced_numbers(model: Any, found: dict[str, float]) -> None:
    """The dropout rates and weight-regularizer factors of a resolved `model` section
    (nested models too) that can be values of the program, each replaced by a marker
    in place: found[key] = value, keys as `nnrun.nn.traced` reads them. Zero stays a
    constant (a zero rate or factor leaves its computation out of the program)."""
    layers = model.get("layers") if isinstance(model, dict) else None
    for item in layers if isinstance(layers, list) else ():
        if not (isinstance(item, dict) and len(item) == 1):
            continue
        (cls, args), = item.items()
        if not isinstance(args, dict):
            continue
        name = args.get("name")
        if cls in DROPOUT_LAYERS and _number(args.get("rate")) and name:
            found[f"{name}/rate"] = float(args["rate"])
            args["rate"] = "traced"
        for arg, reg in args.items():
            if not (arg.endswith("_regularizer") and arg != "activity_regularizer"
                    and isinstance(reg, dict) and name):
                continue
            body = reg.get("config") if isinstance(reg.get("config"), dict) else reg
            for factor in ("l1", "l2"):
                if _number(body.get(factor)):
                    found[f"{name}/{arg}/{factor}"] = float(body[factor])
                    body[factor] = "traced"
        _traced_numbers(args, found)   # a nested model's layers


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value != 0


def traced_numbers(spec) -> dict[str, float]:
    """The variant's dropout rates and regularizer factors that can be traced."""
    found: dict[str, float] = {}
    _traced_numbers(json.loads(json.dumps(spec.resolved["model"], default=str)), found)
    return found


def group_values(group: Group) -> dict[str, list]:
    """The traced numbers that differ between a group's variants, as the per-variant
    values the program reads (`nnrun.nn.traced`); numbers all variants share stay
    constants of the program, as in a single run."""
    from nnrun.nn.traced import dropout_values, regularizer_key

    per = [traced_numbers(v.spec) for v in group.variants]
    out: dict[str, list] = {}
    for key in per[0]:
        values = [p[key] for p in per]
        if len(set(values)) == 1:
            continue
        if key.endswith("/rate"):
            layer = key[: -len("/rate")]
            for one in (dropout_values(layer, r) for r in values):
                for k, x in one.items():
                    out.setdefault(k, []).append(x)
        else:
            layer_arg, factor = key.rsplit("/", 1)
            out[regularizer_key(*layer_arg.split("/", 1), factor)] = values
    return out


def static_signature(variant: Variant) -> str:
    """The resolved config without the traced values: variants with equal signatures
    share one compiled program."""
    resolved = json.loads(json.dumps(variant.spec.resolved, default=str))
    resolved.pop("seed", None)
    resolved.pop("tune", None)
    _traced_numbers(resolved["model"], {})
    if variant.learning_rate is not None:
        opt = resolved["compile"]["optimizer"]
        for key in LR_KEYS:
            opt.pop(key, None)
        resolved["traced_learning_rate"] = True
    return json.dumps(resolved, sort_keys=True)


def group_variants(variants: list[Variant]) -> list[Group]:
    """Variants grouped by static signature, groups in order of their first variant."""
    groups: dict[str, Group] = {}
    for v in variants:
        groups.setdefault(static_signature(v), Group()).variants.append(v)
    return list(groups.values())


def check_sweepable(spec) -> None:
    """What a vmapped sweep cannot do, refused with a located ConfigError."""
    if spec.fit.callbacks:
        raise ConfigError("callbacks are not supported in a sweep (each variant would stop "
                          "or change its rate on its own); remove fit.callbacks, or train "
                          "the variants one by one with nnrun train",
                          where=spec.where(("fit", "callbacks")))
    if spec.data.stream:
        raise ConfigError("streamed data (data.stream) is not supported in a sweep",
                          where=spec.where(("data", "stream")))


def describe_axes(axes: list[Axis]) -> str:
    return "; ".join(f"{format_path(a.path)}: {', '.join(a.texts)}" for a in axes)
