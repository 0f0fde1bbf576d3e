"""The learning-rate range test: train a few steps at exponentially growing rates, suggest one.

Leslie Smith's test, as fastai's ``lr_find`` runs it: one optimizer step per rate from ``start``
to ``end``, the loss smoothed with a bias-corrected moving average, the sweep stopped once the
smoothed loss exceeds ``STOP_FACTOR`` times its minimum. The suggestion is the rate where the
smoothed loss falls fastest (steepest descent against log rate) before its minimum. The
model's weights are restored afterwards; its optimizer state is not (re-compile before training).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import keras
import numpy as np

STOP_FACTOR = 4.0
SMOOTHING = 0.98  # weight of the running average (fastai's beta)
SKIP_START = 5  # the first smoothed points carry little information


@dataclass(frozen=True)
class LRFindResult:
    """The sweep: rates tried, raw and smoothed losses, and the suggested rate."""

    learning_rates: tuple[float, ...]
    losses: tuple[float, ...]
    smoothed: tuple[float, ...]
    suggestion: float
    minimum_rate: float  # where the smoothed loss was lowest; min/10 is the classic fallback rule

    def to_dict(self) -> dict:
        return asdict(self)


def range_test(
    model: keras.Model,
    batches: Iterator,
    *,
    start: float = 1e-7,
    end: float = 1.0,
    steps: int = 100,
    class_weight: dict[int, float] | None = None,
) -> LRFindResult:
    """Sweep ``model``'s learning rate over ``[start, end]`` in ``steps`` exponential steps.

    Args:
        model: compiled with an optimizer whose learning rate is a plain float (no schedule).
        batches: yields ``(inputs, labels)`` batches; at least ``steps`` of them (repeat the data).
        start, end: the swept range.
        steps: optimizer steps (one rate each) unless the loss diverges first.
        class_weight: passed to ``train_on_batch``.
    """
    weights = model.get_weights()
    rates, losses = [], []
    try:
        for step, (inputs, labels) in zip(range(steps), batches, strict=False):
            rate = start * (end / start) ** (step / max(1, steps - 1))
            model.optimizer.learning_rate = rate
            loss = float(
                model.train_on_batch(inputs, labels, class_weight=class_weight, return_dict=True)["loss"]
            )
            rates.append(rate)
            losses.append(loss)
            smoothed = _smooth(losses)
            if not math.isfinite(loss) or smoothed[-1] > STOP_FACTOR * min(smoothed):
                break
    finally:
        model.set_weights(weights)
    return _result(rates, losses)


def _smooth(losses: list[float]) -> list[float]:
    """Bias-corrected exponential moving average (non-finite losses count as the last finite value)."""
    average, smoothed = 0.0, []
    for count, loss in enumerate(losses, start=1):
        loss = loss if math.isfinite(loss) else (smoothed[-1] * 10 if smoothed else 1e9)
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        smoothed.append(average / (1 - SMOOTHING**count))
    return smoothed


def _result(rates: list[float], losses: list[float]) -> LRFindResult:
    smoothed = _smooth(losses)
    lowest = int(np.argmin(smoothed)) if smoothed else 0
    suggestion = suggest(rates, smoothed)
    minimum = rates[lowest] if rates else float("nan")
    return LRFindResult(tuple(rates), tuple(losses), tuple(smoothed), suggestion, minimum)


def suggest(rates: list[float], smoothed: list[float]) -> float:
    """The rate of steepest descent of ``smoothed`` (against log rate) before its minimum.

    Falls back to a tenth of the rate at the minimum when the curve is too short for a slope.
    """
    if not rates:
        raise ValueError("The sweep ran no step.")
    lowest = int(np.argmin(smoothed))
    first = min(SKIP_START, max(0, lowest - 2))
    if lowest - first < 2:
        return max(rates[0], rates[lowest] / 10)
    slopes = np.gradient(np.asarray(smoothed[: lowest + 1]), np.log10(rates[: lowest + 1]))
    return float(rates[first + int(np.argmin(slopes[first:]))])
