"""Trials: when the selector's call is close, train its candidates briefly and keep the best on validation.

The selector measures in one forward pass; when its own confidence says the top candidates are
within noise (:attr:`Selection.close_call`), ``fit(selection="trial")`` settles the call by
training instead: successive halving over the candidates, each trained on the training split and
scored on the validation split (never the held-out test split), with every phase of its recipe
at a fraction of its epochs. The winner's recipe is the one the run trains; the history of the
trials is kept in ``selection.json``.

This module holds the choice of candidates, the epoch budget and the halving; training one
candidate is the caller's (``api.py`` passes a function that builds and trains a recipe).

Example:
    >>> from transferkit.recipes import Phase, Recipe
    >>> phases = (Phase("head", epochs=60), Phase("all", epochs=3))
    >>> recipe = Recipe(name="r", strategy="freeze", phases=phases)
    >>> [p.epochs for p in scaled_recipe(recipe, 0.125).phases]
    [8, 1]
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from transferkit.recipes import Recipe
from transferkit.selection.decision import Selection, _refine_large
from transferkit.selection.quadrants import SIZES, STRATEGIES, quadrant_for
from transferkit.selection.rules import (
    CLOSE_CALL_CONFIDENCE,
    _card_values,
    _compare,
    _size_is_close,
    size_quadrant,
)

SELECTION_MODES = ("fast", "trial")
"""How ``fit`` settles the quadrant: "fast" keeps the selector's pick as measured; "trial" (the
default) trains the candidates briefly when the selector calls its own decision close."""

TRIAL_BUDGET = 0.25
"""All trials together train at most this fraction of the chosen recipe's epochs (per phase,
at least one epoch each): the issue's bar is selection and trials within a quarter of one fit.

It bounds epochs, not time. Candidates whose phases train the head alone train it on the trials'
feature bank (one clean pass of the training and validation images through the base, shared with
the final fit): a freeze or truncate trial takes 3-7 s instead of 14-28 s (wall). A candidate
that trains the whole network still builds its model and runs an epoch through the base (26-31 s)
and dominates; a survivor at the same epochs keeps its score. Measured (96 px, 80 per class,
mobilenet_v2_torchvision, 2 busy CPU cores), trials / final fit in selection.json (wall), before
-> after: science_tiles, 3 candidates in 2 rounds, 147 s / 73 s (2.02) -> 50 s / 35 s (1.44: the
fit itself got faster meanwhile); emoji_groups, 153 s / 58 s (2.63) -> 46 s / 59 s (0.77).
Picks unchanged."""

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


@dataclass(frozen=True)
class Trials:
    """The trials ``fit`` ran on a close call, their scores and the winner; ``to_dict()`` is JSON-ready."""

    budget_fraction: float  # of the chosen recipe's epochs, for all trials together
    candidates: tuple[Candidate, ...]  # the selector's pick first
    records: tuple[TrialRecord, ...]
    winner: Candidate
    seconds: float
    final_fit_seconds: float | None = None  # the winner's own training, once the run has finished
    bank_seconds: float = 0.0  # of ``seconds``: the clean feature pass shared by the trials and the fit

    @property
    def pick_changed(self) -> bool:
        return self.winner != self.candidates[0]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["candidates"] = [dataclasses.asdict(c) for c in self.candidates]
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
    A flip the selector's own refinements map back onto the pick adds nothing.

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
            size, _ = _refine_large(size, similar, values, selection.scores, [])
        candidate = _candidate(quadrant_for(size, similar), selection)
        if candidate is not None and candidate not in found:
            found.append(candidate)
    return tuple(found)


def _candidate(quadrant: str, selection: Selection) -> Candidate | None:
    """``quadrant`` as a candidate; a truncating one cuts where the selector's scores say (None: unscored)."""
    if STRATEGIES[quadrant] != "truncate":
        return Candidate(quadrant)
    if quadrant == selection.quadrant:
        return Candidate(quadrant, selection.cut_point)
    comparison = _compare(selection.scores)
    return Candidate(quadrant, comparison.best_earlier.cut) if comparison else None


def scaled_recipe(recipe: Recipe, fraction: float) -> Recipe:
    """``recipe`` with every phase's epochs scaled by ``fraction`` (rounded half up, at least 1), and
    without augmentation.

    A trial compares candidates, it does not finish one: without augmentation a frozen candidate
    caches one clean pass through its base instead of ``cached_passes`` augmented ones plus the
    augmentation check's, which is most of a frozen trial's time.
    """
    phases = tuple(
        dataclasses.replace(phase, epochs=max(1, math.floor(phase.epochs * fraction + 0.5)))
        for phase in recipe.phases
    )
    augment = dataclasses.replace(recipe.augment, cached_passes=0, measure=False)
    return dataclasses.replace(recipe, phases=phases, augment=augment)


def successive_halving(
    options: Sequence[Candidate],
    recipe_for: Callable[[Candidate], Recipe],
    train: Callable[[Recipe], tuple[float, int]],
    *,
    budget: float = TRIAL_BUDGET,
    verbose: int = 1,
) -> Trials:
    """Train the candidates in rounds, dropping the worse half after each, and return the winner.

    With ``n`` candidates there are ``ceil(log2 n)`` rounds sharing ``budget`` equally; in a round
    each of the ``k`` survivors trains every phase of its recipe at ``budget / rounds / k`` of its
    epochs (two candidates: one round, an eighth of the epochs each at the default budget).
    Survivors continue into the next round at a larger fraction, trained again from the
    pretrained weights (a recipe's phase plan cannot be extended part-way); a survivor whose
    scaled epochs did not grow (every phase at its one-epoch floor) keeps its earlier score, since
    the same recipe from the same seed trains the same model. Ties in validation accuracy go to
    the earlier candidate: the selector's pick comes first.

    Args:
        options: the candidates, the selector's pick first.
        recipe_for: a candidate's full recipe (the caller's overrides and seed applied).
        train: trains a recipe from the pretrained weights; returns its validation accuracy and
            the epochs it ran. It must not read the held-out test split.
        budget: fraction of the chosen recipe's epochs all trials together may spend.
        verbose: one line per trial when non-zero.
    """
    started = time.perf_counter()
    survivors, records = list(options), []
    trained: dict[tuple[Candidate, Recipe], TrialRecord] = {}
    rounds = max(1, math.ceil(math.log2(len(survivors)))) if len(survivors) > 1 else 0
    for number in range(1, rounds + 1):
        fraction = budget / rounds / len(survivors)
        scores = {}
        for candidate in survivors:
            recipe = scaled_recipe(recipe_for(candidate), fraction)
            earlier = trained.get((candidate, recipe))
            if earlier is None:
                record = trained[candidate, recipe] = _trial(candidate, number, recipe, train)
            else:
                record = dataclasses.replace(earlier, round=number, seconds=0.0, reused=True)
            scores[candidate] = record.val_accuracy
            records.append(record)
            if verbose:
                how = f"round {earlier.round}'s score, same epochs" if earlier else f"{record.seconds:.0f} s"
                print(
                    f"trial {candidate.describe()}: val acc {record.val_accuracy:.3f} ({how}; "
                    f"round {number}, {record.epochs_run} epochs)",
                    flush=True,
                )
        keep = 1 if number == rounds else math.ceil(len(survivors) / 2)
        survivors = sorted(survivors, key=lambda c: (-scores[c], options.index(c)))[:keep]
    return Trials(budget, tuple(options), tuple(records), survivors[0], time.perf_counter() - started)


def _trial(candidate: Candidate, number: int, recipe: Recipe, train) -> TrialRecord:
    started = time.perf_counter()
    accuracy, epochs_run = train(recipe)
    phase_epochs = tuple(phase.epochs for phase in recipe.phases)
    return TrialRecord(
        candidate.quadrant,
        candidate.cut_point,
        number,
        phase_epochs,
        int(epochs_run),
        float(accuracy),
        time.perf_counter() - started,
    )


def with_trials(selection: Selection, trials: Trials) -> Selection:
    """``selection`` decided by ``trials``: the winner's quadrant, recipe and cut, the trials kept."""
    winner = trials.winner
    size, similar = _QUADRANT_PARTS[winner.quadrant]
    scored = ", ".join(
        f"{Candidate(r.quadrant, r.cut_point).describe()} {r.val_accuracy:.3f}" for r in trials.records
    )
    verdict = "pick changed" if trials.pick_changed else "pick kept"
    reason = f"close call measured by trials (validation accuracy: {scored}): {winner.describe()}, {verdict}"
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
