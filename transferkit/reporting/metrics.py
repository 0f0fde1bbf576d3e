"""Classification metrics: top-1/top-5 accuracy, loss, per-class precision/recall/F1, confusion matrix.

:func:`compute_metrics` turns predicted probabilities and true labels into a frozen
:class:`Metrics`; :func:`evaluate_model` runs a model over a batched ``tf.data`` dataset once and
does the same. The arithmetic is scikit-learn's; this module only validates inputs and names
the results by class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

import numpy as np
from sklearn import metrics as skm

from transferkit.errors import TransferkitError

if TYPE_CHECKING:  # annotations only: reading metrics or drawing a report needs no TensorFlow
    import keras
    import tensorflow as tf

TOP_K = 5
_SUM_TOLERANCE = 1e-2  # loose enough for bf16/float16 softmax outputs, tight enough to catch logits


@dataclass(frozen=True)
class Metrics:
    """Evaluation results of a classifier on one split.

    Attributes:
        accuracy: top-1 accuracy.
        top5_accuracy: top-5 accuracy; None when there are 5 classes or fewer (it would be 1.0).
        loss: mean sparse categorical cross-entropy (natural log).
        num_samples: number of evaluated samples.
        class_names: class names, index = label.
        per_class: ``{class name: {"precision", "recall", "f1", "support"}}`` in class order.
        macro_f1: unweighted mean F1 over the classes present in the labels or the predictions
            (scikit-learn's default), so a class absent from a small split does not count as 0.
        confusion: counts; rows = true class, columns = predicted class, in class order.
    """

    accuracy: float
    top5_accuracy: float | None
    loss: float
    num_samples: int
    class_names: tuple[str, ...]
    per_class: dict[str, dict[str, float]]
    macro_f1: float
    confusion: tuple[tuple[int, ...], ...]

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-able dict (tuples become lists), e.g. for ``metrics.json``."""
        data = asdict(self)
        data["class_names"] = list(self.class_names)
        data["confusion"] = [list(row) for row in self.confusion]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Metrics:
        """Rebuild :class:`Metrics` from :meth:`to_dict` output; unknown keys are ignored.

        Example:
            >>> from transferkit.reporting.metrics import compute_metrics
            >>> m = compute_metrics(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 1]), ["a", "b"])
            >>> Metrics.from_dict(m.to_dict()) == m
            True
        """
        missing = [f.name for f in fields(cls) if f.name not in data]
        if missing:
            raise TransferkitError(
                f"Metrics data lacks {', '.join(missing)}; received keys {sorted(data)}. "
                "Expected the output of Metrics.to_dict() (e.g. a run's metrics.json)."
            )
        top5 = data["top5_accuracy"]
        return cls(
            accuracy=float(data["accuracy"]),
            top5_accuracy=None if top5 is None else float(top5),
            loss=float(data["loss"]),
            num_samples=int(data["num_samples"]),
            class_names=tuple(str(name) for name in data["class_names"]),
            per_class={str(k): {m: float(v) for m, v in d.items()} for k, d in data["per_class"].items()},
            macro_f1=float(data["macro_f1"]),
            confusion=tuple(tuple(int(c) for c in row) for row in data["confusion"]),
        )


def compute_metrics(probabilities: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> Metrics:
    """Compute :class:`Metrics` from predicted class probabilities and integer labels.

    Args:
        probabilities: ``(num_samples, num_classes)`` softmax outputs (rows sum to 1).
        labels: ``(num_samples,)`` integer class indices in ``[0, num_classes)``.
        class_names: one unique name per class, index = label.

    Example:
        >>> p = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.5, 0.2, 0.3]])
        >>> m = compute_metrics(p, np.array([0, 1, 2]), ["cat", "dog", "fox"])
        >>> round(m.accuracy, 3), m.top5_accuracy, m.confusion[2]
        (0.667, None, (1, 0, 0))
    """
    probabilities, labels, names = _validate(probabilities, labels, class_names)
    num_classes = len(names)
    classes = list(range(num_classes))
    predicted = probabilities.argmax(axis=1)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0
    )
    per_class = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": float(s)}
        for name, p, r, f, s in zip(names, precision, recall, f1, support, strict=True)
    }
    top5 = None
    if num_classes > TOP_K:
        top5 = float(skm.top_k_accuracy_score(labels, probabilities, k=TOP_K, labels=classes))
    return Metrics(
        accuracy=float(skm.accuracy_score(labels, predicted)),
        top5_accuracy=top5,
        # float32 input: clipped at float32 epsilon, close to Keras' 1e-7 in its own loss.
        loss=float(skm.log_loss(labels, probabilities, labels=classes)),
        num_samples=int(len(labels)),
        class_names=names,
        per_class=per_class,
        macro_f1=float(skm.f1_score(labels, predicted, average="macro", zero_division=0)),
        confusion=tuple(map(tuple, skm.confusion_matrix(labels, predicted, labels=classes).tolist())),
    )


def _validate(
    probabilities: np.ndarray, labels: np.ndarray, class_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Check shapes, label range and that rows are probabilities; return float32 rows summing to 1."""
    names = tuple(str(name) for name in class_names)
    if len(set(names)) != len(names) or not names:
        raise TransferkitError(f"Class names must be unique and non-empty; received {list(names)}.")
    probs = np.asarray(probabilities, dtype=np.float32)
    labels = np.asarray(labels).reshape(-1)
    if probs.ndim != 2 or probs.shape != (len(labels), len(names)) or not len(labels):
        raise TransferkitError(
            f"Expected probabilities of shape (num_samples, {len(names)}) and {len(labels)} labels with "
            f"num_samples > 0; received probabilities {probs.shape}. Pass one row per label and one "
            "column per class name."
        )
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= len(names):
        raise TransferkitError(
            f"Labels must be integers in [0, {len(names)}); received {labels.dtype} values in "
            f"[{labels.min()}, {labels.max()}]. Use integer class indices (not one-hot or names)."
        )
    sums = probs.sum(axis=1)
    if probs.min() < 0 or np.abs(sums - 1).max() > _SUM_TOLERANCE:
        raise TransferkitError(
            f"Probabilities must be non-negative with rows summing to 1; received rows summing to "
            f"[{sums.min():.3g}, {sums.max():.3g}]. If the model outputs logits, apply a softmax first."
        )
    return probs / sums[:, None], labels.astype(np.int64), names


def evaluate_model(model: keras.Model, dataset: tf.data.Dataset, class_names: Sequence[str]) -> Metrics:
    """Run ``model`` over ``dataset`` once and compute :class:`Metrics`.

    Probabilities and labels are collected from the same batches in the same pass, so a
    shuffled (or otherwise non-deterministic) dataset is evaluated correctly.

    Args:
        model: a classifier whose output is softmax probabilities over ``class_names``.
        dataset: batched ``(images, labels)`` elements (extra elements such as sample weights are
            ignored); images as the model expects them, labels as integer class indices.
        class_names: one name per output unit, index = label.

    Example:
        >>> import keras, tensorflow as tf
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
        >>> ds = tf.data.Dataset.from_tensor_slices((np.ones((10, 4)), np.arange(10) % 3)).batch(4)
        >>> evaluate_model(model, ds, ["a", "b", "c"]).num_samples
        10
    """
    probabilities, labels = [], []
    for element in dataset:
        if not isinstance(element, tuple) or len(element) < 2:
            raise TransferkitError(
                f"Expected a dataset of (images, labels) batches; received elements of type "
                f"{type(element).__name__}. Build it with transferkit.data.loading or map it to (x, y)."
            )
        # predict_on_batch runs the compiled predict function, as model.predict does per step.
        probabilities.append(np.asarray(model.predict_on_batch(element[0])))
        labels.append(np.asarray(element[1]).reshape(-1))
    if not labels:
        raise TransferkitError("The evaluation dataset is empty; check the split sizes of your data.")
    return compute_metrics(np.concatenate(probabilities), np.concatenate(labels), class_names)
