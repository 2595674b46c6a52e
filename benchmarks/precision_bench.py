"""float32 vs mixed (vs bfloat16) training throughput on the MNIST-sized MLP (issue 8).

    python benchmarks/precision_bench.py [--epochs 3] [--repeat 2] [--bfloat16]

The workload is bench.py's "mlp" (784-512-512-10, Dropout 0.2, Adam, batch 128, 60,000
random float32 rows, 10 classes) through `nnrun.api.train`, once per repeat with each
`compile.precision`. samples/s is steady state (epochs after the first); the best of
`--repeat` runs is kept. Then `--rounds` rounds of one epoch per precision, the
precisions interleaved in each round (a Fitter per precision, compiled first), report
the median epoch: load that drifts on a shared machine hits every precision alike.
On a CPU, bfloat16 is not expected to be faster (no bfloat16
matrix units on most CPUs: XLA converts); the number is recorded, not targeted.
Results: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("NNRUN_NO_COMPILE_CACHE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import _best, machine_info, mlp_workload, time_nnrun_train  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--bfloat16", action="store_true", help="time the bfloat16 policy too")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved epochs (0: none)")
    args = parser.parse_args(argv)
    import jax

    jax.numpy.zeros(1).block_until_ready()   # backend start-up outside any timing
    precisions = ("float32", "mixed", "bfloat16") if args.bfloat16 else ("float32", "mixed")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        w = mlp_workload(workdir, args.epochs)
        for _ in range(args.repeat):
            for precision in precisions:
                w.cfg["compile"]["precision"] = precision
                t = time_nnrun_train(w, workdir)
                t.name = precision
                results[precision] = (_best(results[precision], t) if precision in results
                                      else t)
        medians = interleaved(w, precisions, args.rounds) if args.rounds else {}
    print("\n".join(machine_info()))
    print(f"\nmlp: 784-512-512-10, Adam, batch 128, {len(w.x):,} rows, {args.epochs} epochs, "
          f"best of {args.repeat}, device {jax.devices()[0].platform}\n")
    print("| compile.precision | samples/s (steady) | vs float32 | first epoch (s) | "
          "total (s) | final loss |")
    print("|---|---:|---:|---:|---:|---:|")
    base = results["float32"].samples_per_s
    for precision in precisions:
        t = results[precision]
        print(f"| {precision} | {t.samples_per_s:,.0f} | {t.samples_per_s / base:.2f}x | "
              f"{t.first_epoch:.2f} | {t.total:.2f} | {t.note.split(';')[0][5:]} |")
    if medians:
        print(f"\ninterleaved: median of {args.rounds} epochs per precision (compiles excluded)\n")
        print("| compile.precision | epoch (s) | samples/s | vs float32 |")
        print("|---|---:|---:|---:|")
        for precision in precisions:
            sec = medians[precision]
            print(f"| {precision} | {sec:.2f} | {len(w.x) / sec:,.0f} | "
                  f"{medians['float32'] / sec:.2f}x |")
    return 0


def interleaved(w, precisions, rounds: int) -> dict[str, float]:
    """Median seconds of one training epoch per precision, the precisions alternating."""
    import statistics

    import jax

    from nnrun import api
    from nnrun.config.spec import spec_from_dict
    from nnrun.train.epoch import resolve_objective
    from nnrun.train.fitter import Fitter

    fits = {}
    for precision in precisions:
        w.cfg["compile"]["precision"] = precision
        spec = spec_from_dict(w.cfg)
        model = api.build(spec)
        obj = resolve_objective(spec.compile.loss, (), (2,), (2, *model.output_shape))
        fitter = Fitter(model, obj, spec.compile.optimizer, seed=0, batch_size=128,
                        shuffle=True, x=w.x, y=w.y)
        ts, _ = fitter.run_epoch(fitter.initial_state())   # compiles
        fits[precision] = (fitter, ts)
    times: dict[str, list[float]] = {p: [] for p in precisions}
    for _ in range(rounds):
        for precision in precisions:
            fitter, ts = fits[precision]
            ts, res = fitter.run_epoch(ts)
            jax.block_until_ready(ts)
            times[precision].append(res.seconds)
            fits[precision] = (fitter, ts)
    return {p: statistics.median(t) for p, t in times.items()}


if __name__ == "__main__":
    sys.exit(main())
