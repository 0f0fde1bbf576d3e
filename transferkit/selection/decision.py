"""The selector's decision: size + similarity -> quadrant, recipe, cut point, confidence, reasons.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat([0, 1], 40)
    >>> deep = rng.normal(size=(80, 8)) + 3.0 * labels[:, None]  # separates the classes
    >>> early = rng.normal(size=(80, 8))  # does not
    >>> card = {"num_classes": 2, "num_train": 80, "min_images_per_class": 40,
    ...         "median_images_per_class": 40, "imbalance": 1.0}
    >>> selection = select(card, {"block_3": early, "out": deep}, labels)
    >>> selection.quadrant, selection.recipe, selection.cut_point
    ('small_similar', 'freeze', None)
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from transferkit.errors import TransferkitError, choices_error
from transferkit.selection.quadrants import SIZE_CHOICES, STRATEGIES, quadrant_for
from transferkit.selection.rules import (
    CLOSE_CALL_CONFIDENCE,
    FROZEN_BASE_AVERAGING_LEAD,
    RETRAIN_IMAGES_PER_CLASS,
    RETRAIN_IMAGES_PER_CLASS_FULL_RESOLUTION,
    SATURATED_PROBE_ACCURACY,
    TRUNCATE_MARGIN,
    CardLike,
    CutScore,
    _card_values,
    _compare,
    _describe,
    _size_is_close,
    averages_frozen_base,
    averages_leading_cut,
    averages_truncation,
    retrain_images_per_class,
    score_cut_points,
    similarity_decision,
    size_quadrant,
)


@dataclass(frozen=True)
class Selection:
    """The selector's decision and its evidence; ``to_dict()`` is JSON-ready."""

    size: str  # "small" | "large"
    similar: bool
    quadrant: str  # "small_similar" | "small_dissimilar" | "large_similar" | "large_dissimilar"
    recipe: str  # "freeze" | "truncate" | "fine_tune" | "retrain"
    cut_point: str | None  # only for truncate
    confidence: float  # of the similarity call (1.0 when given); see similarity_decision
    close_call: bool  # similarity within noise, LogME disagreeing, or size near its threshold
    reasons: tuple[str, ...]
    scores: tuple[CutScore, ...]
    seconds: float  # the decision's; measured on a base (selection.measure), the forward pass included
    images_per_class: float | None = None  # median, when measured (places the dataset on the plot)
    image_size: int | None = None  # the side measured at; the dissimilar size rule depends on it
    trials: Any = None  # selection.trials.Trials when fit settled a close call by training (read: a dict)
    # The quadrant of the network trained beside the pick, the model averaging the two: a truncation
    # beside the whole network (:func:`.rules.averages_truncation`), the frozen base beside a
    # truncation (:func:`.rules.averages_frozen_base`); None: one network.
    partner: str | None = None
    partner_cut: str | None = None  # where the partner truncates: its cut

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only."""
        data = asdict(self)
        data["reasons"] = list(self.reasons)
        data["scores"] = [asdict(score) for score in self.scores]
        data["trials"] = self.trials.to_dict() if hasattr(self.trials, "to_dict") else self.trials
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Selection:
        """The selection ``to_dict`` wrote (its trials, if any, stay a dict)."""
        fields = dict(data)
        if fields.get("partner_cut") and not fields.get("partner"):  # written before frozen-base partners
            fields["partner"] = quadrant_for("small", similar=False)
        fields["reasons"] = tuple(fields["reasons"])
        fields["scores"] = tuple(CutScore(**score) for score in fields["scores"])
        return cls(**fields)


def select(
    card_like: CardLike | Mapping[str, Any] | None,
    features_by_cut: Mapping[str, np.ndarray] | None,
    labels: np.ndarray | None,
    *,
    seed: int = 0,
    size: str = "auto",
    similar: bool | None = None,
    image_size: int | None = None,
) -> Selection:
    """Pick the quadrant, recipe and cut point from the dataset card and per-cut features.

    Args:
        card_like: the dataset card (or a mapping with the :class:`CardLike` fields); may be None
            when ``size`` is given.
        features_by_cut: ``{cut: (N, D) features}`` shallow to deep (:func:`extract_cut_features`);
            may be None when ``similar`` is given.
        labels: (N,) labels matching the features.
        seed: seed for the probe's folds.
        size: "auto" (measure), "small" or "large".
        similar: None (measure), True or False. When both are given nothing is scored; when
            ``similar=False`` and features are given, they are still scored to pick the cut point.
            Where no class has two images nothing can be scored: None then takes the data as
            similar, and False cuts at the deepest cut point before the output.
        image_size: the side the images are resized to: at full resolution dissimilar data
            retrains from fewer images per class (:func:`.rules.retrain_images_per_class`); None
            applies the low-resolution rule.

    Returns:
        A :class:`Selection`.

    Example:
        >>> select(None, None, None, size="large", similar=False).recipe
        'retrain'
    """
    start = time.perf_counter()
    if size not in SIZE_CHOICES:
        raise choices_error("size", size, SIZE_CHOICES)
    values = _card_values(card_like) if card_like is not None else None
    if size == "auto":
        if card_like is None:
            raise TransferkitError(
                "size='auto' needs the dataset card; pass it, or give size='small'/'large'."
            )
        size, reasons = size_quadrant(card_like)
        size_close = _size_is_close(values)
    else:
        reasons, size_close = [f"size given: {size}"], False
    size_measured = values is not None and not reasons[0].startswith("size given")
    similarity_measured = similar is None
    unmeasurable = similar is None and too_few_to_probe(labels)
    if unmeasurable:  # nothing to cross-validate: the base stays frozen, nothing trials could settle
        similar, scores, cut_point, confidence = True, [], None, 0.0
        more = [_assumed_similar_reason(labels)]
    elif similar is None:
        scores, similar, cut_point, confidence, more = _measure_similarity(features_by_cut, labels, seed)
        if size_measured:
            size, more = _refine_large(size, similar, values, scores, more, image_size)
    else:
        if size_measured:
            size, reasons = _refine_large(size, similar, values, (), reasons, image_size)
        cut_wanted = size == "small" or _averages(size, similar, values, size_measured, image_size)
        scores, cut_point, more = _given_similarity(similar, cut_wanted, features_by_cut, labels, seed)
        confidence = 1.0
    reasons += more
    partner, partner_cut = None, None
    if _averages(size, similar, values, size_measured, image_size) and cut_point is not None:
        partner, partner_cut = quadrant_for("small", similar=False), cut_point
        reasons.append(_averaging_reason(values["median_images_per_class"], image_size, cut_point))
    elif similarity_measured and size == "small" and not similar and averages_frozen_base(scores):
        partner = quadrant_for("small", similar=True)
        reasons.append(_frozen_base_reason(scores))
    elif similarity_measured and size == "small" and similar and averages_leading_cut(scores):
        partner, partner_cut = quadrant_for("small", similar=False), _compare(scores).best_earlier.cut
        reasons.append(_leading_cut_reason(scores))
    close = (confidence < CLOSE_CALL_CONFIDENCE and not unmeasurable) or size_close
    if close:
        reasons.append("close call: run `transferkit compare` to train the candidates side by side")
    quadrant = quadrant_for(size, similar)
    return Selection(
        size=size,
        similar=similar,
        quadrant=quadrant,
        recipe=STRATEGIES[quadrant],
        cut_point=cut_point if size == "small" else None,  # only truncation cuts the base
        confidence=confidence,
        close_call=close,
        reasons=tuple(reasons),
        scores=tuple(scores),
        seconds=time.perf_counter() - start,
        images_per_class=values["median_images_per_class"] if values else None,
        image_size=image_size,
        partner=partner,
        partner_cut=partner_cut,
    )


def _averages(size: str, similar: bool, values, size_measured: bool, image_size: int | None) -> bool:
    """Whether the measured size puts dissimilar data between the floors (see averages_truncation)."""
    return size_measured and averages_truncation(size, similar, values["median_images_per_class"], image_size)


def _averaging_reason(median: float, image_size: int | None, cut: str) -> str:
    return (
        f"a median {median:,.0f} images per class at {image_size} px lies between the floors from which "
        f"dissimilar data retrains ({RETRAIN_IMAGES_PER_CLASS_FULL_RESOLUTION:,} at full resolution, "
        f"{RETRAIN_IMAGES_PER_CLASS:,} at low): there neither the whole network nor a truncation wins "
        f"reliably, so both train (the truncation at {cut!r}) and the model averages their probabilities "
        "(the whole network alone where it is clearly ahead on the validation images)"
    )


def _frozen_base_reason(scores: Sequence[CutScore]) -> str:
    comparison = _compare(scores)
    return (
        f"the cut leads the base's output by {-comparison.margin:.3f} in the probe (at most "
        f"{FROZEN_BASE_AVERAGING_LEAD:.2f}): within what a trained head can lose, so the frozen base "
        "trains too and the model averages their probabilities (the truncation alone where it is clearly "
        "ahead on the validation images)"
    )


def _leading_cut_reason(scores: Sequence[CutScore]) -> str:
    comparison = _compare(scores)
    return (
        f"the earlier cut {comparison.best_earlier.cut!r} leads the base's output by "
        f"{-comparison.margin:.3f} in the probe (not more than {TRUNCATE_MARGIN:.2f}: similar): a "
        "truncation there trains too and the model averages their probabilities (the frozen base "
        "alone where it is clearly ahead of the average on the validation images)"
    )


def _refine_large(
    size: str,
    similar: bool,
    values: Mapping[str, float],
    scores: Sequence[CutScore],
    reasons: list[str],
    image_size: int | None,
) -> tuple[str, list[str]]:
    """Keep the base frozen on "large" data where moving its weights was measured not to pay."""
    median = values["median_images_per_class"]
    if size != "large":
        return size, reasons
    floor = retrain_images_per_class(image_size)
    if not similar and median < floor:
        at = "" if image_size is None else f" at {image_size} px"
        return "small", reasons + [
            f"dissimilar with a median {median:,.0f} images per class (< {floor:,}{at}): too "
            "few to retrain every weight, so the frozen base is cut at the best earlier block instead"
        ]
    deepest = scores[-1] if scores else None
    if similar and deepest is not None and deepest.probe_accuracy >= SATURATED_PROBE_ACCURACY:
        return "small", reasons + [
            f"a linear probe on the frozen deepest features already reaches {deepest.probe_accuracy:.3f} "
            f"(>= {SATURATED_PROBE_ACCURACY}): fine-tuning has almost nothing to gain, so the base stays "
            "frozen (several times cheaper)"
        ]
    return size, reasons


def too_few_to_probe(labels: np.ndarray | None) -> bool:
    """Whether no class has two images: a cross-validated probe cannot hold one out and train on another."""
    if labels is None or not len(labels):
        return False  # no features given at all: _measure_similarity says what is missing
    return int(np.unique(np.asarray(labels), return_counts=True)[1].max()) < 2


def _assumed_similar_reason(labels: np.ndarray) -> str:
    classes = len(np.unique(np.asarray(labels)))
    return (
        f"similarity not measured: {len(labels)} training image(s) in {classes} classes, none with two, "
        "and a linear probe needs one held out and one to train on; assumed similar, so the pretrained "
        "base stays frozen and only the head trains (the fewest weights to fit; --dissimilar cuts the "
        "base instead)"
    )


def _measure_similarity(
    features_by_cut: Mapping[str, np.ndarray] | None, labels: np.ndarray | None, seed: int
) -> tuple[list[CutScore], bool, str | None, float, list[str]]:
    if not features_by_cut or labels is None:
        raise TransferkitError(
            "Measuring similarity needs features at the cut points and their labels "
            "(see extract_cut_features); or say it: --similar / --dissimilar."
        )
    scores = score_cut_points(features_by_cut, labels, seed=seed)
    similar, cut_point, confidence, reasons = similarity_decision(scores)
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    reasons.insert(0, f"chance (always the majority class) is {counts.max() / counts.sum():.3f}")
    return scores, similar, cut_point, confidence, reasons


def _given_similarity(
    similar: bool, cut_wanted: bool, features_by_cut: Mapping[str, np.ndarray] | None, labels: Any, seed: int
) -> tuple[list[CutScore], str | None, list[str]]:
    reasons = [f"similarity given: {'similar' if similar else 'dissimilar'}"]
    if similar or not cut_wanted:  # a whole-base recipe alone: no cut to find
        return [], None, reasons
    if not features_by_cut or labels is None:
        return [], None, reasons + ["cut point not measured (no features): the recipe's default applies"]
    if too_few_to_probe(labels):  # the deepest block end short of the output: truncation's usual pick
        cuts = list(features_by_cut)
        cut = cuts[-2] if len(cuts) > 1 else cuts[0]
        why = f"cut point not measured (no class has two training images to probe): {cut!r}, the deepest"
        return [], cut, reasons + [f"{why} block end before the output"]
    scores = score_cut_points(features_by_cut, labels, seed=seed)
    comparison = _compare(scores)
    cut = comparison.best_earlier if comparison else scores[-1]
    return scores, cut.cut, reasons + [_describe(cut, "cut point: best-scoring earlier cut")]
