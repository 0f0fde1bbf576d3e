"""Trials: when the selector's call is close, train its candidates briefly and keep the best on validation.

The selector measures in one forward pass; when its own confidence says the top candidates are
within noise (:attr:`Selection.close_call`), ``fit(selection="trial")`` settles the call by
training instead: successive halving over the candidates, each trained on the training split and
scored on the validation split (never the held-out test split), with its phases at a fraction
of their epochs (a whole-network candidate's head warm-up, on cached features, as it is). The
winner's recipe is the one the run trains; the history of the trials is kept in ``selection.json``.

This module holds the choice of candidates, the epoch budget and the halving; training one
candidate is the caller's (``api.py`` passes a function that builds and trains a recipe).

Example:
    >>> from transferkit.recipes import Phase, Recipe
    >>> phases = (Phase("warmup", epochs=60), Phase("tune", train="all", epochs=10))
    >>> recipe = Recipe(name="r", strategy="fine_tune", phases=phases)
    >>> [p.epochs for p in scaled_recipe(recipe, 0.125).phases]  # the warm-up on cached features: as it is
    [60, 1]
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from transferkit.console import plural, say
from transferkit.recipes import Phase, Recipe
from transferkit.selection.decision import Selection, _refine_large
from transferkit.selection.quadrants import SIZES, STRATEGIES, quadrant_for
from transferkit.selection.rules import (
    CLOSE_CALL_CONFIDENCE,
    SATURATED_PROBE_ACCURACY,
    _card_values,
    _compare,
    _size_is_close,
    size_quadrant,
)

SELECTION_MODES = ("fast", "trial")
"""How ``fit`` settles the quadrant: "fast" keeps the selector's pick as measured; "trial" (the
default) trains the candidates briefly when the selector calls its own decision close."""

TRIAL_BUDGET = 0.25
"""All trials together train at most this fraction of each candidate's epochs (per phase, at
least one epoch each; a whole-network candidate's head warm-up at full length, on cached
features): the issue's bar is selection and trials within a quarter of one fit.

It bounds epochs and, since a whole-network trial can cost more than a head-only fit, image
passes (:func:`training_passes`: a trial that would take the trials past this share of the pick's
fit in passes is not run; cards at 224 px, 106 per class, truncate picked: its 116 s trial of
fine-tune against a 75 s fit, pick kept). Head-only candidates train a head on the trials'
feature bank (one clean pass of the training and validation images through the base, shared with
the final fit), scored without another trace; a whole-network candidate builds its model and
traces its training step (about 10 s of a 15-20 s trial on 2 busy cores at 96 px, its epoch the
rest), so the trials skip what cannot change the pick: a whole-network candidate once a head-only
one scores :data:`SATURATED_TRIAL_ACCURACY`, any candidate after one that scored 1.0, a lone
survivor's second round. Measured (96 px, 80 per class, seed 0, mobilenet_v2_torchvision, tuning
sets, load average 1-5 on 2 cores, so CPU seconds from ``timings.json`` as well as wall), trials
/ final fit, wall (CPU), before -> after: science_tiles 0.95 (1.17) -> 0.22 (0.25), fine-tune not
trialled (head-only 0.985); lfw_faces 0.50 (0.50) -> 0.50 (0.29); textures 0.15 (0.19) -> 0.08
(0.11); animal_mnist 0.41 (0.54) -> 0.42 (0.46) and digits 0.54 (0.67) -> 0.65 (0.68), where the
fine-tune trial ran and dominated (since the budget counts passes it runs there no more: 0.00,
picks kept, test 0.892 and 0.967 at 8195b1a); animal_mnist at 150 per class (retrain against
fine-tune, the fit 4x longer) 0.36 (0.33) -> 0.33 (0.33). Picks unchanged on all; the fine-tune
trial's score came closer to its own fit's validation accuracy (animal_mnist 0.700 -> 0.863 of
0.925, digits 0.806 -> 0.900 of 0.956) and still loses to truncate, as it does in the fits on
validation (0.931 and 0.963); on test the fits are within two points (animal_mnist
truncate 0.892, fine-tune 0.900; digits 0.925, 0.908)."""

TRAIN_STEP_PASSES = 3
"""A training step through the base costs about this many forward passes of its images (the
forward pass, the gradients with respect to the activations and to the weights): what
:func:`training_passes` counts a phase that trains the base in."""

TRAIN_SETUP_PASSES = 2_000
"""Building a model that trains the base and tracing its steps costs about this many image passes,
once (:func:`training_passes` adds it to every recipe that trains the base, a trial's and a fit's
alike): without it a whole-network trial's wall time overran the budget its passes kept to
(emoji_groups, 96 px: 37% of the fit's time against 25%). Measured on a tuning set (icon themes,
150 per class: 392 training and 120 validation images, 2-core CPU), a whole-network trial's
phase with 1 and with 3 epochs: building, tracing and the first epoch's extra took 7.4-9.5 s,
with the base's build and the scoring pass about 10 s, at 224 px (the default size) 1,800
(``large_dissimilar``) to 2,600 (``large_similar`` as it was then, whose frozen bottom blocks made
its passes cheaper) image passes' worth; at 96 px 6,500-6,900, since tracing does not shrink with the image.
The 224-px figure is used: small images are under-counted, never over. With it a whole-network
trial (4 of 15 epochs, plus this) fits in a quarter of its pick's fit only from about 6,000
training images on (where the set-up is under 3% of the trial's passes); on fewer it is not run,
and the selector's pick stands."""

SATURATED_TRIAL_ACCURACY = SATURATED_PROBE_ACCURACY
"""Once a head-only candidate's trial scores this on validation, candidates that train the base
are not trialled: the selector's own rule for a saturated probe (fine-tuning has next to nothing
left to gain, at several times the cost) applied to a trained head. Measured (96 px, 80 per
class, seed 0): science_tiles, freeze 0.985 on validation, fine-tune's own fit 1.000 (test 1.000
both): its 14 s trial could have won by one image."""

SWITCH_MARGIN_SE = 1.0
"""The selector's pick gives way to a rival only when the rival's validation accuracy is higher by
more than this many standard errors of the difference, paired image by image
(:func:`paired_standard_error`): the one-standard-error rule of model selection (Hastie,
Tibshirani and Friedman, *The Elements of Statistical Learning*, 2nd ed., section 7.10), with the
selector's measured pick in the role of the simpler model. The trials are short and scored on the
split their heads chose their regularisation and kept epoch on, and a whole-network trial runs a
quarter of its schedule: a lead of an image or two is noise, or bias towards the head-only
candidate, not evidence. Set from that reasoning, not tuned: with 200 validation images of which
40 are classified differently, a lead must be 7 images (3.5 points) to count. Checked afterwards
on emoji_groups (held out, 150 per class, 96 px): fine-tune picked by the selector, truncation's
trial led it by -1.9 and +0.4 points with errors of 2.8: fine-tune kept on both seeds (seed 1
had switched to truncation on its one-image lead: 0.695 on test against fine-tune's 0.722)."""

_SATURATED = f"a head-only trial reached {SATURATED_TRIAL_ACCURACY:.2f}: next to nothing left to gain"

_QUADRANT_PARTS = {
    quadrant_for(size, similar): (size, similar) for size in SIZES for similar in (True, False)
}


@dataclass(frozen=True)
class Candidate:
    """One recipe the trials may pick: a quadrant, and the cut point when its recipe truncates."""

    quadrant: str
    cut_point: str | None = None

    def describe(self) -> str:
        return f"{self.quadrant} @ {self.cut_point}" if self.cut_point else self.quadrant


@dataclass(frozen=True)
class TrialRecord:
    """One candidate trained in one round of the halving."""

    quadrant: str
    cut_point: str | None
    round: int  # 1-based
    phase_epochs: tuple[int, ...]  # the scaled epochs of each phase
    epochs_run: int  # fewer than their sum when early stopping ended a phase
    val_accuracy: float
    seconds: float
    reused: bool = False  # the same scaled recipe as an earlier round's: its score kept, not trained again
    # One standard error of (this val_accuracy - the pick's in the same round), paired image by
    # image; None for the pick itself, or when the pick did not run in that round.
    se_against_pick: float | None = None


@dataclass(frozen=True)
class Trials:
    """The trials ``fit`` ran on a close call, their scores and the winner; ``to_dict()`` is JSON-ready."""

    budget_fraction: float  # of the epochs of the phases that train the base, for all trials together
    candidates: tuple[Candidate, ...]  # the selector's pick first
    records: tuple[TrialRecord, ...]
    winner: Candidate
    seconds: float
    final_fit_seconds: float | None = None  # the winner's own training, once the run has finished
    bank_seconds: float = 0.0  # of ``seconds``: the clean feature pass shared by the trials and the fit
    skipped: tuple[Candidate, ...] = ()  # not run: the trials before them left them nothing to gain

    @property
    def pick_changed(self) -> bool:
        return self.winner != self.candidates[0]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["candidates"] = [dataclasses.asdict(c) for c in self.candidates]
        data["skipped"] = [dataclasses.asdict(c) for c in self.skipped]
        data["records"] = [dataclasses.asdict(r) for r in self.records]
        data["pick_changed"] = self.pick_changed
        data["share_of_final_fit"] = (
            round(self.seconds / self.final_fit_seconds, 4) if self.final_fit_seconds else None
        )
        return data


def candidates(
    selection: Selection, card: Mapping[str, Any], *, size_measured: bool
) -> tuple[Candidate, ...]:
    """The selector's pick first, then the quadrant each close part of its call would flip to.

    The similarity is close when its confidence is under :data:`CLOSE_CALL_CONFIDENCE` (the
    runner-up is the other side, truncating at the best earlier cut); the size is close when it
    was measured and 25% more or fewer images would flip it (the runner-up is the other size).
    A flip the selector's own refinements map back onto the pick adds nothing, and neither does
    one from a whole-network recipe to the other (:data:`WHOLE_NETWORK_STRATEGIES`).

    Args:
        selection: the selector's decision (with its per-cut scores).
        card: the dataset card's size figures (:func:`transferkit.selection.measure.size_figures`).
        size_measured: whether the size was measured (``size="auto"``) rather than given.
    """
    pick = Candidate(selection.quadrant, selection.cut_point)
    if not selection.close_call:
        return (pick,)
    values = _card_values(card)
    raw_size = size_quadrant(card)[0] if size_measured else selection.size
    flips = []
    if selection.scores and selection.confidence < CLOSE_CALL_CONFIDENCE:
        flips.append((raw_size, not selection.similar))
    if size_measured and _size_is_close(values):
        flips.append(("large" if raw_size == "small" else "small", selection.similar))
    found = [pick]
    for size, similar in flips:
        if size_measured:
            size, _ = _refine_large(size, similar, values, selection.scores, [], selection.image_size)
        candidate = _candidate(quadrant_for(size, similar), selection)
        if candidate is None or candidate in found or _whole_network_pair(pick, candidate):
            continue
        found.append(candidate)
    return tuple(found)


WHOLE_NETWORK_STRATEGIES = ("fine_tune", "retrain")
"""Recipes that train every weight after a head warm-up. Two of them are not trialled against each
other: they differ only in how fast the lower blocks move (``large_similar``: 2e-4, 0.8 per block;
``large_dissimilar``: 3e-4, 0.9), and on the tuning sets (96 px, seed 0, test split, 15 epochs
each) they ended within noise of each other: fine-tune minus retrain +1.1 points on icon themes
(150 per class), +3.4 on font families (matplotlib, 150), +1.3 on Animal-MNIST (100), where a
trial's validation split of ~150 images resolves +/-7 points at best. Such a trial cost a third to
a half of the final fit (two whole-network trials, each traced) and never changed the pick."""


def _whole_network_pair(pick: Candidate, other: Candidate) -> bool:
    return {STRATEGIES[pick.quadrant], STRATEGIES[other.quadrant]} <= set(WHOLE_NETWORK_STRATEGIES)


def _candidate(quadrant: str, selection: Selection) -> Candidate | None:
    """``quadrant`` as a candidate; a truncating one cuts where the selector's scores say (None: unscored)."""
    if STRATEGIES[quadrant] != "truncate":
        return Candidate(quadrant)
    if quadrant == selection.quadrant:
        return Candidate(quadrant, selection.cut_point)
    comparison = _compare(selection.scores)
    return Candidate(quadrant, comparison.best_earlier.cut) if comparison else None


def scaled_recipe(recipe: Recipe, fraction: float) -> Recipe:
    """``recipe`` with its phases' epochs scaled by ``fraction`` (rounded half up, at least 1) and
    without augmentation; a recipe that trains the base keeps its head phases as they are.

    A trial compares candidates, it does not finish one. In a whole-network candidate the head
    phase is its warm-up, on cached features (the trials' feature bank): a second or two at full
    length, and the base then starts moving from the head its fit would start from. Its phases
    that train the base run on the same schedule compressed (the warm-up scaled alike, so a
    phase ends annealed as the full one does, not at the peak rate, where accuracy dips while
    the body starts moving). Without augmentation (nor MixUp and CutMix: regularisers that pay
    off over a whole phase, not a fraction of one) a frozen candidate caches one clean pass
    through its base instead of ``cached_passes`` augmented ones plus the augmentation check's.
    """
    whole = _trains_base(recipe)
    phases = tuple(
        phase if whole and phase.train == "head" else _scaled_phase(phase, fraction)
        for phase in recipe.phases
    )
    plain = dict(cached_passes=0, measure=False, mixup_alpha=0.0, cutmix_alpha=0.0)
    augment = dataclasses.replace(recipe.augment, **plain)
    return dataclasses.replace(recipe, phases=phases, augment=augment)


def _scaled_phase(phase: Phase, fraction: float) -> Phase:
    epochs = max(1, math.floor(phase.epochs * fraction + 0.5))
    warmup = phase.warmup_epochs * epochs / phase.epochs
    return dataclasses.replace(phase, epochs=epochs, warmup_epochs=warmup)


def training_passes(recipe: Recipe, train_images: int, val_images: int, *, banked: bool = False) -> float:
    """What training ``recipe`` costs, in passes of one image through the (whole) base.

    Head phases on cached features cost their feature passes once (the augmented training
    passes, the clean validation one, the augmentation check's clean training one), nothing per
    epoch; ``banked``: those features are already computed (the trials' feature bank), so they
    cost nothing here. A phase that trains the base costs, per epoch, a training step per
    training image (:data:`TRAIN_STEP_PASSES`) and a forward pass per validation image. A
    truncated base is counted whole (an overestimate: its passes are cheaper). The count depends
    on the recipe and the split sizes only, not on the machine or its load, so a budget set in
    it gives the same trials on every run. A recipe that trains the base also pays
    :data:`TRAIN_SETUP_PASSES` once (building and tracing its model).

    Example:
        >>> from transferkit.recipes import Phase, Recipe
        >>> phases = (Phase("warmup", epochs=10), Phase("tune", train="all", epochs=15))
        >>> recipe = Recipe(name="r", strategy="fine_tune", phases=phases)
        >>> training_passes(recipe, 100, 20)  # 4 augmented, 1 of validation; 15 x (300 + 20); set-up
        7220.0
        >>> training_passes(recipe, 100, 20, banked=True)
        6800.0
    """
    passes, cached = (float(TRAIN_SETUP_PASSES) if _trains_base(recipe) else 0.0), False
    for phase in recipe.phases:
        if phase.train != "head":
            passes += phase.epochs * (TRAIN_STEP_PASSES * train_images + val_images)
        elif not (cached or banked):
            augmented = min(recipe.augment.cached_passes, phase.epochs)
            checked = augmented > 0 and recipe.augment.measure
            passes += max(1, augmented) * train_images + val_images + (train_images if checked else 0)
            cached = True
    return passes


def over_budget(
    options: Sequence[Candidate],
    recipe_for: Callable[[Candidate], Recipe],
    sizes: tuple[int, int],
    budget: float = TRIAL_BUDGET,
) -> tuple[Candidate, ...]:
    """The options whose trial alone, at the first round's share of their epochs, would take the
    trials past ``budget`` of the pick's fit in image passes (:func:`training_passes`).

    :func:`successive_halving` would skip each of them; known before anything runs (the count
    needs only the recipes and the split sizes), they need no feature bank either, and when only
    the pick is left there is nothing to trial. When the pick's own trial is over the budget, all
    of ``options`` are returned, the pick first: without it there is nothing to compare with.
    """
    allowance = budget * training_passes(recipe_for(options[0]), *sizes)
    rounds = max(1, math.ceil(math.log2(len(options)))) if len(options) > 1 else 1
    fraction = budget / rounds / _sharing(options, recipe_for, sizes)

    def costly(candidate: Candidate) -> bool:
        trial = scaled_recipe(recipe_for(candidate), fraction)
        return training_passes(trial, *sizes, banked=True) > allowance

    if costly(options[0]):
        return tuple(options)
    return tuple(candidate for candidate in options[1:] if costly(candidate))


def successive_halving(
    options: Sequence[Candidate],
    recipe_for: Callable[[Candidate], Recipe],
    train: Callable[[Recipe], tuple[float, int]],
    *,
    budget: float = TRIAL_BUDGET,
    sizes: tuple[int, int] | None = None,
    verbose: int = 1,
) -> Trials:
    """Train the candidates in rounds, dropping the worse half after each, and return the winner.

    With ``n`` candidates there are ``ceil(log2 n)`` rounds sharing ``budget`` equally; in a round
    each of the ``k`` survivors trains every phase of its recipe at ``budget / rounds / k`` of its
    epochs (two candidates: one round, an eighth of the epochs each at the default budget). Given
    ``sizes``, ``k`` counts only the survivors that train the base: a head-only trial on the
    feature bank costs no passes, so a whole-network candidate against one gets the round's
    whole share: a quarter of its epochs, not an eighth. Measured on emoji_groups (held out,
    150 per class, 96 px), fine-tune against truncation: with 2 of 15 whole-network epochs the
    trials kept truncation on seeds 0 and 1 (10.7 and 7.0 test points under the best recipe);
    with 4, seed 0 fine-tune 0.728 against 0.709 on validation (picked; 0.749 against 0.647 on
    test), seed 1 0.713 against 0.717 (truncation picked then, 2.7 points under fine-tune on
    test; within noise of the pick since :data:`SWITCH_MARGIN_SE`, so fine-tune is kept).
    Survivors continue into the next round at a larger fraction, trained again from the
    pretrained weights (a recipe's phase plan cannot be extended part-way); a survivor whose
    scaled epochs did not grow (every phase at its one-epoch floor) keeps its earlier score, since
    the same recipe from the same seed trains the same model. Ties in validation accuracy go to
    the earlier candidate, and the selector's pick (first in ``options``) keeps its place unless
    the best rival leads it by more than :data:`SWITCH_MARGIN_SE` standard errors of the paired
    difference (each trial's hits on the validation images; each rival's error is in its record).

    In each round the candidates that train the head alone (on cached features: seconds) go
    first. A candidate is not run (it is recorded in ``Trials.skipped`` and drops out) once a
    head-only one has scored :data:`SATURATED_TRIAL_ACCURACY` and it trains the base (next to
    nothing left for it to gain, and its trial costs most of the trials' time), once a
    candidate before it in ``options`` has scored 1.0 (it could only tie, and lose the tie), or,
    given ``sizes``, when its trial would take the trials past ``budget`` of the pick's own fit,
    both counted in image passes (:func:`training_passes`). The last is what keeps a
    whole-network candidate from being trialled against a pick that trains its head alone: two
    epochs of the whole network cost more than the pick's whole fit (on cached features). When
    the pick itself is the one over the budget, the halving stops and the pick stands: a rival
    that ran would otherwise win without having been measured against it.

    Args:
        options: the candidates, the selector's pick first.
        recipe_for: a candidate's full recipe (the caller's overrides and seed applied).
        train: trains a recipe from the pretrained weights; returns its validation accuracy, the
            epochs it ran, and which validation images it got right (one bool each, in the
            split's order; None: no paired comparison, the higher accuracy wins). It must not
            read the held-out test split.
        budget: fraction of each recipe's epochs all trials together may spend (a whole-network
            candidate's head warm-up aside: :func:`scaled_recipe`), and, given ``sizes``, of the
            pick's fit in image passes.
        sizes: the numbers of training and validation images; None: no budget in passes.
        verbose: one line per trial when non-zero.
    """
    started = time.perf_counter()
    survivors, records, skipped = list(options), [], []
    allowance = None if sizes is None else budget * training_passes(recipe_for(options[0]), *sizes)
    spent = 0.0
    trained: dict[tuple[Candidate, Recipe], tuple[TrialRecord, np.ndarray | None]] = {}
    rounds = max(1, math.ceil(math.log2(len(survivors)))) if len(survivors) > 1 else 0
    for number in range(1, rounds + 1):
        fraction = budget / rounds / _sharing(survivors, recipe_for, sizes)
        scored: dict[Candidate, tuple[TrialRecord, np.ndarray | None]] = {}
        pick_unaffordable = False
        for candidate in sorted(survivors, key=lambda c: _trains_base(recipe_for(c))):  # head-only first
            recipe = scaled_recipe(recipe_for(candidate), fraction)
            earlier = trained.get((candidate, recipe))
            cost = 0.0 if sizes is None or earlier else training_passes(recipe, *sizes, banked=True)
            scores = {c: record.val_accuracy for c, (record, _) in scored.items()}
            pointless = _why_not(candidate, recipe, scores, options)
            over = _over_budget(cost, spent, allowance, budget)
            if pointless or over:
                skipped.append(candidate)
                say(verbose, f"trial {candidate.describe()}: not run, {pointless or over}")
                pick_unaffordable |= candidate == options[0] and not pointless
                continue
            if earlier is None:
                record, correct = trained[candidate, recipe] = _trial(candidate, number, recipe, train)
                spent += cost
            else:
                record = dataclasses.replace(earlier[0], round=number, seconds=0.0, reused=True)
                correct = earlier[1]
            scored[candidate] = record, correct
            how = f"round {earlier[0].round}'s score, same epochs" if earlier else f"{record.seconds:.0f} s"
            say(verbose, f"trial {candidate.describe()}: val acc {record.val_accuracy:.3f} ({how}; "
                 f"round {number}, {plural(record.epochs_run, 'epoch')})")  # fmt: skip
        scored = _against_pick(scored, options[0])
        records.extend(record for record, _ in scored.values())
        if pick_unaffordable:  # a rival could only win unopposed: nothing measured it against the pick
            survivors = [options[0]]
            break
        ranked = _ranked({c: record for c, (record, _) in scored.items()}, options)
        survivors = ranked[: 1 if number == rounds else math.ceil(len(ranked) / 2)]
        if len(survivors) == 1:  # a skip left one: nothing to compare it with
            break
    seconds = time.perf_counter() - started
    return Trials(budget, tuple(options), tuple(records), survivors[0], seconds, skipped=tuple(skipped))


def paired_standard_error(correct: np.ndarray, reference: np.ndarray) -> float:
    """The standard error of ``mean(correct) - mean(reference)``, two classifiers' hits (one bool per
    image) on the same images in the same order: only the images they disagree on contribute.

    Example:
        >>> round(paired_standard_error(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0])), 3)
        0.408
    """
    if len(correct) != len(reference):
        raise ValueError(f"paired on different images: {len(correct)} and {len(reference)}")
    difference = np.asarray(correct, float) - np.asarray(reference, float)
    return float(np.std(difference, ddof=1) / math.sqrt(len(difference))) if len(difference) > 1 else 0.0


def _against_pick(scored: dict, pick: Candidate) -> dict:
    """This round's ``scored`` (candidate -> (record, hits)) with each rival's record holding the
    standard error of its difference from ``pick`` (when both have their hits)."""
    if pick not in scored or scored[pick][1] is None:
        return scored
    reference = scored[pick][1]
    return {
        candidate: (
            record
            if candidate == pick or correct is None
            else dataclasses.replace(record, se_against_pick=paired_standard_error(correct, reference)),
            correct,
        )
        for candidate, (record, correct) in scored.items()
    }


def _ranked(records: Mapping[Candidate, TrialRecord], options: Sequence[Candidate]) -> list[Candidate]:
    """This round's candidates, best first: by validation accuracy (ties to the earlier in
    ``options``), except that the selector's pick (``options[0]``) stays first unless the best
    rival leads it by more than :data:`SWITCH_MARGIN_SE` standard errors."""
    ranked = sorted(records, key=lambda c: (-records[c].val_accuracy, options.index(c)))
    pick = options[0]
    if pick in records and ranked[0] != pick and not _clear_lead(records[ranked[0]], records[pick]):
        ranked.remove(pick)
        ranked.insert(0, pick)
    return ranked


def _clear_lead(rival: TrialRecord, pick: TrialRecord) -> bool:
    """Whether ``rival`` beats ``pick`` beyond noise (always, when there is no paired error to judge by)."""
    lead = rival.val_accuracy - pick.val_accuracy
    return rival.se_against_pick is None or lead > SWITCH_MARGIN_SE * rival.se_against_pick + 1e-9


def _why_not(candidate: Candidate, recipe: Recipe, scores: dict, options: Sequence[Candidate]) -> str:
    """Why ``candidate`` need not be trained given this round's ``scores`` so far ("": it must)."""
    if any(score >= 1.0 and options.index(c) < options.index(candidate) for c, score in scores.items()):
        return "an earlier candidate scored 1.000: it could only tie, and a tie goes to the earlier"
    if _trains_base(recipe) and max(scores.values(), default=0.0) >= SATURATED_TRIAL_ACCURACY:
        return _SATURATED
    return ""


def _sharing(survivors: Sequence[Candidate], recipe_for, sizes: tuple[int, int] | None) -> int:
    """How many of ``survivors`` share a round's budget: with ``sizes`` (the budget in image passes),
    those whose trials cost passes, i.e. train the base (a head-only trial trains on the feature
    bank, for free); without, all of them."""
    if sizes is None:
        return len(survivors)
    return max(1, sum(_trains_base(recipe_for(candidate)) for candidate in survivors))


def _over_budget(cost: float, spent: float, allowance: float | None, budget: float) -> str:
    """Why a trial of ``cost`` image passes may not run after ``spent`` ("": it may)."""
    if allowance is None or spent + cost <= allowance:
        return ""
    return (
        f"its trial (~{cost:,.0f} image passes) would take the trials past {budget:.0%} of the "
        f"pick's fit ({allowance:,.0f} of its passes)"
    )


def _trains_base(recipe: Recipe) -> bool:
    return any(phase.train != "head" for phase in recipe.phases)


def _trial(candidate: Candidate, number: int, recipe: Recipe, train) -> tuple[TrialRecord, np.ndarray | None]:
    started = time.perf_counter()
    accuracy, epochs_run, correct = train(recipe)
    phase_epochs = tuple(phase.epochs for phase in recipe.phases)
    record = TrialRecord(
        candidate.quadrant,
        candidate.cut_point,
        number,
        phase_epochs,
        int(epochs_run),
        float(accuracy),
        time.perf_counter() - started,
    )
    return record, None if correct is None else np.asarray(correct, bool)


def _within_noise(trials: Trials) -> str:
    """Why the pick was kept against a rival that scored higher in the last round ("": none did)."""
    last = [r for r in trials.records if r.round == trials.records[-1].round]
    kept = [Candidate(r.quadrant, r.cut_point) == trials.winner for r in last]
    if trials.pick_changed or not any(kept):
        return ""
    pick = last[kept.index(True)]
    higher = [r for r in last if r.val_accuracy > pick.val_accuracy and r.se_against_pick is not None]
    if not higher:
        return ""
    best = max(higher, key=lambda r: r.val_accuracy)
    lead, error = 100 * (best.val_accuracy - pick.val_accuracy), 100 * best.se_against_pick
    return (
        f" ({Candidate(best.quadrant, best.cut_point).describe()}'s lead of {lead:.1f} points is "
        f"within {SWITCH_MARGIN_SE:g} standard error of the paired difference, {error:.1f})"
    )


def with_trials(selection: Selection, trials: Trials) -> Selection:
    """``selection`` decided by ``trials``: the winner's quadrant, recipe and cut, the trials kept."""
    winner = trials.winner
    size, similar = _QUADRANT_PARTS[winner.quadrant]
    scored = ", ".join(
        f"{Candidate(r.quadrant, r.cut_point).describe()} {r.val_accuracy:.3f}" for r in trials.records
    )
    verdict = "pick changed" if trials.pick_changed else "pick kept"
    skipped = ", ".join(c.describe() for c in trials.skipped)
    if trials.records:
        reason = f"close call measured by trials (validation accuracy: {scored})"
        reason += f": {winner.describe()}, {verdict}{_within_noise(trials)}"
        if skipped:
            reason += f"; not trialled (nothing left to gain, or over the budget): {skipped}"
    elif trials.skipped and trials.skipped[0] == winner:  # over_budget: the pick's own trial
        rivals = ", ".join(c.describe() for c in trials.skipped[1:])
        reason = (
            f"close call; the pick's own trial would cost over {trials.budget_fraction:.0%} of its fit "
            f"(in image passes, set-up included), so {rivals} had nothing to be compared with; pick kept"
        )
    elif skipped:
        reason = f"close call; a trial would cost over the budget, not run: {skipped}; pick kept"
    else:
        reason = "close call, but the pick is the only candidate worth a trial; pick kept"
    return dataclasses.replace(
        selection,
        size=size,
        similar=similar,
        quadrant=winner.quadrant,
        recipe=STRATEGIES[winner.quadrant],
        cut_point=winner.cut_point,
        reasons=(*selection.reasons, reason),
        trials=trials,
    )
