"""What a person reads: per-epoch lines, the progress bar, the summary table."""

import io

from nnrun.config.spec import spec_from_dict
from nnrun.nn.builder import build_model
from nnrun.runs.report import EpochReporter, format_logs, readable_size, summary_text


def test_plain_lines_when_not_a_terminal():
    out = io.StringIO()
    reporter = EpochReporter(2, out)
    reporter.epoch_end(1, {"loss": 0.5, "accuracy": 0.75}, 0.0123)
    reporter.close()
    assert out.getvalue() == "Epoch 1/2 - 0.012s - loss: 0.5000 - accuracy: 0.7500\n"


def test_progress_bar_on_a_terminal():
    out = io.StringIO()
    reporter = EpochReporter(2, out, force_terminal=True)
    reporter.epoch_end(1, {"loss": 0.5}, 0.01)
    reporter.epoch_end(2, {"loss": 0.25}, 0.01)
    reporter.close()
    text = out.getvalue()
    assert "Epoch 2/2 - 0.010s - loss: 0.2500" in text
    assert "2/2" in text and "━" in text


def test_plain_lines_without_importing_rich():
    """Piped output (CI, scripts) needs no progress bar: the reporter does not import
    rich (a training imports it later, for summary.txt, while its epoch program
    compiles: about 60 ms off the path to the first epoch, issue 21)."""
    import os
    import subprocess
    import sys

    script = ("import io, sys\n"
              "from nnrun.runs.report import EpochReporter\n"
              "r = EpochReporter(2, io.StringIO()); r.epoch_end(1, {'loss': 1.0}, 0.1)\n"
              "r.close(); print('rich' in sys.modules)\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_a_forced_colour_environment_still_gets_rich_to_decide(monkeypatch):
    """FORCE_COLOR (https://force-color.org) makes rich treat a pipe as a terminal; the
    reporter leaves that decision to rich, as before."""
    monkeypatch.setenv("FORCE_COLOR", "1")
    out = io.StringIO()
    reporter = EpochReporter(2, out)
    reporter.epoch_end(1, {"loss": 0.5}, 0.01)
    reporter.close()
    assert "━" in out.getvalue()


def test_quiet_prints_nothing():
    out = io.StringIO()
    EpochReporter(2, out, quiet=True).epoch_end(1, {"loss": 1.0}, 0.1)
    assert out.getvalue() == ""


def test_summary_in_keras_form():
    spec = spec_from_dict({"model": {"input_shape": [784], "layers": [
        {"Dense": {"units": 512, "activation": "relu"}}, {"Dropout": 0.2}, {"Dense": 10}]},
        "compile": {"loss": "mse"}})
    text = summary_text(build_model(spec.model), "mnist")
    lines = text.splitlines()
    assert lines[0] == 'Model: "mnist"'
    assert "┃ Layer (type)" in lines[2] and "Output Shape" in lines[2] and "Param #" in lines[2]
    assert any("dense (Dense)" in line and "(None, 512)" in line and "401,920" in line
               for line in lines)
    assert any("dropout (Dropout)" in line and "(None, 512)" in line for line in lines)
    assert " Total params: 407,050 (1.55 MB)" in lines
    assert " Non-trainable params: 0 (0.00 B)" in lines


def test_readable_size_and_logs():
    assert readable_size(84) == "84.00 B"
    assert readable_size(2.61 * 1024 * 1024) == "2.61 MB"
    assert format_logs({"loss": 1 / 3}) == "loss: 0.3333"
