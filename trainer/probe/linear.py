"""A linear probe on cell tokens: a class-balanced linear classifier per level, scored on the test split.

The one implementation of per-class F1 and balanced accuracy for probes lives here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from embedstore.errors import EmbedstoreError
from embedstore.trainer.probe.cells import CellTable


def per_class_f1(y_true: np.ndarray, y_pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(len(labels),) F1 = 2TP / (2TP + FP + FN) of each label; NaN where a label is neither true nor predicted."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    out = np.full(len(labels), np.nan)
    for i, c in enumerate(labels):
        tp = np.sum((y_true == c) & (y_pred == c))
        denom = 2 * tp + np.sum((y_true != c) & (y_pred == c)) + np.sum((y_true == c) & (y_pred != c))
        if denom:
            out[i] = 2 * tp / denom
    return out


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``y_true`` (1/K for a constant guess among K classes)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    present = np.unique(y_true)
    if present.size == 0:
        raise ValueError("balanced accuracy of an empty set")
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in present]))


def _balanced_weights(y: np.ndarray, k: int) -> torch.Tensor:
    """(k,) n / (K_present * count_c): every class present weighs the same in the loss; absent classes 0."""
    counts = np.bincount(y, minlength=k).astype(np.float64)
    weights = np.where(counts > 0, len(y) / (np.count_nonzero(counts) * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def train_linear(x: np.ndarray, y: np.ndarray, n_classes: int, *, l2: float = 1e-3, max_iter: int = 200) -> torch.nn.Linear:
    """Fit ``nn.Linear(C, K)`` on (n, C) standardized features and (n,) labels 0..K-1 with full-batch LBFGS.

    The loss (class-balanced cross-entropy + ``l2`` * |W|^2) is convex and the layer starts at zero, so the
    result is deterministic without a seed.
    """
    features, labels = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64))
    layer = torch.nn.Linear(x.shape[1], n_classes)
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    loss_fn = torch.nn.CrossEntropyLoss(weight=_balanced_weights(y, n_classes))
    opt = torch.optim.LBFGS(layer.parameters(), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn(layer(features), labels) + l2 * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return layer


def fit_probe(train_table: CellTable, test_table: CellTable, level: int) -> dict[str, Any]:
    """Train on ``train_table``'s level-``level`` tokens, score on ``test_table``.

    Features are standardized with the train mean / std. Returns ``level``, ``n_train``, ``n_test``,
    ``balanced_accuracy`` (test), ``f1`` ({class name: test F1, NaN when the class is in neither}) and
    ``train_balanced_accuracy``.
    """
    for table in (train_table, test_table):
        if level not in table.features:
            have = ", ".join(map(str, sorted(table.features)))
            raise EmbedstoreError(f"--level {level}: the {table.split} cell table has levels {have}")
        if len(table) == 0:
            raise EmbedstoreError(f"the {table.split} cell table has no cells")
    x_train, x_test = train_table.features[level], test_table.features[level]
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    k = len(train_table.class_names)
    y_train, y_test = train_table.cls - 1, test_table.cls - 1
    layer = train_linear((x_train - mean) / std, y_train, k)

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return layer(torch.from_numpy(((x - mean) / std).astype(np.float32))).argmax(dim=1).numpy()

    pred = predict(x_test)
    f1 = per_class_f1(y_test, pred, np.arange(k))
    return {"level": level, "n_train": len(train_table), "n_test": len(test_table),
            "balanced_accuracy": balanced_accuracy(y_test, pred),
            "train_balanced_accuracy": balanced_accuracy(y_train, predict(x_train)),
            "f1": {name: float(v) for name, v in zip(train_table.class_names, f1)}}
