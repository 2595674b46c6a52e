"""`nnrun export RUN --format onnx`: a trained run's model as an ONNX graph, converted
from its pure JAX forward pass (inference: Dropout off, BatchNormalization's moving
statistics) by jax2onnx, with the trained weights as initializers and a symbolic batch
dimension. The run's preprocessing (standardize, minmax, table encodings) is not part
of the graph. Needs the optional extra nnrun[onnx]."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from nnrun.api.inference import load_trained, run_input_shape
from nnrun.config.errors import ConfigError
from nnrun.config.files import atomic_write
from nnrun.config.spec import Spec
from nnrun.data.splitting import PREPROCESSING_FILE
from nnrun.data.tables import ENCODING_FILE

INSTALL = "pip install 'nnrun[onnx]'"
OPSET = 18        # ONNX Runtime 1.14 and later, and most other runtimes, read it
BATCH = "batch"   # the name of the symbolic batch dimension


def require_onnx() -> None:
    """jax2onnx, onnx and onnxruntime are importable, else a ConfigError (exit 2) saying what to
    install."""
    try:
        import jax2onnx  # noqa: F401
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401  (the export is checked with it)
    except ImportError as exc:
        raise ConfigError(f"ONNX export needs the onnx extra ({exc.name or exc} is not "
                          f"installed): {INSTALL}", where="--format onnx") from None


def export_onnx(spec: Spec, run: Path | None, output_path: Path, *,
                checkpoint: str = "best") -> dict[str, Any]:
    """Write the run's model (the weights of `checkpoint`: best, last or a path) to
    `output_path` as ONNX; returns what was written (inputs and outputs by name, with
    None for the batch dimension). A layer jax2onnx cannot convert is a located
    ConfigError naming it."""
    require_onnx()
    model, params, state = load_trained(spec, run, checkpoint, _shape_probe(spec, run))
    trained_in = model.policy.name
    if trained_in != "float32":   # ONNX Runtime's CPU kernels have no bfloat16 matmul
        params, state = _as_float32(model, (params, state))
    names = list(model.input_names)

    def forward(*xs):
        x = dict(zip(names, xs)) if spec.model.is_graph else xs[0]
        y, _ = model.apply(params, state, x, training=False)
        return y

    proto = _convert(spec, model, params, state, forward,
                     [(model.input_shapes[n], model.input_dtypes[n]) for n in names],
                     input_names=names, output_names=list(model.output_names))
    with atomic_write(Path(output_path), "write onnx") as tmp:
        Path(tmp).write_bytes(proto.SerializeToString())

    def described(values) -> list[dict]:
        return [{"name": v.name, "dtype": _dtype_name(v.type.tensor_type.elem_type),
                 "shape": [None if d.dim_param else d.dim_value
                           for d in v.type.tensor_type.shape.dim]} for v in values]

    outside = [f for f in (PREPROCESSING_FILE, ENCODING_FILE) if (run / f).is_file()] \
        if run is not None else ["preprocess:"] if spec.data.preprocess is not None else []
    return {"output": str(output_path), "format": "onnx", "opset": OPSET,
            "checkpoint": checkpoint, "inputs": described(proto.graph.input),
            "outputs": described(proto.graph.output), "not_in_graph": outside,
            "precision": "float32", "trained_precision": trained_in}


def _as_float32(model, trees):
    """The model set to compute in float32, and its weights and state as float32."""
    import jax
    import jax.numpy as jnp

    from nnrun.nn.precision import FLOAT32

    model.set_policy(FLOAT32)
    return jax.tree_util.tree_map(
        lambda a: a.astype(jnp.float32) if jnp.issubdtype(a.dtype, jnp.floating) else a,
        trees)


def _shape_probe(spec: Spec, run: Path | None):
    """Rows of the run's input shape (model.json) when the config leaves it to the data
    (with no run, build says the shape is unknown)."""
    shape = run_input_shape(spec, run)
    if shape is not None:
        return np.zeros((1, *shape), np.float32)
    if spec.model.input_shape is None and not spec.model.is_graph and run is not None:
        raise ConfigError("the run's input shape is unknown (model.json missing or "
                          "without input_shape); set model.input_shape",
                          where=str(run / "model.json"))
    return None


def _convert(spec, model, params, state, fn, inputs, *, input_names, output_names):
    """jax2onnx's ModelProto of `fn` for inputs of these (shape, dtype), batch symbolic;
    a failure is a ConfigError at the first layer that cannot convert on its own."""
    try:
        return _to_onnx(fn, inputs, input_names=input_names, output_names=output_names)
    except ImportError as exc:   # a dependency of the converter is missing
        raise ConfigError(f"ONNX export needs the onnx extra ({_reason(exc)}): {INSTALL}",
                          where="--format onnx") from None
    except Exception as exc:   # the converter raises any type
        reason = _reason(exc)
        layer = _failing_layer(model, params, state)
    if layer is None:
        raise ConfigError(f"the model cannot be exported to ONNX: {reason}",
                          where=spec.where(("model",)))
    lspec, why = layer
    raise ConfigError(f"{lspec.type} {lspec.name!r} cannot be exported to ONNX by "
                      f"jax2onnx: {why}", where=spec.where(lspec.path))


def _to_onnx(fn, inputs, **names):
    """jax2onnx's graph of `fn`, checked: ONNX Runtime loads it and, on 3 rows, gives
    what `fn` gives (_Rejected otherwise)."""
    import jax
    from jax2onnx import to_onnx

    specs = [jax.ShapeDtypeStruct((BATCH, *shape), dtype) for shape, dtype in inputs]
    quiet = [logging.getLogger(n) for n in ("onnx_ir", "jax2onnx")]
    levels = [q.level for q in quiet]
    try:   # the converter's notes on its own internals are not the user's business
        for q in quiet:
            q.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            proto = to_onnx(fn, inputs=specs, opset=OPSET, **names)
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)
    _check_runtime(proto, fn, inputs)
    return proto


def _check_runtime(proto, fn, inputs) -> None:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(proto.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
    except Exception as exc:   # ONNX Runtime's own error types
        raise _Rejected(f"ONNX Runtime rejects the converted graph: {_reason(exc)}") \
            from None
    rng = np.random.default_rng(0)
    xs = [rng.integers(0, 2, (3, *shape)).astype(dtype)      # token ids any vocabulary has
          if np.issubdtype(np.dtype(dtype), np.integer)
          else rng.normal(size=(3, *shape)).astype(dtype) for shape, dtype in inputs]
    got = session.run(None, {i.name: x for i, x in zip(session.get_inputs(), xs)})
    want = fn(*xs)
    want = want if isinstance(want, (tuple, list)) else (want,)
    for g, w in zip(got, want):
        w = np.asarray(w)
        if g.shape != w.shape or not np.allclose(g, w, rtol=1e-4, atol=1e-4):
            raise _Rejected("ONNX Runtime's outputs differ from nnrun's on a test batch")


def _failing_layer(model, params, state):
    """(layer spec, reason) of the first layer (in run order) whose inference forward
    pass alone jax2onnx cannot convert; a nested model's own layers first."""
    import jax.numpy as jnp

    for i in model.order:
        layer, lspec = model.layers[i], model.spec.layers[i]
        lparams, lstate = params.get(layer.param_name, {}), state.get(layer.param_name, {})
        for inner in getattr(layer, "_models", {}).values():
            found = _failing_layer(inner, lparams, lstate)
            if found is not None:
                return found
        refs = model.wiring[i]
        shapes = [model.node_shapes[r] if r in model.node_shapes else model.input_shapes[r]
                  for r in refs]
        dtypes = [model.input_dtypes.get(r, jnp.float32) for r in refs]

        def alone(*xs, layer=layer, lparams=lparams, lstate=lstate):
            x = list(xs) if layer.multi_input else xs[0]
            return layer.apply(lparams, lstate, x, training=False, key=None)[0]

        try:
            _to_onnx(alone, list(zip(shapes, dtypes)), input_names=None, output_names=None)
        except Exception as exc:
            return lspec, _reason(exc)
    return None


class _Rejected(Exception):
    """The converted graph fails the check with ONNX Runtime."""


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    if isinstance(exc, _Rejected):
        return text[0]
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


def _dtype_name(elem_type: int) -> str:
    import onnx

    return onnx.helper.tensor_dtype_to_np_dtype(elem_type).name
