"""Issue 21's per-epoch overhead: after the first dispatch a training compiles nothing
(one program runs one epoch or a chunk of them, reruns included, and keeps the best
state itself: nnrun/train/chunk.py), and metrics.csv gets its rows appended (the file
is never replaced after it is opened). The numbers are those of before:
tests/test_chunks.py and tests/test_faults.py check them bit for bit."""

from __future__ import annotations

import jax
import jax.monitoring
import pytest
import yaml

from nnrun import api
from nnrun.train import fitter as fitter_module

CONFIG = {
    "name": "overhead", "seed": 0,
    "data": {"train": {"builtin": "xor", "samples": 200, "seed": 1}, "validation_split": 0.25},
    "model": {"input_shape": [2], "layers": [{"Dense": {"units": 5, "activation": "relu"}},
                                             {"Dropout": 0.1},
                                             {"Dense": {"units": 1, "activation": "sigmoid"}}]},
    "compile": {"optimizer": {"name": "sgd", "learning_rate": 0.3}, "loss": "mse",
                "metrics": ["accuracy"]},
    "fit": {"batch_size": 10, "epochs": 6},
}


CALLBACKS = [{"EarlyStopping": {"monitor": "val_loss", "patience": 50,
                                 "restore_best_weights": True}},
             {"ReduceLROnPlateau": {"monitor": "val_loss", "patience": 1, "factor": 0.5}}]


@pytest.mark.parametrize("callbacks, first_written", [([], False), (CALLBACKS, False),
                                                      ([], True)],
                         ids=["plain", "callbacks", "first-epoch-written"])
def test_no_compile_after_the_first_epoch_and_rows_appended(tmp_path, monkeypatch,
                                                            callbacks, first_written):
    """first_written: epoch 1 took longer than NNRUN_CHECKPOINT_SECONDS (its compile on
    a loaded machine), so its checkpoint is written at once (this once compiled a copy
    program at the next improving epoch)."""
    if first_written:
        from nnrun.train import checkpoint

        real_end = checkpoint.Checkpointer.epoch_end

        def epoch_end(self, ts, epoch, *args, **kwargs):
            if epoch == 1:
                self.last_write = -float("inf")   # epoch 1 finds a write due
            return real_end(self, ts, epoch, *args, **kwargs)

        monkeypatch.setattr(checkpoint.Checkpointer, "epoch_end", epoch_end)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "fit": {**CONFIG["fit"],
                                                      "callbacks": callbacks}}))
    events: list = []
    real_epochs = fitter_module.Fitter.run_epochs

    def run_epochs(self, ts, *args):   # a dispatch of one or more epochs
        events.append(("epoch", self.epoch + 1))
        out = real_epochs(self, ts, *args)
        csv = run_dirs[0] / "metrics.csv" if run_dirs else None
        events.append(("inode", csv.stat().st_ino if csv and csv.exists() else None))
        return out

    run_dirs: list = []
    real_start = api.training.start_run

    def start_run(*args, **kwargs):
        run, info = real_start(*args, **kwargs)
        run_dirs.append(run)
        return run, info

    def compiled(event: str, duration: float, **kwargs) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            events.append(("compile", None))

    monkeypatch.setattr(fitter_module.Fitter, "run_epochs", run_epochs)
    monkeypatch.setattr(api.training, "start_run", start_run)
    jax.monitoring.register_event_duration_secs_listener(compiled)
    try:
        jax.clear_caches()   # every program compiled by this training, not found compiled
        result = api.train(api.load_checked(path), runs_root=tmp_path / "runs", quiet=True)
    finally:
        jax.monitoring.unregister_event_duration_listener(compiled)
    assert result.status == "finished" and result.epochs_completed == 6
    second = events.index(("epoch", 2))
    # before the second epoch: the init program and the epochs' program, nothing else (an
    # array sent as jnp.asarray, or a key made outside a trace, compiled a program of its
    # own: about 0.1 s before the first epoch of the founding network)
    assert [kind for kind, _ in events[:second]].count("compile") == 2
    assert [e for e in events[second:] if e[0] == "compile"] == []
    inodes = {v for kind, v in events[second:] if kind == "inode"}
    assert len(inodes) == 1 and None not in inodes   # appended, never replaced
    rows = (result.run_dir / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,loss,accuracy,val_loss,val_accuracy,lr")
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4", "5", "6"]


def test_garbage_collection_paused_only_until_jax_is_configured():
    """The console script pauses the collector for `nnrun train` (common.pause_gc);
    configure_jax turns it back on once, with the objects of the imports frozen. A
    command that did not pause it is left alone."""
    import gc

    from nnrun.cli import common

    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    common.configure_jax()
    assert gc.isenabled() and gc.get_freeze_count() == frozen   # nothing was paused
    try:
        common.pause_gc()
        assert not gc.isenabled()
        common.configure_jax()
        assert gc.isenabled() and gc.get_freeze_count() > frozen
        gc.disable()
        common.configure_jax()   # resumed once: a later call changes nothing
        assert not gc.isenabled()
    finally:
        gc.unfreeze()
        gc.enable()


def test_nnrun_train_trains_with_the_collector_on(tmp_path):
    """`nnrun train` through the console script: the collector is off during start-up
    and on (with the imports frozen) when the epochs run."""
    import subprocess
    import sys
    import textwrap

    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**CONFIG, "fit": {**CONFIG["fit"],
                                                                       "epochs": 2}}))
    script = textwrap.dedent("""\
        import gc, sys
        from nnrun.train import fit_loop as module
        real = module.fit_loop

        def fit_loop(*args, **kwargs):
            print("AT_FIT", gc.isenabled(), gc.get_freeze_count() > 0, file=sys.stderr)
            return real(*args, **kwargs)

        module.fit_loop = fit_loop
        sys.argv = ["nnrun", "train", "c.yaml", "-q", "--runs-dir", "runs"]
        from nnrun.cli.main import entry
        print("AT_START", gc.isenabled(), file=sys.stderr)
        entry()
        """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, text=True,
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "AT_START True" in proc.stderr and "AT_FIT True True" in proc.stderr, proc.stderr
    assert (tmp_path / "runs" / "latest" / "checkpoints" / "last.h5").is_file()
