"""The helpers of config validation: collecting located problems, unknown keys, typed
fields, and the keys each section allows. Jax-free, as all of config checking."""

from __future__ import annotations

from typing import Any

from nnrun.config.errors import ConfigError
from nnrun.config.registry import unknown_name_message
from nnrun.config.values import REQUIRED, ArgTypeError, got
from nnrun.config.yamlsrc import Origins, PathT

TOP_KEYS = ("version", "name", "seed", "data", "model", "compile", "fit", "distributed",
            "tune")
COMPOSE_KEYS = ("extends", "vars")   # read (and removed) by compose.py before validation
DISTRIBUTED_KEYS = ("coordinator_address", "num_processes", "process_id", "local_device_ids")
DATA_KEYS = ("train", "validation", "validation_split", "test", "shuffle_split", "stratify",
             "preprocess", "class_weight", "stream")
MODEL_KEYS = ("input_shape", "input_dim", "input_dtype", "inputs", "layers", "outputs",
              "weights")
COMPILE_KEYS = ("optimizer", "loss", "metrics", "loss_weights", "precision")
# compile.precision (nnrun/nn/precision.py): the first is the default
PRECISIONS = ("float32", "mixed", "bfloat16")
FIT_KEYS = ("batch_size", "epochs", "shuffle", "validation_split", "callbacks", "devices",
            "terminate_on_nan")
# tune: (nnrun/config/tune_spec.py); not in SECTION_KEYS: its seed and metric would send
# a misplaced fit.seed or compile.metric there
TUNE_KEYS = ("metric", "mode", "trials", "batch", "sampler", "pruner", "seed", "space")
SECTION_KEYS = {"data": DATA_KEYS, "model": MODEL_KEYS, "compile": COMPILE_KEYS,
                "fit": FIT_KEYS}


class Problems:
    """Collects (where, message) pairs; raises them together."""

    def __init__(self, origins: Origins):
        self.origins = origins
        self.items: list[tuple[str | None, str]] = []
        self.clean_layers: list = []   # the LayerSpecs of model.layers without a problem

    def add(self, path: PathT, message: str, *, key: bool = False) -> None:
        self.items.append((self.origins.where(path, key=key), message))

    def raise_if_any(self, partial: Any = None) -> None:
        """Raise the problems as one ConfigError; `partial` (a spec.PartialSpec) holds
        the sections that are sound."""
        if self.items:
            where, message = self.items[0]
            exc = ConfigError(message, where=where, problems=list(self.items))
            exc.partial = partial
            raise exc


def check_keys(section: dict, allowed: tuple[str, ...], path: PathT, problems: Problems,
                what: str, also: tuple[str, ...] = ()) -> None:
    """Unknown keys are errors (nothing would read them), with close matches, or the
    section a key belongs in when it is written in another (`epochs:` at the top).
    `also`: keys read before validation (`extends`, `vars`), named among the allowed."""
    for key in section:
        if key not in allowed:
            homes = [f"{name}:" for name, keys in SECTION_KEYS.items()
                     if key in keys and path != (name,)]
            hint = f" (it belongs in {' or '.join(homes)})" if homes else ""
            message = unknown_name_message(f"key in {what}", key, [*allowed, *also], hint)
            problems.add(path + (key,), message, key=True)


def typed_field(section: dict, key: str, check, default: Any, path: PathT,
           problems: Problems) -> Any:
    if key not in section or section[key] is None:
        if default is REQUIRED:
            problems.add(path, f"missing required key {key!r}")
        return None if default is REQUIRED else default
    try:
        return check(section[key])
    except ArgTypeError as exc:
        problems.add(path + (key,), str(exc))
        return None


def section(raw: dict, key: str, path: PathT, problems: Problems, required: bool) -> dict:
    value = raw.get(key)
    if value is None:
        if required:
            problems.add(path, f"missing required section {key!r}")
        return {}
    if not isinstance(value, dict):
        problems.add(path + (key,), f"expected a mapping, {got(value)}")
        return {}
    return value


def devices_option(value: Any) -> int | str:
    """`fit.devices`: "all" (every local device) or a positive number of them."""
    if value == "all":
        return "all"
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArgTypeError(f"expected 'all' or a positive number of devices, got {value!r}")
    return value


def validate_distributed(raw: dict, problems: Problems) -> dict | None:
    """`distributed:`: true (jax.distributed.initialize's own detection: Slurm, Open MPI,
    TPU) or a mapping of its arguments; None when absent or false."""
    value = raw.get("distributed")
    if value is None or value is False:
        return None
    if value is True:
        return {}
    path: PathT = ("distributed",)
    if not isinstance(value, dict):
        problems.add(path, "expected true or a mapping such as {coordinator_address: "
                     f"'host:1234', num_processes: 2, process_id: 0}}, got {value!r}")
        return None
    check_keys(value, DISTRIBUTED_KEYS, path, problems, "distributed")
    out: dict[str, Any] = {}
    address = value.get("coordinator_address")
    if address is not None:
        host, _, port = str(address).rpartition(":")
        if not isinstance(address, str) or not host or not port.isdigit():
            problems.add(path + ("coordinator_address",),
                         f"expected 'host:port', got {address!r}")
        else:
            out["coordinator_address"] = address
    for key, low in (("num_processes", 1), ("process_id", 0)):
        v = value.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            problems.add(path + (key,), f"expected an integer >= {low}, got {v!r}")
        else:
            out[key] = v
    if out.get("process_id", 0) >= out.get("num_processes", 1 << 30):
        problems.add(path + ("process_id",), f"process_id {out['process_id']} is not below "
                     f"num_processes {out['num_processes']}")
    ids = value.get("local_device_ids")
    if ids is not None:
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool)
                                                and i >= 0 for i in ids):
            problems.add(path + ("local_device_ids",), f"expected a list of device ids, "
                         f"got {ids!r}")
        else:
            out["local_device_ids"] = ids
    return out
