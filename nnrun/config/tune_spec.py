"""The `tune:` section: what `nnrun tune` searches (a metric, a sampler, a space of
distributions over config paths), validated with the rest of the config (jax-free,
optuna-free). Training ignores it.

    tune:
      metric: val_accuracy
      space:
        compile.optimizer.learning_rate: {loguniform: [1.0e-4, 1.0e-1]}
        model.layers[hidden].units: {int: [8, 64], step: 8}

A space key is an override path (nnrun/config/overrides.py) and must resolve against
the config; a trial's value goes into the config as a `--set` (`dimension_override`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from nnrun.config.callback_specs import MODES, monitor_mode
from nnrun.config.checks import TUNE_KEYS, Problems, check_keys, section, typed_field
from nnrun.config.errors import ConfigError
from nnrun.config.overrides import parse_override_path, resolve_path
from nnrun.config.registry import unknown_name_message
from nnrun.config.values import (
    ArgTypeError,
    got,
    one_of,
    positive_int,
    seed_int,
    string,
)
from nnrun.config.yamlsrc import PathT, format_path

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("none", "median", "asha")
DISTRIBUTIONS = ("choice", "uniform", "loguniform", "int")
DEFAULTS = {"mode": "auto", "trials": 20, "batch": 16, "sampler": "tpe", "pruner": "none"}
# The sections a space key may go into; `fit.seed` is the top-level seed (as --vary's
# nnrun/sweep/variants.py SEED_ALIASES), which no trial changes.
TUNABLE = ("data", "model", "compile", "fit")
SEED_ALIASES = {"fit.seed": "seed"}
_EXAMPLES = ("{choice: [16, 32, 64]}, {uniform: [0.0, 0.5]}, {loguniform: [1.0e-4, 0.1]} "
             "or {int: [8, 64]}")


@dataclass(frozen=True)
class Dimension:
    """One entry of tune.space."""

    key: str        # the path as written
    path: PathT     # parsed, layer names resolved to indices (overrides.resolve_path)
    kind: str       # choice | uniform | loguniform | int
    values: tuple   # the choices, or (lo, hi)
    step: int | None
    where: str      # `file:line:col: tune.space.KEY`, for errors raised later


@dataclass(frozen=True)
class TuneSpec:
    metric: str
    mode: str       # 'min' or 'max' ('auto' resolved as callbacks do)
    trials: int
    batch: int      # trials asked at once and trained together
    sampler: str    # tpe | random | grid
    pruner: str     # none | median | asha
    seed: int
    space: tuple[Dimension, ...]

    def to_dict(self) -> dict:
        """The resolved `tune:` (defaults filled in; space entries as written)."""
        space = {}
        for dim in self.space:
            values = list(dim.values)
            space[dim.key] = {dim.kind: values, **({"step": dim.step} if dim.step else {})}
        return {"metric": self.metric, "mode": self.mode, "trials": self.trials,
                "batch": self.batch, "sampler": self.sampler, "pruner": self.pruner,
                "seed": self.seed, "space": space}


def validate_tune(raw: dict, seed: int | None, problems: Problems) -> TuneSpec | None:
    """`tune:` checked (every problem added, located); None when absent or broken.
    `seed` is the config's top-level seed, the default of tune.seed."""
    if raw.get("tune") is None:
        return None
    tune = section(raw, "tune", (), problems, required=False)
    if not isinstance(raw["tune"], dict):
        return None
    path: PathT = ("tune",)
    before = len(problems.items)
    check_keys(tune, TUNE_KEYS, path, problems, "tune")
    metric = typed_field(tune, "metric", string, None, path, problems)
    if tune.get("metric") is None:
        problems.add(path, "missing required key 'metric': the value trials are scored by, "
                           "as the run logs it per epoch (val_loss, val_accuracy, loss...)")
    fields = {key: typed_field(tune, key, check, DEFAULTS[key], path, problems)
              for key, check in (("mode", one_of(*MODES)), ("trials", positive_int),
                                 ("batch", positive_int), ("sampler", one_of(*SAMPLERS)),
                                 ("pruner", one_of(*PRUNERS)))}
    tune_seed = typed_field(tune, "seed", seed_int, seed, path, problems)
    space = _space(tune, raw, fields["sampler"], problems)
    if len(problems.items) > before or metric is None:
        return None
    return TuneSpec(metric=metric, mode=monitor_mode(metric, fields["mode"]),
                    trials=fields["trials"], batch=fields["batch"], sampler=fields["sampler"],
                    pruner=fields["pruner"], seed=tune_seed if tune_seed is not None else 0,
                    space=space)


def dimension_override(dim: Dimension, value: Any) -> str:
    """The `--set` that puts a trial's value of `dim` into the config: `path=<YAML>`."""
    if hasattr(value, "item") and not isinstance(value, (list, dict)):   # a numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        text = ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    elif isinstance(value, (dict, list, tuple)):
        text = yaml.safe_dump(value if not isinstance(value, tuple) else list(value),
                              default_flow_style=True, width=1 << 30, sort_keys=False)
        text = text.removesuffix("\n...\n").strip()
    else:
        text = json.dumps(value, ensure_ascii=False)
    return f"{dim.key.strip()}={text}"


# ---------------------------------------------------------------- the space

def _space(tune: dict, raw: dict, sampler: str | None, problems: Problems
           ) -> tuple[Dimension, ...]:
    path: PathT = ("tune", "space")
    value = tune.get("space")
    if value is None:
        problems.add(("tune",), "missing required key 'space': a mapping of config paths to "
                                "distributions, e.g. fit.batch_size: {choice: [16, 32]}")
        return ()
    if not isinstance(value, dict) or not value:
        problems.add(path, "expected a mapping of config paths to distributions, e.g. "
                           f"fit.batch_size: {{choice: [16, 32]}}, {got(value)}")
        return ()
    out: list[Dimension] = []
    seen: dict[PathT, str] = {}
    for key, entry in value.items():
        dim_path = _dimension_path(key, raw, path + (key,), problems)
        if dim_path in seen:
            problems.add(path + (key,), f"{key!r} is the same config value as {seen[dim_path]!r}"
                                        ": give it once", key=True)
            dim_path = None
        elif dim_path is not None:
            seen[dim_path] = str(key)
        dim = _distribution(entry, path + (key,), problems)
        if dim is None or dim_path is None:
            continue
        kind, values, step = dim
        where = problems.origins.where(path + (key,), key=True)
        if sampler == "grid" and kind != "choice":
            problems.add(path + (key, kind), f"sampler grid tries every combination of "
                         f"choice: values; a {kind}: range has no grid (write {{choice: "
                         "[...]}, or use sampler tpe or random)", key=True)
            continue
        out.append(Dimension(str(key), dim_path, kind, values, step, where))
    return tuple(out)


def _dimension_path(key: Any, raw: dict, at: PathT, problems: Problems) -> PathT | None:
    """A space key parsed and resolved against the config (--set's rules), or None."""
    text = str(key).strip()
    try:
        parsed = parse_override_path(text)
        if text in SEED_ALIASES or parsed[0] == "seed":
            alias = f" ({text} is the top-level seed)" if text in SEED_ALIASES else ""
            raise ConfigError(f"the seed cannot be tuned{alias}: a better score from a seed "
                              "is luck, not a better model")
        if parsed[0] not in TUNABLE:
            raise ConfigError(f"tune.space takes paths into {', '.join(TUNABLE[:-1])} or "
                              f"{TUNABLE[-1]}, not {format_path(parsed[:1])}")
        return resolve_path(raw, parsed)
    except ConfigError as exc:
        problems.add(at, exc.message, key=True)
        return None


def _distribution(entry: Any, at: PathT, problems: Problems
                  ) -> tuple[str, tuple, int | None] | None:
    """(kind, values, step) of one space entry, or None (its problems added)."""
    if not isinstance(entry, dict) or not entry:
        problems.add(at, f"expected one distribution: {_EXAMPLES}, {got(entry)}")
        return None
    kinds = [k for k in entry if k in DISTRIBUTIONS and entry[k] is not None]
    unknown = [k for k in entry if k not in DISTRIBUTIONS and k != "step"]
    for k in unknown:
        problems.add(at + (k,), unknown_name_message("distribution", k, [*DISTRIBUTIONS,
                                                                         "step"]), key=True)
    if len(kinds) > 1:
        problems.add(at, f"one distribution per entry, got {len(kinds)}: "
                         f"{', '.join(kinds)} (extends: merges an entry of the base file "
                         "with this one key by key: write the base's as null to drop it, "
                         f"e.g. {{{kinds[0]}: null, {kinds[-1]}: [...]}})")
        return None
    if not kinds:
        if not unknown:
            problems.add(at, f"expected one distribution: {_EXAMPLES}; got only step:")
        return None
    kind = kinds[0]
    if "step" in entry and kind != "int":
        problems.add(at + ("step",), f"step: goes with int: only, not {kind}:", key=True)
        return None
    try:
        values = _choices(entry[kind]) if kind == "choice" else _bounds(kind, entry[kind])
    except ArgTypeError as exc:
        problems.add(at + (kind,) + getattr(exc, "at", ()), f"{kind}: {exc}")
        return None
    if unknown:
        return None
    step = None
    if entry.get("step") is not None:
        try:
            step = positive_int(entry["step"])
        except ArgTypeError as exc:
            problems.add(at + ("step",), f"step: {exc}")
            return None
        lo, hi = values
        if (hi - lo) % step:
            problems.add(at + ("step",), f"step {step} does not divide the range {lo}..{hi} "
                                         f"(a width of {hi - lo})")
            return None
    return kind, values, step


def _choices(value: Any) -> tuple:
    """choice: a non-empty list of distinct values (scalars, lists, mappings)."""
    if not isinstance(value, list) or not value:
        raise ArgTypeError(f"expected a non-empty list of values, {got(value)}")
    seen: dict[str, int] = {}
    for i, v in enumerate(value):
        # a choice is recorded (study.db, trials.csv) as its JSON text: string keys only
        bad = [k for k in _keys(v) if not isinstance(k, str)]
        if bad:
            exc = ArgTypeError(f"a mapping key must be text, got {bad[0]!r} (a choice is "
                               "recorded as JSON; quote the key)")
            exc.at = (i,)
            raise exc
        text = json.dumps(v, sort_keys=True, default=str)
        if text in seen:
            exc = ArgTypeError(f"the value {text} is given twice (items {seen[text]} and {i})")
            exc.at = (i,)
            raise exc
        seen[text] = i
    return tuple(value)


def _keys(value: Any) -> Iterator[Any]:
    """Every mapping key in `value`, nested ones too."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _keys(v)
    elif isinstance(value, list):
        for v in value:
            yield from _keys(v)


def _bounds(kind: str, value: Any) -> tuple:
    """uniform / loguniform: [lo, hi] numbers, lo < hi (loguniform: 0 < lo); int: [lo, hi]
    integers, lo <= hi."""
    if not isinstance(value, list) or len(value) != 2:
        raise ArgTypeError(f"expected [lo, hi], {got(value)}")
    lo, hi = value
    if kind == "int":
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ArgTypeError(f"expected integer bounds [lo, hi], got [{lo!r}, {hi!r}] "
                               "(for numbers between them, use uniform:)")
        if lo > hi:
            raise ArgTypeError(f"expected lo <= hi, got [{lo}, {hi}]")
        return lo, hi
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               for v in value):
        raise ArgTypeError(f"expected finite numbers [lo, hi], got [{lo!r}, {hi!r}]")
    if lo >= hi:
        raise ArgTypeError(f"expected lo < hi, got [{lo}, {hi}]")
    if kind == "loguniform" and lo <= 0:
        raise ArgTypeError(f"expected 0 < lo (a log scale has no zero or negative values), "
                           f"got lo = {lo}")
    return float(lo), float(hi)
