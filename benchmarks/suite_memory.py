"""Wall time and peak memory of a command and every process it starts (Linux).

    python benchmarks/suite_memory.py -- bash .ci/run
    python benchmarks/suite_memory.py -- python -m pytest -m "not slow"

The test suite runs in several processes (xdist workers, `nnrun` subprocesses), so the
peak RSS of one process (`/usr/bin/time -v`) says little. Every 0.5 s this sums, over
the command's process tree, each process's PSS (proportional set size: a shared page
counts once in all, split among its sharers) and RSS (a shared library counts once per
process), and prints the peaks. Exits with the command's exit code.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time


def children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def tree_memory(root: int) -> tuple[int, int]:
    """(PSS, RSS) in kB summed over `root` and its descendants."""
    tree, todo, pss, rss = children(), [root], 0, 0
    while todo:
        pid = todo.pop()
        todo.extend(tree.get(pid, ()))
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
                    elif line.startswith("Rss:"):
                        rss += int(line.split()[1])
        except OSError:   # gone meanwhile
            pass
    return pss, rss


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print(__doc__)
        return 2
    start = time.perf_counter()
    proc = subprocess.Popen(argv)
    peak_pss = peak_rss = 0
    while proc.poll() is None:
        pss, rss = tree_memory(proc.pid)
        peak_pss, peak_rss = max(peak_pss, pss), max(peak_rss, rss)
        time.sleep(0.5)
    wall = time.perf_counter() - start
    print(f"wall {wall // 60:.0f} min {wall % 60:.0f} s; peak memory {peak_pss / 2**20:.2f} GB "
          f"PSS ({peak_rss / 2**20:.2f} GB RSS summed over processes); exit {proc.returncode}",
          file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
