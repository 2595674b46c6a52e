"""How `nnrun check` time grows with the size of the model (issue 17, item 6): a
Sequential stack and a graph (each layer reading the one before, listed last-first so
the order has to be worked out) of N Dense layers, one fresh process per check.

    python benchmarks/check_scaling.py [--layers 1000 5000 20000] [--timeout 120]

Prints a Markdown table of wall seconds ("> T" where a check did not finish in T s;
the exit code and the start of the message where it failed).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def sequential(n: int) -> str:
    layers = "".join("    - Dense: {units: 2}\n" for _ in range(n))
    return (f"model:\n  input_shape: [2]\n  layers:\n{layers}"
            "compile: {optimizer: sgd, loss: mse}\n")


def graph(n: int) -> str:
    def layer(i: int) -> str:
        source = "x" if i == 0 else f"d{i - 1}"
        return f"    - Dense: {{name: d{i}, units: 2, inputs: {source}}}\n"

    layers = "".join(layer(i) for i in reversed(range(n)))
    return (f"model:\n  inputs: {{x: [2]}}\n  outputs: [d{n - 1}]\n  layers:\n{layers}"
            "compile: {optimizer: sgd, loss: mse}\n")


def seconds(text: str, folder: Path, timeout: float) -> str:
    path = folder / "big.yaml"
    path.write_text(text)
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "nnrun.cli", "check", str(path)],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"> {timeout:g}"
    took = time.perf_counter() - start
    if proc.returncode != 0:   # the old code's RecursionError, for one
        return f"exit {proc.returncode} after {took:.2f}: {proc.stderr.strip()[:60]}"
    return f"{took:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    print("| layers | Sequential (s) | graph, listed last-first (s) |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.layers:
            print(f"| {n} | {seconds(sequential(n), Path(tmp), args.timeout)} | "
                  f"{seconds(graph(n), Path(tmp), args.timeout)} |", flush=True)


if __name__ == "__main__":
    main()
