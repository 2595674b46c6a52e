"""A classifier's evaluation report: class ids from targets and predicted probabilities
(binary: one sigmoid unit, threshold 0.5; multiclass: argmax, targets as integer ids
or one-hot rows), the confusion matrix, and per-class precision, recall and F1 with
sklearn's definitions (a zero denominator gives 0). Numpy only."""

from __future__ import annotations

from typing import Any

import numpy as np


def class_ids(y: np.ndarray, probs: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray,
                                                                      int]:
    """(true ids, predicted ids, number of classes) for `kind` 'binary' or 'multiclass'."""
    n = len(probs)
    probs = np.asarray(probs).reshape(n, -1)
    y = np.asarray(y).reshape(n, -1)
    if kind == "binary":
        pred = (probs[:, 0] > 0.5).astype(np.int64)
        true = (y[:, 0] > 0.5).astype(np.int64)
        return true, pred, 2
    classes = probs.shape[1]
    pred = probs.argmax(axis=-1).astype(np.int64)
    true = y.argmax(axis=-1) if y.shape[1] == classes and classes > 1 else y[:, 0]
    return true.astype(np.int64), pred, classes


def confusion_matrix(true: np.ndarray, pred: np.ndarray, classes: int) -> np.ndarray:
    """matrix[i, j]: the number of samples of true class i predicted as class j."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(true), np.asarray(pred)), 1)
    return matrix


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(len(num)), where=den > 0)


def per_class(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Per class: precision = TP/(TP+FP), recall = TP/(TP+FN), F1 = their harmonic mean
    (0 where a denominator is 0, as sklearn's zero_division=0), support = TP+FN."""
    matrix = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(matrix)
    precision = _ratio(tp, matrix.sum(axis=0))
    recall = _ratio(tp, matrix.sum(axis=1))
    f1 = _ratio(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1,
            "support": matrix.sum(axis=1).astype(np.int64)}


def classification_report(y: np.ndarray, probs: np.ndarray, kind: str,
                          names: list[str] | None = None) -> dict[str, Any]:
    """The report as JSON-ready data: classes, per-class rows, macro and weighted
    averages, accuracy, and the confusion matrix (rows true, columns predicted).
    Classes are shown by `names` (the data's class names) when there is one per class,
    else by id."""
    true, pred, classes = class_ids(y, probs, kind)
    label = [str(n) for n in names] if names and len(names) == classes else \
        [str(c) for c in range(classes)]
    matrix = confusion_matrix(true, pred, classes)
    stats = per_class(matrix)
    support = stats["support"]
    rows = [{"class": label[c], **{k: float(stats[k][c]) for k in ("precision", "recall", "f1")},
             "support": int(support[c])} for c in range(classes)]
    total = max(int(support.sum()), 1)
    averages = {
        "macro": {k: float(stats[k].mean()) for k in ("precision", "recall", "f1")},
        "weighted": {k: float((stats[k] * support).sum() / total)
                     for k in ("precision", "recall", "f1")},
    }
    return {"task": kind, "classes": label, "per_class": rows,
            "averages": averages, "accuracy": float(np.trace(matrix) / total),
            "confusion_matrix": matrix.tolist()}
