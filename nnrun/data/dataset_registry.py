"""The registry of built-in datasets (`data.train: {builtin: NAME}`): generated ones
(nnrun/data/datasets.py) and those that ship inside scikit-learn
(nnrun/data/sklearn_datasets.py) register here. Read it through nnrun.data.datasets,
which imports both, so that every dataset is registered."""

from __future__ import annotations

from collections.abc import Callable

from nnrun.config.registry import Registry

DATASETS = Registry("dataset")


def builtin(name: str, task: str) -> Callable[[Callable], Callable]:
    """Register a generator; `task` is 'binary', 'multiclass' or 'regression'."""

    def add(fn: Callable) -> Callable:
        fn.task = task
        return DATASETS.register(name)(fn)

    return add
