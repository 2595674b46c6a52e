"""`python -m nnrun.cli ...`: the same as the `nnrun` command."""

from nnrun.cli.main import entry

entry()
