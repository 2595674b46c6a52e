"""What a run leaves and what a person reads: run directories (`rundir`), the runs
table and diff (`runlist`), the model summary, progress lines and diagrams (`report`),
charts (`charts`), the classification report (`classify`) and prediction files
(`predictions`).

May import config/ and nn/ (a summary needs the model); not train/, the API or cli/.
"""
