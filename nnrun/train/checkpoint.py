"""HDF5 checkpoints: params, state, optimizer state, PRNG keys, epoch and config.

Layout (no pickle anywhere):
  /params/<layer>/<weight>     one group per layer, as Keras's save_weights
  /state/<layer>/<name>        non-trainable state (e.g. BatchNorm statistics)
  /optimizer/<i>               optimizer-state leaves, attr `path` = their pytree path
  attrs: format, nnrun_version, epoch, step, seed, config (resolved YAML)
Writes go to a temporary file in the same folder, renamed into place. Loading
fills a skeleton rebuilt from the config, checking every path, shape and dtype.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nnrun import __version__
from nnrun.config import faults, h5gate
from nnrun.config.errors import CheckpointError, ConfigError
from nnrun.config.files import atomic_write
from nnrun.nn.lazy import LazyModule

# imported on first use: a training writes its first checkpoint while the epoch program
# compiles, so h5py's import (about 20 ms) leaves the path to the first epoch (issue 21)
h5py = LazyModule("h5py")

FORMAT = "nnrun-checkpoint-1"


def _storable(value) -> np.ndarray:
    """An array as HDF5 stores it: bfloat16 (compile.precision: bfloat16), which HDF5
    has no type for, as float32 (exact); read back into the model's dtype."""
    value = np.asarray(value)
    return value.astype(np.float32) if value.dtype == jnp.bfloat16 else value


def _restored(data: np.ndarray, dtype) -> np.ndarray:
    """A stored array in the model's dtype: float32 back to bfloat16 where it expects it."""
    if np.dtype(dtype) == jnp.bfloat16 and data.dtype == np.float32:
        return data.astype(jnp.bfloat16)
    return data


def _write_tree(group: h5py.Group, tree: dict) -> None:
    for key, value in tree.items():
        if isinstance(value, dict):
            _write_tree(group.create_group(key), value)
        else:
            group.create_dataset(key, data=_storable(value))


def save_checkpoint(path: Path, *, params: dict, state: dict, opt_state: Any = None,
                    attrs: dict | None = None) -> None:
    """Write a checkpoint atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    params, state, opt_state = jax.device_get((params, state, opt_state))
    with atomic_write(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["nnrun_version"] = __version__
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
        _write_tree(f.create_group("params"), params)
        f.flush()
        faults.point(f"h5 {path.name}")   # the crash tests: a half-written checkpoint
        _write_tree(f.create_group("state"), state)
        if opt_state is not None:
            group = f.create_group("optimizer")
            leaves = jax.tree_util.tree_flatten_with_path(opt_state)[0]
            for i, (kpath, leaf) in enumerate(leaves):
                ds = group.create_dataset(str(i), data=_storable(leaf))
                ds.attrs["path"] = jax.tree_util.keystr(kpath)


def _check_links(f: h5py.File, name: str, group: h5py.Group) -> None:
    for key in group:
        link = group.get(key, getlink=True)
        if not isinstance(link, h5py.HardLink):
            raise CheckpointError(f"{name}/{key}: links are not allowed in a checkpoint",
                                  where=f.filename)
        item = group[key]
        if isinstance(item, h5py.Group):
            _check_links(f, f"{name}/{key}", item)


def _read_into(f: h5py.File, group_name: str, skeleton: dict) -> dict:
    out = {}
    for key, value in skeleton.items():
        path = f"{group_name}/{key}"
        if isinstance(value, dict):
            out[key] = _read_into(f, path, value)
            continue
        if path not in f or not isinstance(f[path], h5py.Dataset):
            raise CheckpointError(f"{path}: missing (the checkpoint does not match the model)",
                                  where=f.filename)
        ds = f[path]
        if ds.shape != tuple(value.shape):   # checked before a byte is read
            raise CheckpointError(
                f"{path}: the checkpoint has shape {ds.shape} {ds.dtype}, the model "
                f"expects {tuple(value.shape)} {np.dtype(value.dtype)}", where=f.filename)
        data = _restored(ds[()], value.dtype)
        if data.shape != tuple(value.shape) or data.dtype != np.dtype(value.dtype):
            raise CheckpointError(
                f"{path}: the checkpoint has shape {data.shape} {data.dtype}, the model "
                f"expects {tuple(value.shape)} {np.dtype(value.dtype)}", where=f.filename)
        out[key] = data
    return out


def _read_optimizer(f: h5py.File, skeleton: Any) -> Any:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(skeleton)
    group = f.get("optimizer")
    if group is None or len(group) != len(leaves):
        raise CheckpointError("optimizer state does not match the optimizer in the config",
                              where=f.filename)
    values = []
    for i, (kpath, leaf) in enumerate(leaves):
        ds = group[str(i)]
        if ds.attrs.get("path") != jax.tree_util.keystr(kpath) or ds.shape != leaf.shape:
            raise CheckpointError(f"optimizer/{i} {ds.attrs.get('path')}: does not match the "
                                  "optimizer in the config", where=f.filename)
        values.append(_restored(ds[()], leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, values)


def _open(path: Path) -> h5py.File:
    """A checkpoint opened through the reading gate (nnrun.config.h5gate): a file that
    reaches other files or declares more than it can hold is a located CheckpointError."""
    return h5gate.open_untrusted(path, str(path), CheckpointError,
                                 unreadable="cannot read checkpoint")


def load_checkpoint(path: Path, *, params: dict, state: dict,
                    opt_state: Any = None) -> tuple[dict, dict, Any, dict]:
    """Load into skeletons (arrays or ShapeDtypeStructs); returns (params, state, opt, attrs)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("checkpoint not found", where=str(path))
    try:
        with _open(path) as f:
            if f.attrs.get("format") != FORMAT:
                raise CheckpointError("not an nnrun checkpoint", where=str(path))
            _check_links(f, "", f)
            attrs = {k: (v.item() if isinstance(v, np.generic) else v)
                     for k, v in f.attrs.items()}
            p = _read_into(f, "params", params)
            s = _read_into(f, "state", state)
            o = _read_optimizer(f, opt_state) if opt_state is not None else None
    except (OSError, KeyError) as exc:
        raise CheckpointError(f"cannot read checkpoint: {exc}", where=str(path)) from None
    return p, s, o, attrs


def _shapes_of(group: h5py.Group) -> dict:
    return {k: _shapes_of(v) if isinstance(v, h5py.Group) else tuple(v.shape)
            for k, v in group.items()}


def _skeleton_shapes(tree: dict) -> dict:
    return {k: _skeleton_shapes(v) if isinstance(v, dict) else tuple(v.shape)
            for k, v in tree.items()}


def read_layer_weights(path: Path, *, params: dict, state: dict
                       ) -> tuple[dict, dict, list[str], list[str]]:
    """The weights of a checkpoint for the layers of a model, matched by layer name (the
    top-level groups of /params and /state): (params, state, the layers loaded, the
    model's layers with weights that the file lacks). A layer whose weights' names or
    shapes differ is a CheckpointError naming each such layer with both shapes."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("checkpoint not found", where=str(path))
    p_out, s_out, loaded, missing, differ = {}, {}, [], [], []
    try:
        with _open(path) as f:
            if f.attrs.get("format") != FORMAT:
                raise CheckpointError("not an nnrun checkpoint", where=str(path))
            _check_links(f, "", f)
            for name in sorted(set(params) | set(state)):
                in_file = [g for g in ("params", "state") if f"{g}/{name}" in f]
                if not in_file:
                    missing.append(name)
                    continue
                want = {"params": _skeleton_shapes(params.get(name, {})),
                        "state": _skeleton_shapes(state.get(name, {}))}
                have = {g: _shapes_of(f[f"{g}/{name}"]) if f"{g}/{name}" in f else {}
                        for g in ("params", "state")}
                if want != have:
                    differ.append(f"{name!r}: the file has {have['params']}, the model "
                                  f"expects {want['params']}" if want["params"] !=
                                  have["params"] else f"{name!r}: its state differs (file "
                                  f"{have['state']}, model {want['state']})")
                    continue
                if name in params:
                    p_out[name] = _read_into(f, f"params/{name}", params[name])
                if name in state:
                    s_out[name] = _read_into(f, f"state/{name}", state[name])
                loaded.append(name)
    except (OSError, KeyError) as exc:
        raise CheckpointError(f"cannot read checkpoint: {exc}", where=str(path)) from None
    if differ:
        raise CheckpointError("weights of another shape than the model's, for layer"
                              f"{'s' if len(differ) > 1 else ''} " + "; ".join(differ),
                              where=str(path))
    return p_out, s_out, loaded, missing


CHECKPOINT_SECONDS = 1.0  # the most training a crash (kill -9) can cost


def checkpoint_seconds() -> float:
    """CHECKPOINT_SECONDS, or the environment's NNRUN_CHECKPOINT_SECONDS (0: last.h5
    written after every epoch, as the crash tests need)."""
    text = os.environ.get("NNRUN_CHECKPOINT_SECONDS")
    if text is None:
        return CHECKPOINT_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ConfigError(f"expected a number of seconds >= 0, got {text!r}",
                          where="environment variable NNRUN_CHECKPOINT_SECONDS")
    return value


@jax.jit
def copy_tree(tree):
    """A copy of a train state on its device, in one dispatch of one compiled program
    (was a copy per leaf: a dispatch each, and a compile per leaf shape after the first
    improving epoch). jnp.array(copy=True) stays a copy inside jit: its output is a new
    buffer, never the input's (which the next epoch donates)."""
    return jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True), tree)


class Held:
    """The state after one epoch (nnrun/train/chunk.py), fetched when first asked for
    (`get`): a chunk's state comes from a rerun only if needed. `keep()` gives a
    Held that stays valid after later epochs: itself where nothing donates the state,
    else a device copy taken now."""

    def __init__(self, fetch: Callable[[], Any] | None = None, value: Any = None,
                 donated: bool = False):
        self._fetch, self._value, self._donated = fetch, value, donated

    def get(self) -> Any:
        if self._fetch is not None:
            self._value, self._fetch = self._fetch(), None
        return self._value

    def keep(self) -> Held:
        return Held(value=copy_tree(self.get())) if self._donated else self


class Checkpointer:
    """Keeps last.h5 and best.h5 of a run current, writing at most every CHECKPOINT_SECONDS
    (or NNRUN_CHECKPOINT_SECONDS).

    The best state (lowest `monitor`, or highest with mode "max") is written when found
    if a write is due, else kept until the next write (a Held: the chunk program's own
    best state, or a device copy where the next epoch donates the buffers). `on_last()`,
    if set, is called before each write of last.h5 and returns more attributes for it
    (the fit loop's resume state).
    """

    def __init__(self, folder: Path, *, monitor: str, attrs: dict, mode: str = "min"):
        self.folder, self.monitor, self.attrs = Path(folder), monitor, attrs
        self.sign = -1.0 if mode == "max" else 1.0
        self.best_value = np.inf   # sign * the best monitored value
        self.best: tuple | None = None  # (TrainState, epoch, value) not yet written
        self.last_write = time.monotonic()
        self.every = checkpoint_seconds()
        self.on_last = None

    def _write(self, name: str, ts, epoch: int, extra: dict | None = None) -> None:
        save_checkpoint(self.folder / name, params=ts.params, state=ts.state,
                        opt_state=ts.opt_state, attrs={"epoch": epoch, **self.attrs,
                                                       **(extra or {})})

    def prepare(self, ts) -> None:
        """Compile the best state's copy program before epoch 1, where states are
        donated (the streamed path). Left to its first use, it compiles at the first
        improving epoch at which no write is due: after epoch 1 when that epoch was slow
        enough (its compile, a loaded machine) to be written."""
        copy_tree(ts)

    def epoch_end(self, held, epoch: int, logs: dict, *, final: bool = False,
                  may_write: bool = True) -> None:
        """After epoch `epoch`, whose state `held` gives (nnrun/train/chunk.py Held, or
        the state itself): the best kept, last.h5 (and best.h5) written if due. Inside a
        chunk of epochs (`may_write` false) the write waits for the chunk's last epoch."""
        held = as_held(held)
        raw = logs.get(self.monitor)
        value = np.inf if raw is None else self.sign * raw
        write_now = final or (may_write and time.monotonic() - self.last_write >= self.every)
        if np.isfinite(value) and value < self.best_value:
            self.best_value = value
            self.best = (held if write_now else held.keep(), epoch, value)
        if write_now:
            self.flush(held, epoch)

    def flush(self, ts, epoch: int) -> None:
        """Write last.h5 from `ts` (a state or Held; none if None) and any best state not
        yet written."""
        if ts is not None:
            extra = {"best_value": float(self.best_value)}
            self._write("last.h5", as_held(ts).get(), epoch,
                        {**extra, **(self.on_last() if self.on_last else {})})
        if self.best is not None:
            best, best_epoch, value = self.best
            self._write("best.h5", best.get(), best_epoch, {"monitor": self.monitor,
                                                            "value": float(self.sign * value)})
            self.best = None
        self.last_write = time.monotonic()


def as_held(state):
    """A state as a Held: a Held unchanged."""
    return state if isinstance(state, Held) else Held(value=state)
