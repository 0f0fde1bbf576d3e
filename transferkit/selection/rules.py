"""The selector's rules: its constants (each with its evidence), the size rule, and the similarity
rule that compares per-cut transferability scores and gives a confidence.

"Similar to ImageNet" is measured, not assumed: one forward pass pools the features at every
candidate cut point, and each cut is scored by a cross-validated linear probe and by LogME
(:mod:`transferkit.selection.transferability`). The deepest cut transferring best means
"similar" (freeze / fine-tune); an earlier cut beating it clearly means "dissimilar" (truncate
there / retrain). Size is read off the dataset card (:func:`size_quadrant`).
:func:`transferkit.selection.decision.select` combines the two.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from transferkit.console import plural
from transferkit.errors import TransferkitError
from transferkit.selection.transferability import _as_matrix, linear_probes, logme

# ----------------------------------------------------------------------------------------------
# Decision constants
# ----------------------------------------------------------------------------------------------

SMALL_IMAGES_PER_CLASS = 50
"""Below this median number of training images per class a dataset is "small": the base stays frozen.

The folk rule puts this near 1,000 (CS231n notes); measured here it is far lower. With the
``large_similar`` recipe of the time (head warm-up, then the top blocks at a 10x lower learning rate, early
stopping with the best weights restored), fine-tuning matched or beat a frozen base at 48-80
images per class on every offline data set (Animal-MNIST 0.890 vs 0.845, digits 0.892 vs 0.892,
LFW and textures 1.000 both), in line with Kornblith et al. (CVPR 2019: fine-tuning beat fixed
features on all 12 of their data sets). At 50 per class, ``OFFLINE.md`` measured the opposite
(0.75 vs 0.84), and below it the validation split that early stopping steers by has under ten
images per class: small. The median (not the mean or the minimum) is used so that one rare or
one huge class does not move it.

It holds at full resolution too. At 224 px, where ``large_similar`` trains every block, the tuning
sets at 29 training images per class (seeds 0 and 1, test split), fine-tune minus freeze:
Animal-MNIST -2.9, +7.1; digits 0.0, +1.4; icon themes -21.4, -10.7; textures 0.0, 0.0 points
(mean -3.3), at 5-8x the frozen fit's time (docs/MEASUREMENTS.md). Again with ``Conv1`` to
``block_3`` frozen (``frozen_input_stride = 4``, 2026-12-06), the same exports and seeds:
-1.4, +4.3; -4.3, +2.9; -10.7, -10.7; 0.0, 0.0 (mean -2.5; validation 0.0). At 37 per class (the
held-out stamps' size), those four and the matplotlib typefaces, seeds 0 and 1: +1.1, -2.2; -1.1,
+3.3; -8.3, -8.3; 0.0, 0.0; -2.8, +16.7 (mean -0.2) at a median 4.5x the frozen fit's time.
"""

RETRAIN_IMAGES_PER_CLASS = 120
"""Dissimilar data is "large" (the whole network trains) from this median of training images per class.

Measured on the tuning sets only (96 px, test split), truncation against the ``large_dissimilar``
recipe (every weight trains, BatchNorm kept in inference mode), by median training images per class:

- font families (matplotlib), 27: truncate 0.708, whole network 0.250 (collapsed);
- Animal-MNIST, 27: truncate 0.900, whole network 0.950;
- Animal-MNIST, 78: truncate 0.933, whole network 0.961;
- font families (matplotlib), 102 (seed 1, n=88): truncate 0.716, whole network 0.591;
- icon themes, 102 (seed 1, n=88): truncate 0.705, whole network 0.727;
- font families (matplotlib), 136: truncate 0.750, whole network 0.750;
- font families (matplotlib), 169 (seed 1, n=148): truncate 0.669, whole network 0.710;
- icon themes, 156 (seed 1, n=128): truncate 0.625, whole network 0.656.

Any value in (102, 156] gives the least total regret over these eight (10.0 points, against
17.5 at the 60 this replaced, which was set before the figures from 102 per class on existed);
120 leans to the lower end, since a larger image size favours the whole network earlier (at
224 px it has a floor of its own, below). Below it the
cheaper truncation is kept (whole-network training costs 4-6x its time): where the whole network
wins there, it wins by 2-5 points; where truncation wins, by up to 46. The 1,000 that came
before came from a recipe that switched BatchNorm to batch statistics after the warm-up, which
collapsed training (Animal-MNIST at 78 per class: 0.778; fonts at 136: 0.358).

This floor holds below :data:`FULL_RESOLUTION_PIXELS`; at or above it the floor is
:data:`RETRAIN_IMAGES_PER_CLASS_FULL_RESOLUTION` (see :func:`retrain_images_per_class`)."""

FULL_RESOLUTION_PIXELS = 160
"""From this image side on, dissimilar data retrains from :data:`RETRAIN_IMAGES_PER_CLASS_FULL_RESOLUTION`.

The two floors were measured at one size each: 96 px (the regret harness's default) and 224 px
(MobileNetV2's native size, the default). 160 px splits them; sizes in between are untested."""

RETRAIN_IMAGES_PER_CLASS_FULL_RESOLUTION = SMALL_IMAGES_PER_CLASS
"""At full resolution dissimilar data retrains from the same 50 images per class as similar data.

At 224 px (MobileNetV2's native size, the default) the whole network trains much better than at
96 px. Measured on the tuning sets only (224 px, seed 0 unless said, test split), truncation
against ``large_dissimilar``, by median training images per class:

- font families (matplotlib), 49 (n=44): truncate 0.750 in 31 s, whole network 0.659 in 262 s;
- icon themes, 49 (n=44): truncate 0.500 in 31 s, whole network 0.727 in 296 s;
- font families (matplotlib), 98 (n=88): truncate 0.852 in 54 s, whole network 0.875 in 473 s;
- font families (matplotlib), 102 (seed 1, n=88): truncate 0.864 in 71 s, whole network 0.886 in 637 s;
- icon themes, 98 (n=88): truncate 0.636 in 32 s, whole network 0.716 in 281 s.

At 49 per class the data is "small" (:data:`SMALL_IMAGES_PER_CLASS`) and truncates whatever this
floor is; there the whole network won by 22.7 points once and lost by 9.1 once (+6.8 on average).
From 98 per class on it won all three, by 2.2-8.0, where 96 px had truncation 12.5 points ahead on
the same fonts. Any floor in [50, 98] fits these points equally (regret 22.7, the icons at 49;
35.2 at the 120 of 96 px); with nothing measured in between and the whole network ahead on
average even at 49, it is 50: at full resolution dissimilar data follows the size rule similar data
does. The whole network costs 5-10x truncation's time here. This rule was set after a regret run
at 224 px had shown the held-out cards losing 18 points to truncation
(docs/MEASUREMENTS.md), so those held-out rows do not test it independently. Over two seeds of the held-out
typefaces and cards (98 per class) the whole network minus truncation was -6.5, -7.1, +18.2 and
-1.1 points: close to a wash there, at 5-10x the time (docs/RESULTS.md, the 224-px table).

Not settled by trials either (tried at c6c165f on the tuning sets, 98 per class, 224 px, and not
kept): with the call between the two floors (50-120 per class) marked close, the whole network's
trial (its head warm-up, then 4 of its 15 epochs) scored 0.467, 0.538 and 0.617 on validation
(fonts seed 0, icon themes seed 0, fonts seed 1) against 0.875, 0.630 and 0.833 for its full fit,
so truncation's trial (0.808, 0.723, 0.800) won all three: a quarter of the schedule measures how
far the network has been disturbed, not where it ends. On test truncation scored 0.852, 0.636 and
0.920 against the whole network's 0.886, 0.659 and 0.830 (816b0e9's 15-epoch runs): regret 3.4,
2.3 and 0.0 with the trials, 0.0, 0.0 and 9.0 without; the trials took 51 s, against ~20 s for
the truncation fit itself. Choosing on the two full fits' validation accuracy (one standard error
to switch) would have kept the whole network on both fonts and truncated the icons: regret 0.0,
2.3 and 9.0."""


def retrain_images_per_class(image_size: int | None) -> int:
    """The median training images per class from which dissimilar data retrains the whole network.

    Args:
        image_size: the side the images are resized to; None (unknown): the low-resolution floor.

    Example:
        >>> retrain_images_per_class(96), retrain_images_per_class(224)
        (120, 50)
    """
    if image_size is not None and image_size >= FULL_RESOLUTION_PIXELS:
        return RETRAIN_IMAGES_PER_CLASS_FULL_RESOLUTION
    return RETRAIN_IMAGES_PER_CLASS


def averages_truncation(size: str, similar: bool, median_per_class: float, image_size: int | None) -> bool:
    """Whether fit trains a truncation beside the whole network and averages the two models.

    Dissimilar data between the two retrain floors (from :data:`RETRAIN_IMAGES_PER_CLASS_FULL_RESOLUTION`
    to under :data:`RETRAIN_IMAGES_PER_CLASS` median images per class, at :data:`FULL_RESOLUTION_PIXELS`
    or more) retrains the whole network, and there neither recipe wins reliably: nothing the selector
    measures told the sets where truncation won by up to 9 points from those where the whole network
    did (:data:`RETRAIN_IMAGES_PER_CLASS_FULL_RESOLUTION`). The mean of the two models' class
    probabilities sidesteps the choice. Measured on the tuning sets only (224 px, test split, seeds
    0 and 1; truncation at its measured cut, the whole network the 15-epoch ``large_dissimilar``),
    truncate / whole network / average: icon themes (98 per class) 0.636 / 0.659 / 0.727 and
    0.693 / 0.716 / 0.727; matplotlib fonts (98) 0.852 / 0.886 / 0.898 and 0.920 / 0.830 / 0.920;
    Animal-MNIST (65) 0.867 / 0.960 / 0.960 and 0.913 / 0.967 / 0.960. Against the whole network
    alone: +6.8, +1.1, +1.1, +9.1, 0.0, -0.7 points (mean +2.9); against the better of the two in
    each row, a choice nothing measured: mean +1.4, worst -0.7. The truncation costs 15-25% of the
    whole network's fit (27-41 s against 167-274 s on 2 cores), and the exported model runs the
    early blocks twice. From :data:`RETRAIN_IMAGES_PER_CLASS` on, the low-resolution rule already
    retrains, and nothing was measured there: one network.

    Example:
        >>> averages_truncation("large", False, 98, 224), averages_truncation("large", False, 98, 96)
        (True, False)
    """
    full_resolution = image_size is not None and image_size >= FULL_RESOLUTION_PIXELS
    return size == "large" and not similar and full_resolution and median_per_class < RETRAIN_IMAGES_PER_CLASS


FROZEN_BASE_AVERAGING_LEAD = 0.12
"""The most an earlier cut may lead the deepest one in the probe (accuracy) for a truncation to be
averaged with the frozen base (:func:`averages_frozen_base`): the middle of the gap in which no
tuning set fell (leads up to 0.086 gained from averaging on average, from 0.158 on it lost)."""


def averages_frozen_base(scores: Sequence[CutScore]) -> bool:
    """Whether a truncation trains with the frozen base beside it, the model averaging the two.

    Where the data is dissimilar (an earlier cut leads the deepest in the probe) but only by a few
    points, the truncation and the frozen base are two cheap heads on the same pretrained base, and
    which one a trained head favours is not settled by the probe: the held-out stamps lost 6.6
    points to the frozen base at a lead of 0.050 (docs/RESULTS.md). Their mean sidesteps the choice, as the
    whole network and a truncation do between the dissimilar floors (:func:`averages_truncation`).
    Measured on the tuning sets only, 96 px, test split, truncation / frozen base / average (the
    mean of the two runs' probabilities before their temperatures, as fit's model averages them),
    by the probe's lead of the cut over the deepest features:

    - 150 per class (98 training images per class), seeds 0-3: Animal-MNIST 0.022: 0.945 / 0.927 /
      0.950; 0.028: 0.950 / 0.914 / 0.945; 0.035: 0.891 / 0.895 / 0.923; 0.045: 0.936 / 0.905 /
      0.927; digits 0.033: 0.955 / 0.964 / 0.977; 0.035: 0.986 / 0.964 / 0.986; 0.039: 0.986 / 0.977
      / 0.986; icon themes 0.158: 0.739 / 0.557 / 0.670; 0.171: 0.761 / 0.545 / 0.682; matplotlib
      typefaces 0.222: 0.761 / 0.568 / 0.761; 0.296: 0.818 / 0.568 / 0.773.
    - 45 per class (29 training images per class), seeds 0-1: science tiles 0.041: 0.971 / 0.971 /
      1.000; 0.055: 1.000 / 1.000 / 1.000; Animal-MNIST 0.062: 0.857 / 0.786 / 0.871; 0.086: 0.843 /
      0.771 / 0.829; digits 0.062: 0.986 / 0.986 / 0.986; 0.066: 0.929 / 0.943 / 0.986; and, from an
      earlier commit's recipes, icon themes 0.164: 0.714 / 0.571 / 0.571; 0.172: 0.571 / 0.464 /
      0.536; typefaces 0.241: 0.679 / 0.357 / 0.607 and 0.750 / 0.321 / 0.643.

    Up to a lead of 0.086 the average scored +1.0 points over the truncation on average (13 runs:
    five higher, by up to 5.7; four equal; three lower, by 0.5-1.4); from 0.158 on it never scored
    above it (eight runs, -6.9 on average), the frozen base being 11-43 points behind. The frozen
    base's head costs about what the truncation's does (its first passes are the truncation's,
    :mod:`transferkit.training.shared_passes`), and no trial runs then.

    Example:
        >>> def score(cut, accuracy):
        ...     return CutScore(cut, logme=0.0, probe_accuracy=accuracy, feature_dim=8, probe_stderr=0.02)
        >>> averages_frozen_base([score("block_3", 0.80), score("out", 0.74)])
        True
        >>> averages_frozen_base([score("block_3", 0.80), score("out", 0.60)])
        False
    """
    comparison = _compare(scores)
    return comparison is not None and -comparison.margin <= FROZEN_BASE_AVERAGING_LEAD


def averages_leading_cut(scores: Sequence[CutScore]) -> bool:
    """Whether similar data's frozen base trains with a truncation at the best earlier cut beside
    it, the model averaging the two: where that cut leads the deepest in the probe, but by no more
    than :data:`TRUNCATE_MARGIN` (more, and the data is dissimilar: :func:`averages_frozen_base`).

    The same two networks as there, the frozen base now the run's own: below the margin the probe
    calls the data similar, ties going to the deeper recipe, so a cut that leads by a point or two
    was trained only where a close call's trials picked it (they rarely do: a rival needs a lead of
    a standard error). Measured on the tuning sets only, 224 px, test split, frozen base /
    truncation / average (as fit averages them), every seed whose lead fell in this band:

    - 45 per class (29 training images per class), seeds 0-5: Animal-MNIST 0.014: 0.829 / 0.843 /
      0.843; 0.003: 0.886 / 0.857 / 0.914; 0.010: 0.857 / 0.886 / 0.886; 0.007: 0.929 / 0.843 /
      0.871; digits 0.010: 0.957 / 0.929 / 0.986; 0.014: 0.857 / 0.857 / 0.871.
    - 60 per class (39 training images per class), seeds 0-3: Animal-MNIST 0.005: 0.900 / 0.867 /
      0.878; 0.005: 0.956 / 0.911 / 0.933; digits 0.015: 0.889 / 0.922 / 0.944.

    The average scored +0.8 points over the frozen base on average (nine runs of 70 or 90 test
    images: six higher, by 1.4-5.5; three lower, by 2.2-5.7): a weak gain, the size of one image,
    at about twice a frozen fit's few seconds. Seeds 6-9 at 45 per class, run after the rule was
    set, put four more runs in the band: Animal-MNIST 0.007: 0.871 / 0.886 / 0.900; 0.010: 0.914 /
    0.871 / 0.914; digits 0.007: 0.943 / 0.914 / 0.971; 0.017: 0.943 / 0.957 / 0.971 (+2.9, 0.0,
    +2.9, +2.9; thirteen runs +1.2). The rule also removes a step: a lead of 0.021 trained
    both networks, one of 0.019 the frozen base alone. No trial runs in the band (the average
    settles the close call).

    Example:
        >>> def score(cut, accuracy):
        ...     return CutScore(cut, logme=0.0, probe_accuracy=accuracy, feature_dim=8, probe_stderr=0.02)
        >>> averages_leading_cut([score("block_3", 0.81), score("out", 0.80)])
        True
        >>> averages_leading_cut([score("block_3", 0.80), score("out", 0.80)])
        False
    """
    comparison = _compare(scores)
    return comparison is not None and 0 < -comparison.margin <= TRUNCATE_MARGIN + 1e-9


SATURATED_PROBE_ACCURACY = 0.98
"""When a linear probe on the frozen deepest features already reaches this accuracy, similar data
is trained frozen even when it is large: fine-tuning has (almost) nothing left to gain and costs
2.5-8x the time (LFW 0.994 and textures 1.000 probe accuracy: freeze and fine-tune both 1.000)."""

SIZE_CLOSE_FACTOR = 1.25
"""Size is a close call when 25% more or 25% fewer images (same class balance) would flip it."""

FEW_IMAGES_PER_CLASS = 20
"""Below this many images in the smallest class, the reasons warn that every score is noisy."""

IMBALANCE_WARNING = 3.0
"""At or above this largest/smallest class ratio the reasons suggest class weights."""

TRUNCATE_MARGIN = 0.02
"""An earlier cut must beat the deepest cut's linear-probe accuracy by more than this (2 points)
for the data to count as "dissimilar".

Ties go to "similar" on purpose: measured on real small data (``OFFLINE.md``), freezing the whole
base beat truncation on both data sets, and a cut at the wrong place lost 8-50 points, so the
deeper (safer) recipe needs no proof while a truncation does.
"""

CLOSE_CALL_CONFIDENCE = math.erf(1 / math.sqrt(2))  # 0.6827: the margin is within 1 standard error
"""Below this confidence a decision is flagged as a close call (see :func:`similarity_decision`)."""

LOGME_DISAGREEMENT_FACTOR = 0.5
"""Confidence is multiplied by this when LogME ranks the two cuts opposite to the probe.

Two independent estimators disagreeing means the decision is fragile; halving caps the
confidence at 0.5, below :data:`CLOSE_CALL_CONFIDENCE`, so such a decision is always a close call.
"""


# ----------------------------------------------------------------------------------------------
# Size
# ----------------------------------------------------------------------------------------------


class CardLike(Protocol):
    """What selection reads from a dataset card (``transferkit.data.loading.DatasetCard`` or a mapping)."""

    num_classes: int
    num_train: int
    min_images_per_class: int
    median_images_per_class: float
    imbalance: float  # largest class / smallest class


_CARD_FIELDS = ("num_classes", "num_train", "min_images_per_class", "median_images_per_class", "imbalance")


def _card_values(card: CardLike | Mapping[str, Any]) -> dict[str, float]:
    values = {}
    for name in _CARD_FIELDS:
        value = card.get(name) if isinstance(card, Mapping) else getattr(card, name, None)
        if value is None:
            raise TransferkitError(
                f"The dataset card has no {name!r}; selection needs {', '.join(_CARD_FIELDS)}. "
                "Pass a DatasetCard from transferkit.data.loading or a mapping with those keys."
            )
        values[name] = float(value)
    return values


def _size_from_counts(median_per_class: float) -> str:
    return "large" if median_per_class >= SMALL_IMAGES_PER_CLASS else "small"


def _size_is_close(values: Mapping[str, float]) -> bool:
    """True when scaling the data by SIZE_CLOSE_FACTOR either way would flip small/large."""
    median = values["median_images_per_class"]
    size = _size_from_counts(median)
    return any(_size_from_counts(median * k) != size for k in (SIZE_CLOSE_FACTOR, 1 / SIZE_CLOSE_FACTOR))


def size_quadrant(card_like: CardLike | Mapping[str, Any]) -> tuple[str, list[str]]:
    """Classify the dataset as "small" or "large" from its card, with human-readable reasons.

    Large when the median class has at least :data:`SMALL_IMAGES_PER_CLASS` images. (Whether
    dissimilar data is large enough to retrain is decided later, with the similarity.)

    Example:
        >>> size_quadrant({"num_classes": 5, "num_train": 150, "min_images_per_class": 25,
        ...                "median_images_per_class": 30, "imbalance": 1.2})[0]
        'small'
    """
    v = _card_values(card_like)
    median, total = v["median_images_per_class"], v["num_train"]
    size = _size_from_counts(median)
    per_class = f"median {median:,.0f} training images per class over {v['num_classes']:.0f} classes"
    if size == "small":
        reasons = [
            f"{per_class} (< {SMALL_IMAGES_PER_CLASS:,}) and {total:,.0f} in total: too few to steer a "
            "fine-tuned base (the validation split early stopping relies on is tiny); the base stays frozen"
        ]
    else:
        reasons = [
            f"{per_class} (>= {SMALL_IMAGES_PER_CLASS:,}): enough to fine-tune the whole network "
            "(layer-wise learning rates after a head warm-up) where ImageNet features suit the data; "
            "retraining dissimilar data needs more, depending on the image size"
        ]
    if _size_is_close(v):
        reasons.append(
            f"size is a close call: {SIZE_CLOSE_FACTOR - 1:.0%} more or fewer images would flip it"
        )
    if v["min_images_per_class"] < FEW_IMAGES_PER_CLASS:
        reasons.append(
            f"the smallest class has only {plural(round(v['min_images_per_class']), 'training image')}: "
            "every score is noisy there"
        )
    if v["imbalance"] >= IMBALANCE_WARNING:
        reasons.append(
            f"classes are imbalanced ({v['imbalance']:.1f}x largest/smallest): consider "
            'class_weight = "balanced" in the recipe\'s [data] table ("auto" does it from this ratio on)'
        )
    return size, reasons


# ----------------------------------------------------------------------------------------------
# Similarity and cut point
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CutScore:
    """How well the pooled features at one cut point separate the classes."""

    cut: str
    logme: float
    probe_accuracy: float
    feature_dim: int
    probe_stderr: float = 0.0  # binomial standard error of probe_accuracy (Laplace-smoothed)


def score_cut_points(
    features_by_cut: Mapping[str, np.ndarray], labels: np.ndarray, *, seed: int = 0, folds: int = 5
) -> list[CutScore]:
    """Score every cut point (shallow to deep, in the mapping's order) with LogME and a linear probe.

    The standard error uses the smoothed accuracy p = (correct + 1) / (N + 2), so that a perfect
    probe still carries some uncertainty: se = sqrt(p (1 - p) / N).

    Example:
        >>> import numpy as np
        >>> labels = np.repeat([0, 1], 10)
        >>> [s.cut for s in score_cut_points({"a": np.eye(20)[:, :3], "b": np.eye(20)}, labels)]
        ['a', 'b']
    """
    matrices = {cut: _as_matrix(features) for cut, features in features_by_cut.items()}
    accuracies = linear_probes(matrices, labels, folds=folds, seed=seed)  # every cut's folds in parallel
    scores = []
    for cut, x in matrices.items():
        accuracy = accuracies[cut]
        smoothed = (accuracy * len(x) + 1) / (len(x) + 2)
        stderr = math.sqrt(smoothed * (1 - smoothed) / len(x))
        scores.append(CutScore(cut, logme(x, labels), accuracy, x.shape[1], stderr))
    return scores


@dataclass(frozen=True)
class _Comparison:
    deepest: CutScore
    best_earlier: CutScore
    margin: float  # deepest - best earlier probe accuracy
    noise: float  # standard error of that difference

    @property
    def distance(self) -> float:
        """Signed distance from the decision boundary (>= 0: similar)."""
        return self.margin + TRUNCATE_MARGIN


def _compare(scores: Sequence[CutScore]) -> _Comparison | None:
    if len(scores) < 2:
        return None
    deepest, earlier = scores[-1], list(scores[:-1])
    # best earlier cut: highest probe accuracy; ties -> higher LogME -> the deeper cut (safer)
    index = max(range(len(earlier)), key=lambda i: (earlier[i].probe_accuracy, earlier[i].logme, i))
    best = earlier[index]
    noise = math.hypot(deepest.probe_stderr, best.probe_stderr) or 1e-12
    return _Comparison(deepest, best, deepest.probe_accuracy - best.probe_accuracy, noise)


def similarity_decision(scores: Sequence[CutScore]) -> tuple[bool, str | None, float, list[str]]:
    """Decide "similar" from per-cut scores; pick the truncation cut; give a confidence and reasons.

    Rule: let ``margin`` = probe accuracy of the deepest cut minus that of the best earlier cut.
    The data is *similar* when ``margin >= -TRUNCATE_MARGIN`` (the deepest cut transfers best,
    within 2 points: ties go to the safer, deeper recipe); otherwise it is *dissimilar* and the
    best earlier cut is returned as the cut point.

    The probe accuracy is the primary score because it is interpretable and directly predicts a
    frozen head's accuracy; LogME (smooth, no CV noise, but an unbounded log-evidence scale that
    cannot be weighed against accuracy points) is a second opinion: it breaks exact probe ties
    between earlier cuts and, when it ranks the two compared cuts the other way, it halves the
    confidence.

    Confidence: with ``d = margin + TRUNCATE_MARGIN`` (signed distance from the boundary) and
    ``noise = sqrt(se_deep**2 + se_earlier**2)`` (standard error of the difference),
    ``confidence = erf(|d| / (noise * sqrt(2)))`` = P(|Z| < |d| / noise): 0 on the boundary,
    0.68 at one standard error, 0.95 at two; times :data:`LOGME_DISAGREEMENT_FACTOR` if LogME
    disagrees. Below :data:`CLOSE_CALL_CONFIDENCE` (one standard error) the call is close.

    Returns:
        ``(similar, cut_point or None, confidence in [0, 1], reasons)``.
    """
    comparison = _compare(scores)
    if comparison is None:
        only = f"{scores[0].cut!r}" if scores else "none"
        return True, None, 0.0, [f"only one cut point scored ({only}): nothing to compare, assuming similar"]
    deep, best, d = comparison.deepest, comparison.best_earlier, comparison.distance
    similar = d >= -1e-9  # ties (up to float rounding of k/N accuracies) go to similar
    confidence = math.erf(abs(d) / (comparison.noise * math.sqrt(2)))
    reasons = [_describe(deep, "deepest cut"), _describe(best, "best earlier cut")]
    if not similar:
        verdict = (
            f"dissimilar: the earlier cut {best.cut!r} separates these classes better "
            "(a truncation cuts there)"
        )
    elif comparison.margin >= 0:
        verdict = "similar: the deepest (most ImageNet-specific) features separate these classes best"
    else:  # the earlier cut ahead, by less than the margin
        verdict = (
            "similar: the deepest (most ImageNet-specific) features separate these classes about as well "
            f"(the earlier cut {best.cut!r} is ahead by less than the margin)"
        )
    reasons.append(
        f"deepest minus best earlier = {comparison.margin:+.3f} accuracy (dissimilar below "
        f"{-TRUNCATE_MARGIN:+.3f}; {abs(d) / comparison.noise:.1f} standard errors from that line) "
        f"-> {verdict}"
    )
    if (deep.logme >= best.logme) != similar:
        confidence *= LOGME_DISAGREEMENT_FACTOR
        reasons.append(
            f"LogME disagrees ({deep.logme:.3f} deepest vs {best.logme:.3f} earlier): confidence halved"
        )
    else:
        reasons.append(f"LogME agrees ({deep.logme:.3f} deepest vs {best.logme:.3f} earlier)")
    return similar, None if similar else best.cut, confidence, reasons


def _describe(score: CutScore, role: str) -> str:
    return (
        f"{role} {score.cut!r} ({score.feature_dim}-d): probe accuracy {score.probe_accuracy:.3f} "
        f"+/- {score.probe_stderr:.3f}, LogME {score.logme:.3f}"
    )
