"""`nnrun sweep`: vmapped variants equal their single runs; grouping; tables; errors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from nnrun import api
from nnrun.cli.main import main
from nnrun.config.errors import ConfigError
from nnrun.sweep.run import run_sweep
from nnrun.sweep.variants import expand, group_variants, parse_vary, split_values

BASE = {
    "name": "sw",
    "seed": 0,
    # no seed in the source: the data are drawn from the varied seed (stacked per variant)
    "data": {"train": {"builtin": "xor", "samples": 120}, "validation_split": 0.25},
    "model": {"input_shape": [2], "layers": [
        {"Dense": {"units": 6, "activation": "relu"}},
        {"Dropout": 0.1},
        {"Dense": {"units": 1, "activation": "sigmoid"}}]},
    "compile": {"optimizer": {"name": "sgd", "learning_rate": 0.1, "momentum": 0.9},
                "loss": "binary_crossentropy", "metrics": ["accuracy"]},
    "fit": {"batch_size": 16, "epochs": 3},
}


def write_config(tmp_path: Path, **changes) -> Path:
    cfg = yaml.safe_load(yaml.safe_dump(BASE))
    for key, value in changes.items():
        section, _, leaf = key.partition(".")
        if leaf:
            cfg[section][leaf] = value
        else:
            cfg[section] = value
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def weights(path: Path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
    return out


def assert_same_run(variant_run: Path, single_run: Path) -> None:
    """Weights (and optimizer state) of last.h5 and best.h5 equal to float32 rounding,
    the same config and metrics."""
    assert (variant_run / "config.yaml").read_text() == (single_run / "config.yaml").read_text()
    for name in ("last.h5", "best.h5"):
        a = weights(variant_run / "checkpoints" / name)
        b = weights(single_run / "checkpoints" / name)
        assert sorted(a) == sorted(b)
        for key in a:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)
    rows_a = list(csv.DictReader(open(variant_run / "metrics.csv")))
    rows_b = list(csv.DictReader(open(single_run / "metrics.csv")))
    assert [r.keys() for r in rows_a] == [r.keys() for r in rows_b]
    for ra, rb in zip(rows_a, rows_b):
        for key in ra:
            assert math.isclose(float(ra[key]), float(rb[key]), rel_tol=1e-5), key


def single_run(config: Path, sets: tuple[str, ...], root: Path) -> Path:
    spec = api.load_checked(config, sets)
    return api.train(spec, runs_root=root, quiet=True).run_dir


def test_four_seed_sweep_equals_each_seed_alone(tmp_path):
    config = write_config(tmp_path)
    result = run_sweep(config, ["fit.seed=0,1,2,3"], runs_root=tmp_path / "runs", quiet=True)
    assert result.groups == 1 and result.exit_code == 0
    assert [r.status for r in result.runs] == ["finished"] * 4
    finals = set()
    for seed, vr in enumerate(result.runs):
        assert vr.variant.spec.seed == seed
        assert_same_run(vr.run, single_run(config, (f"seed={seed}",), tmp_path / "single"))
        finals.add(vr.history["loss"][-1])
    assert len(finals) == 4   # the seeds differ: not one run copied four times
    # one row per setting (here one), mean and std over the four seeds
    (row,) = result.settings
    losses = [vr.history["loss"][-1] for vr in result.runs]
    assert row["variants"] == row["finished"] == 4
    assert row["loss_mean"] == pytest.approx(np.mean(losses))
    assert row["loss_std"] == pytest.approx(np.std(losses, ddof=1))
    table = list(csv.DictReader(open(result.sweep_dir / "sweep.csv")))
    assert float(table[0]["loss_mean"]) == pytest.approx(np.mean(losses))


def test_learning_rate_sweep_equals_single_runs(tmp_path):
    # the data name their own seed: one copy shared by the variants
    config = write_config(tmp_path, **{"data.train": {"builtin": "xor", "samples": 120,
                                                      "seed": 5}})
    rates = ("0.3", "0.05", "1e-2")
    result = run_sweep(config, [f"compile.optimizer.learning_rate={','.join(rates)}"],
                       runs_root=tmp_path / "runs", quiet=True)
    assert result.groups == 1
    for rate, vr in zip(rates, result.runs):
        assert vr.variant.learning_rate == float(rate)
        single = single_run(config, (f"compile.optimizer.learning_rate={rate}",),
                            tmp_path / "single")
        assert_same_run(vr.run, single)
    assert len({vr.history["loss"][-1] for vr in result.runs}) == 3


def test_dropout_rates_and_regularizer_factors_share_one_program(tmp_path):
    """Dropout rates and weight-regularizer factors are values of the program: the
    variants train together, each as its single run does (weights and metrics)."""
    config = write_config(tmp_path, **{"data.train": {"builtin": "xor", "samples": 120,
                                                      "seed": 5}, "fit.epochs": 2})
    result = run_sweep(config, ["model.layers[1].Dropout=0.1,0.4",
                                "model.layers[0].Dense.kernel_regularizer={l2: 0.01},"
                                "{l2: 0.001}"], runs_root=tmp_path / "runs", quiet=True)
    assert result.groups == 1 and len(result.runs) == 4
    for vr in result.runs[1:3]:
        rate, reg = (vr.variant.texts[k] for k in vr.variant.texts)
        single = single_run(config, (f"model.layers[1].Dropout={rate}",
                                     f"model.layers[0].Dense.kernel_regularizer={reg}"),
                            tmp_path / "single")
        assert_same_run(vr.run, single)
    assert len({vr.history["loss"][-1] for vr in result.runs}) == 4
    # a zero rate leaves dropout out of the program: a group of its own
    groups = group_variants(expand(config, parse_vary(["model.layers[1].Dropout=0.0,0.3,0.5"])))
    assert [len(g.variants) for g in groups] == [1, 2]


def test_adam_rate_and_seed_grid_by_name(tmp_path):
    """An optimizer given by name gets its rate varied; a 2 x 2 grid in one program."""
    config = write_config(tmp_path, **{"compile.optimizer": "adam", "fit.epochs": 2})
    result = run_sweep(config, ["seed=0,1", "compile.optimizer.learning_rate=0.01,0.001"],
                       runs_root=tmp_path / "runs", quiet=True)
    assert result.groups == 1 and len(result.runs) == 4
    vr = result.runs[3]
    assert vr.variant.values == {"seed": 1, "compile.optimizer.learning_rate": 0.001}
    single = single_run(config, ("seed=1", "compile.optimizer={name: adam}",
                                 "compile.optimizer.learning_rate=0.001"), tmp_path / "single")
    assert_same_run(vr.run, single)
    assert len(result.settings) == 2 and all(r["variants"] == 2 for r in result.settings)


def test_a_variant_run_is_a_normal_run(tmp_path):
    config = write_config(tmp_path, **{"fit.epochs": 1})
    runner = CliRunner()
    result = runner.invoke(main, ["sweep", str(config), "--vary", "seed=0,1",
                                  "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    sweep_dir = Path(result.output.strip().splitlines()[-1])
    assert (sweep_dir / "sweep.csv").is_file() and (sweep_dir / "variants.csv").is_file()
    run = sweep_dir / "01-seed=1"
    spec, _ = api.resolve_target(run)
    assert spec.seed == 1
    assert api.evaluate(spec, run)["samples"] == 30
    info = yaml.safe_load((run / "run.json").read_text())
    assert info["status"] == "finished" and info["sweep"]["variant"] == 1
    as_json = runner.invoke(main, ["sweep", str(config), "--vary", "seed=0,1", "--json",
                                   "--runs-dir", str(tmp_path / "runs")])
    assert as_json.exit_code == 0
    out = json.loads(as_json.stdout.strip().splitlines()[-1])
    assert [v["values"] for v in out["variants"]] == [{"seed": 0}, {"seed": 1}]
    assert out["settings"][0]["variants"] == 2 and out["groups"] == 1


def test_shape_changing_variants_form_groups(tmp_path):
    config = write_config(tmp_path)
    axes = parse_vary(["model.layers[0].Dense.units=4,8", "seed=0,1",
                       "compile.optimizer.learning_rate=0.1,0.2"])
    groups = group_variants(expand(config, axes))
    assert [[v.index for v in g.variants] for g in groups] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert all(g.traced_lr for g in groups)
    # a schedule is not a traced rate: that variant gets a group of its own
    axes = parse_vary(["compile.optimizer.learning_rate=0.1,{name: exponential_decay, "
                       "initial_learning_rate: 0.1, decay_steps: 10, decay_rate: 0.9}"])
    groups = group_variants(expand(config, axes))
    assert [len(g.variants) for g in groups] == [1, 1]
    # Keras 1's decay makes the rate a schedule too: values are then static
    axes = parse_vary(["compile.optimizer.learning_rate=0.1,0.2"])
    groups = group_variants(expand(config, axes, ("compile.optimizer.decay=0.01",)))
    assert [len(g.variants) for g in groups] == [1, 1]


def test_groups_train_one_after_another(tmp_path):
    config = write_config(tmp_path, **{"fit.epochs": 1})
    result = run_sweep(config, ["model.layers[0].Dense.units=3,5", "seed=0,1"],
                       runs_root=tmp_path / "runs", quiet=True)
    assert result.groups == 2 and [r.status for r in result.runs] == ["finished"] * 4
    kernels = [weights(r.run / "checkpoints" / "last.h5")["params/dense/kernel"].shape
               for r in result.runs]
    assert kernels == [(2, 3), (2, 3), (2, 5), (2, 5)]


def test_split_values():
    assert split_values("1,2, 3") == ["1", "2", "3"]
    assert split_values("[1,2],{a: 1, b: 2},'x,y'") == ["[1,2]", "{a: 1, b: 2}", "'x,y'"]


@pytest.mark.parametrize("vary, message", [
    (["seed"], "expected KEY=V1,V2"),
    (["seed=0,,1"], "one or more values"),
    (["seed=0,1", "fit.seed=2,3"], "varied twice"),
    (["seed=1,1"], "given twice"),
    (["model..x=1"], "cannot parse"),
    ([], "at least one --vary"),
])
def test_bad_vary(vary, message):
    with pytest.raises(ConfigError, match=message):
        parse_vary(vary)


def test_errors_through_the_cli(tmp_path):
    runner = CliRunner()
    config = write_config(tmp_path, **{"fit.callbacks": [{"EarlyStopping": {"patience": 1}}]})
    result = runner.invoke(main, ["sweep", str(config), "--vary", "seed=0,1",
                                  "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "callbacks are not supported in a sweep" in result.output
    assert "Traceback" not in result.output
    config = write_config(tmp_path)
    for args, message in [
        (["--vary", "fit.epochs=1,x"], "fit.epochs"),
        (["--vary", "seed=0,1", "--set", "seed=3"], "both --set and --vary"),
        (["--vary", "model.layers[7].Dense.units=1,2"], "no such list item"),
    ]:
        result = runner.invoke(main, ["sweep", str(config), *args,
                                      "--runs-dir", str(tmp_path / "runs")])
        assert result.exit_code == 2, result.output
        assert message in result.output and len(result.output.strip().splitlines()) <= 3
    assert not (tmp_path / "runs").exists()   # nothing trained, no sweep directory


def test_a_variant_resumes_as_its_single_run(tmp_path):
    config = write_config(tmp_path, **{"fit.epochs": 2})
    result = run_sweep(config, ["seed=0,1", "compile.optimizer.learning_rate=0.1,0.2"],
                       runs_root=tmp_path / "runs", quiet=True)
    vr = result.runs[3]   # seed 1, rate 0.2: two more epochs from its last.h5
    spec = api.load_checked(vr.run / "config.yaml", ("fit.epochs=4",))
    resumed = api.train(spec, resume=vr.run, allow_config_change=True, quiet=True)
    assert resumed.status == "finished"
    single = single_run(config, ("seed=1", "compile.optimizer.learning_rate=0.2",
                                 "fit.epochs=4"), tmp_path / "single")
    a, b = (weights(r / "checkpoints" / "last.h5") for r in (vr.run, single))
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_a_diverging_variant_does_not_stop_the_others(tmp_path):
    config = write_config(tmp_path, **{
        "model.layers": [{"Dense": {"units": 4, "activation": "relu"}}, {"Dense": 1}],
        "compile.loss": "mse", "compile.metrics": []})
    result = run_sweep(config, ["compile.optimizer.learning_rate=0.01,1e12"],
                       runs_root=tmp_path / "runs", quiet=True)
    ok, bad = result.runs
    assert ok.status == "finished" and ok.epochs == 3
    assert bad.status == "diverged" and "non-finite" in bad.stop_reason
    assert result.exit_code == 4
    assert result.settings[1]["finished"] == 0 and result.settings[1]["loss_mean"] is None
    info = yaml.safe_load((bad.run / "run.json").read_text())
    assert info["status"] == "diverged"


def test_on_epoch_prunes_variants_and_the_rest_go_on_in_a_smaller_program(tmp_path,
                                                                          monkeypatch):
    """train_group's on_epoch hook stops variants (status pruned, checkpoints as of that
    epoch); the running ones regroup into a smaller program and equal their single runs."""
    from nnrun.sweep.program import GroupFit, train_group

    config = write_config(tmp_path, **{"data.train": {"builtin": "xor", "samples": 120,
                                                      "seed": 5}, "fit.epochs": 3})
    (group,) = group_variants(expand(config, parse_vary(
        ["compile.optimizer.learning_rate=0.3,0.05,0.01,0.2"])))
    monkeypatch.setattr(GroupFit, "worth_regrouping", lambda self, live, width, epochs:
                        0 < live < width)
    subsets = []
    real_subset = GroupFit.subset
    monkeypatch.setattr(GroupFit, "subset", lambda self, slots:
                        subsets.append(list(slots)) or real_subset(self, slots))
    seen = []

    def on_epoch(epoch, running):
        seen.append((epoch, [vr.variant.index for vr, _ in running]))
        return [vr for vr, _ in running if epoch == 1 and vr.variant.index in (1, 2)]

    runs = train_group(group, tmp_path / "sw", argv=["test"], quiet=True, on_epoch=on_epoch)
    assert seen == [(1, [0, 1, 2, 3]), (2, [0, 3]), (3, [0, 3])]
    assert subsets == [[0, 3]]   # one regroup: variants 0 and 3 in a program of two
    assert [r.status for r in runs] == ["finished", "pruned", "pruned", "finished"]
    assert [r.epochs for r in runs] == [3, 1, 1, 3]
    for vr in runs[1:3]:
        assert len(vr.history["loss"]) == 1
        with h5py.File(vr.run / "checkpoints" / "last.h5", "r") as f:
            assert int(f.attrs["epoch"]) == 1
    for vr in (runs[0], runs[3]):
        rate = vr.variant.texts["compile.optimizer.learning_rate"]
        single = single_run(config, (f"compile.optimizer.learning_rate={rate}",),
                            tmp_path / "single")
        assert_same_run(vr.run, single)
