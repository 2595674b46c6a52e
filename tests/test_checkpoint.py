"""HDF5 checkpoints: bit-exact round trip, located mismatches, no links, atomic writes."""

import h5py
import jax
import numpy as np
import pytest

from nnrun.config.errors import CheckpointError
from nnrun.config.spec import spec_from_dict
from nnrun.nn.builder import build_model
from nnrun.nn.optimizers import build_optimizer
from nnrun.train.checkpoint import load_checkpoint, save_checkpoint


def model_and_state(units=4):
    spec = spec_from_dict({"model": {"input_shape": [3], "layers": [
        {"Dense": {"units": units, "activation": "relu"}}, {"Dense": 2}]},
        "compile": {"loss": "mse"}})
    model = build_model(spec.model)
    params, state = model.init(jax.random.key(0))
    opt = build_optimizer({"name": "adam", "amsgrad": True})
    opt_state = opt.init(params)
    grads = jax.tree_util.tree_map(lambda p: p * 0.1 + 0.01, params)
    _, opt_state = opt.update(grads, opt_state, params)  # non-trivial optimizer state
    return model, params, state, opt_state


def test_round_trip_is_bit_exact(tmp_path):
    model, params, state, opt_state = model_and_state()
    path = tmp_path / "ck.h5"
    save_checkpoint(path, params=params, state=state, opt_state=opt_state,
                    attrs={"epoch": 7, "config": "name: x\n"})
    skel_p, skel_s = model.param_shapes()
    p, s, o, attrs = load_checkpoint(path, params=skel_p, state=skel_s,
                                     opt_state=jax.eval_shape(lambda: opt_state))
    for a, b in zip(jax.tree_util.tree_leaves((params, opt_state)),
                    jax.tree_util.tree_leaves((p, o))):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    assert attrs["epoch"] == 7 and attrs["config"] == "name: x\n"
    with h5py.File(path) as f:   # one group per layer, as Keras's save_weights
        assert sorted(f["params"]) == ["dense", "dense_1"]
        assert sorted(f["params/dense"]) == ["bias", "kernel"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_shape_mismatch_names_the_weight(tmp_path):
    _, params, state, _ = model_and_state(units=4)
    save_checkpoint(tmp_path / "ck.h5", params=params, state=state)
    other, *_ = model_and_state(units=5)
    skel_p, skel_s = other.param_shapes()
    with pytest.raises(CheckpointError, match=r"params/dense/bias: the checkpoint has shape"):
        load_checkpoint(tmp_path / "ck.h5", params=skel_p, state=skel_s)


def test_missing_and_foreign_files(tmp_path):
    model, *_ = model_and_state()
    skel_p, skel_s = model.param_shapes()
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.h5", params=skel_p, state=skel_s)
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(CheckpointError, match="not an nnrun checkpoint"):
        load_checkpoint(tmp_path / "foreign.h5", params=skel_p, state=skel_s)
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "junk.h5", params=skel_p, state=skel_s)


def test_links_are_refused(tmp_path):
    model, params, state, _ = model_and_state()
    path = tmp_path / "ck.h5"
    save_checkpoint(path, params=params, state=state)
    with h5py.File(path, "a") as f:
        f["params/evil"] = h5py.ExternalLink("/etc/passwd", "/")
    skel_p, skel_s = model.param_shapes()
    with pytest.raises(CheckpointError, match="links are not allowed"):
        load_checkpoint(path, params=skel_p, state=skel_s)
