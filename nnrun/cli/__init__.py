"""The `nnrun` command line: click commands only, a thin shell over `nnrun.api`.

- `main.py`: the `nnrun` group and the run-side commands (train, evaluate, predict,
  summary, plot); `config_cmds.py`: config, check, schema, import-keras, export;
  `runs_cmds.py`: runs, diff; `sweep_cmd.py`: sweep; `tune_cmd.py`: tune; `common.py`:
  the shared options, error handling (exit codes of DESIGN.md section 5) and JAX's
  set-up.

The top of the flow: may import any wing; nothing in the package imports cli/. A
command parses its arguments, calls the API and prints; the work is never here.
Heavy wings (jax, the API) are imported inside the commands, so that `nnrun --help`
stays fast.
"""
