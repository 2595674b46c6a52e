"""`nnrun sweep CONFIG --vary KEY=V1,V2,...`: many runs of one config, vmapped.

Kept out of nnrun/cli/main.py (which only registers it); jax is imported when it runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from nnrun.cli.common import common_options, configure_jax, handle_errors


@click.command("sweep")
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--vary", "vary", multiple=True, required=True, metavar="KEY=V1,V2,...",
              help="A config value to vary (dotted path and YAML values as --set; "
                   "fit.seed means the top-level seed). Repeatable: every combination "
                   "is one variant.")
@common_options
@click.option("--quiet", "-q", is_flag=True, help="No per-epoch output.")
@click.option("--curves", is_flag=True,
              help="Draw each variant's plots/learning_curves.png (nnrun plot RUN --curves "
                   "draws one later).")
@handle_errors
def sweep_cmd(config: Path, vary: tuple[str, ...], overrides, runs_dir: Path, as_json: bool,
              debug: bool, quiet: bool, curves: bool) -> None:
    """Train every combination of the --vary values. Variants that differ only in the
    seed and a numeric learning rate train together as one vmapped program (one compile,
    one pass over the data per epoch); others (layer sizes, batch size, ...) form groups
    trained one after another. Writes one run directory per variant and sweep.csv (mean
    ± std across seeds per setting) in runs/<name>-sweep-<stamp>/, the last line
    printed. Callbacks are refused."""
    from nnrun.runs.interrupts import Interrupts

    stream = sys.stderr if as_json else sys.stdout
    with Interrupts(stream, hard=True):   # Ctrl-C and SIGTERM: nnrun/runs/interrupts.py
        from nnrun.sweep.run import run_sweep, settings_table

        configure_jax()
        result = run_sweep(config, vary, overrides, runs_root=runs_dir,
                           argv=["nnrun", *sys.argv[1:]], stream=stream, quiet=quiet,
                           curves=curves)
    if as_json:
        click.echo(json.dumps({
            "sweep_dir": str(result.sweep_dir), "groups": result.groups,
            "variants": [{"run": str(r.run), "values": r.variant.values, "status": r.status,
                          "final": {k: v[-1] for k, v in r.history.items()}}
                         for r in result.runs],
            "settings": result.settings}, default=str))
    else:
        from rich.console import Console

        Console().print(settings_table(result))
        click.echo(str(result.sweep_dir))
    if result.exit_code:
        sys.exit(result.exit_code)
