"""Streamed HDF5 vs in-memory training throughput on the MNIST-sized MLP (issue 6).

    python benchmarks/stream_bench.py [--epochs 3] [--repeat 2] [--rows 60000]

The workload is bench.py's "mlp" (784-512-512-10, Dropout 0.2, Adam, batch 128) on
random float32 data written to one HDF5 file (contiguous datasets x and y, as h5py
writes by default). The same `nnrun.api.train` call runs twice per repeat: with
`data.stream: false` (the file read whole, the epoch one program on resident data)
and `data.stream: true` (features read from the file in chunks by a background
thread while the previous chunk trains). samples/s is steady state (epochs after
the first); the best of `--repeat` runs is kept. Target: streamed >= 80% of
in-memory samples/s. Results: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("NNRUN_NO_COMPILE_CACHE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import h5py  # noqa: E402
import numpy as np  # noqa: E402
from bench import _best, machine_info, mlp_workload, time_nnrun_train  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--rows", type=int, default=60_000)
    args = parser.parse_args(argv)
    import jax

    jax.numpy.zeros(1).block_until_ready()   # backend start-up outside any timing
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        w = mlp_workload(workdir, args.epochs)
        if args.rows != len(w.x):
            rng = np.random.default_rng(0)
            w.x = rng.random((args.rows, 784), dtype=np.float32)
            w.y = rng.integers(0, 10, size=(args.rows,)).astype(np.int32)
        path = workdir / "mlp.h5"
        with h5py.File(path, "w") as f:
            f["x"], f["y"] = w.x, w.y
        size_mb = path.stat().st_size / 2**20
        results = {}
        for _ in range(args.repeat):
            for stream in (False, True):
                w.cfg["data"] = {"train": {"path": str(path)}, "stream": stream}
                t = time_nnrun_train(w, workdir)
                t.name = "streamed (HDF5, chunks)" if stream else "in memory"
                results[stream] = _best(results[stream], t) if stream in results else t
    print("\n".join(machine_info()))
    print(f"\nmlp: 784-512-512-10, Adam, batch 128, {len(w.x):,} rows ({size_mb:.0f} MB HDF5), "
          f"{args.epochs} epochs, best of {args.repeat}\n")
    print("| path | samples/s (steady) | vs in memory | first epoch (s) | total (s) |")
    print("|---|---:|---:|---:|---:|")
    base = results[False].samples_per_s
    for t in (results[False], results[True]):
        print(f"| {t.name} | {t.samples_per_s:,.0f} | {t.samples_per_s / base:.2f}x | "
              f"{t.first_epoch:.2f} | {t.total:.2f} |")
    ratio = results[True].samples_per_s / base
    print(f"\nstreamed / in memory: {ratio:.2f} (target >= 0.80: "
          f"{'met' if ratio >= 0.8 else 'missed'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
