"""How long `nnrun check` takes, cold (a fresh process each time, as a shell script or
an editor runs it), on every example config; and, for scale, `import jax` (which the
check does not do: names and shapes are resolved in pure Python).

    python benchmarks/check_time.py [--repeat 5]

Prints a Markdown table (the median of `--repeat` runs of each command).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A config with a typo: validation reports it; the optimizer, loss and layer names are
# resolved too, so that every problem is reported at once.
TYPO = """\
model:
  input_shape: [2]
  layers: [{Dense: {unitz: 8}}, {Dense: {units: 1}}]
compile: {optimizer: adam, loss: mse}
"""


def wall(argv: list[str], repeat: int, ok: tuple[int, ...] = (0,)) -> float:
    """Median wall-clock seconds of running argv."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
        times.append(time.perf_counter() - start)
        if proc.returncode not in ok:
            raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    py = [sys.executable]
    rows = [("python -c pass (interpreter start)", wall([*py, "-c", "pass"], args.repeat)),
            ("python -c 'import jax'", wall([*py, "-c", "import jax"], args.repeat)),
            ("nnrun --help", wall([*py, "-m", "nnrun.cli", "--help"], args.repeat))]
    with tempfile.TemporaryDirectory() as tmp:
        typo = Path(tmp) / "typo.yaml"
        typo.write_text(TYPO)
        rows.append(("nnrun check, a config with a typo (names are still resolved)",
                     wall([*py, "-m", "nnrun.cli", "check", str(typo)], args.repeat, ok=(2,))))
    rows.append(("nnrun config configs/mlp.yaml (read, compose, validate: no jax)",
                 wall([*py, "-m", "nnrun.cli", "config", "configs/mlp.yaml"], args.repeat)))
    for config in sorted((ROOT / "configs").glob("*.yaml")):
        rows.append((f"nnrun check configs/{config.name}",
                     wall([*py, "-m", "nnrun.cli", "check", f"configs/{config.name}"],
                          args.repeat)))
    print("| command | median wall time (s) |\n|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
