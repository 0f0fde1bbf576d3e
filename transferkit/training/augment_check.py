"""Does augmentation help this data? Measured on a frozen base's cached features, before the head trains.

Flips, rotations and zooms keep the label of a photo, not of everything: a rotated roman glyph
looks like an italic, a mirrored "b" is a "d", and a style can live in exactly the slant the
augmentation randomises. With the base frozen the question is cheap to answer instead of
guess: the same head is trained twice from the same start (same seed, same epochs, early
stopping on validation loss), once on the augmented cached features and once on clean ones, and
the validation accuracy at the best epoch decides, ties to augmentation. Measured on the tuning
sets (96 px, test split): rendered typefaces truncate 0.659 with augmentation, 0.727 without;
Animal-MNIST freeze 0.878 with, 0.789 without. The held-out test split plays no part.

The check looks at the first augmented pass before the others are cached
(:func:`~transferkit.training.head_phase.settle_augmentation`): where the warps hurt, one pass of
them already loses by far (:data:`FIRST_PASS_MARGIN`), and the phase drops them without caching
the other passes. Otherwise every pass is cached and the check runs again on all of them, as it
would have without the look.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import keras
import numpy as np

from transferkit.training.callbacks import Reseed
from transferkit.training.features import CachedFeatures, fit_inputs

MIN_DELTA = 1e-4
"""Validation-loss gain (nats) that counts as progress for the check's early stopping. Without it a
head on separable features (LFW faces, pretrained, 128 px) drove the clean fit's validation loss
toward 0 by ever smaller steps and ran all 200 epochs (3e-4 at the end): 6.9 s of check, 3.1 s with it.
Same decisions and figures with and without it on five data sets (Animal-MNIST, font_families_mpl,
textures, science_tiles, LFW random), the check's CPU on textures 8.2 -> 2.7 s."""

MIN_EPOCHS = 50
"""The fewest epochs each of the check's heads may train (early stopping ends them sooner when the
validation loss stops falling). The check asks a question about the data, not about the run's
epoch budget: with the phase's own count it decided on heads that had barely started. Tuning sets,
96 px, seed 0 (validation accuracy augmented / clean; the recipes' 200-epoch heads: rendered
typefaces 0.578 / 0.688, drop augmentation; Animal-MNIST 0.837 / 0.800, keep it): with the phase's
epochs, ``--epochs 3`` decided the other way on both (typefaces 0.391 / 0.391, a tie, kept;
Animal-MNIST 0.762 / 0.788, dropped); with this floor ``--epochs 1`` and ``3`` decided as the full
check on both (typefaces 0.594 / 0.625 and 0.609 / 0.625; Animal-MNIST 0.800 / 0.788 and 0.863 /
0.825), for 0.5-2.5 s more of check (1.2-1.7 s -> 2.1-4.0 s)."""


FIRST_PASS_MARGIN = 0.06
"""Validation accuracy by which the clean head must beat a head trained on the first augmented pass
alone (and by :data:`FIRST_PASS_IMAGES` images at least) for the check to stop there and drop the
warps: the other passes are then never cached. Otherwise they are, and the check runs on all of
them. Set on the tuning sets (2026-12-07; ``small_similar`` and ``small_dissimilar`` at 224 px,
150 per class, seeds 0 and 1; 32 fits: eight sets x two recipes x two seeds), comparing this
check's first look with the check on all four passes (which dropped the warps in 15 fits). One
pass of warps trails four (its head sees the same warp of each image every epoch): where either
lost, the clean head led one pass by 1.9 points more than four on average (from 3.0 less to 11.8
more). The largest loss on one pass where four passes then kept the warps: 5.9 points (icon
themes' frozen base, 7 of 119 images; four passes won by 5.9). At 6 points the first look drops
the warps in 5 of the 15 fits (digits, typefaces, icon themes, chess pieces: 6.0-8.3 points) and
never where four passes keep them. A first try at 3 points, set on the same comparison made
with the four passes' standardisation, would have dropped them there too."""

FIRST_PASS_IMAGES = 2
"""The fewest validation images the first pass may lose by to decide (a small validation split:
below 34 images, 6 points is less than two)."""


@dataclass(frozen=True)
class AugmentCheck:
    """The two heads' best validation figures and the decision; ``to_dict()`` is what state.json keeps.

    ``augmented_passes``: how many augmented passes the augmented head trained on (1 where the first
    pass decided); ``validation_images``: how many images the accuracies are over. Both 0 in a
    state.json written before the check looked at one pass first.
    """

    augmented_val_loss: float
    clean_val_loss: float
    augmented_val_accuracy: float
    clean_val_accuracy: float
    augmented_passes: int = 0
    validation_images: int = 0

    @property
    def use_augmentation(self) -> bool:
        # Accuracy, not loss: augmented heads are less confident, so their loss reads worse even
        # where they classify better (Animal-MNIST: loss 0.858 vs 0.689, accuracy 0.842 vs 0.792).
        return self.augmented_val_accuracy >= self.clean_val_accuracy

    @property
    def clean_by_far(self) -> bool:
        """Whether the clean head wins by :data:`FIRST_PASS_MARGIN` and :data:`FIRST_PASS_IMAGES`
        or more: on the first augmented pass, a loss that more passes did not turn on the tuning sets."""
        lead = self.clean_val_accuracy - self.augmented_val_accuracy
        margin = max(FIRST_PASS_MARGIN, FIRST_PASS_IMAGES / max(self.validation_images, 1))
        return lead >= margin - 1e-6  # accuracies are float32 means: 0.03 can read 0.0299999

    def describe(self, noise: bool = False) -> str:
        """One line; ``noise``: a run that drops augmentation keeps the recipe's pixel noise."""
        dropped = "training with pixel noise only" if noise else "training without augmentation"
        verdict = "keeping augmentation" if self.use_augmentation else dropped
        passes = f" ({self.augmented_passes} pass{'es' if self.augmented_passes > 1 else ''})"
        return (  # accuracy first: it decides
            f"Augmentation check: validation accuracy {self.augmented_val_accuracy:.3f} augmented"
            f"{passes if self.augmented_passes else ''} vs {self.clean_val_accuracy:.3f} clean (loss "
            f"{self.augmented_val_loss:.3f} vs {self.clean_val_loss:.3f}): {verdict}"
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "use_augmentation": self.use_augmentation}

    @classmethod
    def from_dict(cls, data: dict) -> AugmentCheck:
        figures = ("augmented_val_loss", "clean_val_loss", "augmented_val_accuracy", "clean_val_accuracy")
        counts = {key: int(data.get(key, 0)) for key in ("augmented_passes", "validation_images")}
        return cls(**{key: float(data[key]) for key in figures}, **counts)


def check_augmentation(
    model: keras.Model,
    compile_model: Callable[[keras.Model], None] | None,
    augmented: CachedFeatures,
    clean: CachedFeatures,
    validation: tuple[np.ndarray, np.ndarray],
    *,
    epochs: int,
    patience: int,
    seed: int,
    class_weight: dict | None = None,
) -> AugmentCheck:
    """Train ``model`` (the head's training graph) on each feature set from the same weights.

    Args:
        model: the graph the head phase fits. It is left compiled for the phase, its weights as they
            were and its optimizer fresh: the phase trains on without compiling (and tracing) again.
        compile_model: compiles ``model`` for the phase; None where an earlier check on the same
            model did (a check on every pass after one on the first: :attr:`AugmentCheck.clean_by_far`).
        augmented: cached features of the augmented passes.
        clean: cached features of one clean pass over the same images.
        validation: ``(features, labels)`` of the validation split.
        epochs, patience: the phase's epoch budget (raised to :data:`MIN_EPOCHS`) and early-stopping
            patience (at least 1).
        seed: the run's seed (both fits draw the same batches and dropout masks).
        class_weight: as the phase uses it.
    """
    # Compiled once: each fit starts from the same weights and a fresh optimizer state, put back by
    # value, and so reuses the traced train and test steps instead of tracing them again.
    if compile_model is not None:
        compile_model(model)
        model.optimizer.build(model.trainable_variables)
    start = model.get_weights(), [variable.numpy() for variable in model.optimizer.variables]
    figures = {}
    for name, data in (("augmented", augmented), ("clean", clean)):
        _put_back(model, *start)
        stop = keras.callbacks.EarlyStopping("val_loss", patience=max(1, patience), min_delta=MIN_DELTA)
        inputs, callbacks = fit_inputs(data, validation)
        history = model.fit(
            epochs=max(epochs, MIN_EPOCHS),
            callbacks=[*callbacks, Reseed(seed), stop],
            class_weight=class_weight,
            shuffle=False,
            verbose=0,
            **inputs,
        ).history
        best = int(np.argmin(history["val_loss"]))
        figures[name] = (float(history["val_loss"][best]), float(history["val_accuracy"][best]))
    _put_back(model, *start)
    augmented_loss, augmented_accuracy = figures["augmented"]
    clean_loss, clean_accuracy = figures["clean"]
    return AugmentCheck(
        augmented_loss,
        clean_loss,
        augmented_accuracy,
        clean_accuracy,
        augmented_passes=len(augmented.features),
        validation_images=len(validation[1]),
    )


def _put_back(model: keras.Model, weights: list, optimizer_state: list) -> None:
    """Set ``model``'s weights and its optimizer's variables (step count, moments) to saved values."""
    model.set_weights(weights)
    for variable, value in zip(model.optimizer.variables, optimizer_state, strict=True):
        variable.assign(value)
