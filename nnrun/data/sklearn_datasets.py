"""Built-in datasets that ship inside scikit-learn (no download): iris, digits, wine,
breast_cancer, diabetes. scikit-learn is imported only when one is loaded; without it,
naming one is a ConfigError saying how to install it (`pip install nnrun[sklearn]`).

Each has a fixed number of rows (`ROWS`), shuffled with the seed; `samples: N` takes the
first N of the shuffled rows (all of them when N is larger).
"""

from __future__ import annotations

import importlib
import importlib.util

import numpy as np

from nnrun.config.errors import ConfigError
from nnrun.data.dataset_registry import builtin

ROWS = {"iris": 150, "digits": 1797, "wine": 178, "breast_cancer": 569, "diabetes": 442}
CLASSES = {"iris": 3, "digits": 10, "wine": 3, "breast_cancer": 2}
INSTALL = "pip install nnrun[sklearn]"


def check_installed(name: str) -> None:
    """ConfigError unless scikit-learn can be imported (found without importing it)."""
    if importlib.util.find_spec("sklearn") is None:
        raise ConfigError(f"dataset {name!r} comes with scikit-learn, which is not "
                          f"installed: {INSTALL}", where="builtin")


def _load(name: str, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(x float64, y) of sklearn's load_<name>, rows shuffled with `seed`, the first
    `samples` of them."""
    check_installed(name)
    module = importlib.import_module("sklearn.datasets")
    x, y = getattr(module, f"load_{name}")(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(x))[:samples]
    return x[order].astype(np.float64), y[order]


def _fixed(name: str, task: str):
    def add(fn):
        fn.rows = ROWS[name]
        fn.classes = CLASSES.get(name)
        return builtin(name, task)(fn)
    return add


@_fixed("iris", "multiclass")
def iris(samples: int, seed: int):
    """Fisher's iris: 150 flowers, 4 measurements (cm), 3 species; y int32 ids (n,)."""
    x, y = _load("iris", samples, seed)
    return x.astype(np.float32), y.astype(np.int32)


@_fixed("digits", "multiclass")
def digits(samples: int, seed: int, *, images: bool = False):
    """1797 handwritten digits, 8x8 pixels scaled to [0, 1]: x (n, 64), or (n, 8, 8, 1)
    with `images: true`; y int32 ids 0-9 (n,)."""
    x, y = _load("digits", samples, seed)
    x = (x / 16.0).astype(np.float32)
    return (x.reshape(-1, 8, 8, 1) if images else x), y.astype(np.int32)


@_fixed("wine", "multiclass")
def wine(samples: int, seed: int):
    """178 wines, 13 chemical measurements (unscaled), 3 cultivars; y int32 ids (n,)."""
    x, y = _load("wine", samples, seed)
    return x.astype(np.float32), y.astype(np.int32)


@_fixed("breast_cancer", "binary")
def breast_cancer(samples: int, seed: int):
    """569 tumours, 30 features (unscaled); y (n, 1) float32: 1 = benign."""
    x, y = _load("breast_cancer", samples, seed)
    return x.astype(np.float32), y.astype(np.float32).reshape(-1, 1)


@_fixed("diabetes", "regression")
def diabetes(samples: int, seed: int):
    """442 patients, 10 features (sklearn's centred, scaled ones); y (n, 1) float32,
    disease progression after one year (25-346)."""
    x, y = _load("diabetes", samples, seed)
    return x.astype(np.float32), y.astype(np.float32).reshape(-1, 1)
