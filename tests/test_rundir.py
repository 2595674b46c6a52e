"""The run directory: fresh names, runs/latest, metrics logs, git provenance."""

import json
import subprocess

import pytest

from nnrun.config.files import WriteError
from nnrun.runs.rundir import MetricsLog, create_run_dir, git_info, latest_run_of, point_latest


def test_run_dirs_are_never_reused_and_latest_follows(tmp_path):
    a = create_run_dir(tmp_path, "exp")
    b = create_run_dir(tmp_path, "exp")
    assert a != b and a.name.startswith("exp-") and (a / "checkpoints").is_dir()
    assert not (tmp_path / "latest").exists()   # not before the run has its config
    (b / "config.yaml").write_text("name: exp\n")
    point_latest(b)
    assert (tmp_path / "latest").resolve() == b.resolve()
    assert latest_run_of(tmp_path, "exp") == b
    assert latest_run_of(tmp_path, "other") is None


def test_metrics_log_rows(tmp_path):
    log = MetricsLog(tmp_path, ["loss", "accuracy"])
    log.append(1, {"loss": 0.5, "accuracy": 0.25}, 0.01, 1.5)
    log.append(2, {"loss": float("nan"), "accuracy": 0.5}, 0.01, 1.0)
    log.close()
    assert (tmp_path / "metrics.csv").read_text().splitlines() == [
        "epoch,loss,accuracy,lr", "1,0.5,0.25,0.01", "2,nan,0.5,0.01"]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0] == {"epoch": 1, "loss": 0.5, "accuracy": 0.25, "lr": 0.01, "seconds": 1.5}
    assert rows[1]["loss"] == "nan"   # JSON has no NaN


def test_git_info(tmp_path):
    assert git_info(tmp_path) == {"commit": None, "dirty": None}

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.txt").write_text("1")
    git("add", "a.txt")
    git("commit", "-qm", "one")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True,
                          text=True).stdout.strip()
    assert git_info(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "a.txt").write_text("2")
    assert git_info(tmp_path) == {"commit": head, "dirty": True}


def test_metrics_log_rows_are_whole_or_absent(tmp_path, monkeypatch):
    """A row is appended in one write; a failed or short write (a full disk) leaves the
    files as they were: whole rows only, and the error names the file."""
    import nnrun.config.files as files

    log = MetricsLog(tmp_path, ["loss"])
    log.append(1, {"loss": 0.5}, 0.1, 1.0)
    before = (tmp_path / "metrics.csv").read_bytes(), (tmp_path / "metrics.jsonl").read_bytes()
    real = files._write

    def short(path, fd, data):   # the disk fills after half the row
        return real(path, fd, data[: len(data) // 2])

    def crash(path, fd, data):
        raise OSError(28, "No space left on device")

    for broken in (short, crash):
        monkeypatch.setattr(files, "_write", broken)
        with pytest.raises(WriteError, match="metrics.csv: cannot write: the disk is full"):
            log.append(2, {"loss": 0.25}, 0.1, 1.0)
        monkeypatch.undo()
        after = (tmp_path / "metrics.csv").read_bytes(), \
            (tmp_path / "metrics.jsonl").read_bytes()
        assert after == before
    assert before[0].splitlines() == [b"epoch,loss,lr", b"1,0.5,0.1"]
    assert not list(tmp_path.glob(".*.tmp"))
    # rows are appended, not the file replaced: the file keeps its inode
    inode = (tmp_path / "metrics.csv").stat().st_ino
    log.append(2, {"loss": 0.25}, 0.1, 1.0)
    assert (tmp_path / "metrics.csv").stat().st_ino == inode
    assert (tmp_path / "metrics.csv").read_bytes().splitlines()[-1] == b"2,0.25,0.1"


def test_a_resumed_metrics_log_is_byte_identical(tmp_path):
    # issue 17, item 3: rows kept from before the stop were read back with LF ends
    straight, stopped = tmp_path / "a", tmp_path / "b"
    for run in (straight, stopped):
        run.mkdir()
    log = MetricsLog(straight, ["loss"])
    for epoch in (1, 2, 3):
        log.append(epoch, {"loss": 1.0 / epoch}, 0.1, 1.0)
    log = MetricsLog(stopped, ["loss"])
    for epoch in (1, 2, 3):   # epoch 3 trained, then the process was killed before last.h5
        log.append(epoch, {"loss": 1.0 / epoch}, 0.1, 1.0)
    log = MetricsLog(stopped, ["loss"], resume_after=2)
    assert (stopped / "metrics.csv").read_bytes().count(b"\r\n") == 3   # epoch 3 dropped
    log.append(3, {"loss": 1.0 / 3}, 0.1, 1.0)
    assert (stopped / "metrics.csv").read_bytes() == (straight / "metrics.csv").read_bytes()
    assert b"\n" not in (stopped / "metrics.csv").read_bytes().replace(b"\r\n", b"")
