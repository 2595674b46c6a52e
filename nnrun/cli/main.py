"""The `nnrun` command line: a thin click shell over `nnrun.api`.

Errors become one or a few lines on stderr and the exit codes of DESIGN.md
section 5; a traceback only with --debug (`nnrun.cli.common`). The training-side
commands are here; the config-side ones in `nnrun.cli.config_cmds`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import click

from nnrun import __version__
from nnrun.cli.common import (
    CHECKPOINT,
    TARGET,
    PipeSafe,
    common_options,
    configure_jax,
    handle_errors,
    pause_gc,
)
from nnrun.cli.config_cmds import check, config_cmd, export, import_keras, schema
from nnrun.cli.runs_cmds import diff_cmd, runs_cmd
from nnrun.cli.sweep_cmd import sweep_cmd
from nnrun.cli.tune_cmd import tune_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nnrun")
def main() -> None:
    """nnrun: train Keras-style neural networks declared in one YAML file."""


@main.command()
@click.argument("config", required=False,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@common_options
@click.option("--quiet", "-q", is_flag=True, help="No per-epoch output.")
@click.option("--resume", "resume", metavar="RUN",
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Continue the stopped run RUN from its checkpoints/last.h5, exactly as "
                   "if it had not stopped (its own config unless CONFIG is given).")
@click.option("--allow-config-change", is_flag=True,
              help="With --resume: accept a config (CONFIG or --set) other than the run's.")
@handle_errors
def train(config: Path | None, overrides, runs_dir: Path, as_json: bool, debug: bool,
          quiet: bool, resume: Path | None, allow_config_change: bool) -> None:
    """Train CONFIG (or --resume RUN); the last line printed is the run directory."""
    from nnrun.config.errors import ConfigError
    from nnrun.runs.interrupts import Interrupts

    stream = sys.stderr if as_json else sys.stdout
    # Ctrl-C and SIGTERM from the first moment (nnrun/runs/interrupts.py)
    with Interrupts(stream, hard=True):
        from nnrun import api

        if config is None and resume is None:
            raise ConfigError("Missing argument 'CONFIG' (or give --resume RUN)",
                              where="nnrun train")
        if resume is not None and not (resume / "config.yaml").is_file():
            raise ConfigError("not a run directory (no config.yaml in it)", where=str(resume))
        spec = api.load_checked(config if config is not None else resume / "config.yaml",
                                overrides)
        configure_jax(spec.fit.devices)
        result = api.train(spec, runs_root=runs_dir, argv=["nnrun", *sys.argv[1:]],
                           stream=stream, quiet=quiet, resume=resume,
                           allow_config_change=allow_config_change)
    if as_json:
        click.echo(json.dumps(result.to_json()))
    else:
        if quiet and result.status != "finished":
            click.echo(f"training {result.status}: {result.stop_reason}", err=True)
        elif not quiet:   # how it ended, the best epoch, what to run next
            from nnrun.runs.finish import finish_lines

            for line in finish_lines(result.to_json()):
                click.echo(line, file=stream)
        click.echo(str(result.run_dir))
    if result.exit_code:
        sys.exit(result.exit_code)


@main.command()
@TARGET
@common_options
@CHECKPOINT
@handle_errors
def evaluate(target: Path, overrides, runs_dir: Path, as_json: bool, debug: bool,
             checkpoint: str) -> None:
    """Loss and metrics of a trained run (a run directory, or a config's newest run; a
    config with model.weights and no run yet: those weights, e.g. an imported Keras
    model's)."""
    from nnrun import api

    spec, run = api.resolve_target(target, overrides, runs_root=runs_dir, need_run=True)
    configure_jax()
    result = api.evaluate(spec, run, checkpoint=checkpoint)
    if as_json:
        click.echo(json.dumps(result))
        return
    from rich.console import Console

    from nnrun.runs.report import data_line, metrics_table

    values = {k: v for k, v in result.items()
              if k not in ("run", "source", "data", "classification", "checkpoint_epoch",
                           "weights")}
    if result["checkpoint"] == "model.weights":   # a config with no run
        values["checkpoint"] = f"model.weights {result['weights']} (no run yet)"
    elif result.get("checkpoint_epoch") is not None:   # which epoch's weights were evaluated
        after = "after " if result["checkpoint"] == "last" else ""
        values["checkpoint"] = f"{result['checkpoint']} ({after}epoch {result['checkpoint_epoch']})"
    console = Console()
    console.print(data_line(result, console.width), no_wrap=True, overflow="ignore")
    console.print(metrics_table(values))
    if "classification" in result:
        from nnrun.runs.report import classification_tables

        for table in classification_tables(result["classification"]):
            console.print(table)


@main.command()
@TARGET
@click.option("--input", "-i", "input_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Features, one row per sample: .csv/.tsv (encoded as the run's "
                   "training table was: categories, fills, column order), .npy or .npz.")
@click.option("--header/--no-header", "header", default=None,
              help="Whether the .csv/.tsv input's line 1 is a header of column names "
                   "[default: as the run's training table; a header for a run trained on "
                   "other data].")
@click.option("--output", "-o", "outputs", required=True, multiple=True,
              help="Where to write predictions: a .csv, .npy, .npz or .h5 file. Given again with a "
                   "layer's (or nested model's) name (no file extension), writes that "
                   "layer's output instead, e.g. --output encoder --output codes.npz; "
                   "several names need a .npz.")
@click.option("--top-k", "top_k", type=int, default=None, metavar="K",
              help="Also the K most probable classes of each row and their probabilities "
                   "(columns top1..topK, top1_p..topK_p in a .csv; arrays top_k, top_k_p "
                   "in a .npz or .h5). Classifiers only.")
@common_options
@CHECKPOINT
@handle_errors
def predict(target: Path, input_path: Path, header: bool | None, outputs: tuple[str, ...],
            top_k: int | None, overrides, runs_dir: Path, as_json: bool, debug: bool,
            checkpoint: str) -> None:
    """Predict with a trained run (a run directory, or a config's newest run; a config
    with model.weights and no run yet: those weights); writes probabilities and, for
    classifiers, the class."""
    from nnrun import api

    files = [o for o in outputs if Path(o).suffix or "/" in o or os.sep in o]
    layers = tuple(o for o in outputs if o not in files)
    if len(files) != 1:
        from nnrun.config.errors import ConfigError

        raise ConfigError(f"give one output file (.csv, .npy, .npz or .h5) besides any layer "
                          f"names, got {len(files)}: {', '.join(files) or 'none'}",
                          where="--output")
    spec, run = api.resolve_target(target, overrides, runs_root=runs_dir, need_run=True)
    configure_jax()
    result = api.predict(spec, run, input_path, Path(files[0]), checkpoint=checkpoint,
                         layers=layers, top_k=top_k, header=header)
    if as_json:
        click.echo(json.dumps(result))
    else:
        rows = {True: f", one per row of {input_path} below its header line",
                False: f", one per row of {input_path} (no header line)"
                }.get(result.get("header"), "")
        click.echo(f"wrote {result['rows']} predictions ({result['task']}) to "
                   f"{result['output']}{rows}")
        if result["run"] is None and checkpoint == "best":
            click.echo(f"note: {spec.name!r} has no run yet: these are the weights of its "
                       f"model.weights, {spec.model.weights}", err=True)


@main.command()
@TARGET
@click.option("--expand-nested", is_flag=True,
              help="List a nested model's layers under its row.")
@common_options
@handle_errors
def summary(target: Path, expand_nested: bool, overrides, runs_dir: Path, as_json: bool,
            debug: bool) -> None:
    """The Keras-style model table of a config or run; no data is loaded."""
    from nnrun import api

    spec, _ = api.resolve_target(target, overrides, runs_root=runs_dir)
    if as_json:
        click.echo(json.dumps(api.summary_dict(spec)))
        return
    click.echo(api.summary(spec, expand_nested=expand_nested), nl=False)


@main.command()
@TARGET
@click.option("--output", "-o", "output_path", type=click.Path(path_type=Path),
              help="The diagram: .png, .svg, .pdf (drawn with matplotlib) or .dot (Graphviz). "
                   "With --curves, default RUN/plots/learning_curves.png.")
@click.option("--curves", is_flag=True,
              help="Draw a run's learning curves (loss and metrics per epoch, train and "
                   "validation, from its metrics.csv) instead of the model.")
@click.option("--rankdir", type=click.Choice(["TB", "LR"]), default="TB", show_default=True,
              help="Top to bottom, or left to right.")
@click.option("--show-shapes/--no-shapes", default=True, show_default=True,
              help="Input and output shapes in each box.")
@common_options
@handle_errors
def plot(target: Path, output_path: Path | None, curves: bool, rankdir: str,
         show_shapes: bool, overrides, runs_dir: Path, as_json: bool, debug: bool) -> None:
    """Draw the model (boxes: layer name, type, activation, parameters, shapes; arrows:
    connections; a long model wraps into columns), as the founding notes'
    plot(model, to_file='model.png'); with --curves, a run's learning curves (a log axis
    for a quantity spanning decades, the best epoch and an early stop marked)."""
    from nnrun import api
    from nnrun.config.errors import ConfigError

    if curves:
        from nnrun.runs.charts import plot_learning_curves

        spec, run = api.resolve_target(target, overrides, runs_root=runs_dir, need_run=True)
        if run is None:
            raise ConfigError(f"no run of {spec.name!r} in {runs_dir}/ (model.weights has no "
                              f"learning curves); train it first", where=str(target))
        path = plot_learning_curves(run, output_path)
    elif output_path is None:
        raise ConfigError("give the diagram's file: --output model.png (or --curves for a "
                          "run's learning curves)", where="--output")
    else:
        from nnrun.runs.diagram import plot_model

        spec, _ = api.resolve_target(target, overrides, runs_root=runs_dir)
        path = plot_model(api.summary_model(spec), output_path, rankdir=rankdir,
                          show_shapes=show_shapes, name=spec.name)
    if as_json:
        click.echo(json.dumps({"output": str(path)}))
    else:
        click.echo(f"wrote {path}")


for command in (config_cmd, check, schema, import_keras, export, runs_cmd, diff_cmd, sweep_cmd,
                tune_cmd):
    main.add_command(command)


if __name__ == "__main__":  # pragma: no cover
    main()


def entry() -> None:
    """The `nnrun` console script: `main`, then the process's exit, at once: every file
    of the command is written and closed when `main` returns (each replaced or appended
    whole), so the interpreter's teardown (about 0.4 s after a training: JAX's
    backends, the modules' finalizers) is skipped with os._exit once the output and
    logging are flushed (issue 21). That also abandons a compile still running in a
    background thread (an error before training used it), which the interpreter's
    shutdown would wait for, or abort in (exit 134) when the thread wakes in a
    finalizing interpreter. Output to a reader that has gone is dropped
    (common.PipeSafe). A training starts the learning curves' helper process first
    (nnrun/runs/curves_helper.py), and pauses garbage collection until JAX is
    imported (common.pause_gc)."""
    sys.stdout, sys.stderr = PipeSafe(sys.stdout), PipeSafe(sys.stderr)
    if sys.argv[1:2] == ["train"] and not {"-h", "--help"} & set(sys.argv):
        from nnrun.runs import curves_helper

        curves_helper.start()
        pause_gc()   # until configure_jax, after the config's check and JAX's import
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    code = int(code or 0)
    jax = sys.modules.get("jax")
    if jax is not None and getattr(jax, "distributed", None) is not None:
        try:   # several processes: leave the distributed system as its teardown would
            if jax.distributed.is_initialized():
                jax.distributed.shutdown()
        except Exception:  # noqa: BLE001 - the exit goes on
            pass
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a stream that cannot flush must not keep us
            pass
    os._exit(code)
