"""The parity check: does the exported model still classify the held-out images like ``model.keras``?

Example:
    >>> keras_probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]])
    >>> export_probs = np.array([[0.8, 0.2], [0.6, 0.4], [0.7, 0.3]])
    >>> p = compare_predictions(keras_probs, export_probs, np.array([0, 1, 1]))
    >>> p.top1_agreement, p.keras_accuracy, p.export_accuracy, p.accuracy_drop
    (0.6667, 0.6667, 0.3333, 0.3333)
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np

from transferkit.reporting.metrics import paired_exact_p

Runner = Callable[[np.ndarray], np.ndarray]  # images -> probabilities, see exporting.runtimes

LATENCY_IMAGES = 20  # images timed one at a time, after one warm-up call
_DIGITS = 4


@dataclass(frozen=True)
class Parity:
    """How an export compares with the Keras model on the same images.

    Attributes:
        num_images: images compared.
        top1_agreement: fraction of images where both give the same top-1 class.
        keras_accuracy: top-1 accuracy of ``model.keras``.
        export_accuracy: top-1 accuracy of the exported model.
        accuracy_drop: ``keras_accuracy - export_accuracy`` (negative when the export does better).
        max_abs_difference: largest absolute difference of any class probability.
        keras_ms_per_image: median latency of ``model.keras``, batch of one, this machine's CPU.
        export_ms_per_image: the same for the exported model in its runtime.
        only_keras_right: images ``model.keras`` gets right and the export wrong.
        only_export_right: images the export gets right and ``model.keras`` wrong.
    """

    num_images: int
    top1_agreement: float
    keras_accuracy: float
    export_accuracy: float
    accuracy_drop: float
    max_abs_difference: float
    keras_ms_per_image: float | None = None
    export_ms_per_image: float | None = None
    only_keras_right: int = 0
    only_export_right: int = 0

    def to_dict(self) -> dict[str, object]:
        """Plain JSON types."""
        return {**asdict(self), "drop_p_value": round(self.drop_p_value, _DIGITS)}

    @property
    def drop_p_value(self) -> float:
        """McNemar's exact test on the images the two models disagree on: how likely a split at least
        this uneven is if the export were as accurate as ``model.keras`` (two-sided). On small test
        sets one image is a point or more, and a drop over the bar can still be chance."""
        return paired_exact_p(self.only_keras_right, self.only_export_right)

    def summary(self) -> str:
        """One line, e.g. ``agreement 99.5% | accuracy 0.912 -> 0.910 (drop 0.2 points) | ...``."""
        latency = ""
        if self.keras_ms_per_image is not None and self.export_ms_per_image is not None:
            latency = f" | {self.keras_ms_per_image:.2f} -> {self.export_ms_per_image:.2f} ms/image"
        return (
            f"top-1 agreement {self.top1_agreement:.1%} on {self.num_images} images | accuracy "
            f"{self.keras_accuracy:.3f} -> {self.export_accuracy:.3f} (drop "
            f"{100 * self.accuracy_drop:.1f} points) | max probability difference "
            f"{self.max_abs_difference:.4f}{latency}"
        )


def compare_predictions(keras_probs: np.ndarray, export_probs: np.ndarray, labels: np.ndarray) -> Parity:
    """Agreement, both accuracies and the largest probability difference (no latency)."""
    if keras_probs.shape != export_probs.shape:
        raise ValueError(f"Probabilities of shape {keras_probs.shape} and {export_probs.shape} differ.")
    keras_top, export_top = keras_probs.argmax(axis=1), export_probs.argmax(axis=1)
    keras_accuracy = float(np.mean(keras_top == labels))
    export_accuracy = float(np.mean(export_top == labels))
    return Parity(
        num_images=len(labels),
        top1_agreement=round(float(np.mean(keras_top == export_top)), _DIGITS),
        keras_accuracy=round(keras_accuracy, _DIGITS),
        export_accuracy=round(export_accuracy, _DIGITS),
        accuracy_drop=round(keras_accuracy - export_accuracy, _DIGITS),
        max_abs_difference=round(float(np.max(np.abs(keras_probs - export_probs))), 6),
        only_keras_right=int(np.sum((keras_top == labels) & (export_top != labels))),
        only_export_right=int(np.sum((export_top == labels) & (keras_top != labels))),
    )


def median_ms_per_image(run: Runner, images: np.ndarray) -> float:
    """Median wall time of ``run`` on one image at a time, in milliseconds (after a warm-up call)."""
    sample = images[:LATENCY_IMAGES]
    run(sample[:1])
    times = []
    for image in sample:
        started = time.perf_counter()
        run(image[None])
        times.append(time.perf_counter() - started)
    return round(1000 * statistics.median(times), 3)


def check_parity(keras_run: Runner, export_run: Runner, images: np.ndarray, labels: np.ndarray) -> Parity:
    """Run both models on ``images`` (float32 raw pixels) and compare them, latency included.

    Args:
        keras_run: ``model.keras`` as a function from images to probabilities
            (:func:`transferkit.exporting.runtimes.keras_runner`).
        export_run: the exported model, the same way (:func:`transferkit.exporting.runtimes.open_runner`).
        images: ``[N, size, size, 3]`` float32, 0-255.
        labels: ``[N]`` true class indices.
    """
    if not len(images):
        raise ValueError("The parity check needs at least one image.")
    parity = compare_predictions(keras_run(images), export_run(images), labels)
    return replace(
        parity,
        keras_ms_per_image=median_ms_per_image(keras_run, images),
        export_ms_per_image=median_ms_per_image(export_run, images),
    )
