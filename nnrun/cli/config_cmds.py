"""The config-side commands: `config`, `check`, `schema`, `import-keras` and `export`
(registered on the `nnrun` group by `nnrun.cli`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from nnrun.cli.common import TARGET, common_options, handle_errors, write_text
from nnrun.config.yamlsrc import describe


@click.command("config")
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value (YAML syntax). Repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of YAML.")
@click.option("--origin", is_flag=True,
              help="Tag each value with where it came from: file:line:col, --set, or "
                   "default.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@handle_errors
def config_cmd(config: Path, overrides, as_json: bool, origin: bool, debug: bool) -> None:
    """Print the resolved config: extends, overrides, interpolation and defaults applied,
    canonical names (what a run saves as config.yaml)."""
    from nnrun.config.spec import dump_yaml, load_spec

    spec = load_spec(config, overrides)
    if origin:
        from nnrun.config.provenance import origin_table, origin_yaml

        if as_json:
            click.echo(json.dumps({"config": spec.resolved, "origins": origin_table(spec)},
                                  indent=2, default=list))
        else:
            click.echo(origin_yaml(spec), nl=False)
    elif as_json:
        click.echo(json.dumps(spec.resolved, indent=2, default=list))
    else:
        click.echo(dump_yaml(spec.resolved), nl=False)


@click.command()
@click.option("--output", "-o", "output_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the schema to this file (default: print it).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@handle_errors
def schema(output_path: Path | None, debug: bool) -> None:
    """The JSON Schema of a config (every section, layer and argument), for editors'
    YAML language servers: completion and checking as you type."""
    text = json.dumps(config_schema(), separators=(",", ":")) + "\n"
    if output_path is None:
        click.echo(text, nl=False)
        return
    write_text(output_path, text)
    click.echo(f"wrote {output_path}")


@click.command()
@click.argument("configs", metavar="CONFIG...", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value (YAML syntax) in every config. Repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@handle_errors
def check(configs: tuple[Path, ...], overrides, as_json: bool, debug: bool) -> None:
    """Validate configs without loading data or compiling: every problem at once,
    each as file:line:col: path: message (with the YAML line on a terminal), the
    optimizer and loss resolved, every layer's shapes checked, and the data files there
    with the columns the config names (their header line read). Exit 2 if any config
    fails, else 3 if a data file is missing or lacks a column."""
    from nnrun import api
    from nnrun.config.errors import ConfigError, DataError

    results, failed = [], 0
    snippets = sys.stdout.isatty() and not as_json
    for config in configs:
        try:
            results.append({"config": str(config), "ok": True, **api.check(config, overrides)})
        except (ConfigError, DataError) as exc:
            failed = min(failed or exc.exit_code, exc.exit_code)
            results.append({"config": str(config), "ok": False,
                            "problems": [{"where": w, "message": m} for w, m in exc.problems],
                            "text": describe(exc, snippets=snippets)})
    if as_json:
        click.echo(json.dumps([{k: v for k, v in r.items() if k != "text"} for r in results]))
    else:
        for r in results:
            if r["ok"]:
                click.echo(f"{r['config']}: ok ({r['detail']})")
            else:
                click.echo(f"{r['config']}: {len(r['problems'])} problem(s)\n{r['text']}")
    if failed:
        sys.exit(failed)


@click.command("import-keras")
@click.argument("model_file", metavar="MODEL",
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--output", "-o", "output_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the config here (default: print it).")
@click.option("--model-only", is_flag=True,
              help="Only the model: section (a file a config can name: `model: FILE`).")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of YAML.")
@click.option("--no-weights", is_flag=True,
              help="Leave the weights of a .keras / .h5 file out (the architecture only).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@handle_errors
def import_keras(model_file: Path, output_path: Path | None, model_only: bool, as_json: bool,
                 no_weights: bool, debug: bool) -> None:
    """An nnrun config from a Keras model: a model.to_json() file (Keras 1, 2 or 3), a
    .keras file or a Keras 2 .h5 file. With -o, the weights of a .keras / .h5 file become
    an nnrun checkpoint beside the config (-o model.yaml: model.h5) that model.weights
    names, so evaluate and predict use them as they are and training starts from them.
    The file is read as data: nothing in it is run, and Lambda or custom layers are
    refused."""
    from nnrun.config.errors import ConfigError
    from nnrun.config.spec import dump_yaml
    from nnrun.keras.archive import has_weights
    from nnrun.keras.model_json import config_text, imported_config

    if output_path is not None and output_path.resolve() == model_file.resolve():
        raise ConfigError(f"-o {output_path} is the Keras file itself: give the config "
                          f"another name", where="--output")

    obj, training_config = _read_keras_file(model_file)
    config, notes = imported_config(obj, source=str(model_file), name=model_file.stem,
                                    training_config=training_config,
                                    known_metric=_known_metric, check_compile=_check_compile)
    if not no_weights and has_weights(model_file):
        if output_path is None or model_only:
            notes.append("The weights were not imported: give -o FILE.yaml (a whole config) "
                         "to write them beside it")
        else:
            from nnrun.api.keras_files import import_keras_weights

            weights = import_keras_weights(model_file, config, output_path)
            config["model"]["weights"] = weights.name
            notes.insert(1, f"model.weights: {weights.name} holds the Keras model's weights")
    if model_only:
        text = json.dumps({"model": config["model"]}, indent=2) + "\n" if as_json else \
            dump_yaml({"model": config["model"]})
    else:
        text = json.dumps(config, indent=2) + "\n" if as_json else config_text(config, notes)
    if output_path is None:
        click.echo(text, nl=False)
        return
    write_text(output_path, text)
    click.echo(f"wrote {output_path}")
    for note in notes[1:]:
        click.echo(f"note: {note}", err=True)


def _read_keras_file(path: Path) -> tuple[Any, dict | None]:
    """(model config, Keras 2 training_config or None) of a JSON, .keras or .h5 file;
    JSON is parsed with json.loads only (no pickle, no code)."""
    import zipfile

    from nnrun.config.errors import ConfigError

    def parse(text: str | bytes, source: str) -> Any:
        try:
            return json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            where = f"{source}:{exc.lineno}:{exc.colno}" if isinstance(
                exc, json.JSONDecodeError) else source
            raise ConfigError(f"not a Keras model file: invalid JSON ({exc})",
                              where=where) from None

    with path.open("rb") as f:
        head = f.read(8)
    if zipfile.is_zipfile(path):   # a .keras file: config.json, metadata, weights
        with zipfile.ZipFile(path) as archive:
            try:
                info = archive.getinfo("config.json")
            except KeyError:
                raise ConfigError("a zip file without config.json: not a .keras model",
                                  where=str(path)) from None
            if info.file_size > 64 * 2 ** 20:
                raise ConfigError("config.json is over 64 MiB", where=str(path))
            return parse(archive.read(info), f"{path}:config.json"), None
    if head == b"\x89HDF\r\n\x1a\n":   # Keras 2 .h5: the config is an attribute
        from nnrun.config import h5gate

        with h5gate.open_untrusted(path, str(path), ConfigError,
                                   unreadable="not a readable HDF5 file") as f:
            model_config, training = f.attrs.get("model_config"), f.attrs.get("training_config")
        if model_config is None:
            raise ConfigError("an HDF5 file without a model_config attribute: not a Keras "
                              "model (nnrun checkpoints load with evaluate/predict)",
                              where=str(path))
        return (parse(model_config, str(path)),
                parse(training, f"{path}:training_config") if training is not None else None)
    return parse(path.read_bytes(), str(path)), None


def _known_metric(name: str) -> bool:
    from nnrun.nn import losses, metrics

    return name in metrics.METRICS or name in losses.LOSSES or name.lower() in ("accuracy",
                                                                                "acc")


def _check_compile(config: dict) -> None:
    """The optimizer and loss resolve (ConfigError otherwise)."""
    from nnrun import api
    from nnrun.config.spec import spec_from_dict

    api.check_compile(spec_from_dict(config))


@click.command()
@TARGET
@click.option("--format", "fmt", type=click.Choice(["keras-json", "keras", "onnx"]),
              default="keras-json",
              show_default=True, help="keras-json: the Keras 3 model config that "
                                      "keras.models.model_from_json builds (and compiles); "
                                      "keras: a trained run as a .keras file with its "
                                      "weights, for keras.saving.load_model; "
                                      "onnx: a trained run's model with its weights, the "
                                      "batch dimension dynamic (pip install 'nnrun[onnx]').")
@click.option("--output", "-o", "output_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write it to this file (default: print it).")
@click.option("--checkpoint", default="best", show_default=True,
              help="The weights a weighted format (keras, onnx) takes: best, last or a "
                   "checkpoint file.")
@common_options
@handle_errors
def export(target: Path, fmt: str, output_path: Path | None, checkpoint: str, overrides,
           runs_dir: Path, as_json: bool, debug: bool) -> None:
    """A config or run in another framework's format: keras-json, the JSON of Keras's
    model.to_json() with the compile settings (the architecture only); keras, a trained
    run as a .keras file with its weights; ONNX, a trained run's model with its weights
    (keras and onnx: the newest run of a config)."""
    from nnrun import api
    from nnrun.keras.model_json import to_keras_json

    if fmt == "onnx":
        _export_onnx(target, output_path, checkpoint, overrides, runs_dir, as_json)
        return
    if fmt == "keras":
        _export_keras(target, output_path, checkpoint, overrides, runs_dir, as_json)
        return
    spec, run = api.resolve_target(target, overrides, runs_root=runs_dir)
    input_shape = api.run_input_shape(spec, run)   # the shape the data gave
    if input_shape is None and not spec.model.is_graph and spec.model.input_shape is None:
        click.echo("note: the input shape comes from the data, so the Keras model is built "
                   "when first called (set model.input_shape to fix it)", err=True)
    text = json.dumps(to_keras_json(spec, input_shape=input_shape), indent=2) + "\n"
    if output_path is None:
        click.echo(text, nl=False)
        return
    write_text(output_path, text)
    if as_json:
        click.echo(json.dumps({"output": str(output_path), "format": fmt}))
    else:
        click.echo(f"wrote {output_path}")


def _export_keras(target: Path, output_path: Path | None, checkpoint: str, overrides,
                  runs_dir: Path, as_json: bool) -> None:
    """`export --format keras`: a run (a config: its newest run) as a .keras archive with
    its trained weights."""
    from nnrun import api
    from nnrun.api.keras_files import export_keras
    from nnrun.config.errors import ConfigError

    if output_path is None:
        raise ConfigError("a .keras file is a zip archive: name it with -o FILE.keras",
                          where="--output")
    spec, run = api.resolve_target(target, overrides, runs_root=runs_dir, need_run=True)
    export_keras(spec, run, output_path, checkpoint=checkpoint,
                 input_shape=api.run_input_shape(spec, run))
    if as_json:
        click.echo(json.dumps({"output": str(output_path), "format": "keras"}))
    else:
        click.echo(f"wrote {output_path}")


def _export_onnx(target: Path, output_path: Path | None, checkpoint: str, overrides,
                 runs_dir: Path, as_json: bool) -> None:
    """`export --format onnx`: the run's model and weights as ONNX (nnrun/api/onnx_export)."""
    from nnrun import api
    from nnrun.api.onnx_export import export_onnx, require_onnx
    from nnrun.config.errors import ConfigError

    if output_path is None:
        raise ConfigError("ONNX is a binary file: name it with -o FILE.onnx", where="--output")
    require_onnx()
    spec, run = api.resolve_target(target, overrides, runs_root=runs_dir, need_run=True)
    result = export_onnx(spec, run, output_path, checkpoint=checkpoint)
    if as_json:
        click.echo(json.dumps(result))
        return

    def shown(v: dict) -> str:
        dims = ", ".join("batch" if d is None else str(d) for d in v["shape"])
        return f"{v['name']} ({dims}) {v['dtype']}"
    click.echo(f"inputs: {'; '.join(shown(v) for v in result['inputs'])}")
    click.echo(f"outputs: {'; '.join(shown(v) for v in result['outputs'])}")
    if result["trained_precision"] != "float32":
        click.echo(f"note: trained with compile.precision {result['trained_precision']}; the "
                   "ONNX model computes in float32 (ONNX Runtime has no bfloat16 kernels on "
                   "CPU), so its outputs differ from nnrun's by bfloat16 rounding", err=True)
    if result["not_in_graph"]:
        files = result["not_in_graph"]
        click.echo(f"note: the run's preprocessing ({' and '.join(files)}) is not in the "
                   "ONNX graph: apply it to the inputs first, as nnrun predict does", err=True)
    click.echo(f"wrote {output_path}")


def registry_names() -> dict[str, list[str]]:
    """The names (aliases too) of every registry a config refers to, by kind: read here,
    where any wing may be imported, since config/ (which builds the schema) may not import
    nn/ or data/. Importing the registries loads no jax."""
    from nnrun.data.datasets import DATASETS
    from nnrun.nn import activations, initializers, losses, metrics, optimizer_rules, regularizers

    registries = {"activation": activations.ACTIVATIONS, "initializer": initializers.INITIALIZERS,
                  "loss": losses.LOSSES, "metric": metrics.METRICS,
                  "optimizer": optimizer_rules.OPTIMIZERS,
                  "regularizer": regularizers.REGULARIZERS,
                  "constraint": regularizers.CONSTRAINTS, "dataset": DATASETS}
    return {kind: sorted(r.names(aliases=True)) for kind, r in registries.items()}


def config_schema() -> dict[str, Any]:
    """The JSON Schema of a config (`nnrun schema`), with the registries' names."""
    from nnrun.config.json_schema import build_schema

    return build_schema(registry_names())
