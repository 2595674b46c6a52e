"""Training: the compiled epoch (`epoch`: one jitted `lax.scan` over on-device batches),
streamed epochs for data on disk (`streaming`), the `Fitter` that runs them, the fit
loop with callbacks and exact resume (`fit_loop`, `callbacks`), HDF5 checkpoints
(`checkpoint`), several devices (`devices`) and processes (`distributed`).

May import config/, nn/ and data/; not run directories, reports or the API.
"""
