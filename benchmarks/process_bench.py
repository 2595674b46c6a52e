"""Issue 21: the whole process, `nnrun train configs/mlp.yaml` against the same job as
a Keras 3 user script (JAX backend), each a fresh process, interleaved, medians.

    python benchmarks/process_bench.py [--repeat 5] [--before DIR] [--workload mlp]

The Keras script trains the founding notes' network as configs/mlp.yaml says: 1,000
xor samples (nnrun's generator, so the same data), Dense 5 relu + Dense 1 sigmoid,
SGD(0.1), mse, accuracy, batch 10, 100 epochs, validation_split 0.2, verbose 0. With
--before DIR, `python -m nnrun.cli` also runs with PYTHONPATH=DIR (an older checkout,
e.g. a git worktree) for a before/after row. NNRUN_NO_COMPILE_CACHE=1 throughout.

With --workload mlp, the MNIST-sized MLP of bench.py instead: 60,000 x 784 random
float32 rows and 10 classes in an .npz file both read, Dense 512 relu, Dropout 0.2,
Dense 512 relu, Dropout 0.2, Dense 10 softmax, Adam, sparse_categorical_crossentropy,
batch 128, 3 epochs, no validation.

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


MNIST_SCRIPT = """
import os
os.environ["KERAS_BACKEND"] = "jax"
import numpy as np
import keras
data = np.load("mnist.npz")
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(512, activation="relu"),
                          keras.layers.Dropout(0.2), keras.layers.Dense(512, activation="relu"),
                          keras.layers.Dropout(0.2), keras.layers.Dense(10, activation="softmax")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
model.fit(data["x"], data["y"], batch_size=128, epochs=3, verbose=0)
"""

MNIST_CONFIG = """
name: mnist-sized
seed: 0
data: {train: {path: mnist.npz, x: x, y: y}}
model:
  input_shape: [784]
  layers:
    - Dense: {units: 512, activation: relu}
    - Dropout: 0.2
    - Dense: {units: 512, activation: relu}
    - Dropout: 0.2
    - Dense: {units: 10, activation: softmax}
compile: {optimizer: adam, loss: sparse_categorical_crossentropy}
fit: {batch_size: 128, epochs: 3}
"""


def mnist_files(folder: Path) -> str:
    """mnist.npz and mnist.yaml in `folder`; returns the config's path."""
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(folder / "mnist.npz", x=rng.random((60_000, 784), dtype=np.float32),
             y=rng.integers(0, 10, size=60_000).astype(np.int32))
    (folder / "mnist.yaml").write_text(MNIST_CONFIG)
    return str(folder / "mnist.yaml")


def timed(cmd: list[str], env: dict, cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--before", type=Path, default=None)
    ap.add_argument("--workload", choices=("founding", "mlp"), default="founding")
    args = ap.parse_args()
    env = {**os.environ, "NNRUN_NO_COMPILE_CACHE": "1"}
    env.pop("PYTHONPATH", None)
    tmp_dir = tempfile.TemporaryDirectory()
    tmp = Path(tmp_dir.name)
    config = str(ROOT / "configs" / "mlp.yaml") if args.workload == "founding" else \
        mnist_files(tmp)
    script = KERAS_SCRIPT if args.workload == "founding" else MNIST_SCRIPT
    runners = {"nnrun train (this checkout)":
               ([sys.executable, "-m", "nnrun.cli", "train", config, "-q"], env)}
    if args.before is not None:
        runners[f"nnrun train ({args.before})"] = (
            [sys.executable, "-m", "nnrun.cli", "train", config, "-q"],
            {**env, "PYTHONPATH": str(args.before)})
    runners["Keras 3 script"] = ([sys.executable, "-c", script], env)
    for checkout in (ROOT, *([args.before] if args.before is not None else [])):
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(checkout) / "nnrun")],
                       check=True, capture_output=True)
    times: dict[str, list[float]] = {k: [] for k in runners}
    with tmp_dir:
        for _ in range(args.repeat):
            for name, (cmd, e) in runners.items():
                times[name].append(timed(cmd, e, tmp))
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
