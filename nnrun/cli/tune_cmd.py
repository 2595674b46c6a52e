"""`nnrun tune CONFIG`: the search the config's tune: section declares.

Kept out of nnrun/cli/main.py (which only registers it); jax and optuna are imported
when it runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from nnrun.cli.common import common_options, configure_jax, handle_errors


@click.command("tune")
@click.argument("config", required=False,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--resume", type=click.Path(exists=True, file_okay=False, path_type=Path),
              metavar="DIR", help="Go on with an interrupted search in its tune directory "
                                  "(the config and --set it started with).")
@click.option("--keep", type=click.IntRange(min=0), default=None,
              help="Keep the run directories of the best K finished trials (default 3; "
                   "the others are deleted as the search goes).")
@common_options
@click.option("--quiet", "-q", is_flag=True, help="No per-epoch output.")
@handle_errors
def tune_cmd(config: Path | None, resume: Path | None, keep: int | None, overrides,
             runs_dir: Path, as_json: bool, debug: bool, quiet: bool) -> None:
    """Search the config's tune.space (optuna: tpe, random or grid sampling; asha or
    median pruning). Each batch of trials is grouped by compiled shapes, and each group
    trains as one vmapped program. Writes runs/<name>-tune-<stamp>/ (study.db,
    trials.csv, best.yaml, plots/, the best trials' run directories), the last line
    printed. Ctrl-C stops after the epoch (exit 130); --resume DIR goes on."""
    from nnrun.config.errors import ConfigError
    from nnrun.runs.interrupts import Interrupts

    if config is None and resume is None:
        raise ConfigError("give a CONFIG to search, or --resume DIR", where="nnrun tune")
    stream = sys.stderr if as_json else sys.stdout
    with Interrupts(stream, hard=True):   # Ctrl-C and SIGTERM: nnrun/runs/interrupts.py
        from nnrun.tune.results import table
        from nnrun.tune.search import run_tune

        configure_jax()
        result = run_tune(config, tuple(overrides), resume=resume, keep=keep,
                          runs_root=runs_dir, argv=["nnrun", *sys.argv[1:]], stream=stream,
                          quiet=quiet)
    if as_json:
        click.echo(json.dumps({"tune_dir": str(result.tune_dir), "metric": result.metric,
                               "mode": result.mode, "best": result.best,
                               "counts": result.counts, "trials": result.rows}, default=str))
    else:
        from nnrun.cli.runs_cmds import _console

        _console().print(table(result))   # on a pipe: wide enough, nothing cut
        if result.best is not None:
            click.echo(f"best: trial {result.best['trial']}, {result.metric} "
                       f"{result.best['value']:.6g}; best.yaml has its config")
        else:
            click.echo("no trial finished")
        click.echo(str(result.tune_dir))
    if result.exit_code:
        sys.exit(result.exit_code)
