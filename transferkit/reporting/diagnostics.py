"""What a run gets wrong, in numbers: held-out predictions, confused pairs, top losses, calibration.

The held-out split (the test split when the run has one, else validation) is predicted once at
the end of ``fit`` (:func:`evaluate_held_out`): its metrics and ``predictions.npz`` come from the
same pass. Everything else here reads that file; the heat maps that need the model are in
:mod:`transferkit.reporting.grad_cam`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from transferkit.errors import TransferkitError
from transferkit.fileio import atomic_path
from transferkit.reporting.metrics import Metrics, Predict, compute_metrics, predict_dataset

if TYPE_CHECKING:  # annotations only: reading predictions or drawing a report needs no TensorFlow
    import keras
    import tensorflow as tf

PREDICTIONS_FILE = "predictions.npz"  # the headline split's: test, or validation without one
VALIDATION_PREDICTIONS_FILE = "validation_predictions.npz"  # beside a test split's: compare reads it
CALIBRATION_BINS = 15
_EPSILON = 1e-7  # the probability floor of the loss, as Keras' cross-entropy clips


@dataclass(frozen=True)
class Predictions:
    """One held-out split's predictions, row i = image i.

    Attributes:
        split: "test" or "validation": which images these are.
        class_names: index = label.
        labels: ``(N,)`` true class indices.
        probabilities: ``(N, num_classes)`` softmax outputs.
        paths: the image files (or TFDS ids) in row order; empty when they could not be paired
            with the rows (a file that failed to decode was left out of the pass).
        image_size: the side of the square images the model takes.
        white_level: what the run's high-bit-depth images were scaled from (None: none;
            :class:`~transferkit.data.card.DatasetCard`), so that they decode again as they trained.
    """

    split: str
    class_names: tuple[str, ...]
    labels: np.ndarray
    probabilities: np.ndarray
    paths: tuple[str, ...] = ()
    image_size: int = 0
    white_level: int | None = None

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @property
    def losses(self) -> np.ndarray:
        """Per-image cross-entropy (natural log) of the true class."""
        true_probability = self.probabilities[np.arange(len(self.labels)), self.labels]
        return -np.log(np.clip(true_probability, _EPSILON, 1.0))


def save_predictions(
    run_dir: str | os.PathLike, predictions: Predictions, file: str = PREDICTIONS_FILE
) -> Path:
    """Write ``predictions.npz`` (or ``file``): path, true, predicted and probability vector per
    image, atomically."""
    path = Path(run_dir) / file
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(
            handle,
            split=np.array(predictions.split),
            class_names=np.array(predictions.class_names, dtype=str),
            paths=np.array(predictions.paths, dtype=str),
            labels=predictions.labels.astype(np.int64),
            predicted=predictions.predicted.astype(np.int64),
            probabilities=predictions.probabilities.astype(np.float32),
            image_size=np.array(predictions.image_size),
            white_level=np.array(predictions.white_level or 0),  # 0: none
        )
    return path


def load_validation_predictions(run_dir: str | os.PathLike) -> Predictions | None:
    """A run folder's validation predictions: ``validation_predictions.npz``, or ``predictions.npz``
    where the run had no test split; None when it has neither."""
    predictions = load_predictions(run_dir, VALIDATION_PREDICTIONS_FILE)
    if predictions is None:
        predictions = load_predictions(run_dir)
    return predictions if predictions is not None and predictions.split == "validation" else None


def load_predictions(run_dir: str | os.PathLike, file: str = PREDICTIONS_FILE) -> Predictions | None:
    """A run folder's ``predictions.npz`` (or ``file``); None when the run has none (e.g. it
    predates the file)."""
    path = Path(run_dir) / file
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return Predictions(
                split=str(data["split"]),
                class_names=tuple(str(n) for n in data["class_names"]),
                labels=data["labels"].astype(np.int64),
                probabilities=data["probabilities"].astype(np.float32),
                paths=tuple(str(p) for p in data["paths"]),
                image_size=int(data["image_size"]),
                white_level=int(data["white_level"]) or None if "white_level" in data else None,
            )
    except (OSError, ValueError, KeyError) as error:
        raise TransferkitError(f"{path} is damaged ({error}); rerun `transferkit evaluate` or fit.") from None


def evaluate_held_out(
    model: keras.Model,
    dataset: tf.data.Dataset,
    paths: Sequence[str],
    class_names: Sequence[str],
    *,
    split: str,
    run_dir: str | os.PathLike,
    predict: Predict | None = None,
    white_level: int | None = None,
) -> Metrics:
    """Metrics of the held-out split and its ``predictions.npz``, from one pass over ``dataset``.

    Args:
        model: the trained classifier.
        dataset: the split as ordered (unshuffled) ``(images, labels)`` batches.
        paths: the split's image files in dataset order.
        class_names: index = label.
        split: "test" or "validation".
        run_dir: the run folder that receives ``predictions.npz``.
        predict: as for :func:`~transferkit.reporting.metrics.evaluate_model`.
        white_level: the split's (:class:`~transferkit.data.loading.ImageSet`), kept with the rows.
    """
    probabilities, labels = predict_dataset(model, dataset, predict)
    return record_held_out(
        probabilities,
        labels,
        paths,
        class_names,
        split=split,
        run_dir=run_dir,
        image_size=int(model.input_shape[1]),
        white_level=white_level,
    )


def record_held_out(
    probabilities: np.ndarray,
    labels: np.ndarray,
    paths: Sequence[str],
    class_names: Sequence[str],
    *,
    split: str,
    run_dir: str | os.PathLike,
    image_size: int,
    white_level: int | None = None,
    file: str = PREDICTIONS_FILE,
) -> Metrics:
    """:func:`evaluate_held_out` for predictions already made: the metrics, and ``predictions.npz``
    (or ``file``).

    Args:
        probabilities, labels: the split's ``[N, classes]`` predictions and ``[N]`` classes, in order.
        image_size: the side the model reads, kept with the rows (the gallery decodes at it).
        paths, class_names, split, run_dir, white_level: as for :func:`evaluate_held_out`.
    """
    metrics = compute_metrics(probabilities, labels, class_names)
    paired = len(paths) == len(labels)  # a file that failed to decode leaves the rows unpaired
    predictions = Predictions(
        split=split,
        class_names=tuple(class_names),
        labels=np.asarray(labels).astype(np.int64),
        probabilities=np.asarray(probabilities).astype(np.float32),
        paths=tuple(paths) if paired else (),
        image_size=image_size,
        white_level=white_level,
    )
    save_predictions(run_dir, predictions, file)
    return metrics


@dataclass(frozen=True)
class ConfusedPair:
    """``count`` images of class ``true`` were predicted as ``predicted``: ``rate`` of that class."""

    true: str
    predicted: str
    count: int
    rate: float


def confused_pairs(
    confusion: Sequence[Sequence[int]], class_names: Sequence[str], top: int = 5
) -> tuple[ConfusedPair, ...]:
    """The ``top`` off-diagonal cells of a confusion matrix (rows = true class), most images first.

    Example:
        >>> confused_pairs([[8, 2], [0, 10]], ["cat", "dog"])
        (ConfusedPair(true='cat', predicted='dog', count=2, rate=0.2),)
    """
    counts = np.asarray(confusion, dtype=np.int64)
    totals = counts.sum(axis=1)
    cells = [
        (int(counts[i, j]), float(counts[i, j] / totals[i]), i, j)
        for i in range(len(counts))
        for j in range(len(counts))
        if i != j and counts[i, j] > 0
    ]
    cells.sort(key=lambda cell: (-cell[0], -cell[1], cell[2], cell[3]))
    return tuple(ConfusedPair(class_names[i], class_names[j], n, rate) for n, rate, i, j in cells[:top])


@dataclass(frozen=True)
class Calibration:
    """How far confidence (the top probability) is from accuracy, in equal-width bins over [0, 1].

    Attributes:
        ece: expected calibration error: sum over bins of (share of images) x |accuracy - confidence|.
        overconfidence: mean confidence minus accuracy (> 0: the model claims more than it gets).
        confidence, accuracy: per bin, None where a bin is empty.
        counts: images per bin.
    """

    ece: float
    overconfidence: float
    confidence: tuple[float | None, ...]
    accuracy: tuple[float | None, ...]
    counts: tuple[int, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "ece": self.ece,
            "overconfidence": self.overconfidence,
            "bins": len(self.counts),
            "confidence": list(self.confidence),
            "accuracy": list(self.accuracy),
            "counts": list(self.counts),
        }


def calibration(probabilities: np.ndarray, labels: np.ndarray, bins: int = CALIBRATION_BINS) -> Calibration:
    """Reliability-diagram bins and the expected calibration error of top-1 predictions.

    Args:
        probabilities: ``(N, num_classes)`` softmax outputs.
        labels: ``(N,)`` true class indices.
        bins: equal-width confidence bins (10-15 is usual; fewer for small splits).

    Example:
        >>> p = np.array([[0.99, 0.01]] * 4)
        >>> round(calibration(p, np.array([0, 1, 0, 1])).ece, 2)  # claims 99%, gets 50%
        0.49
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    if probabilities.ndim != 2 or len(probabilities) != len(labels) or not len(labels) or bins < 1:
        raise TransferkitError(
            f"Expected (N, classes) probabilities, N labels (N > 0) and bins >= 1; received "
            f"{probabilities.shape}, {labels.shape} and bins={bins}."
        )
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == labels).astype(np.float64)
    index = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    counts = np.bincount(index, minlength=bins)
    conf_sum = np.bincount(index, weights=confidence, minlength=bins)
    acc_sum = np.bincount(index, weights=correct, minlength=bins)
    filled = counts > 0
    mean_conf = np.divide(conf_sum, counts, out=np.zeros(bins), where=filled)
    mean_acc = np.divide(acc_sum, counts, out=np.zeros(bins), where=filled)
    ece = float(np.sum(counts / len(labels) * np.abs(mean_acc - mean_conf)))
    return Calibration(
        ece=ece,
        overconfidence=float(confidence.mean() - correct.mean()),
        confidence=tuple(float(c) if f else None for c, f in zip(mean_conf, filled, strict=True)),
        accuracy=tuple(float(a) if f else None for a, f in zip(mean_acc, filled, strict=True)),
        counts=tuple(int(c) for c in counts),
    )


def top_losses(predictions: Predictions, top: int = 12) -> np.ndarray:
    """Row indices of the ``top`` highest-loss images, highest first (ties: lower index first), one
    of each set of byte-identical files: copies within a class stay together in one split
    (:mod:`transferkit.data.copies`), get the same prediction, and would fill the gallery twice."""
    order = np.argsort(-predictions.losses, kind="stable")
    if not predictions.paths:
        return order[:top]
    picked, seen = [], set()
    for row in order:
        digest = _digest(predictions.paths[row])
        if digest is None or digest not in seen:
            picked.append(row)
            seen.add(digest)
        if len(picked) == top:
            break
    return np.asarray(picked, dtype=order.dtype)


def _digest(path: str) -> str | None:
    """The file's content digest; None for a TFDS id or a file that can no longer be read."""
    from transferkit.data.scan import content_digest

    if path.startswith("tfds:"):
        return None
    try:
        return content_digest(path)
    except OSError:
        return None


def grad_cam_samples(predictions: Predictions, per_kind: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Rows to explain: the most confident right predictions and the highest-loss wrong ones."""
    right = np.flatnonzero(predictions.predicted == predictions.labels)
    wrong = np.flatnonzero(predictions.predicted != predictions.labels)
    confidence = predictions.probabilities.max(axis=1)
    right = right[np.argsort(-confidence[right], kind="stable")][:per_kind]
    wrong = wrong[np.argsort(-predictions.losses[wrong], kind="stable")][:per_kind]
    return right, wrong
