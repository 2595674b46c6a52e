"""Built-in generated datasets (xor, moons, circles, spirals, blobs, sine), seeded with numpy,
and (nnrun/data/sklearn_datasets.py, imported here) those that ship inside scikit-learn.

Each generator is `fn(samples, seed, **options) -> (x, y)`; its keyword-only
parameters are its options, checked by `generate`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from nnrun.config.errors import ConfigError
from nnrun.config.registry import unknown_name_message
from nnrun.data.dataset_registry import DATASETS, builtin
from nnrun.data.sklearn_datasets import check_installed

DEFAULT_SAMPLES = 1000


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _binary(x: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
    order = rng.permutation(len(labels))
    return x[order].astype(np.float32), labels[order].astype(np.float32).reshape(-1, 1)


def _split_counts(samples: int, parts: int) -> np.ndarray:
    """`samples` spread over `parts` groups as evenly as possible (the first get the rest)."""
    return np.array([samples // parts + (i < samples % parts) for i in range(parts)])


@builtin("xor", "binary")
def xor(samples: int, seed: int, *, noise: float = 0.1):
    """The 4 corners of {0,1}^2 with Gaussian noise; label = XOR of the corner, y (n,1)."""
    _check(noise >= 0, f"noise must be >= 0, got {noise}")
    rng = np.random.default_rng(seed)
    corners = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float64)[np.arange(samples) % 4]
    x = corners + rng.normal(scale=noise, size=corners.shape)
    return _binary(x, corners[:, 0] != corners[:, 1], rng)


@builtin("moons", "binary")
def moons(samples: int, seed: int, *, noise: float = 0.1):
    """Two interleaving half circles, as scikit-learn's make_moons; y (n,1)."""
    _check(noise >= 0, f"noise must be >= 0, got {noise}")
    rng = np.random.default_rng(seed)
    n_out = samples // 2
    t_out, t_in = np.linspace(0, np.pi, n_out), np.linspace(0, np.pi, samples - n_out)
    x = np.concatenate(
        [
            np.stack([np.cos(t_out), np.sin(t_out)], 1),
            np.stack([1 - np.cos(t_in), 0.5 - np.sin(t_in)], 1),
        ]
    )
    x = x + rng.normal(scale=noise, size=x.shape)
    return _binary(x, np.arange(samples) >= n_out, rng)


@builtin("circles", "binary")
def circles(samples: int, seed: int, *, factor: float = 0.5, noise: float = 0.05):
    """A small circle inside a large one, as scikit-learn's make_circles; y (n,1)."""
    _check(0 < factor < 1, f"factor must be in (0, 1), got {factor}")
    _check(noise >= 0, f"noise must be >= 0, got {noise}")
    rng = np.random.default_rng(seed)
    n_out = samples // 2
    t_out = np.linspace(0, 2 * np.pi, n_out, endpoint=False)
    t_in = np.linspace(0, 2 * np.pi, samples - n_out, endpoint=False)
    x = np.concatenate(
        [
            np.stack([np.cos(t_out), np.sin(t_out)], 1),
            factor * np.stack([np.cos(t_in), np.sin(t_in)], 1),
        ]
    )
    x = x + rng.normal(scale=noise, size=x.shape)
    return _binary(x, np.arange(samples) >= n_out, rng)


@builtin("spirals", "multiclass")
def spirals(samples: int, seed: int, *, classes: int = 3, noise: float = 0.2):
    """`classes` interleaved spiral arms (the CS231n toy set); y int32 labels (n,)."""
    _check(classes >= 2, f"classes must be >= 2, got {classes}")
    _check(noise >= 0, f"noise must be >= 0, got {noise}")
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), _split_counts(samples, classes))
    radius = np.concatenate([np.linspace(0, 1, c) for c in _split_counts(samples, classes)])
    theta = labels * 4.0 + radius * 4.0 + rng.normal(scale=noise, size=samples)
    x = np.stack([radius * np.sin(theta), radius * np.cos(theta)], 1)
    order = rng.permutation(samples)
    return x[order].astype(np.float32), labels[order].astype(np.int32)


@builtin("blobs", "multiclass")
def blobs(
    samples: int, seed: int, *, classes: int = 3, features: int = 2, cluster_std: float = 1.0
):
    """Isotropic Gaussian clusters, centres uniform in [-10, 10]; y int32 labels (n,)."""
    _check(classes >= 2, f"classes must be >= 2, got {classes}")
    _check(features >= 1, f"features must be >= 1, got {features}")
    _check(cluster_std > 0, f"cluster_std must be > 0, got {cluster_std}")
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-10, 10, size=(classes, features))
    labels = np.repeat(np.arange(classes), _split_counts(samples, classes))
    x = centres[labels] + rng.normal(scale=cluster_std, size=(samples, features))
    order = rng.permutation(samples)
    return x[order].astype(np.float32), labels[order].astype(np.int32)


@builtin("sine", "regression")
def sine(samples: int, seed: int, *, noise: float = 0.05):
    """Regression: x uniform in [-pi, pi] (n,1), y = sin(x) + noise (n,1)."""
    _check(noise >= 0, f"noise must be >= 0, got {noise}")
    rng = np.random.default_rng(seed)
    x = rng.uniform(-np.pi, np.pi, size=(samples, 1))
    y = np.sin(x) + rng.normal(scale=noise, size=x.shape)
    return x.astype(np.float32), y.astype(np.float32)


@builtin("sequences", "binary")
def sequences(samples: int, seed: int, *, steps: int = 20, noise: float = 0.3):
    """Noisy random walks (n, steps, 1); label 1 when the walk ends above where it
    started (a sequence classifier must integrate over time); y (n,1)."""
    _check(steps >= 2 and noise >= 0, f"steps must be >= 2 and noise >= 0, got {steps}, {noise}")
    rng = np.random.default_rng(seed)
    labels = np.arange(samples) % 2
    drift = np.where(labels == 1, 0.15, -0.15)[:, None]
    walk = np.cumsum(drift + rng.normal(scale=noise, size=(samples, steps)), axis=1)
    return _binary(walk[:, :, None], labels, rng)


@builtin("tokens", "binary")
def tokens(samples: int, seed: int, *, vocab: int = 50, length: int = 20,
           min_length: int | None = None):
    """Token-id sequences (n, length) in [1, vocab); label 1 when most tokens come from
    the lower half of the vocabulary (an Embedding model's task); y (n,1). x holds
    integers (float32 in memory; an Embedding layer reads them as ids). With
    `min_length`, each sequence has a length drawn from [min_length, length] and is
    padded after its end with id 0 (for Embedding(mask_zero))."""
    _check(vocab >= 4 and length >= 1, f"vocab must be >= 4 and length >= 1, got {vocab}")
    _check(min_length is None or 1 <= min_length <= length,
           f"min_length must be in [1, length], got {min_length}")
    rng = np.random.default_rng(seed)
    labels = np.arange(samples) % 2
    low = rng.random((samples, 1)) * 0.3 + np.where(labels == 1, 0.55, 0.15)[:, None]
    from_low = rng.random((samples, length)) < low
    half = vocab // 2
    ids = np.where(from_low, rng.integers(1, half, (samples, length)),
                   rng.integers(half, vocab, (samples, length)))
    if min_length is not None:
        lengths = rng.integers(min_length, length + 1, samples)
        ids[np.arange(length)[None, :] >= lengths[:, None]] = 0
    return _binary(ids, labels, rng)


@builtin("shapes", "multiclass")
def shapes(samples: int, seed: int, *, size: int = 16, noise: float = 0.2):
    """Small images (n, size, size, 1) of a horizontal bar (0), a vertical bar (1) or a
    square outline (2) at a random place, plus noise; y int class ids (n,)."""
    _check(size >= 8 and noise >= 0, f"size must be >= 8 and noise >= 0, got {size}")
    rng = np.random.default_rng(seed)
    labels = np.arange(samples) % 3
    images = rng.normal(scale=noise, size=(samples, size, size))
    for i, label in enumerate(labels):
        r, c = rng.integers(1, size - 6, 2)
        if label == 0:
            images[i, r + 2, c:c + 6] += 1.0
        elif label == 1:
            images[i, r:r + 6, c + 2] += 1.0
        else:
            images[i, r:r + 5, c] += 1.0
            images[i, r:r + 5, c + 4] += 1.0
            images[i, r, c:c + 5] += 1.0
            images[i, r + 4, c:c + 5] += 1.0
    order = rng.permutation(samples)
    return images[order, :, :, None].astype(np.float32), labels[order].astype(np.int32)


@builtin("pairs", "binary")
def pairs(samples: int, seed: int, *, features: int = 8, noise: float = 0.5):
    """Two inputs for a graph model: x = {"first": (n, features), "second": (n, features)},
    noisy copies of one of 4 fixed prototypes each (the same in every split); y (n,1) is
    1 when both come from the same prototype (a siamese network's task)."""
    _check(features >= 2 and noise >= 0, f"features must be >= 2 and noise >= 0, got "
                                         f"{features}")
    protos = np.random.default_rng(features).normal(size=(4, features))   # every split's
    rng = np.random.default_rng(seed)
    labels = np.arange(samples) % 2
    first = rng.integers(0, 4, samples)
    other = (first + rng.integers(1, 4, samples)) % 4   # a different prototype
    second = np.where(labels == 1, first, other)
    order = rng.permutation(samples)
    x = {name: (protos[ids] + rng.normal(scale=noise, size=(samples, features)))[order]
         .astype(np.float32) for name, ids in (("first", first), ("second", second))}
    return x, labels[order].astype(np.float32).reshape(-1, 1)


def _option_defaults(fn: Callable) -> dict[str, Any]:
    params = inspect.signature(fn).parameters.values()
    return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY}


def _check_option(name: str, value: Any, default: Any) -> None:
    if isinstance(default, bool):
        ok, expected = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, expected = isinstance(value, int) and not isinstance(value, bool), "an integer"
    else:
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value))
        expected = "a finite number"
    if not ok:
        raise ConfigError(f"expected {expected}, got {value!r}", where=name)


def check_options(name: Any, samples: Any, seed: Any, options: dict[str, Any]) -> dict:
    """Check a builtin's name and options without generating anything; returns the
    options it takes with their defaults. ConfigError `where` names the option."""
    if not isinstance(name, str):
        raise ConfigError(f"expected a dataset name, got {name!r}", where="builtin")
    try:
        fn = DATASETS.get(name)
    except ConfigError as e:
        raise ConfigError(e.message, where="builtin") from e
    allowed = _option_defaults(fn)
    if fn.task != "regression":
        allowed["one_hot"] = False
    for key, value in options.items():
        if key not in allowed:
            raise ConfigError(
                unknown_name_message(
                    f"option of dataset {name!r}", key, ["samples", "seed", *allowed]
                ),
                where=str(key),
            )
        _check_option(key, value, allowed[key])
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int)
                                or samples < 1):
        raise ConfigError(f"expected a positive integer, got {samples!r}", where="samples")
    if getattr(fn, "rows", None) is not None:   # from scikit-learn: is it installed?
        check_installed(DATASETS.canonical(name))
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"expected a non-negative integer, got {seed!r}", where="seed")
    return allowed


def generate(name: str, samples: int | None, seed: int, **options: Any
             ) -> tuple[np.ndarray, np.ndarray]:
    """Run the built-in generator `name`, checking its options; `one_hot=True` on a
    classification dataset returns float32 one-hot targets (n, classes). `samples`
    None: DEFAULT_SAMPLES, or all the rows of a dataset of fixed size (which takes
    at most its rows)."""
    allowed = check_options(name, samples, seed, options)
    fn = DATASETS.get(name)
    rows = getattr(fn, "rows", None)
    if rows is not None:
        samples = rows if samples is None else min(samples, rows)
    elif samples is None:
        samples = DEFAULT_SAMPLES
    one_hot = options.pop("one_hot", False)
    x, y = fn(samples, seed, **options)
    if one_hot:
        labels = y[:, 0].astype(np.int64) if fn.task == "binary" else y
        width = 2 if fn.task == "binary" else options.get(
            "classes", allowed.get("classes", getattr(fn, "classes", None)
                                   or int(labels.max()) + 1))
        y = np.eye(width, dtype=np.float32)[labels]
    return x, y
