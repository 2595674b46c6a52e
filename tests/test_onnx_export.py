"""`nnrun export RUN --format onnx` (issue 19): every example config, trained one epoch
on a little data, exports; ONNX Runtime's outputs equal nnrun's predict program's to
1e-5 at batch sizes 1 and 37 (the batch dimension is symbolic); a missing extra, a
missing -o and a layer the converter cannot take are located errors (exit 2)."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from trained_examples import CONFIGS, small_sets

from nnrun.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
MISSING = [m for m in ("jax2onnx", "onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
needs_onnx = pytest.mark.skipif(bool(MISSING), reason=f"the onnx extra is not installed "
                                 f"({', '.join(MISSING)}): pip install -e '.[onnx]'")


def _train(config: Path, runs: Path) -> Path:
    result = CliRunner().invoke(main, ["train", str(config), "--runs-dir", str(runs),
                                       *small_sets(config)])
    assert result.exit_code == 0, result.output
    return runs / "latest"


def _inputs(model, batch: int, rng) -> dict[str, np.ndarray]:
    """Random rows for each input: token ids (zero-padded tails, for the masks) or floats."""
    feeds = {}
    for name in model.input_names:
        shape, dtype = (batch, *model.input_shapes[name]), np.dtype(model.input_dtypes[name])
        if np.issubdtype(dtype, np.integer):
            x = rng.integers(1, 50, shape)
            for row, keep in zip(x, rng.integers(1, shape[1] + 1, batch)):
                row[keep:] = 0
            feeds[name] = x.astype(dtype)
        else:
            feeds[name] = rng.normal(size=shape).astype(dtype)
    return feeds


@needs_onnx
@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_example_exports_and_onnxruntime_agrees(config, tmp_path, example_run):
    import onnxruntime as ort

    from nnrun.api import resolve_target
    from nnrun.api.inference import load_trained
    from nnrun.api.onnx_export import _shape_probe
    from nnrun.train.epoch import make_predict

    run = example_run(config.stem)
    out = tmp_path / "model.onnx"
    result = CliRunner().invoke(main, ["export", str(run), "--format", "onnx", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    spec, run = resolve_target(run)
    model, params, state = load_trained(spec, run, "best", _shape_probe(spec, run))
    assert [i.name for i in session.get_inputs()] == model.input_names
    assert [o.name for o in session.get_outputs()] == model.output_names
    assert all(isinstance(i.shape[0], str) for i in session.get_inputs())   # symbolic batch
    rng = np.random.default_rng(0)
    for batch in (1, 37):
        feeds = _inputs(model, batch, rng)
        x = feeds if spec.model.is_graph else feeds[model.input_names[0]]
        want = make_predict(model, batch, spec.fit.batch_size)(params, state, x)
        want = want if isinstance(want, tuple) else (want,)
        got = session.run(None, feeds)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, np.asarray(w), rtol=0, atol=1e-5)


@pytest.fixture
def mlp_run(example_run):
    return example_run("mlp")


def test_missing_extra_says_what_to_install(mlp_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "jax2onnx", None)   # import jax2onnx -> ImportError
    result = CliRunner().invoke(main, ["export", str(mlp_run), "--format", "onnx",
                                       "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2
    assert "pip install 'nnrun[onnx]'" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "m.onnx").exists()


@needs_onnx
def test_a_missing_converter_dependency_is_not_blamed_on_a_layer(mlp_run, tmp_path,
                                                                  monkeypatch):
    from nnrun.api import onnx_export

    def broken(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'flax'", name="flax")

    monkeypatch.setattr(onnx_export, "_to_onnx", broken)
    result = CliRunner().invoke(main, ["export", str(mlp_run), "--format", "onnx",
                                       "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2
    assert "flax" in result.output and "pip install 'nnrun[onnx]'" in result.output
    assert "cannot be exported" not in result.output


def test_onnx_needs_an_output_file(mlp_run):
    result = CliRunner().invoke(main, ["export", str(mlp_run), "--format", "onnx"])
    assert result.exit_code == 2
    assert "--output" in result.output and "-o FILE.onnx" in result.output


UNCONVERTIBLE = {   # the converter has no ONNX for it / ONNX Runtime rejects what it gives
    "Conv2DTranspose": "{name: odd, filters: 2, kernel_size: 3, strides: 2}",
    "ReLU": "{name: odd, max_value: 1.5, negative_slope: 0.1, threshold: 0.2}",
}


@needs_onnx
@pytest.mark.parametrize("layer", sorted(UNCONVERTIBLE))
def test_a_layer_that_cannot_convert_is_named(layer, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"""name: unconvertible
data: {{train: {{builtin: shapes, samples: 32}}}}
model:
  input_shape: [16, 16, 1]
  layers:
    - Conv2D: {{filters: 2, kernel_size: 3}}
    - {layer}: {UNCONVERTIBLE[layer]}
    - Flatten: {{}}
    - Dense: {{units: 3, activation: softmax}}
compile: {{optimizer: adam, loss: sparse_categorical_crossentropy}}
fit: {{epochs: 1, batch_size: 32}}
""")
    run = _train(config, tmp_path / "runs")
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(main, ["export", str(run), "--format", "onnx", "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert f"{layer} 'odd' cannot be exported to ONNX" in result.output
    assert "config.yaml:" in result.output and "model.layers[1]" in result.output
    assert "Traceback" not in result.output and not out.exists()


@needs_onnx
def test_a_mixed_precision_run_exports_computing_in_float32(tmp_path, example_run):
    """ONNX Runtime's CPU has no bfloat16 matmul: the graph computes in float32 (the
    weights are float32 already), and the export says its outputs differ from nnrun's."""
    import jax
    import onnxruntime as ort

    from nnrun.api import resolve_target
    from nnrun.api.inference import load_trained

    run = example_run("two_outputs")
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(main, ["export", str(run), "--format", "onnx", "-o", str(out),
                                       "--set", "compile.precision=mixed"])
    assert result.exit_code == 0, result.output
    assert "trained with compile.precision mixed" in result.output
    spec, run = resolve_target(run)   # the run's float32 config: the reference
    model, params, state = load_trained(spec, run)
    x = np.random.default_rng(0).normal(size=(37, 8)).astype(np.float32)
    want = jax.jit(lambda p, s, x: model.apply(p, s, {"features": x})[0])(params, state, x)
    got = ort.InferenceSession(str(out)).run(None, {"features": x})
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, np.asarray(w), rtol=0, atol=1e-5)
