"""Class weights for imbalanced folders, from the recipe's ``[data] class_weight`` setting."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from transferkit.selection.rules import IMBALANCE_WARNING


def class_weights(labels: Sequence[int], num_classes: int, mode: str) -> dict[int, float] | None:
    """Keras ``class_weight`` for ``mode`` (see ``recipes.DataConfig``); None means equal weights.

    Balanced weights are ``n / (k * count)`` over the ``k`` classes present, so the weighted
    sample count stays ``n`` and a balanced folder gets weights of 1. A class with no training
    image gets weight 1 (it never occurs in a training batch).

    Args:
        labels: the training labels.
        num_classes: the number of classes the model predicts.
        mode: ``"none"``, ``"balanced"`` or ``"auto"`` (balanced when the largest/smallest class
            ratio is at least ``IMBALANCE_WARNING``, the selector's imbalance threshold).
    """
    counts = np.bincount(np.asarray(labels, dtype="int64"), minlength=num_classes)
    present = counts[counts > 0]
    if mode == "none" or not len(present):
        return None
    if mode == "auto" and present.max() / present.min() < IMBALANCE_WARNING:
        return None
    weights = np.where(counts > 0, counts.sum() / (len(present) * np.maximum(counts, 1)), 1.0)
    return {index: float(weight) for index, weight in enumerate(weights)}
