"""Hostile data files (issue 17, item 7): each exits 3 with a message naming the file,
never a traceback or an "unexpected" error — HDF5 link loops and damaged files, data
kept in other files (external links, virtual datasets, external storage: run.json would
hash only the file named), .npz archives that inflate far beyond their size, and values
beyond float32's range."""

from __future__ import annotations

import tracemalloc
import warnings
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from nnrun import api
from nnrun.cli.main import main
from nnrun.config.errors import DataError
from nnrun.data import sources

CONFIG = """\
name: hostile
data:
  train: {path: d.npz}
model:
  layers:
    - Dense: {units: 1, activation: sigmoid}
compile: {optimizer: adam, loss: binary_crossentropy}
fit: {batch_size: 4, epochs: 1}
"""


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "c.yaml").write_text(CONFIG)
    return tmp_path


def _train(folder: Path, source: str, *sets: str):
    """`nnrun train` with data.train set to `source`: the result, checked to be clean."""
    args = ["train", str(folder / "c.yaml"), "--runs-dir", str(folder / "runs"),
            "--set", f"data.train={source}"]
    for s in sets:
        args += ["--set", s]
    result = CliRunner().invoke(main, args)
    assert "Traceback" not in result.output and "unexpected" not in result.output, \
        result.output
    return result


def _exits_3(result, *needles: str) -> None:
    assert result.exit_code == 3, result.output
    for needle in needles:
        assert needle in result.output, result.output


def _xy(n: int = 8):
    return np.ones((n, 2), np.float32), np.zeros((n, 1), np.float32)


# ---------------------------------------------------------------- HDF5 links


@pytest.mark.parametrize("stream", ["false", "true"])
@pytest.mark.parametrize("x", ["a", "g/x"])
def test_a_soft_link_loop_is_a_data_error(folder, stream, x):
    with h5py.File(folder / "loop.h5", "w") as f:
        f["a"], f["b"] = h5py.SoftLink("/b"), h5py.SoftLink("/a")
        f["g"], f["h"] = h5py.SoftLink("/h"), h5py.SoftLink("/g")
        f["y"] = _xy()[1]
    result = _train(folder, f"{{path: loop.h5, x: {x}}}", f"data.stream={stream}")
    _exits_3(result, "loop.h5", f"dataset '{x}'", "loop")


def test_a_soft_link_inside_the_file_is_followed(folder):
    x, y = _xy()
    with h5py.File(folder / "soft.h5", "w") as f:
        f["data/x"], f["y"] = x, y
        f["x"] = h5py.SoftLink("/data/x")
        f["data/alias"] = h5py.SoftLink("x")   # relative to its group
    for name in ("x", "data/alias"):
        spec = api.load_checked(folder / "c.yaml",
                                [f"data.train={{path: soft.h5, x: {name}}}"])
        np.testing.assert_array_equal(api.load_data(spec).train.x, x)


def _external_link(d: Path):
    with h5py.File(d / "ext.h5", "w") as f:
        f["x"] = h5py.ExternalLink("other.h5", "/x")
        f["y"] = _xy()[1]


def _external_group(d: Path):
    with h5py.File(d / "ext.h5", "w") as f:
        f["g"] = h5py.ExternalLink("other.h5", "/")
        f["x"] = h5py.SoftLink("/g/x")   # a soft link through the external one
        f["y"] = _xy()[1]


def _virtual(d: Path):
    with h5py.File(d / "ext.h5", "w") as f:
        layout = h5py.VirtualLayout(shape=(8, 2), dtype="f4")
        layout[:] = h5py.VirtualSource("other.h5", "x", shape=(8, 2))
        f.create_virtual_dataset("x", layout)
        f["y"] = _xy()[1]


def _external_storage(d: Path):
    _xy()[0].tofile(d / "raw.bin")
    with h5py.File(d / "ext.h5", "w") as f:
        f.create_dataset("x", shape=(8, 2), dtype="f4", external=[("raw.bin", 0, 64)])
        f["y"] = _xy()[1]


@pytest.mark.parametrize("stream", ["false", "true"])
@pytest.mark.parametrize("make, needle", [
    (_external_link, "external link to other.h5:/x"),
    (_external_group, "external link to other.h5:/"),
    (_virtual, "virtual dataset that maps data of other files (other.h5)"),
    (_external_storage, "external files (raw.bin)"),
])
def test_data_kept_in_another_file_is_refused(folder, stream, make, needle):
    """run.json's data_files hashes the file the config names: reading another would
    leave the data unrecorded, so the source is refused, with the fix."""
    x, y = _xy()
    with h5py.File(folder / "other.h5", "w") as f:
        f["x"], f["y"] = x, y
    make(folder)
    result = _train(folder, "{path: ext.h5}", f"data.stream={stream}")
    _exits_3(result, "ext.h5", "dataset 'x'", needle, "copy the data into one file")
    with pytest.raises(DataError, match="ext.h5.*copy the data into one file"):
        sources.load_features(folder / "ext.h5")   # nnrun predict --input


def test_a_virtual_dataset_of_its_own_file_is_read(folder):
    x, y = _xy()
    with h5py.File(folder / "v.h5", "w") as f:
        f["raw"], f["y"] = x, y
        layout = h5py.VirtualLayout(shape=x.shape, dtype="f4")
        layout[:] = h5py.VirtualSource(".", "raw", shape=x.shape)
        f.create_virtual_dataset("x", layout)
    spec = api.load_checked(folder / "c.yaml", ["data.train={path: v.h5}"])
    np.testing.assert_array_equal(api.load_data(spec).train.x, x)


# ---------------------------------------------------------------- damaged HDF5


def _damaged_chunks(d: Path):
    rng = np.random.default_rng(0)
    with h5py.File(d / "bad.h5", "w") as f:
        f.create_dataset("x", data=rng.normal(size=(64, 2)).astype("f4"), chunks=(16, 2),
                         compression="gzip")
        f["y"] = np.zeros((64, 1), "f4")
        spans = [(c.byte_offset, c.size) for c in
                 (f["x"].id.get_chunk_info(i) for i in range(f["x"].id.get_num_chunks()))]
    data = bytearray((d / "bad.h5").read_bytes())
    for offset, size in spans:
        data[offset:offset + size] = b"\xff" * size
    (d / "bad.h5").write_bytes(bytes(data))


def _empty_dataspace(d: Path):
    with h5py.File(d / "bad.h5", "w") as f:
        f.create_dataset("x", data=h5py.Empty("f4"))
        f["y"] = _xy()[1]


def _garbage(d: Path):
    (d / "bad.h5").write_bytes(b"not an HDF5 file " * 100)


def _truncated(d: Path):
    with h5py.File(d / "bad.h5", "w") as f:
        f["x"], f["y"] = np.ones((500, 20), "f4"), np.zeros((500, 1), "f4")
    data = (d / "bad.h5").read_bytes()
    (d / "bad.h5").write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize("stream", ["false", "true"])
@pytest.mark.parametrize("make, needle", [
    (_damaged_chunks, "cannot read HDF5 file"),
    (_empty_dataspace, "empty dataspace"),
    (_garbage, "file signature not found"),
    (_truncated, "truncated"),
])
def test_a_damaged_hdf5_file_is_a_data_error(folder, stream, make, needle):
    make(folder)
    _exits_3(_train(folder, "{path: bad.h5}", f"data.stream={stream}"), "bad.h5", needle)


# ---------------------------------------------------------------- .npz archives


def _inflating_npz(path: Path, x_shape: tuple, y_rows: int) -> None:
    """An .npz whose float32 zeros `x` inflate to x_shape's size: a few hundred KB on
    disk, written a slice at a time (the test never holds the array)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(
                member, {"descr": "<f4", "fortran_order": False, "shape": x_shape})
            block = bytes(4 << 20)
            left = int(np.prod(x_shape)) * 4
            while left:
                member.write(block[:min(left, len(block))])
                left -= min(left, len(block))
        with archive.open("y.npy", "w") as member:
            np.lib.format.write_array(member, np.zeros((y_rows, 1), np.float32))


class _Inflated:
    """Counts the bytes read out of zip members (inflated)."""

    def __init__(self, monkeypatch):
        self.bytes = 0
        read = zipfile.ZipExtFile.read

        def counting(member, n=-1):
            out = read(member, n)
            self.bytes += len(out)
            return out

        monkeypatch.setattr(zipfile.ZipExtFile, "read", counting)


def test_an_inflating_npz_that_does_not_fit_fails_before_inflating(folder, monkeypatch):
    _inflating_npz(folder / "bomb.npz", (20_000, 1_250), y_rows=10)   # 100 MB of x
    assert (folder / "bomb.npz").stat().st_size < 1 << 20
    inflated = _Inflated(monkeypatch)
    _exits_3(_train(folder, "{path: bomb.npz}"), "bomb.npz", "'x' has 20000 rows",
             "'y' has 10 rows")
    assert inflated.bytes < 1 << 20   # the headers only, not x's 100 MB
    spec = api.load_checked(folder / "c.yaml", ["data.train={path: bomb.npz}"])
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="bomb.npz.*different numbers of rows"):
            api.load_data(spec)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


def test_an_inflating_npz_of_the_wrong_shape_is_refused_from_its_headers(folder, monkeypatch):
    _inflating_npz(folder / "bomb.npz", (20_000, 1_250), y_rows=20_000)
    inflated = _Inflated(monkeypatch)
    _exits_3(_train(folder, "{path: bomb.npz}", "model.input_shape=[2]"), "bomb.npz",
             "features have shape (None, 1250), the model expects (None, 2)")
    assert inflated.bytes < 1 << 20   # matched to the model before x is inflated


def test_the_features_shape_is_known_from_the_headers_alone(folder, monkeypatch):
    _inflating_npz(folder / "bomb.npz", (20_000, 1_250), y_rows=20_000)
    inflated = _Inflated(monkeypatch)
    header = sources.peek_features({"path": "bomb.npz"}, folder)
    assert header.shape == (20_000, 1_250) and header.dtype == np.float32
    assert inflated.bytes < 1 << 20
    x, y = _xy()
    with h5py.File(folder / "d.h5", "w") as f:
        f["a"], f["b"], f["y"] = x, x[:, 0], y
    assert {k: v.shape for k, v in sources.peek_features(
        {"path": "d.h5", "x": {"left": "a", "right": "b"}}, folder).items()} == \
        {"left": (8, 2), "right": (8, 1)}
    np.save(folder / "d.npy", x.astype(np.float64))
    assert sources.peek_features({"path": "d.npy", "dtype": "int32"}, folder).dtype == np.int32
    assert sources.peek_features({"builtin": "xor"}, folder) is None


def _member(name: str, data: bytes):
    def make(path: Path):
        x, y = _xy()
        np.savez(path, x=x, y=y)
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr(name, data)
    return make


def _lying_header(path: Path):
    """A header claiming 80 TB over 64 bytes of data (np.load would allocate first)."""
    with zipfile.ZipFile(path, "w") as archive:
        with archive.open("x.npy", "w") as member:
            np.lib.format.write_array_header_1_0(
                member, {"descr": "<f8", "fortran_order": False, "shape": (10**13,)})
            member.write(bytes(64))
        with archive.open("y.npy", "w") as member:
            np.lib.format.write_array(member, np.zeros(8, np.float32))


@pytest.mark.parametrize("make, source, needle", [
    (_member("w.npy", b"plain text, not an array"), "{path: d.npz, sample_weight: w}",
     "member 'w.npy' of the archive is not a .npy array"),
    (lambda p: np.savez(p, x=np.array([{"a": 1}] * 8, dtype=object), y=_xy()[1]),
     "{path: d.npz}", "array 'x' holds Python objects"),
    (lambda p: np.savez(p, x=np.array([["a", "b"]] * 8), y=_xy()[1]),
     "{path: d.npz}", "array 'x' has dtype <U1; expected numbers"),
    (lambda p: np.savez(p, x=np.float32(1), y=_xy()[1]),
     "{path: d.npz}", "array 'x' is a single value"),
    (_lying_header, "{path: d.npz}", "array 'x' is damaged"),
    (lambda p: p.write_bytes(b"PK\x03\x04" + bytes(100)), "{path: d.npz}",
     "cannot read .npz file"),
])
def test_a_bad_npz_member_is_a_data_error(folder, make, source, needle):
    make(folder / "d.npz")
    _exits_3(_train(folder, source), "d.npz", needle)


def test_a_npy_header_claiming_more_than_the_file_holds(folder):
    with open(folder / "x.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f8", "fortran_order": False, "shape": (10**12, 2)})
        f.write(bytes(64))
    np.save(folder / "y.npy", np.zeros(8, np.float32))
    _exits_3(_train(folder, "{path: x.npy, target: y.npy}", "data.stream=false"),
             "x.npy", "shorter than its header says")


# ---------------------------------------------------------------- float32 overflow


def _clean_train(folder: Path, source: str, *sets: str):
    """_train, with every warning recorded: none of numpy's cast warnings may show."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _train(folder, source, *sets)
    assert not [w for w in caught if "encountered in cast" in str(w.message)]
    assert "encountered in cast" not in result.output
    return result


def test_a_csv_value_beyond_float32_is_named(folder):
    (folder / "d.csv").write_text("a,b,y\n1,2,0\n3,-1e39,1\n")
    _exits_3(_clean_train(folder, "{path: d.csv, target: y}"), "d.csv",
             "row 2 (line 3), column 'b'", "'-1e39' overflows float32", "3.4e+38")


@pytest.mark.parametrize("stream", ["false", "true"])
def test_a_float64_npy_value_beyond_float32_is_named(folder, stream):
    x = np.ones((8, 2))
    x[5, 1] = 1e39
    np.save(folder / "x.npy", x)
    np.save(folder / "y.npy", _xy()[1])
    _exits_3(_clean_train(folder, "{path: x.npy, target: y.npy}", f"data.stream={stream}"),
             "x.npy", "1e+39 at index (5, 1) overflows float32", "3.4e+38")


@pytest.mark.parametrize("arrays, needle", [
    ({"y": np.full((8, 1), 1e300)}, "array 'y': 1e+300 at index (0, 0) overflows float32"),
    ({"w": np.full(8, 1e40)}, "weight 1e+40 at index 0 overflows float32"),
])
def test_targets_and_weights_beyond_float32_are_named(folder, arrays, needle):
    x, y = _xy()
    np.savez(folder / "d.npz", **{"x": x, "y": y, **arrays})
    _exits_3(_clean_train(folder, "{path: d.npz, sample_weight: w}" if "w" in arrays
                          else "{path: d.npz}"), "d.npz", needle)


def test_int32_features_beyond_int32_are_named(folder):
    x = np.ones((8, 2), np.int64)
    x[3, 0] = 2**40
    np.savez(folder / "d.npz", x=x, y=_xy()[1])
    _exits_3(_clean_train(folder, "{path: d.npz, dtype: int32}"), "d.npz",
             "array 'x': 1.09951e+12 at index (3, 0) is beyond int32's range")
