"""Issue 8: an 8-variant `nnrun sweep` vs the same 8 runs trained one after another.

    python benchmarks/sweep_bench.py [--only small|mlp] [--epochs-mlp N] [--cli]

Each workload (benchmarks/bench.py's `small` and `mlp`) is swept over 4 seeds x 2
learning rates (8 variants, one vmapped program):

  sequential   8 x `nnrun.api.train(spec)` in this process, each spec loaded as
               `nnrun train CONFIG --set seed=S --set compile.optimizer.learning_rate=R`
               loads it (full path: data, compile, run directory, checkpoints, curves);
  sweep        1 x `nnrun.sweep.run.run_sweep(CONFIG, vary)` in this process: the same
               8 run directories plus the sweep tables.

With --cli (small only) it also times the commands as processes: 8 x `nnrun train`
vs 1 x `nnrun sweep` (interpreter start and imports counted per process). Every
runner starts cold: jax.clear_caches() before it, NNRUN_NO_COMPILE_CACHE=1. The
final losses of each sweep variant and its sequential twin are compared (max |diff|).
Results: benchmarks/README.md, section "Issue 8: sweeps".
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["NNRUN_NO_COMPILE_CACHE"] = "1"
sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
import yaml  # noqa: E402

SEEDS = (0, 1, 2, 3)
RATES = {"small": ("0.01", "0.03"), "mlp": ("0.001", "0.0003")}


def _vary(key: str) -> list[str]:
    return [f"seed={','.join(map(str, SEEDS))}",
            f"compile.optimizer.learning_rate={','.join(RATES[key])}"]


def _sets(key: str) -> list[tuple[str, str]]:
    return [(f"seed={s}", f"compile.optimizer.learning_rate={r}")
            for s in SEEDS for r in RATES[key]]


def run_inprocess(key: str, config: Path, root: Path) -> dict:
    import jax

    from nnrun import api
    from nnrun.sweep.run import run_sweep

    jax.clear_caches()
    start = time.perf_counter()
    singles = []
    for sets in _sets(key):
        spec = api.load_checked(config, sets)
        singles.append(api.train(spec, runs_root=root / "seq", quiet=True).history["loss"][-1])
    sequential = time.perf_counter() - start
    jax.clear_caches()
    start = time.perf_counter()
    result = run_sweep(config, _vary(key), runs_root=root / "sweep", quiet=True)
    sweep = time.perf_counter() - start
    swept = [r.history["loss"][-1] for r in result.runs]
    return {"sequential": sequential, "sweep": sweep, "groups": result.groups,
            "diff": float(np.max(np.abs(np.subtract(singles, swept))))}


def run_cli(key: str, config: Path, root: Path) -> dict:
    nnrun = [sys.executable, "-m", "nnrun.cli"]
    start = time.perf_counter()
    for sets in _sets(key):
        subprocess.run([*nnrun, "train", str(config), "-q", "--runs-dir", str(root / "cseq"),
                        *[a for s in sets for a in ("--set", s)]], check=True,
                       capture_output=True)
    sequential = time.perf_counter() - start
    start = time.perf_counter()
    subprocess.run([*nnrun, "sweep", str(config), "-q", "--runs-dir", str(root / "csweep"),
                    *[a for v in _vary(key) for a in ("--vary", v)]], check=True,
                   capture_output=True)
    return {"sequential": sequential, "sweep": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    import bench

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("small", "mlp"))
    parser.add_argument("--epochs-mlp", type=int, default=1)
    parser.add_argument("--cli", action="store_true", help="also time the commands as processes")
    args = parser.parse_args(argv)
    import jax

    jax.numpy.zeros(1).block_until_ready()
    print(f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; load average at start "
          f"{os.getloadavg()[0]:.2f}; devices {jax.devices()}; cpu_count {os.cpu_count()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        workloads = []
        if args.only in (None, "small"):
            workloads.append(bench.small_workload(tmp))
        if args.only in (None, "mlp"):
            workloads.append(bench.mlp_workload(tmp, args.epochs_mlp))
        for w in workloads:
            config = tmp / f"{w.key}.yaml"
            config.write_text(yaml.safe_dump(w.cfg), encoding="utf-8")
            print(f"running {w.title}: 8 variants ...", file=sys.stderr, flush=True)
            r = run_inprocess(w.key, config, tmp / w.key)
            rows.append((w.title, "in-process: 8 x api.train() vs run_sweep()", r))
            if args.cli and w.key == "small":
                rows.append((w.title, "processes: 8 x `nnrun train` vs `nnrun sweep`",
                             run_cli(w.key, config, tmp / w.key)))
    print(f"- load average at end {os.getloadavg()[0]:.2f}\n")
    print("| workload | how | 8 sequential runs (s) | 8-variant sweep (s) | speed-up | "
          "programs | max final-loss diff |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for title, how, r in rows:
        diff = f"{r['diff']:.1e}" if "diff" in r else ""
        print(f"| {title} | {how} | {r['sequential']:.2f} | {r['sweep']:.2f} | "
              f"{r['sequential'] / r['sweep']:.1f}x | {r.get('groups', 1)} | {diff} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
