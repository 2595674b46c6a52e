"""Keras model files with weights: a run exported as a `.keras` archive
(`nnrun export --format keras`), and a `.keras` / Keras 2 `.h5` file's weights imported as
an nnrun checkpoint (`nnrun import-keras -o`). The layout is `nnrun.keras.weights`, the
files `nnrun.keras.archive`; here the model is built and the checkpoints read or written.
"""

from __future__ import annotations

from pathlib import Path

from nnrun.config.errors import ConfigError
from nnrun.config.spec import Spec, spec_from_dict


def export_keras(spec: Spec, run: Path | None, output: Path, *, checkpoint: str = "best",
                 input_shape: list | None = None) -> None:
    """A run as a `.keras` file that `keras.saving.load_model` opens: its architecture,
    compile settings and the weights of `checkpoint` (best, last, or a file) in Keras's
    own layout. `input_shape`: the shape the data gave (the run's model.json)."""
    import jax
    import numpy as np

    from nnrun.api.inference import load_trained
    from nnrun.keras.archive import write_keras_archive
    from nnrun.keras.model_json import to_keras_json
    from nnrun.keras.weights import keras_plan

    config = to_keras_json(spec, input_shape=input_shape)   # no Keras class: located here
    x = None
    if input_shape is not None and spec.model.input_shape is None and not spec.model.is_graph:
        x = np.zeros((1, *input_shape), np.float32)
    model = dict(spec.resolved["model"])
    if input_shape is not None and "inputs" not in model:
        model.setdefault("input_shape", list(input_shape))
    _, params, state = load_trained(spec, run, checkpoint, x)
    params, state = jax.device_get((params, state))
    write_keras_archive(output, config, keras_plan(model, params, state), params, state)


def import_keras_weights(model_file: Path, config: dict, output: Path) -> Path:
    """The weights of a `.keras` / Keras 2 `.h5` file, for the model `config` imported
    from it, as an nnrun checkpoint beside `output` (the config: same name, .h5). Returns
    its path. Weights that do not fit the model are a ConfigError naming the array."""
    from nnrun.api.prepare import build
    from nnrun.keras.archive import read_keras_weights
    from nnrun.keras.weights import keras_plan
    from nnrun.train.checkpoint import save_checkpoint

    spec = spec_from_dict(config, source=str(model_file))
    if spec.model.input_shape is None and not spec.model.is_graph:
        raise ConfigError("the Keras model has no input shape, so its weights cannot be "
                          "matched (build it with keras.Input before saving)",
                          where=str(model_file))
    params, state = build(spec).param_shapes()
    groups = keras_plan(spec.resolved["model"], params, state)
    params, state = read_keras_weights(model_file, groups, params, state)
    path = weights_file(model_file, output)
    save_checkpoint(path, params=params, state=state,
                    attrs={"epoch": 0, "imported_from": str(model_file)})
    return path


def weights_file(model_file: Path, output: Path) -> Path:
    """Where import-keras puts the weights of the config `output`: beside it, same name,
    .h5 (NAME_weights.h5 when that is the config or the Keras file itself). A file there
    that an earlier import did not write is a ConfigError: nothing else is overwritten."""
    from nnrun.config.h5gate import open_untrusted

    path = Path(output).with_suffix(".h5")
    if path.resolve() in (Path(output).resolve(), Path(model_file).resolve()):
        path = path.with_name(f"{path.stem}_weights.h5")
    if path.exists():
        try:   # through the HDF5 gate, as every file nnrun opens
            with open_untrusted(path, str(path), ConfigError) as f:
                ours = "imported_from" in f.attrs
        except ConfigError:
            ours = False
        if not ours:
            raise ConfigError(f"the weights would go to {path}, which exists and is not "
                              f"weights import-keras wrote; move it, or give -o another "
                              f"name", where="--output")
    return path
