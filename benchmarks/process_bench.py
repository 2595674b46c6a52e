"""Issue 21: the whole process, `nnrun train configs/mlp.yaml` against the same job as
a Keras 3 user script (JAX backend), each a fresh process, interleaved, medians.

    python benchmarks/process_bench.py [--repeat 5] [--before DIR]

The Keras script trains the founding notes' network as configs/mlp.yaml says: 1,000
xor samples (nnrun's generator, so the same data), Dense 5 relu + Dense 1 sigmoid,
SGD(0.1), mse, accuracy, batch 10, 100 epochs, validation_split 0.2, verbose 0. With
--before DIR, `python -m nnrun.cli` also runs with PYTHONPATH=DIR (an older checkout,
e.g. a git worktree) for a before/after row. NNRUN_NO_COMPILE_CACHE=1 throughout.

nnrun's modules are compiled to bytecode first (`python -m compileall`), as `pip install`
does for Keras and JAX and as Python does on a checkout's first run; with
PYTHONDONTWRITEBYTECODE set (as on this project's machine) each process would
otherwise compile nnrun's sources again, about 0.2 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERAS_SCRIPT = """
import os
os.environ["KERAS_BACKEND"] = "jax"
import keras
from nnrun.data import sources
x, y = sources.generate("xor", 1000, 0)
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(5, activation="relu"),
                          keras.layers.Dense(1, activation="sigmoid")])
model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse",
              metrics=["accuracy"])
model.fit(x, y, batch_size=10, epochs=100, validation_split=0.2, verbose=0)
"""


def timed(cmd: list[str], env: dict, cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--before", type=Path, default=None)
    args = ap.parse_args()
    env = {**os.environ, "NNRUN_NO_COMPILE_CACHE": "1"}
    env.pop("PYTHONPATH", None)
    config = str(ROOT / "configs" / "mlp.yaml")
    runners = {"nnrun train (this checkout)":
               ([sys.executable, "-m", "nnrun.cli", "train", config, "-q"], env)}
    if args.before is not None:
        runners[f"nnrun train ({args.before})"] = (
            [sys.executable, "-m", "nnrun.cli", "train", config, "-q"],
            {**env, "PYTHONPATH": str(args.before)})
    runners["Keras 3 script"] = ([sys.executable, "-c", KERAS_SCRIPT], env)
    for checkout in (ROOT, *([args.before] if args.before is not None else [])):
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(checkout) / "nnrun")],
                       check=True, capture_output=True)
    times: dict[str, list[float]] = {k: [] for k in runners}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            for name, (cmd, e) in runners.items():
                times[name].append(timed(cmd, e, Path(tmp)))
    keras_median = statistics.median(times["Keras 3 script"])
    print(f"load average at end: {os.getloadavg()[0]:.2f}\n")
    print("| process | median (s) | all (s) | vs the Keras script |")
    print("|---|---:|---|---:|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med:.2f} | {', '.join(f'{t:.2f}' for t in ts)} | "
              f"{med / keras_median:.2f}x |")


if __name__ == "__main__":
    main()
