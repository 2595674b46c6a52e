"""`nnrun sweep` end to end: variants, groups, the sweep directory and its tables.

    runs/<name>-sweep-<stamp>/
      00-seed=0-learning_rate=0.001/    one normal run directory per variant
      ...
      variants.csv    one row per variant: its values, status, final loss and metrics
      sweep.csv       one row per setting (the varied values other than the seed): the
                      mean and sample standard deviation (ddof 1) across its seeds of
                      each final value, over the variants that finished
      sweep.json      the command, the varied keys, the groups and the variants' runs
"""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from nnrun.config.errors import EXIT_DIVERGED, EXIT_INTERRUPTED
from nnrun.runs import rundir
from nnrun.sweep.variants import expand, group_variants, parse_vary


@dataclass
class SweepResult:
    sweep_dir: Path
    runs: list           # nnrun.sweep.VariantRun, in variant order
    settings: list[dict]  # the rows of sweep.csv
    keys: list[str]      # the varied keys
    groups: int
    exit_code: int = 0


def sweep_dir_for(runs_root: Path, name: str, kind: str = "sweep") -> Path:
    """A fresh runs/<name>-<kind>-<stamp>/ (a suffix -1, -2 ... when taken); kind is
    sweep or tune."""
    runs_root = Path(runs_root)
    runs_root.mkdir(parents=True, exist_ok=True)
    base = f"{name}-{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    for i in range(1000):
        path = runs_root / (base if i == 0 else f"{base}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(base)


def run_sweep(config: Path, vary: tuple[str, ...] | list[str], overrides: tuple[str, ...] = (),
              *, runs_root: Path = Path("runs"), argv: list[str] | None = None,
              stream: TextIO = sys.stdout, quiet: bool = False,
              curves: bool = False) -> SweepResult:
    """Train every combination of the `--vary` values: each group of variants that
    share their shapes and static settings as one vmapped program, groups one after
    another. Returns the sweep directory, the variants' runs and the settings' table.
    `curves`: draw each variant's plots/learning_curves.png (about 0.5 s each; `nnrun
    plot RUN --curves` draws one later)."""
    from nnrun.api.training import interrupt_guard
    from nnrun.sweep.program import train_group
    from nnrun.sweep.variants import check_sweepable

    axes = parse_vary(vary)
    variants = expand(Path(config), axes, tuple(overrides))
    for v in variants:
        check_sweepable(v.spec)
    groups = group_variants(variants)
    argv = list(argv or sys.argv)
    keys = [a.key for a in axes]
    record = {"argv": argv, "vary": {a.key: a.texts for a in axes},
              "groups": [[v.index for v in g.variants] for g in groups], "variants": []}
    runs: list = []
    with interrupt_guard(stream) as stop:
        with stop.creating_run():
            sweep_dir = sweep_dir_for(runs_root, variants[0].spec.name)
            rundir.write_json(sweep_dir / "sweep.json", record)
        for n, group in enumerate(groups, 1):
            if stop.requested:
                break
            if not quiet:
                print(f"group {n}/{len(groups)}: {len(group.variants)} variant(s) in one "
                      f"program: {', '.join(v.label for v in group.variants)}",
                      file=stream, flush=True)
            runs += train_group(group, sweep_dir, argv=argv, stream=stream, quiet=quiet,
                                stop=stop, curves=curves)
    runs.sort(key=lambda r: r.variant.index)
    record["variants"] = [{"variant": r.variant.index, "run": r.run.name,
                           "values": r.variant.values, "status": r.status} for r in runs]
    rundir.write_json(sweep_dir / "sweep.json", record)
    rundir.write_atomic(sweep_dir / "variants.csv", csv_text(variant_rows(runs, keys)))
    settings = setting_rows(runs, keys)
    rundir.write_atomic(sweep_dir / "sweep.csv", csv_text(settings))
    statuses = {r.status for r in runs}
    code = EXIT_INTERRUPTED if stop.requested or len(runs) < len(variants) else \
        EXIT_DIVERGED if "diverged" in statuses else 0
    return SweepResult(sweep_dir, runs, settings, keys, len(groups), code)


def _final_keys(runs: list) -> list[str]:
    out: list[str] = []
    for r in runs:
        out += [k for k in r.history if k not in out]
    return out


def variant_rows(runs: list, keys: list[str]) -> list[dict]:
    finals = _final_keys(runs)
    return [{"variant": r.variant.index, "run": r.run.name,
             **{k: r.variant.texts[k] for k in keys}, "status": r.status,
             "epochs": r.epochs, "best_epoch": r.best_epoch,
             **{k: (r.history[k][-1] if r.history.get(k) else None) for k in finals}}
            for r in runs]


def setting_rows(runs: list, keys: list[str]) -> list[dict]:
    """Per setting (the varied values but the seed): the number of variants, how many
    finished, and the mean and std (ddof 1; empty for one) of each final value."""
    setting_keys = [k for k in keys if k != "seed"]
    finals = _final_keys(runs)
    groups: dict[tuple, list] = {}
    for r in runs:
        groups.setdefault(tuple(r.variant.texts[k] for k in setting_keys), []).append(r)
    rows = []
    for values, members in groups.items():
        done = [r for r in members if r.status == "finished"]
        row: dict[str, Any] = {**dict(zip(setting_keys, values)), "variants": len(members),
                               "finished": len(done)}
        for k in finals:
            xs = [r.history[k][-1] for r in done if r.history.get(k)]
            mean = sum(xs) / len(xs) if xs else None
            std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) \
                if len(xs) > 1 else None
            row[f"{k}_mean"], row[f"{k}_std"] = mean, std
        rows.append(row)
    return rows


def csv_text(rows: list[dict]) -> str:
    """Rows as CSV text (CRLF line ends; floats as repr; None as empty)."""
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\r\n")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else repr(v) if isinstance(v, float) else v)
                          for k, v in row.items()} for row in rows)
    return out.getvalue()


def settings_table(result: SweepResult):
    """The rich table of sweep.csv: a row per setting, `mean ± std` per final value."""
    from rich import box
    from rich.table import Table

    setting_keys = [k for k in result.keys if k != "seed"]
    finals = [k[:-5] for k in (result.settings[0] if result.settings else {})
              if k.endswith("_mean")]
    table = Table(title=f"sweep {result.sweep_dir.name}: {len(result.runs)} variants, "
                        f"{result.groups} program(s)", box=box.SIMPLE_HEAVY)
    for k in setting_keys:
        table.add_column(k.split(".")[-1])
    table.add_column("seeds" if "seed" in result.keys else "runs", justify="right")
    for k in finals:
        table.add_column(k, justify="right")
    for row in result.settings:
        cells = [str(row[k]) for k in setting_keys]
        cells.append(f"{row['finished']}/{row['variants']}")
        for k in finals:
            mean, std = row[f"{k}_mean"], row[f"{k}_std"]
            cells.append("-" if mean is None else f"{mean:.4g}" if std is None
                         else f"{mean:.4g} ± {std:.2g}")
        table.add_row(*cells)
    return table
