"""Every HDF5 file nnrun reads passes one reading gate (nnrun.config.h5gate, issue 19
item 5): an external link, external storage (Keras CVE-2026-1669), a virtual dataset of
another file (CVE-2026-12480) and a declared size the file cannot hold are refused in a
checkpoint used by --resume, by `model.weights:`, by evaluate, in a data file, in a
`.keras` archive's weights and in a Keras 2 `.h5` — each located (the file and the HDF5
object), with its exit code, and no other file opened (inotify watches the secrets)."""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import json
import os
import shutil
import struct
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from nnrun.cli.main import main
from nnrun.config import h5gate
from nnrun.config.errors import DataError

CONFIG = """\
name: gate
seed: 0
data: {train: {builtin: xor, samples: 16}}
model:
  input_shape: [2]
  layers:
    - Dense: {name: hidden, units: 3, activation: relu}
    - Dense: {name: out, units: 1, activation: sigmoid}
compile: {optimizer: sgd, loss: binary_crossentropy}
fit: {epochs: 1, batch_size: 8}
"""
MARK = 1234.5   # the secret's values: never in any output


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output and "unexpected" not in result.output, \
        result.output
    return result


# ---------------------------------------------------------------- opened files


class Watch:
    """inotify on a folder: which of its files were opened or read (by h5py's C library
    too, which no Python hook sees)."""

    def __init__(self, folder: Path):
        self.libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK)
        if self.fd < 0 or self.libc.inotify_add_watch(
                self.fd, str(folder).encode(), 0x20 | 0x01) < 0:   # IN_OPEN | IN_ACCESS
            pytest.skip("inotify is not available")

    def opened(self) -> list[str]:
        names = []
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return names
        while data:
            _, _, _, size = struct.unpack("iIII", data[:16])
            names.append(data[16:16 + size].rstrip(b"\0").decode())
            data = data[16 + size:]
        return names


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A trained run, its .keras export, and the secrets in their own watched folder."""
    root = tmp_path_factory.mktemp("gate")
    (root / "c.yaml").write_text(CONFIG)
    assert invoke("train", root / "c.yaml", "--runs-dir", root / "runs").exit_code == 0
    run = next((root / "runs").iterdir())
    assert invoke("export", run, "--format", "keras", "-o", root / "m.keras").exit_code == 0
    secret = root / "secret"
    secret.mkdir()
    with h5py.File(secret / "secret.h5", "w") as f:
        f["x"] = np.full((64,), MARK, np.float32)
    np.full((64,), MARK, np.float32).tofile(secret / "secret.bin")
    return root, run, secret


@pytest.fixture
def case(base, tmp_path):
    root, run, secret = base
    shutil.copytree(run, tmp_path / "run")
    shutil.copy(root / "c.yaml", tmp_path / "c.yaml")
    shutil.copy(root / "m.keras", tmp_path / "m.keras")
    watch = Watch(secret)
    yield tmp_path, secret, watch
    assert watch.opened() == [], "a file outside the given one was opened"


# ---------------------------------------------------------------- hostile objects


def _external_link(f, name, secret):
    del f[name]
    f[name] = h5py.ExternalLink(str(secret / "secret.h5"), "/x")
    return "is an external link to"


def _external_storage(f, name, secret):
    shape, dtype = f[name].shape, f[name].dtype
    del f[name]
    f.create_dataset(name, shape=shape, dtype=dtype,
                     external=[(str(secret / "secret.bin"), 0, 4 * int(np.prod(shape)))])
    return "keeps its values in external files"


def _virtual(f, name, secret):
    n, dtype = int(np.prod(f[name].shape)), f[name].dtype
    del f[name]
    layout = h5py.VirtualLayout(shape=(n,), dtype=dtype)
    layout[:] = h5py.VirtualSource(str(secret / "secret.h5"), "x", shape=(64,))[:n]
    f.create_virtual_dataset(name, layout)
    return "virtual dataset that maps data of other files"


def _chunked_bomb(f, name, secret):
    del f[name]
    f.create_dataset(name, shape=(10 ** 9, 10 ** 3), dtype="f4", chunks=(1024, 64))
    return "is implausible, refused before reading"


def _contiguous_bomb(f, name, secret):
    del f[name]
    f.create_dataset(name, shape=(10 ** 6, 4), dtype="f4")   # 16 MB, never written
    return "more than its storage could hold"


HOSTILE = [_external_link, _external_storage, _virtual, _chunked_bomb, _contiguous_bomb]


def _plant(path: Path, name: str, make, secret) -> str:
    with h5py.File(path, "r+") as f:
        return make(f, name, secret)


def _refused(result, code: int, needle: str, *where: str) -> None:
    assert result.exit_code == code, result.output
    for text in (needle, *where):
        assert text in result.output, result.output
    assert str(MARK) not in result.output


# ---------------------------------------------------------------- the readers


@pytest.mark.parametrize("make", HOSTILE)
def test_evaluate_refuses_a_hostile_checkpoint(case, make):
    folder, secret, _ = case
    best = folder / "run" / "checkpoints" / "best.h5"
    needle = _plant(best, "params/hidden/kernel", make, secret)
    _refused(invoke("evaluate", folder / "run"), 3, needle,
             f"{best} (", "'/params/hidden/kernel')")


@pytest.mark.parametrize("make", HOSTILE)
def test_resume_refuses_a_hostile_checkpoint(case, make):
    folder, secret, _ = case
    last = folder / "run" / "checkpoints" / "last.h5"
    needle = _plant(last, "params/out/bias", make, secret)
    result = invoke("train", "--resume", folder / "run", "--allow-config-change",
                    "--set", "fit.epochs=2", "--runs-dir", folder / "runs")
    _refused(result, 3, needle, "last.h5 (", "'/params/out/bias')")


@pytest.mark.parametrize("make", HOSTILE)
def test_model_weights_refuses_a_hostile_checkpoint(case, make):
    folder, secret, _ = case
    weights = folder / "w.h5"
    shutil.copy(folder / "run" / "checkpoints" / "best.h5", weights)
    needle = _plant(weights, "params/hidden/bias", make, secret)
    result = invoke("train", folder / "c.yaml", "--runs-dir", folder / "runs",
                    "--set", f"model.weights={weights}")
    _refused(result, 2, needle, "model.weights", "w.h5 (", "'/params/hidden/bias')")
    assert not (folder / "runs").exists() or not any((folder / "runs").iterdir())


@pytest.mark.parametrize("make", HOSTILE)
def test_a_data_file_is_refused(case, make):
    folder, secret, _ = case
    with h5py.File(folder / "d.h5", "w") as f:
        f["x"], f["y"] = np.ones((16, 2), "f4"), np.zeros((16, 1), "f4")
        f["extra"] = np.ones((16, 2), "f4")   # not named by the config: refused all the same
    needle = _plant(folder / "d.h5", "extra", make, secret)
    result = invoke("train", folder / "c.yaml", "--runs-dir", folder / "runs",
                    "--set", "data.train={path: d.h5}")
    _refused(result, 3, needle, "d.h5 (", "'/extra')")


@pytest.mark.parametrize("make", HOSTILE)
def test_a_keras_archive_is_refused(case, make):
    folder, secret, _ = case
    path = folder / "m.keras"
    with zipfile.ZipFile(path) as archive:
        members = {i.filename: archive.read(i) for i in archive.infolist()}
    (folder / "w.h5").write_bytes(members["model.weights.h5"])
    with h5py.File(folder / "w.h5", "r") as f:
        name = next(n for n in _datasets(f) if n.startswith("layers/"))
    needle = _plant(folder / "w.h5", name, make, secret)
    members["model.weights.h5"] = (folder / "w.h5").read_bytes()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for member, body in members.items():
            archive.writestr(member, body)
    path.write_bytes(buffer.getvalue())
    result = invoke("import-keras", path, "-o", folder / "k.yaml")
    _refused(result, 2, needle, f"{path}:model.weights.h5 (", f"'/{name}')")


@pytest.mark.parametrize("make", HOSTILE)
def test_a_keras2_h5_is_refused(case, make):
    folder, secret, _ = case
    with zipfile.ZipFile(folder / "m.keras") as archive:
        config = json.loads(archive.read("config.json"))
    path = folder / "k2.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
        g = f.create_group("model_weights/hidden")
        g.attrs["weight_names"] = [b"hidden/kernel:0", b"hidden/bias:0"]
        g["hidden/kernel:0"], g["hidden/bias:0"] = np.ones((2, 3), "f4"), np.ones(3, "f4")
    needle = _plant(path, "model_weights/hidden/hidden/kernel:0", make, secret)
    result = invoke("import-keras", path, "-o", folder / "k.yaml")
    _refused(result, 2, needle, f"{path} (", "'/model_weights/hidden/hidden/kernel:0')")


def _datasets(f) -> list[str]:
    found = []
    f.visititems(lambda n, o: found.append(n) if isinstance(o, h5py.Dataset) else None)
    return found


# ---------------------------------------------------------------- the gate itself


def test_the_watch_sees_what_h5py_would_read(case):
    """The threat is real: h5py alone reads the secret through each planted object, and
    the watch sees the file opened (so its silence in the tests above means something)."""
    folder, secret, watch = case
    for make in (_external_link, _external_storage, _virtual):
        path = folder / f"{make.__name__}.h5"
        with h5py.File(path, "w") as f:
            f["x"] = np.zeros(4, "f4")
        _plant(path, "x", make, secret)
        with h5py.File(path, "r") as f:
            assert np.all(f["x"][()] == MARK)
        assert watch.opened(), make.__name__


def test_soft_links_same_file_virtual_and_compressed_data_pass(tmp_path):
    with h5py.File(tmp_path / "ok.h5", "w") as f:
        f["a/b"] = np.ones((10, 10))
        f["s"] = h5py.SoftLink("/a/b")
        f.create_dataset("z", data=np.zeros(10 ** 6, "f4"), chunks=True, compression="gzip")
        layout = h5py.VirtualLayout(shape=(10, 10), dtype="f8")
        layout[...] = h5py.VirtualSource(".", "a/b", shape=(10, 10))
        f.create_virtual_dataset("v", layout)
    with h5gate.open_untrusted(tmp_path / "ok.h5", "ok.h5", DataError) as f:
        assert f["v"][()].sum() == 100


def test_datasets_that_declare_too_much_together_are_refused(tmp_path):
    with h5py.File(tmp_path / "many.h5", "w") as f:
        for i in range(4):   # each under the limit alone, not together
            f.create_dataset(f"d{i}", shape=(10 ** 6, 3), dtype="f4", chunks=(1000, 3))
    size = (tmp_path / "many.h5").stat().st_size
    assert 12 * 10 ** 6 < h5gate.RATIO * size + h5gate.MARGIN < 4 * 12 * 10 ** 6
    with pytest.raises(DataError, match=r"many.h5 \(dataset '/d\d'\): the file's datasets "
                                        r"declare .* in all"):
        h5gate.open_untrusted(tmp_path / "many.h5", "many.h5", DataError)
