"""Same-process A/B of the CNN's two latest speed changes (benchmarks/README.md, issue 3).

    python benchmarks/cnn_ab.py [--rounds 6] [--samples 2560]

Issue 3's CNN (bench.py's `cnn` workload, on its first `--samples` rows) is compiled
once per variant; then each round times one epoch of every variant in turn, so that
the other tenant's load falls on all of them alike. Prints each variant's median and
best samples/s:

- `current`: nnrun as it is;
- `epilogue-in-place`: no convolution pooled before its bias and activation
  (`Model._deferred_epilogues` returns nothing);
- `cells-max`: max pooling's value as an elementwise max of the window's cells (what
  it was before it became one reduction; its gradient is the same either way);
- `neither (before)`: both, i.e. the code before the two changes.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # noqa: E402

from nnrun import api  # noqa: E402
from nnrun.config.spec import spec_from_dict  # noqa: E402
from nnrun.nn.layers import conv_ops  # noqa: E402
from nnrun.nn.model import Model  # noqa: E402
from nnrun.train.fitter import Fitter  # noqa: E402


def _cells_max(t, axes):
    return functools.reduce(conv_ops.jnp.maximum, conv_ops._cells(t, axes))


VARIANTS = {
    "current": {},
    "epilogue-in-place": {(Model, "_deferred_epilogues"): lambda self: {}},
    "cells-max": {(conv_ops, "_first_max_value"): _cells_max},
    "neither (before)": {(Model, "_deferred_epilogues"): lambda self: {},
                         (conv_ops, "_first_max_value"): _cells_max},
}


def build(spec, splits, patches: dict) -> tuple[Fitter, object]:
    """A Fitter compiled with `patches` (object, attribute) -> value in place, and its
    train state after one (compiling) epoch."""
    saved = {key: getattr(*key) for key in patches}
    for (obj, name), value in patches.items():
        setattr(obj, name, value)
    conv_ops._first_max_vjp.cache_clear()
    try:
        model = api.build(spec, splits.train.x.shape[1:])
        obj = api.objective_for(spec, model, splits.train.y)
        fitter = Fitter(model, obj, spec.compile.optimizer, seed=spec.seed,
                        batch_size=spec.fit.batch_size, shuffle=spec.fit.shuffle,
                        x=splits.train.x, y=splits.train.y)
        return fitter, fitter.run_epoch(fitter.initial_state())[0]   # compiles
    finally:
        for (obj, name), value in saved.items():
            setattr(obj, name, value)
        conv_ops._first_max_vjp.cache_clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--samples", type=int, default=2560)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        w = bench.cnn_workload(Path(tmp), 3)
        np.savez(w.cfg["data"]["train"]["path"], x=w.x[:args.samples], y=w.y[:args.samples])
        spec = spec_from_dict(w.cfg)
        splits = api.load_data(spec)
        built = {name: build(spec, splits, patches) for name, patches in VARIANTS.items()}
    fitters = {name: fitter for name, (fitter, _) in built.items()}
    states = {name: ts for name, (_, ts) in built.items()}
    rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, fitter in fitters.items():
            start = time.perf_counter()
            states[name] = fitter.run_epoch(states[name])[0]
            rates[name].append(args.samples / (time.perf_counter() - start))
    for name, r in rates.items():
        print(f"{name:18s} median {statistics.median(r):7,.0f} samples/s   "
              f"best {max(r):7,.0f}   rounds {', '.join(f'{v:,.0f}' for v in r)}")


if __name__ == "__main__":
    main()
