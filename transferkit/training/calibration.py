"""Temperature scaling: class probabilities that mean what they say, in every file a run writes.

A network trained to a low training loss is overconfident on new images: its wrong answers come
out at 0.99 (Guo et al., 2017, "On Calibration of Modern Neural Networks"). One number, the
temperature ``T``, divides the logits; it is fitted to the negative log-likelihood of the run's
validation images and folded into the softmax layer of the classifier (its kernel and bias divided
by ``T``), so ``model.keras`` and every export carry it, and the predicted class never changes:
accuracy is untouched, only the confidence moves.

The logits are read back from the probabilities: ``softmax(log p / T) == softmax(z / T)`` for
``p = softmax(z)``, so one prediction pass over the validation images is all it costs. An averaged
model (:mod:`transferkit.training.averaging`) is calibrated on the log of the mean of its two
networks' probabilities, and rebuilt with the temperature after the mean
(:func:`~transferkit.training.averaging.average_models`): a temperature inside each network would
change which class their mean picks.

Example:
    >>> import numpy as np
    >>> logits = np.array([[4.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 0.0]])  # one wrong at 0.98
    >>> probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    >>> fit = fit_temperature(probabilities, np.array([0, 1, 1, 0]), min_images=4, min_errors=1)
    >>> fit.applied and fit.temperature > 1  # softened: it claimed 0.98 and got 3 of 4 right
    True
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import keras
import numpy as np
from scipy.optimize import minimize_scalar

SOFTMAX_LAYER = "predictions"  # the head's Dense + softmax (training.model.build_head)
MIN_IMAGES = 20  # validation images needed to fit a temperature at all
# Wrong validation answers needed: with none (or one), the likelihood only ever asks for sharper
# probabilities (T -> 0), which would make every wrong answer on new images certain.
MIN_ERRORS = 2
# Softening only (T >= 1). The validation images chose the epochs (early stopping), the augmentation
# and the recipe, so the model looks better on them than on new images, and a temperature below 1
# fitted there sharpens too far: held-out playing cards (truncate, 96 px, seed 0), 8 of 120
# validation images wrong against 14 of 88 test images, fitted T = 0.50, test NLL 0.405 -> 0.552.
TEMPERATURE_BOUNDS = (1.0, 8.0)
_TINY = np.float64(1e-30)  # log(0) guard: a float32 softmax can underflow to 0


@dataclasses.dataclass(frozen=True)
class TemperatureFit:
    """What calibration found on the validation images, and whether the model now carries it.

    Attributes:
        temperature: the divisor of the logits (1.0 where nothing was applied).
        applied: whether the model's softmax layer was scaled.
        images: validation images it was fitted on.
        errors: how many of them the model got wrong.
        nll_before, nll_after: their mean negative log-likelihood at T = 1 and at ``temperature``.
        ece_before, ece_after: their expected calibration error (15 bins) at T = 1 and at ``temperature``.
        reason: why not, where not applied.
    """

    temperature: float
    applied: bool
    images: int
    errors: int
    nll_before: float | None = None
    nll_after: float | None = None
    ece_before: float | None = None
    ece_after: float | None = None
    reason: str = ""

    def describe(self) -> str:
        if not self.applied:
            return f"Probabilities not calibrated: {self.reason}"
        ece = f"ECE {self.ece_before:.3f} -> {self.ece_after:.3f}"
        if round(self.ece_after, 3) > round(self.ece_before, 3):  # the NLL is minimised, not the binned ECE
            ece += ", up: the temperature is fitted to the NLL, and ECE over so few images is noisy"
        return (
            f"Calibrated the probabilities: temperature {self.temperature:.2f}, fitted on {self.images} "
            f"validation images (their NLL {self.nll_before:.3f} -> {self.nll_after:.3f}, {ece}; "
            "the predicted classes are unchanged)"
        )

    def to_dict(self) -> dict:
        return {"method": "temperature", "fitted_on": "validation", **dataclasses.asdict(self)}


def scaled_probabilities(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log p / temperature)``: what the model predicts once :func:`fold_temperature` has
    scaled it (float64)."""
    logits = np.log(np.maximum(np.asarray(probabilities, np.float64), _TINY)) / temperature
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def uncalibrated(probabilities: np.ndarray, record: Mapping[str, object] | None) -> np.ndarray:
    """``probabilities`` as the network gave them before its temperature was folded in, from
    ``metrics.json``'s ``calibration`` ``record`` (``softmax(log p * T)``); unchanged without one."""
    if not record or not record.get("applied"):
        return probabilities
    return scaled_probabilities(probabilities, 1.0 / float(record["temperature"])).astype(np.float32)


def _nll(probabilities: np.ndarray, labels: np.ndarray) -> float:
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.maximum(picked, _TINY))))


def fit_temperature(
    probabilities: np.ndarray,
    labels: np.ndarray,
    *,
    min_images: int = MIN_IMAGES,
    min_errors: int = MIN_ERRORS,
) -> TemperatureFit:
    """The temperature that minimises the validation images' NLL, within :data:`TEMPERATURE_BOUNDS`
    (it only softens: see there).

    Args:
        probabilities: the model's ``[N, classes]`` probabilities of the validation images.
        labels: their ``[N]`` true classes.
        min_images, min_errors: below either, nothing is fitted (``applied`` False, with the reason).

    Returns:
        The fit; ``applied`` only where the fitted temperature lowers the NLL.
    """
    from transferkit.reporting.diagnostics import calibration

    labels = np.asarray(labels).astype(int)
    before = np.asarray(probabilities, np.float64)
    images, errors = len(labels), int(np.sum(before.argmax(axis=1) != labels))
    if images < min_images:
        reason = f"{images} validation images (needs {min_images})"
        return TemperatureFit(1.0, False, images, errors, reason=reason)
    if errors < min_errors:
        reason = (
            f"{errors} of {images} validation images wrong (needs {min_errors}): the likelihood would "
            "only ask for ever sharper probabilities"
        )
        return TemperatureFit(1.0, False, images, errors, reason=reason)
    low, high = (math.log(bound) for bound in TEMPERATURE_BOUNDS)
    found = minimize_scalar(
        lambda log_t: _nll(scaled_probabilities(before, math.exp(log_t)), labels),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-3},
    )
    temperature = float(math.exp(found.x))
    after = scaled_probabilities(before, temperature)
    nll_before, nll_after = _nll(before, labels), _nll(after, labels)
    eces = calibration(before, labels).ece, calibration(after, labels).ece
    if not nll_after < nll_before:
        reason = "not overconfident on the validation images (T = 1 fits best)"
        return TemperatureFit(1.0, False, images, errors, nll_before, nll_before, eces[0], eces[0], reason)
    return TemperatureFit(temperature, True, images, errors, nll_before, nll_after, *eces)


def calibrate(
    model: keras.Model, method: str, member_probabilities: Mapping[str, np.ndarray], labels: np.ndarray
) -> TemperatureFit | None:
    """Fit the temperature to the validation images and fold it into ``model`` (where it helps).

    Args:
        model: the trained classifier (or averaged model) that gave the probabilities. An averaged
            model is not changed here: the caller builds it again with the temperature
            (:func:`~transferkit.training.averaging.average_models`).
        method: the recipe's ``[head] calibration``: ``"temperature"``, or ``"none"`` (returns None).
        member_probabilities: ``{member: [N, classes]}`` validation probabilities of each network
            (one entry for a plain classifier), before calibration; the temperature is fitted to
            their mean, which is what an averaged model gives.
        labels: the validation images' classes.
    """
    if method == "none":
        return None
    probabilities = np.mean(list(member_probabilities.values()), axis=0, dtype=np.float64)
    fit = fit_temperature(probabilities, labels, min_images=MIN_IMAGES, min_errors=MIN_ERRORS)
    if fit.applied and len(member_probabilities) == 1:
        fold_temperature(model, fit.temperature)
    return fit


def softmax_layers(model: keras.Model) -> list[keras.layers.Dense]:
    """The classifier's final Dense + softmax layers (one per averaged member), found by name."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += [dense for dense in softmax_layers(layer) if not any(dense is f for f in found)]
        elif layer.name == SOFTMAX_LAYER and isinstance(layer, keras.layers.Dense):
            found.append(layer)
    return found


def fold_temperature(model: keras.Model, temperature: float) -> None:
    """Divide the kernel and bias of ``model``'s softmax layer by ``temperature``, in place.

    Raises:
        ValueError: where the model has no such layer (it was not built by transferkit), or more
            than one (an averaged model).
    """
    layers = softmax_layers(model)
    if len(layers) != 1:
        raise ValueError(
            f"{model.name} has {len(layers)} Dense layers named {SOFTMAX_LAYER!r}: a temperature needs one"
        )
    (layer,) = layers
    for variable in (layer.kernel, layer.bias) if layer.use_bias else (layer.kernel,):
        variable.assign(np.asarray(variable.numpy(), np.float64) / temperature)
