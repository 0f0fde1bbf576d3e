"""The learning-rate range test: train a few steps at exponentially growing rates, suggest one.

Leslie Smith's test, as fastai's ``lr_find`` runs it: one optimizer step per rate from ``start``
to ``end``, the loss smoothed with a bias-corrected moving average, the sweep stopped once the
smoothed loss exceeds ``STOP_FACTOR`` times its minimum. The suggestion follows fastai's
"valley" rule (:func:`suggest`). The model's weights are restored afterwards; its optimizer
state is not (re-compile before training).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import keras
import numpy as np

STOP_FACTOR = 4.0
SMOOTHING = 0.98  # weight of the running average (fastai's beta)


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
    """fastai's "valley" rule: two thirds of the way down the longest descending run of the curve.

    The longest run of ever lower smoothed losses (not necessarily consecutive points) is where
    training makes steady progress; its upper part is fast but still stable. It ignores the noisy
    first points that make a steepest-slope rule pick a rate near ``start``.
    """
    if not rates:
        raise ValueError("The sweep ran no step.")
    run = [1] * len(smoothed)  # length of the longest descending run ending at each point
    first = last = 0
    for i in range(1, len(smoothed)):
        run[i] = 1 + max((run[j] for j in range(i) if smoothed[j] > smoothed[i]), default=0)
        if run[i] > run[last]:
            last, first = i, i - run[i] + 1
    third = (last - first) / 3
    return float(rates[max(0, first + int(third) + int(third / 2))])
