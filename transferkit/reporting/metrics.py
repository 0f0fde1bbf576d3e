"""Classification metrics: top-1/top-5 accuracy and its 95% interval, loss, per-class P/R/F1, confusion.

:func:`compute_metrics` turns predicted probabilities and true labels into a frozen
:class:`Metrics`; :func:`evaluate_model` runs a model over a batched ``tf.data`` dataset once and
does the same. The arithmetic is scikit-learn's; this module only validates inputs and names
the results by class.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

import numpy as np
from sklearn import metrics as skm

from transferkit.errors import TransferkitError

if TYPE_CHECKING:  # annotations only: reading metrics or drawing a report needs no TensorFlow
    import keras
    import tensorflow as tf

TOP_K = 5
Predict = Callable[[np.ndarray], np.ndarray]  # a batch of images -> class probabilities
Z_95 = 1.959963984540054  # standard normal quantile for a two-sided 95% interval
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
        accuracy_interval: 95% Wilson score interval ``(low, high)`` of the accuracy: with 120
            images an accuracy of 0.9 is known to about +/-6 points.
        scored: which images these are, as ``evaluate`` words it (e.g. "the test split of
            /data/pets"); empty where the caller says it (a run's ``metrics.json`` keys).
    """

    accuracy: float
    top5_accuracy: float | None
    loss: float
    num_samples: int
    class_names: tuple[str, ...]
    per_class: dict[str, dict[str, float]]
    macro_f1: float
    confusion: tuple[tuple[int, ...], ...]
    accuracy_interval: tuple[float, float] = (0.0, 1.0)
    scored: str = ""

    def per_class_shown(self) -> dict[str, tuple[float | str, float | str, float | str, int]]:
        """Precision, recall, F1 and support of each class as a table shows them: ``"-"`` where a
        figure is undefined (precision of a class nothing was predicted as; recall and F1 of a class
        with no images here), not a 0.0 that reads as a failure."""
        predicted = [sum(row[index] for row in self.confusion) for index in range(len(self.class_names))]
        shown = {}
        for (name, row), times_predicted in zip(self.per_class.items(), predicted, strict=True):
            precision = row["precision"] if times_predicted else "-"
            recall, f1 = (row["recall"], row["f1"]) if row["support"] else ("-", "-")
            shown[name] = (precision, recall, f1, int(row["support"]))
        return shown

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-able dict (tuples become lists), e.g. for ``metrics.json``."""
        data = asdict(self)
        data["class_names"] = list(self.class_names)
        data["confusion"] = [list(row) for row in self.confusion]
        data["accuracy_interval"] = list(self.accuracy_interval)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Metrics:
        """Rebuild :class:`Metrics` from :meth:`to_dict` output; unknown keys are ignored.

        Files written before the interval existed get it recomputed from accuracy and count.

        Example:
            >>> from transferkit.reporting.metrics import compute_metrics
            >>> m = compute_metrics(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 1]), ["a", "b"])
            >>> Metrics.from_dict(m.to_dict()) == m
            True
        """
        missing = [f.name for f in fields(cls) if f.name not in data and f.name != "accuracy_interval"]
        if missing:
            raise TransferkitError(
                f"Metrics data lacks {', '.join(missing)}; received keys {sorted(data)}. "
                "Expected the output of Metrics.to_dict() (e.g. a run's metrics.json)."
            )
        top5 = data["top5_accuracy"]
        interval = data.get("accuracy_interval") or accuracy_interval(
            round(float(data["accuracy"]) * int(data["num_samples"])), int(data["num_samples"])
        )
        return cls(
            accuracy=float(data["accuracy"]),
            top5_accuracy=None if top5 is None else float(top5),
            loss=float(data["loss"]),
            num_samples=int(data["num_samples"]),
            class_names=tuple(str(name) for name in data["class_names"]),
            per_class={str(k): {m: float(v) for m, v in d.items()} for k, d in data["per_class"].items()},
            macro_f1=float(data["macro_f1"]),
            confusion=tuple(tuple(int(c) for c in row) for row in data["confusion"]),
            accuracy_interval=(float(interval[0]), float(interval[1])),
        )


def difference_halfwidth(first: float, second: float, total: int) -> float:
    """The 95% half-width, in points, of the difference between two accuracies on ``total`` images:
    Agresti and Caffo's interval for two independent proportions (one right and one wrong answer
    added to each; conservative for two models scored on the same images). ``nan`` without images.

    The plain normal approximation it replaced (2026-12-07) is zero-width where both accuracies are
    0 or 1: ``compare`` printed a regret of "0.0 +/- 0.0" on 16 images, all right for both. Away
    from the ends the two differ by under half a point at 49 images, under 0.1 at 500.

    Example:
        >>> round(difference_halfwidth(0.9, 0.85, 100), 1), round(difference_halfwidth(1.0, 1.0, 16), 1)
        (9.3, 15.0)
    """
    if total <= 0:
        return math.nan
    shrunk = [(value * total + 1) / (total + 2) for value in (first, second)]
    return 100 * Z_95 * math.sqrt(sum(p * (1 - p) for p in shrunk) / (total + 2))


def accuracy_interval(correct: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``correct / total`` (95% by default).

    Unlike ``p +/- z * se`` it stays inside [0, 1] and is not zero-width at 0 or 100%, which
    matters for the small test splits transfer learning lives with.

    Args:
        correct: number of correct predictions.
        total: number of predictions; 0 gives the uninformative ``(0.0, 1.0)``.
        z: the normal quantile of the interval's coverage.

    Example:
        >>> low, high = accuracy_interval(108, 120)
        >>> round(low, 3), round(high, 3)
        (0.833, 0.942)
    """
    if total <= 0:
        return (0.0, 1.0)
    p, z2 = correct / total, z * z
    centre = (p + z2 / (2 * total)) / (1 + z2 / total)
    half = z / (1 + z2 / total) * np.sqrt(p * (1 - p) / total + z2 / (4 * total * total))
    # It contains p; at 0% and 100% the bound lands on p only up to rounding (1 - 1e-16 at 30/30).
    return (float(min(p, max(0.0, centre - half))), float(max(p, min(1.0, centre + half))))


SIGNIFICANCE = 0.05
"""The conventional level below which a paired difference is called beyond chance (export's parity
check, ``evaluate --tta``)."""


def paired_exact_p(only_first_right: int, only_second_right: int) -> float:
    """McNemar's exact test, two-sided: how likely a split of the images only one of two models gets
    right at least this uneven is if both were as accurate; 1.0 where no image differs.

    Example:
        >>> round(paired_exact_p(1, 12), 4), paired_exact_p(0, 0)
        (0.0034, 1.0)
    """
    from scipy.stats import binomtest

    changed = only_first_right + only_second_right
    return 1.0 if not changed else float(binomtest(only_first_right, changed, 0.5).pvalue)


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
        accuracy_interval=accuracy_interval(int((predicted == labels).sum()), len(labels)),
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


def evaluate_model(
    model: keras.Model, dataset: tf.data.Dataset, class_names: Sequence[str], predict: Predict | None = None
) -> Metrics:
    """Run ``model`` over ``dataset`` once and compute :class:`Metrics`.

    Probabilities and labels are collected from the same batches in the same pass, so a
    shuffled (or otherwise non-deterministic) dataset is evaluated correctly.

    Args:
        model: a classifier whose output is softmax probabilities over ``class_names``.
        dataset: batched ``(images, labels)`` elements (extra elements such as sample weights are
            ignored); images as the model expects them, labels as integer class indices.
        class_names: one name per output unit, index = label.
        predict: computes ``model``'s probabilities for a batch of images (default: its
            ``predict_on_batch``), e.g. through steps the run has traced already (see
            :meth:`transferkit.training.trainer.Trainer.predictor`).

    Example:
        >>> import keras, tensorflow as tf
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
        >>> ds = tf.data.Dataset.from_tensor_slices((np.ones((10, 4)), np.arange(10) % 3)).batch(4)
        >>> evaluate_model(model, ds, ["a", "b", "c"]).num_samples
        10
    """
    return compute_metrics(*predict_dataset(model, dataset, predict), class_names)


def predict_dataset(
    model: keras.Model, dataset: tf.data.Dataset, predict: Predict | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(probabilities, labels)`` of one pass of ``model`` over batched ``(images, labels)`` elements.

    Probabilities and labels come from the same batches, so a shuffled dataset is still paired
    right; :func:`evaluate_model` and the run folder's ``predictions.npz`` share this one pass.
    ``predict`` as for :func:`evaluate_model`.
    """
    probabilities, labels, rows = [], [], None
    for element in dataset:
        if not isinstance(element, tuple) or len(element) < 2:
            raise TransferkitError(
                f"Expected a dataset of (images, labels) batches; received elements of type "
                f"{type(element).__name__}. Build it with transferkit.data.loading or map it to (x, y)."
            )
        images = np.asarray(element[0])
        rows = rows or len(images)
        probabilities.append(predict_rows(predict or model.predict_on_batch, images, rows))
        labels.append(np.asarray(element[1]).reshape(-1))
    if not labels:
        raise TransferkitError("The evaluation dataset is empty; check the split sizes of your data.")
    return np.concatenate(probabilities), np.concatenate(labels)


def predict_rows(predict: Predict, images: np.ndarray, rows: int) -> np.ndarray:
    """``predict(images)`` (e.g. ``model.predict_on_batch``), run on at least ``rows`` rows: a
    smaller batch is padded with copies of its last image and the padding's outputs dropped.

    Keras traces its predict function again for every new batch size (for MobileNetV2 on 2 CPU
    cores, ~1.5 s each, longer than predicting a small test split); padding the last, smaller
    batch of every split to the first batch's size keeps one trace for the whole run.
    """
    count = len(images)
    if 0 < count < rows:
        images = np.concatenate([images, np.repeat(images[-1:], rows - count, axis=0)])
    return np.asarray(predict(images))[:count]
