"""The bottom of the flow: a config file -> a validated, typed `Spec`, no jax.

YAML source and origins (`yamlsrc`), `extends:` and `${...}` (`compose`), `--set`
(`overrides`), the spec and its two-pass validation (`spec`, `checks`, `model_spec`,
`data_spec`, `callback_specs`), the layers' argument tables (`layer_schemas`), the
JSON Schema (`json_schema`), where each value came from (`provenance`), the registry
type every wing uses (`registry`) and the error types that map to exit codes (`errors`).

Imports no other wing of nnrun, and never jax: `nnrun check` and `--help` stay fast.
Every other wing may import it.
"""
