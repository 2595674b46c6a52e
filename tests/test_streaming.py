"""Data larger than memory: features read from .npy / HDF5 files in chunks during
training (nnrun/data/rowsource.py, nnrun/train/streaming.py), against the resident path."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from nnrun import api
from nnrun.cli.main import main
from nnrun.config.errors import DataError
from nnrun.data import rowsource
from nnrun.data.rowsource import RowSource
from nnrun.train import streaming

CONFIG = """\
name: st
seed: 3
data:
  train: {path: data.h5}
  validation_split: 0.2
model:
  layers:
    - Dense: {units: 16, activation: relu}
    - BatchNormalization: {}
    - Dropout: {rate: 0.2}
    - Dense: {units: 3, activation: softmax}
compile: {optimizer: adam, loss: sparse_categorical_crossentropy, metrics: [accuracy]}
fit: {batch_size: 32, epochs: 3}
"""


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 12)).astype(np.float32)
    y = x[:, :3].argmax(1).astype(np.int32)
    with h5py.File(tmp_path / "data.h5", "w") as f:
        f["x"], f["y"] = x, y
    with h5py.File(tmp_path / "chunked.h5", "w") as f:
        f.create_dataset("x", data=x, chunks=(64, 12), compression="gzip")
        f["y"] = y
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    (tmp_path / "st.yaml").write_text(CONFIG)
    return tmp_path


def _train(folder: Path, *sets: str):
    spec = api.load_checked(folder / "st.yaml", list(sets))
    result = api.train(spec, runs_root=folder / "runs", quiet=True, stream=io.StringIO())
    assert result.status == "finished"
    weights = {}
    with h5py.File(result.run_dir / "checkpoints" / "last.h5") as f:
        f.visititems(lambda name, obj: weights.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
    info = json.loads((result.run_dir / "run.json").read_text())
    return weights, result.history, info


@pytest.mark.parametrize("source", [
    "data.train={path: data.h5}",                       # contiguous: read with pread
    "data.train={path: chunked.h5}",                    # chunked + gzip: read with h5py
    "data.train={path: x.npy, target: y.npy}",
])
def test_streamed_training_gives_the_resident_weights(folder, monkeypatch, source):
    # 3 batches of 32 rows x 12 float32 per chunk: 25 training steps = 8 chunks + 1 left
    monkeypatch.setattr(streaming, "CHUNK_BYTES", 3 * 32 * 12 * 4 + 5)
    resident, history, info = _train(folder, source, "data.stream=false")
    streamed, s_history, s_info = _train(folder, source, "data.stream=true")
    assert info["streamed"] is False and s_info["streamed"] is True
    assert resident.keys() == streamed.keys()
    assert any(k.startswith("params") for k in resident)
    for key in resident:
        np.testing.assert_array_equal(streamed[key], resident[key], err_msg=key)
    assert s_history == history   # loss, metrics, val_loss, val_accuracy: every epoch
    assert s_info["data_files"] == info["data_files"]   # each with size and sha256


def test_streamed_evaluate_and_predict_equal_resident(folder, monkeypatch):
    monkeypatch.setattr(streaming, "CHUNK_BYTES", 2 * 32 * 12 * 4)
    _train(folder, "data.stream=false")
    spec = api.load_checked(folder / "st.yaml", ["data.stream=false"])
    run = sorted((folder / "runs").iterdir())[-1]
    resident = api.evaluate(spec, run)
    streamed = api.evaluate(api.load_checked(folder / "st.yaml", ["data.stream=true"]), run)
    assert streamed == resident
    assert resident["classification"]["confusion_matrix"]


def test_size_decides_when_stream_is_not_given(folder, monkeypatch):
    _, _, info = _train(folder)
    assert info["streamed"] is False
    monkeypatch.setattr(rowsource, "STREAM_THRESHOLD_BYTES", 1000)
    _, _, info = _train(folder)
    assert info["streamed"] is True


def test_row_source_reads_rows_in_the_order_asked(folder):
    x = np.load(folder / "x.npy")
    for source in (RowSource(folder / "x.npy"), RowSource(folder / "data.h5", dataset="x"),
                   RowSource(folder / "chunked.h5", dataset="x")):
        rows = np.array([5, 0, 999, 0, 17, 18, 19])   # repeats, as a padded batch has
        np.testing.assert_array_equal(source.take(rows), x[rows])
        np.testing.assert_array_equal(source.take(np.arange(10, 20)), x[10:20])
        view = source[100:200][np.array([3, 1])]   # views of views: nothing read
        assert view.shape == (2, 12)
        np.testing.assert_array_equal(view.take(np.array([0, 1])), x[[103, 101]])
        assert sum(len(b) for _, b in source.scan(rows_per_read=300)) == 1000


def test_row_source_shapes_and_int32(tmp_path):
    np.save(tmp_path / "ids.npy", np.arange(10, dtype=np.float64))   # 1-D: (n, 1)
    source = RowSource(tmp_path / "ids.npy", dtype="int32")
    assert source.shape == (10, 1)
    out = source.take(np.array([3, 4]))
    assert out.dtype == np.int32 and out.tolist() == [[3], [4]]
    np.save(tmp_path / "half.npy", np.array([0.5, 1.0]))
    with pytest.raises(DataError, match="non-integer"):
        RowSource(tmp_path / "half.npy", dtype="int32").take(np.array([0, 1]))


def _cli(folder: Path, *args: str):
    result = CliRunner().invoke(main, [*args, "--runs-dir", str(folder / "runs")])
    assert "Traceback" not in result.output
    return result


@pytest.mark.parametrize("make, code, needle", [
    (lambda d: np.save(d / "x.npy", np.asfortranarray(np.ones((50, 12), np.float32))),
     3, "Fortran-ordered"),
    (lambda d: (d / "x.npy").write_bytes((d / "x.npy").read_bytes()[:-100]),
     3, "shorter than its header"),
    (lambda d: np.save(d / "x.npy", np.where(np.arange(12000) == 7000, np.nan, 1.0)
                       .reshape(1000, 12).astype(np.float32)),
     3, "NaN or inf (first at index (583, 4))"),
    (lambda d: np.save(d / "x.npy", np.array([["a"] * 12] * 5)), 3, "expected numbers"),
    (lambda d: np.save(d / "x.npy", np.zeros((0, 12), np.float32)), 3, "empty"),
])
def test_streamed_data_errors_exit_3_before_any_run(folder, make, code, needle):
    make(folder)
    result = _cli(folder, "train", str(folder / "st.yaml"), "--set",
                  "data.train={path: x.npy, target: y.npy}", "--set", "data.stream=true")
    assert result.exit_code == code, result.output
    assert needle in result.output and "x.npy" in result.output
    assert not (folder / "runs").exists()   # checked before the run directory is made


def test_streamed_source_errors(folder):
    result = _cli(folder, "train", str(folder / "st.yaml"), "--set",
                  "data.train={path: data.h5, x: features}", "--set", "data.stream=true")
    assert result.exit_code == 3 and "no dataset 'features'" in result.output
    assert "datasets present: x, y" in result.output
    np.savetxt(folder / "d.csv", np.ones((5, 3)), delimiter=",", header="a,b,c",
               comments="")
    result = _cli(folder, "train", str(folder / "st.yaml"), "--set",
                  "data.train={path: d.csv, target: c}", "--set", "data.stream=true")
    assert result.exit_code == 2, result.output
    assert "data.stream" in result.output and "only .npy and HDF5" in result.output
    result = CliRunner().invoke(main, ["check", str(folder / "st.yaml"), "--set",
                                       "data.stream=yes please"])
    assert result.exit_code == 2 and "data.stream" in result.output, result.output
    result = CliRunner().invoke(main, ["check", str(folder / "st.yaml"), "--set",
                                       "data.train={path: d.csv}", "--set", "data.stream=true"])
    assert result.exit_code == 2 and "only .npy and HDF5" in result.output, result.output


def test_a_read_error_during_an_epoch_surfaces(folder, monkeypatch):
    calls = {"n": 0}
    take = RowSource.take

    def failing(self, rows):
        calls["n"] += 1
        if calls["n"] > 3:
            raise DataError("disk went away", where=self.where)
        return take(self, rows)

    monkeypatch.setattr(streaming, "CHUNK_BYTES", 32 * 12 * 4)
    monkeypatch.setattr(RowSource, "take", failing)
    result = _cli(folder, "train", str(folder / "st.yaml"), "--set", "data.stream=true")
    assert result.exit_code == 3 and "disk went away" in result.output


BIG = """\
name: big
seed: 1
data:
  train: {path: big.h5}
  validation_split: 0.01
model:
  layers:
    - Dense: {units: 32, activation: relu}
    - Dense: {units: 10, activation: softmax}
compile: {optimizer: adam, loss: sparse_categorical_crossentropy, metrics: [accuracy]}
fit: {batch_size: 256, epochs: 1}
"""


@pytest.mark.slow
def test_three_gigabytes_of_hdf5_train_in_bounded_memory(tmp_path):
    """3 GB of float32 (1,000,000 x 784) train one epoch streamed (chosen by size, no
    `stream:` key) with the training process's peak RSS under 1.5 GB."""
    rows, width, block = 1_000_000, 784, 50_000
    rng = np.random.default_rng(0)
    base = rng.standard_normal((block, width), dtype=np.float32)
    with h5py.File(tmp_path / "big.h5", "w") as f:
        x = f.create_dataset("x", (rows, width), dtype="float32")
        y = f.create_dataset("y", (rows,), dtype="int32")
        for i, start in enumerate(range(0, rows, block)):
            part = np.roll(base, i, axis=1)
            x[start:start + block] = part
            y[start:start + block] = part[:, :10].argmax(1)
    assert (tmp_path / "big.h5").stat().st_size > 3_000_000_000
    (tmp_path / "big.yaml").write_text(BIG)
    script = textwrap.dedent("""\
        import resource, sys
        from nnrun.cli.main import main
        try:
            main(["train", "big.yaml", "--runs-dir", "runs"])
        finally:
            # VmHWM: this program's peak RSS (ru_maxrss would include the pytest process
            # it was forked from, before exec)
            try:
                status = open("/proc/self/status").read()
                peak = int(status.split("VmHWM:")[1].split()[0])
            except (OSError, IndexError):
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            print(f"PEAK_RSS_KB {peak}", file=sys.stderr)
        """)
    try:
        proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, text=True,
                              capture_output=True, timeout=900,
                              env={**os.environ, "XLA_FLAGS": ""})
        assert proc.returncode == 0, proc.stdout + proc.stderr
        peak_kb = int(proc.stderr.rsplit("PEAK_RSS_KB", 1)[1].split()[0])
        assert peak_kb < 1.5 * 1024 * 1024, f"peak RSS {peak_kb / 1024:.0f} MiB"
        print(f"peak RSS {peak_kb / 1024:.0f} MiB")
        run = (tmp_path / "runs" / "latest").resolve()
        info = json.loads((run / "run.json").read_text())
        assert info["streamed"] is True and info["status"] == "finished"
        assert info["samples"]["train"] == 990_000
        history = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
        assert history["accuracy"] > 0.5   # it learned (argmax of 10 of the features)
    finally:
        (tmp_path / "big.h5").unlink(missing_ok=True)


def test_streamed_preprocessing_split_options_and_class_weight_equal_resident(folder,
                                                                              monkeypatch):
    """standardize statistics accumulated chunk by chunk from the file, shuffle_split +
    stratify picking rows without reading them, class_weight: the same run either way."""
    monkeypatch.setattr(streaming, "CHUNK_BYTES", 4 * 32 * 12 * 4)
    monkeypatch.setattr(rowsource, "SCAN_BYTES", 100 * 12 * 4)   # statistics in 10 chunks
    sets = ["data.preprocess={x: standardize}", "data.shuffle_split=true",
            "data.stratify=true", "data.class_weight=balanced"]
    resident, history, _ = _train(folder, *sets, "data.stream=false")
    streamed, s_history, info = _train(folder, *sets, "data.stream=true")
    assert info["streamed"] is True
    for key in resident:
        np.testing.assert_allclose(streamed[key], resident[key], rtol=1e-6, atol=1e-7,
                                   err_msg=key)
    np.testing.assert_allclose(s_history["val_loss"], history["val_loss"], rtol=1e-6)
    runs = sorted(p for p in (folder / "runs").iterdir() if not p.is_symlink())
    pre = [json.loads((r / "preprocessing.json").read_text()) for r in runs]
    np.testing.assert_allclose(pre[1]["x"][""]["offset"], pre[0]["x"][""]["offset"],
                               rtol=1e-12)


def test_predict_reads_a_large_input_in_chunks(folder, monkeypatch):
    """predict --input: a .npy / HDF5 over the threshold is read in chunks; the
    predictions equal those of the input read whole (and .h5 input works at all)."""
    _train(folder, "data.stream=false")
    spec = api.load_checked(folder / "st.yaml", [])
    run = sorted(p for p in (folder / "runs").iterdir() if not p.is_symlink())[-1]
    api.predict(spec, run, folder / "x.npy", folder / "whole.npz")
    monkeypatch.setattr(rowsource, "STREAM_THRESHOLD_BYTES", 1000)
    monkeypatch.setattr(streaming, "CHUNK_BYTES", 3 * 32 * 12 * 4)
    calls = []
    monkeypatch.setattr(streaming, "_gather", lambda a, rows: (calls.append(len(rows)),
                                                               a.take(rows))[1])
    api.predict(spec, run, folder / "x.npy", folder / "chunked.npz")
    api.predict(spec, run, folder / "data.h5", folder / "h5.npz")
    assert len(calls) == 2 * 11   # 1000 rows / 32 = 32 batches, 3 per chunk: 11 chunks
    with np.load(folder / "whole.npz") as a, np.load(folder / "chunked.npz") as b, \
            np.load(folder / "h5.npz") as c:
        np.testing.assert_array_equal(b["probs"], a["probs"])
        np.testing.assert_array_equal(c["probs"], a["probs"])
        np.testing.assert_array_equal(b["classes"], a["classes"])


def test_a_file_is_opened_once_and_closed_with_its_last_view(folder):
    """Every epoch's reader thread reads through one shared descriptor per file (no
    descriptor per thread left open after it), closed when the array's views go."""
    import gc
    import threading

    def open_fds():
        return len(os.listdir("/proc/self/fd"))

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc (Linux) to count open files")
    gc.collect()   # earlier tests' arrays, if any are left, close their files first
    before = open_fds()
    for path, dataset in ((folder / "x.npy", None), (folder / "chunked.h5", "x")):
        source = RowSource(path, dataset=dataset)
        view = source[10:500]
        threads = [threading.Thread(target=view.take, args=(np.arange(5),))
                   for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert open_fds() <= before + 2   # one descriptor (h5py may hold two)
        del source, view, threads
        gc.collect()
        assert open_fds() == before
