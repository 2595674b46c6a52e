"""Each example config trained briefly (one epoch, a few rows of each generated split),
once per test process: the export tests (`.keras` and ONNX, tests/test_keras_files.py
and tests/test_onnx_export.py) read the same runs instead of training each config
twice (with two workers, at most once per worker). The runs are read only: a test that
changes a run trains its own."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from nnrun.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
_RUNS: dict[str, Path] = {}


def small_sets(config: Path) -> list[str]:
    """--set overrides: one epoch, a few rows of each generated split."""
    from nnrun.config.spec import load_spec

    sets = ["fit.epochs=1"]
    data = load_spec(config).resolved["data"]
    for split, rows in (("train", 96), ("test", 40)):
        if isinstance(data.get(split), dict) and "samples" in data[split]:
            sets.append(f"data.{split}.samples={rows}")
    return [a for s in sets for a in ("--set", s)]


def trained(name: str, root: Path) -> Path:
    """The run directory of example config `name` trained briefly under `root` (once)."""
    if name not in _RUNS:
        config = ROOT / "configs" / f"{name}.yaml"
        runs = root / name / "runs"
        result = CliRunner().invoke(main, ["train", str(config), "--runs-dir", str(runs), "-q",
                                           *small_sets(config)])
        assert result.exit_code == 0, result.output
        _RUNS[name] = (runs / "latest").resolve()
    return _RUNS[name]


@pytest.fixture(scope="session")
def example_run(tmp_path_factory):
    """example_run(name) -> the brief run of configs/NAME.yaml, shared in this process."""
    root = tmp_path_factory.mktemp("examples")
    return lambda name: trained(name, root)
