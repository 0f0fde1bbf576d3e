"""A head trained alone on clean features as the Trainer's head phase trains it: the head-only trials."""

from __future__ import annotations

import keras
import numpy as np

from transferkit.recipes import AUTO_LEARNING_RATE, Recipe
from transferkit.training.augment import is_identity
from transferkit.training.callbacks import Reseed, StartAwareEarlyStopping
from transferkit.training.class_weights import class_weights
from transferkit.training.feature_bank import CleanFeatures
from transferkit.training.features import CachedFeatures, fit_inputs
from transferkit.training.head_init import initialise_head
from transferkit.training.head_phase import standardise_head, start_loss
from transferkit.training.model import build_head
from transferkit.training.optimizers import compile_classifier, phase_optimizer


def fits_on_features(recipe: Recipe) -> bool:
    """Whether :func:`fit_head` trains ``recipe`` as the Trainer would: every phase trains the head
    alone at a given rate (no range test), without augmentation."""
    head_only = all(p.train == "head" and p.learning_rate != AUTO_LEARNING_RATE for p in recipe.phases)
    return bool(recipe.phases) and head_only and is_identity(recipe.augment)


def head_trial(recipe: Recipe, features: CleanFeatures, num_classes: int) -> tuple[np.ndarray, int]:
    """A new head for ``recipe`` (seeded as a run is), trained on ``features``: which validation
    images it gets right (one bool each, in order), and the epochs it ran.

    Args:
        recipe: a recipe :func:`fits_on_features` accepts (its seed, head, data and phases are read).
        features: its extractor's clean training and validation features.
        num_classes: output classes.
    """
    keras.utils.set_random_seed(recipe.seed)
    head = build_head(int(features.train[0].shape[1]), num_classes, recipe.head)
    return fit_head(head, recipe, features, num_classes)


def fit_head(
    head: keras.Model, recipe: Recipe, features: CleanFeatures, num_classes: int
) -> tuple[np.ndarray, int]:
    """Train ``head`` through ``recipe``'s phases as the Trainer's cached-feature head phases do.

    The same standardisation, start (``[head] init``), batches (:class:`CachedFeatures`, shuffled
    with the run's seed), dropout streams (:class:`Reseed`), optimizer, loss, class weights and
    early stopping (best weights restored), on one clean pass; no run folder, checkpoints or
    TensorBoard.

    Args:
        head: from :func:`transferkit.training.model.build_head`, at its starting weights.
        recipe: as for :func:`head_trial`.
        features: the clean training and validation features.
        num_classes: output classes.

    Returns:
        ``(hits, epochs run)``: whether it classifies each validation image right (its mean is
        the validation accuracy); the head keeps its trained weights.
    """
    (train_x, train_y), (val_x, val_y) = features.train, features.val
    standardise_head(head, train_x)
    inputs = keras.Input(head.input_shape[1:], name="features")
    graph = keras.Model(inputs, head(inputs), name="head_training_graph")
    batch = recipe.data.batch_size
    train = CachedFeatures(train_x[None], train_y, batch, recipe.seed)
    started = recipe.head.init == "logistic"
    if started:
        initialise_head(head, train.features, train.labels, (val_x, val_y))
    mode = recipe.data.class_weight
    weights = None if mode == "none" else class_weights(train_y, num_classes, mode)
    epoch = 0
    for phase in recipe.phases:
        optimizer = phase_optimizer(phase, learning_rate=phase.learning_rate, steps_per_epoch=len(train))
        compile_classifier(
            graph, optimizer, num_classes, recipe.head.label_smoothing, steps_per_execution=len(train)
        )
        inputs, callbacks = fit_inputs(train, (val_x, val_y), epoch)
        callbacks.append(Reseed(recipe.seed))
        if phase.patience:  # a fitted start competes with the epochs, as in the Trainer's phase
            start = start_loss(graph, (val_x, val_y), batch) if started and epoch == 0 else None
            callbacks.append(
                StartAwareEarlyStopping(
                    start_loss=start, monitor="val_loss", patience=phase.patience, restore_best_weights=True
                )
            )
        history = graph.fit(
            epochs=epoch + phase.epochs,
            initial_epoch=epoch,
            callbacks=callbacks,
            class_weight=weights,
            shuffle=False,
            verbose=0,
            **inputs,
        )
        epoch = history.epoch[-1] + 1 if history.epoch else epoch + phase.epochs
    probabilities = keras.ops.convert_to_numpy(head(val_x, training=False))  # eager: predict() would trace
    return np.argmax(probabilities, axis=-1) == np.asarray(val_y), epoch
