"""The learning-rate range test: train a few steps at exponentially growing rates, suggest one.

Leslie Smith's test, as fastai's ``lr_find`` runs it: one optimizer step per rate from ``start``
to ``end``, the loss smoothed with a bias-corrected moving average, the sweep stopped once the
smoothed loss exceeds ``STOP_FACTOR`` times its minimum. The suggestion (:func:`suggest`) follows
fastai's "valley" rule on a curve that descends, and the older rule of thumb "a tenth of the rate
where the loss blows up" on one that starts already low (after a warm-up phase). The model's
weights are restored afterwards; its optimizer state is not (re-compile before training).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import keras
import numpy as np

STOP_FACTOR = 4.0
SMOOTHING = 0.98  # weight of the running average (fastai's beta)
SETTLING = 0.1  # the first tenth of the sweep, where the running average has not settled (fastai skips it)
LOW_START = 1.5  # a curve "starts low" when its settled start is within 1.5x of its lowest value
BLOW_UP = 2.0  # the loss "blows up" where it first reaches twice its lowest, past the lowest
BLOW_UP_MARGIN = 10.0  # suggest a tenth of that rate
VALLEY, BLOW_UP_RULE = "valley", "blow-up / 10"  # LRFindResult.rule: which rule made the suggestion


@dataclass(frozen=True)
class LRFindResult:
    """The sweep: rates tried, raw and smoothed losses, the suggested rate and the rule that chose it."""

    learning_rates: tuple[float, ...]
    losses: tuple[float, ...]
    smoothed: tuple[float, ...]
    suggestion: float
    minimum_rate: float  # where the smoothed loss was lowest; min/10 is the classic fallback rule
    rule: str = VALLEY  # VALLEY (a descending curve) or BLOW_UP_RULE (a curve that starts low)

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
            if not math.isfinite(loss) or _diverged(_smooth(losses), steps):
                break
    finally:
        model.set_weights(weights)
    return _result(rates, losses)


def _diverged(smoothed: list[float], steps: int) -> bool:
    """Whether the smoothed loss exceeds ``STOP_FACTOR`` x its lowest since the running average
    settled (the first ``SETTLING`` of the ``steps``). Not before: near a loss of zero (after a
    warm-up on easy data) one batch can weigh 100x the next, and a sweep stopped there on its
    second step suggested a tenth of its start rate."""
    settle = int(steps * SETTLING)
    return len(smoothed) > settle and smoothed[-1] > STOP_FACTOR * min(smoothed[settle:])


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
    rule = BLOW_UP_RULE if starts_low(smoothed) else VALLEY
    return LRFindResult(tuple(rates), tuple(losses), tuple(smoothed), suggestion, minimum, rule)


def suggest(rates: list[float], smoothed: list[float]) -> float:
    """The suggested rate: :func:`valley` on a descending curve, :func:`blow_up` on one that starts low.

    From a fresh head the loss falls over decades of rates before it blows up, and the valley rule
    finds the fast, stable part of that fall. After a warm-up phase it starts already low: flat
    (noise only) until the rate is large enough to hurt, then rising. There the valley rule's
    longest "descent" is the running average drifting through the noise of the flat part: on
    Animal-MNIST's whole-network phase after the head warm-up (96 px) it suggested 8.1e-6, 25x
    below the best measured rate, 2e-4. A tenth of the rate where the loss blows up gave 2.1e-4.

    Args:
        rates: the swept learning rates, increasing.
        smoothed: the smoothed loss at each rate (:func:`_smooth`).
    """
    if not rates:
        raise ValueError("The sweep ran no step.")
    return blow_up(rates, smoothed) if starts_low(smoothed) else valley(rates, smoothed)


def _settled(smoothed: list[float]) -> int:
    """Index of the first point past the running average's settling part (the first tenth)."""
    return min(int(len(smoothed) * SETTLING), max(0, len(smoothed) - 1))


def starts_low(smoothed: list[float]) -> bool:
    """Whether the curve starts already low: the settled start within ``LOW_START`` x its lowest value.

    A fresh head starts far above its lowest loss (ln 10 = 2.3 against a few tenths for ten
    classes); a warmed-up network's sweep measured 1.17x (Animal-MNIST, above).
    """
    if not smoothed:
        return False
    start = _settled(smoothed)
    return smoothed[start] <= LOW_START * min(smoothed[start:])


def blow_up(rates: list[float], smoothed: list[float]) -> float:
    """A tenth of the rate where the smoothed loss first reaches ``BLOW_UP`` x its lowest, past it.

    The rule of thumb of fastai's first course ("where the loss clearly gets worse, back off 10x"),
    for curves without a descent to read: the blow-up is far above the noise, unlike the onset
    of the rise. When the loss never blows up within the sweep, a tenth of the last rate (a
    wider sweep, up to a larger ``end``, would find more).
    """
    start = _settled(smoothed)
    lowest = start + int(np.argmin(smoothed[start:]))
    above = [i for i in range(lowest + 1, len(smoothed)) if smoothed[i] >= BLOW_UP * smoothed[lowest]]
    return float(rates[above[0] if above else len(rates) - 1] / BLOW_UP_MARGIN)


def valley(rates: list[float], smoothed: list[float]) -> float:
    """fastai's "valley" rule: two thirds of the way down the longest descending run of the curve.

    The longest run of ever lower smoothed losses (not necessarily consecutive points) is where
    training makes steady progress; its upper part is fast but still stable. It ignores the noisy
    first points that make a steepest-slope rule pick a rate near ``start``.
    """
    run = [1] * len(smoothed)  # length of the longest descending run ending at each point
    first = last = 0
    for i in range(1, len(smoothed)):
        run[i] = 1 + max((run[j] for j in range(i) if smoothed[j] > smoothed[i]), default=0)
        if run[i] > run[last]:
            last, first = i, i - run[i] + 1
    third = (last - first) / 3
    return float(rates[max(0, first + int(third) + int(third / 2))])
