"""Issue 20: 64 trials of `nnrun tune` vs the same 64 trials trained one by one.

    python benchmarks/tune_bench.py [--trials 64] [--config configs/tune_mlp.yaml]
                                    [--skip-processes] [--seeds 0,1,2]

Every runner is a fresh process (interpreter start and imports counted), with
NNRUN_NO_COMPILE_CACHE=1, one after another on this machine:

  tune           `nnrun tune CONFIG -q` as the config says (TPE, ASHA pruning);
  tune, no pruning  the same with --set tune.pruner=none: every trial trains all its
                 epochs, as the one-by-one runners do;
  64 processes   `nnrun train CONFIG -q --set ...` for each trial of the unpruned
                 search (its trials.csv), one process after another;
  one process    one Python process training the same 64 trials one after another
                 through nnrun.api.train (compile, run directory and curves per trial).

Then TPE vs random sampling: `nnrun tune` with sampler tpe and random for each seed
in --seeds, the best metric of each (same budget: --trials trials).
Results: benchmarks/README.md, section "Issue 20: nnrun tune".
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV = {**os.environ, "NNRUN_NO_COMPILE_CACHE": "1"}
ROOT = Path(__file__).resolve().parent.parent


def tune(config: Path, runs: Path, *sets: str) -> tuple[float, dict]:
    start = time.perf_counter()
    out = subprocess.run(["nnrun", "tune", str(config), "-q", "--json", "--runs-dir",
                          str(runs), *[a for s in sets for a in ("--set", s)]],
                         env=ENV, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, json.loads(out.stdout)


def trial_sets(row: dict, keys: list[str]) -> list[str]:
    return [f"{k}={row[k]}" for k in keys]


ONE_PROCESS = """
import sys, json
from nnrun import api
config, root, sets = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
for s in sets:
    api.train(api.load_checked(config, tuple(s)), runs_root=root, quiet=True)
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "tune_mlp.yaml")
    ap.add_argument("--trials", type=int, default=64)
    ap.add_argument("--skip-processes", action="store_true")
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tune-bench-"))
    n = f"tune.trials={args.trials}"
    rows = []
    seconds, res = tune(args.config, tmp / "a", n)
    rows.append(("nnrun tune (TPE, ASHA)", seconds, res["counts"]))
    seconds_np, res_np = tune(args.config, tmp / "b", n, "tune.pruner=none")
    rows.append(("nnrun tune (TPE, no pruning)", seconds_np, res_np["counts"]))
    trials = list(csv.DictReader(open(Path(res_np["tune_dir"]) / "trials.csv")))
    keys = [k for k in trials[0] if k not in ("trial", "state", res_np["metric"], "epochs",
                                              "best_epoch", "seconds", "run", "note")]
    sets = [trial_sets(r, keys) for r in trials]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", ONE_PROCESS, str(args.config), str(tmp / "c"),
                    json.dumps(sets)], env=ENV, check=True, capture_output=True)
    rows.append((f"one process, {len(sets)} trials one after another",
                 time.perf_counter() - start, None))
    if not args.skip_processes:
        start = time.perf_counter()
        for s in sets:
            subprocess.run(["nnrun", "train", str(args.config), "-q", "--runs-dir",
                            str(tmp / "d"), *[a for x in s for a in ("--set", x)]],
                           env=ENV, check=True, capture_output=True)
        rows.append((f"{len(sets)} `nnrun train` processes", time.perf_counter() - start,
                     None))
    print("| how | wall (s) | tune (ASHA) faster by | tune (no pruning) faster by | trials |")
    print("|---|---:|---:|---:|---|")
    for name, secs, counts in rows:
        what = "" if counts is None else \
            f"{counts['complete']} complete, {counts['pruned']} pruned, {counts['failed']} failed"
        print(f"| {name} | {secs:.1f} | {secs / rows[0][1]:.1f}x | {secs / rows[1][1]:.1f}x "
              f"| {what} |")
    print()
    print(f"| sampler | seed | best {res['metric']} | trials complete / pruned | wall (s) |")
    print("|---|---:|---:|---|---:|")
    for seed in [int(s) for s in args.seeds.split(",") if s]:
        for sampler in ("tpe", "random"):
            secs, r = tune(args.config, tmp / f"s-{sampler}-{seed}", n,
                           f"tune.sampler={sampler}", f"tune.seed={seed}")
            best = r["best"]["value"] if r["best"] else float("nan")
            c = r["counts"]
            print(f"| {sampler} | {seed} | {best:.6f} | {c['complete']} / {c['pruned']} "
                  f"| {secs:.1f} |", flush=True)
    print(f"\n(run directories under {tmp})")


if __name__ == "__main__":
    main()
