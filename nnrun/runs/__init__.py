"""What a run leaves and what a person reads: run directories (`rundir`), signals
during a run (`interrupts`), the runs table and diff (`runlist`, `runtable`,
`config_diff`), the model summary and progress lines (`report`), the lines after
training (`finish`), model diagrams (`diagram`), charts (`charts`), the classification
report (`classify`) and prediction files (`predictions`).

May import config/ and nn/ (a summary needs the model); not train/, the API or cli/.
"""
