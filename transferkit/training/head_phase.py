"""Head phases on cached features: the features they cache, the augmentation check, the head's start.

A phase that trains the head alone (on one worker) passes the images through the frozen base
once per cached pass instead of once per epoch (:mod:`transferkit.training.features`), then fits
the head by itself. Before the first phase the head's feature standardisation is set from the
features it will train on and, with ``[head] init = "logistic"``, its weights from a regression
fitted to them (:mod:`transferkit.training.head_init`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf

from transferkit.backbones.folding import FoldedCopy, fold_batchnorm
from transferkit.console import say
from transferkit.data.cache_budget import CacheBudget
from transferkit.recipes import AUTO_LEARNING_RATE, Phase, Recipe
from transferkit.training.augment import RandomAffine
from transferkit.training.augment_check import AugmentCheck, check_augmentation
from transferkit.training.feature_bank import CleanFeatures
from transferkit.training.features import (
    CachedFeatures,
    extract_features,
    feature_moments,
    feature_step,
    feature_steps,
    fit_inputs,
)
from transferkit.training.head_init import initialise_head
from transferkit.training.timing import Stopwatch

if TYPE_CHECKING:
    from transferkit.training.trainer import Trainer

VARIANCE_FLOOR = 0.01  # of the mean feature variance; see standardise_head


@dataclass(eq=False)
class SharedProgress:
    """How many of the passes two networks share are computed so far (:mod:`.shared_passes`), and
    how to compute the others: through the shared graph, both networks' columns at once."""

    cached: int
    grow: Callable[[], None]


@dataclass(frozen=True, eq=False)  # arrays: equal only to itself
class FirstPasses:
    """A first head phase's features computed before its run: its augmented training passes and
    the validation features, and what they were computed with (:mod:`.shared_passes`).

    Attributes:
        train: the augmented passes, as the phase trains on them (every pass's slot; with
            ``progress``, only the first ``progress.cached`` are computed yet).
        val: ``(features, labels)`` of the validation images (clean, pretrained base).
        augment: the augmentation's Keras config (its seed included).
        passes: how many augmented passes.
        seed: the seed each pass's augmentation is reseeded from (:func:`pass_seed`).
        store: the array the passes go into, rows to the full batches (None: ``train``'s own).
        progress: None: every pass is computed; otherwise how many are, shared with the partner.
        grows: the phase computes the others through ``progress`` (the run's own network, whose
            first phase runs while the base is as loaded); otherwise through its own extractor.
    """

    train: CachedFeatures
    val: tuple[np.ndarray, np.ndarray]
    augment: dict
    passes: int
    seed: int
    store: np.ndarray | None = None
    progress: SharedProgress | None = None
    grows: bool = False

    def serves(self, augment: RandomAffine | None, passes: int, seed: int) -> bool:
        """Whether these are the passes of ``augment`` a run's first phase would compute."""
        if augment is None:
            return False
        return (augment.get_config(), passes, seed) == (self.augment, self.passes, self.seed)


def pass_seed(seed: int, index: int, number: int) -> int:
    """The augmentation seed of pass ``number`` of head phase ``index`` in a run seeded ``seed``:
    a rerun, and any run that shares the pass, caches the same copies."""
    return seed + 1_000_000 * (index + 1) + number


def cached_passes(recipe: Recipe, phase: Phase, augment: RandomAffine | None) -> int:
    """How many passes a head phase caches: the recipe's augmented passes (no more than its
    epochs), one clean pass without augmentation."""
    return 1 if augment is None else max(1, min(recipe.augment.cached_passes, phase.epochs))


class FeatureCache:
    """A run's features of its training and validation images, as its head phases train on them.

    Args:
        extractor: the classifier's ``images -> features`` model (base and pooling).
        ordered_train_data: the training images in a fixed order (one pass: one row per image).
        val_data: the validation images.
        batch_size: the global batch size both datasets yield.
        steps_per_epoch: the number of training batches.
        validation_steps: the number of validation batches.
        clean_features: the extractor's un-augmented features of both splits, already computed
            (:class:`~transferkit.training.feature_bank.CleanFeatures`); used while the base is
            still pretrained.
        cache: where the features go (memory or ``np.memmap``); ``None``: gathered in memory.
        stopwatch: times each pass as ``"features"``.
        verbose: print what is being cached.
        augment: the run's augmentation, whose passes share one traced step with the clean ones.
        without_warps: what the run trains with instead of ``augment`` where the augmentation check
            drops its warps (:func:`~transferkit.training.augment.noise_only`; None: clean
            features); its passes share that step too.
        base_trains: whether a phase of the run trains the base. The folded copy is then brought up
            to the base's weights before every pass; otherwise the weights it was built with are
            the base's for the whole run (one sync, 22 ms for MobileNetV2, instead of one a pass).

    ``first_passes`` (:class:`FirstPasses`, set after construction) stand in for the first head
    phase's augmented passes and validation features where they are the ones it would compute.
    """

    def __init__(
        self,
        extractor: keras.Model,
        ordered_train_data: tf.data.Dataset,
        val_data: tf.data.Dataset,
        *,
        batch_size: int,
        steps_per_epoch: int,
        validation_steps: int,
        clean_features: CleanFeatures | None,
        cache: CacheBudget | None,
        stopwatch: Stopwatch,
        verbose: int,
        augment: RandomAffine | None = None,
        without_warps: RandomAffine | None = None,
        base_trains: bool = True,
    ):
        self.extractor, self.ordered_train_data, self.val_data = extractor, ordered_train_data, val_data
        self.batch_size, self.clean_features, self.cache = batch_size, clean_features, cache
        self.steps_per_epoch, self.validation_steps = steps_per_epoch, validation_steps
        self.stopwatch, self.verbose, self.augment = stopwatch, verbose, augment
        self.without_warps, self.base_trains = without_warps, base_trains
        self._steps = None  # see _feature_steps
        self._pretrained_val = None  # the validation features while the base is as loaded: one pass
        self.first_passes: FirstPasses | None = None  # the first phase's, when computed before the run
        self._pending: _PendingPasses | None = None  # the last phase's augmented passes (more_passes)

    @functools.cached_property
    def _folded(self) -> FoldedCopy | None:
        """The extractor with its BatchNorm folded into the convolutions (1.5x faster; see
        :mod:`transferkit.backbones.folding`); None where nothing folds. Built at the first pass."""
        return fold_batchnorm(self.extractor)

    def _inference_extractor(self) -> keras.Model:
        """What the feature steps run: the folded copy, or the extractor itself."""
        return self.extractor if self._folded is None else self._folded.model

    def _feature_steps(self):
        """The clean, augmented and noise-only feature steps, traced once for the run
        (:func:`feature_steps`)."""
        if self._steps is None:
            self._steps = feature_steps(self._inference_extractor(), self.augment, self.without_warps)
        return self._steps

    def _synced(self, step):
        """``step``, with the folded copy's weights brought up to the network's current ones (built
        from them, so a frozen base's copy never needs it)."""
        if self._folded is not None and self.base_trains:
            self._folded.sync()
        return step

    def clean_step(self):
        """The un-augmented feature step: the validation features, the augmentation check's clean
        pass, the head's statistics and the final evaluation all go through it. Take it afresh for
        each use: it reflects the base's weights as they are when it is taken."""
        return self._synced(self._feature_steps()[0])

    def augmented_step(self, augment: RandomAffine):
        """The feature step through ``augment``: the run's shared one (``augment`` or
        ``without_warps``), or a step of its own (taken afresh for each use, as :meth:`clean_step`)."""
        for number, shared in enumerate((self.augment, self.without_warps), start=1):
            if shared is not None and augment is shared:
                return self._synced(self._feature_steps()[number])
        return self._synced(feature_step(self._inference_extractor(), augment))

    def extract(
        self, step, data: tf.data.Dataset, out: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """One pass of ``data`` through ``step``: ``(features [N, D], labels [N])``, into ``out`` if given."""
        dim = int(self.extractor.output.shape[-1])
        steps = self.validation_steps if data is self.val_data else self.steps_per_epoch
        if out is None and self.cache is not None:  # one row per image: the split's batches, full
            out = self.cache.array((steps * self.batch_size, dim), name="features")
        with self.stopwatch.stage("features"):
            return extract_features(step, data, feature_dim=dim, verbose=self.verbose, out=out, steps=steps)

    def pretrained_validation(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(features, labels)`` of the validation images through the base as loaded, where a phase
        has computed them (or they were given); None where none has."""
        if self.clean_features is not None:
            return self.clean_features.val
        return self._pretrained_val

    def clean(self, split: str, pretrained: bool) -> tuple[np.ndarray, np.ndarray]:
        """Un-augmented features of ``split`` (``"train"`` or ``"val"``): the given ones while the
        base is still ``pretrained``."""
        if self.clean_features is not None and pretrained:
            return getattr(self.clean_features, split)
        if split == "val" and pretrained:  # asked again where the check drops augmentation for noise
            if self._pretrained_val is None:
                self._pretrained_val = self.extract(self.clean_step(), self.val_data)
            return self._pretrained_val
        return self.extract(self.clean_step(), self.ordered_train_data if split == "train" else self.val_data)

    def for_phase(
        self,
        index: int,
        augment: RandomAffine | None,
        passes: int,
        seed: int,
        pretrained: bool,
        *,
        first: int | None = None,
    ) -> tuple[CachedFeatures, tuple[np.ndarray, np.ndarray]]:
        """Phase ``index``'s training features (``passes`` augmented passes, or one clean one) and
        the validation ones; ``seed`` seeds each pass's augmentation and the epochs' shuffles.

        ``first``: cache only that many of the augmented passes now; :meth:`more_passes` caches the
        others (the augmentation check looks at one pass before paying for the rest).
        """
        given = self.first_passes
        if given is not None and index == 0 and pretrained and given.serves(augment, passes, seed):
            shared = "from the pass both networks share"
            say(
                self.verbose, f"Features of the {passes} augmented passes and the validation images: {shared}"
            )
            self._pretrained_val, self.first_passes = given.val, None  # the phase holds them now
            # Offered as a fit of its own offers them: the check's first look sees the first alone,
            # and decides as that fit's would (compare's averaged row); the others are computed
            # only where the phase asks for them.
            train, progress = given.train, given.progress
            self._pending = _PendingPasses(
                index,
                augment,
                seed,
                train.features if given.store is None else given.store,
                passes if progress is None else progress.cached,
                train.labels,
                shared=progress if given.grows else None,
            )
            return self.more_passes(first), given.val
        if augment is None:
            say(self.verbose, "Caching features (pass 1/1)")
            data, labels = self.clean("train", pretrained)
            train = CachedFeatures(data[None], labels, self.batch_size, seed)
        else:  # the passes go straight into one [passes, N, D] store (np.memmap over the budget)
            shape = (passes, self.steps_per_epoch * self.batch_size, int(self.extractor.output.shape[-1]))
            store = (
                np.zeros(shape, "float32") if self.cache is None else self.cache.array(shape, name="train")
            )
            self._pending = _PendingPasses(index, augment, seed, store)
            train = self.more_passes(first)
        say(self.verbose, "Caching validation features")
        return train, self.clean("val", pretrained)

    def more_passes(self, count: int | None = None) -> CachedFeatures:
        """Offer ``count`` more of the last :meth:`for_phase`'s augmented passes (None: all that are
        left), caching those not cached yet, each through its own seeded augmentation stream as an
        uninterrupted phase caches them; returns every pass offered so far."""
        pending = self._pending
        total = len(pending.store)
        stop = total if count is None else min(total, pending.offered + count)
        if stop > pending.cached and pending.shared is not None:  # both networks' at once
            pending.shared.grow()
            pending.cached = pending.shared.cached
        if stop > pending.cached:
            kind = ", augmented" if pending.augment.warps else ", pixel noise only"
            step = self.augmented_step(pending.augment)
            for number in range(pending.cached, stop):
                say(self.verbose, f"Caching features (pass {number + 1}/{total}{kind})")
                pending.augment.reseed(pass_seed(pending.seed, pending.index, number))
                _, pending.labels = self.extract(step, self.ordered_train_data, pending.store[number])
            pending.cached = stop
        pending.offered = stop
        stored = pending.store[:stop, : len(pending.labels)]
        return CachedFeatures(stored, pending.labels, self.batch_size, pending.seed)

    @property
    def pass_store(self) -> np.ndarray | None:
        """The array the last :meth:`for_phase`'s augmented passes go into, every pass's slot."""
        return None if self._pending is None else self._pending.store

    @property
    def passes_left(self) -> int:
        """How many of the last :meth:`for_phase`'s augmented passes are not offered yet."""
        return 0 if self._pending is None else len(self._pending.store) - self._pending.offered


@dataclass(eq=False)
class _PendingPasses:
    """A phase's augmented passes: the store they go into, how many are cached in it, and how many
    the phase has been offered (:meth:`FeatureCache.more_passes`)."""

    index: int
    augment: RandomAffine
    seed: int
    store: np.ndarray  # [passes, capacity, D]
    cached: int = 0
    labels: np.ndarray | None = None
    offered: int = 0
    shared: SharedProgress | None = None  # computes the others for both networks of an averaged run


def head_graph(head: keras.Model) -> keras.Model:
    """``head`` wrapped in a model of its own, which is what head phases compile and fit.

    Compiling the head itself would store its optimizer and loss (transferkit classes) in the
    saved ``model.keras``, which then would not load without transferkit installed.
    """
    inputs = keras.Input(head.input_shape[1:], name="features")
    return keras.Model(inputs, head(inputs), name="head_training_graph")


def cached_features(
    trainer: Trainer, index: int, phase: Phase, first: int | None = None
) -> tuple[CachedFeatures, tuple]:
    """The features head phase ``index`` trains on (``first``: only that many of its augmented
    passes yet), and the validation ones; before the first phase the head's standardisation is set
    from them."""
    train, validation = _features_through(trainer, trainer.augment, index, phase, first)
    if index == 0:
        standardise_head(trainer.classifier.head, train.features)
    return train, validation


def _features_through(
    trainer: Trainer, augment: RandomAffine | None, index: int, phase: Phase, first: int | None = None
) -> tuple[CachedFeatures, tuple]:
    """Phase ``index``'s training features through ``augment`` (the recipe's cached passes, or the
    ``first`` of them; one clean pass without it), and the validation ones."""
    recipe = trainer.recipe
    passes = cached_passes(recipe, phase, augment)
    pretrained = _pretrained(recipe, index)
    return trainer.features.for_phase(index, augment, passes, recipe.seed, pretrained, first=first)


def fit_head_phase(trainer: Trainer, index: int, phase: Phase, initial_epoch: int) -> int:
    """Train ``trainer``'s head alone on cached features through phase ``index``; returns its epochs.

    In order: cache the features; resolve an ``"auto"`` rate (range test); on the first such phase
    with ``[augment] measure``, check whether augmentation helps; start the untrained head
    (``[head] init``); compile; fit (through the Trainer's callbacks).
    """
    checked = (
        trainer.recipe.augment.measure and trainer.augment is not None and trainer.state.augmentation is None
    )
    # The check looks at the first augmented pass before the others are cached (not where a range
    # test picks the rate: it runs first, on every pass).
    staged = checked and phase.learning_rate != AUTO_LEARNING_RATE
    train, validation = cached_features(trainer, index, phase, first=1 if staged else None)
    head = trainer._head_graph()
    phase = trainer._resolve_rate(index, phase, head, train.cycle(), len(train), train.labels)
    # The augmentation check leaves the head compiled for the phase, its optimizer fresh. The traced
    # steps hold whatever it decides: where it dropped augmentation the head was standardised again,
    # and the steps read the statistics from the head's variables (standardise_head).
    if checked:
        train = settle_augmentation(trainer, index, phase, head, train, validation)
    started = index == 0 and start_head(trainer, train, validation)  # a resume restores its backup
    if not checked:  # compiling again would trace the head's train and test steps again
        trainer._compile(head, phase, len(train), steps_per_execution=len(train))
    fitted_start = start_loss(head, validation, trainer.batch_size) if started and phase.patience else None
    inputs, callbacks = fit_inputs(train, validation, trainer._backed_up_epoch(index, initial_epoch))
    return trainer._fit(
        head,
        inputs.pop("x"),
        index,
        phase,
        initial_epoch,
        extra_callbacks=callbacks,
        start_loss=fitted_start,
        class_weight=trainer._class_weight(train.labels),
        **inputs,
    )


def settle_augmentation(
    trainer: Trainer,
    index: int,
    phase: Phase,
    head: keras.Model,
    augmented: CachedFeatures,
    validation: tuple,
) -> CachedFeatures:
    """Measure whether augmentation helps (:mod:`~transferkit.training.augment_check`); keep the winner.

    Where ``augmented`` is the first of the phase's passes (:meth:`FeatureCache.more_passes` has
    more to cache), the check looks at it alone first: where the clean head wins by far
    (:attr:`~transferkit.training.augment_check.AugmentCheck.clean_by_far`), the warps are dropped
    and the other passes never cached; otherwise they are, and the check runs again on all of them.
    Where augmentation does not help, the recipe's pixel noise stays
    (:func:`~transferkit.training.augment.noise_only`): the head trains on passes with the noise
    alone, or on the clean features without noise.
    The decision is saved in ``state.json`` at once, so a resumed run does not measure again and
    every later phase (fine-tuning included) follows it.
    """
    pretrained = _pretrained(trainer.recipe, index)
    if pretrained and trainer.features.clean_features is not None:  # the selector's or the trials' pass
        trainer._say("Clean features from the selection's pass (augmentation check)")
    else:
        trainer._say("Caching clean features (augmentation check)")
    features, labels = trainer.features.clean("train", pretrained)
    seed = trainer.recipe.seed
    clean = CachedFeatures(features[None], labels, trainer.batch_size, seed)
    check = functools.partial(
        _checked, trainer, head, clean, validation, phase, class_weight=trainer._class_weight(labels)
    )
    result = check(augmented, compiled=False)
    if trainer.features.passes_left and not result.clean_by_far:
        trainer._say(
            f"Augmentation check on the first pass: {result.augmented_val_accuracy:.3f} augmented vs "
            f"{result.clean_val_accuracy:.3f} clean, no clear loser: caching the other "
            f"{trainer.features.passes_left} pass{'' if trainer.features.passes_left == 1 else 'es'}"
        )
        augmented = trainer.features.more_passes()
        if index == 0:  # as an unstaged check measures: the head standardised on every pass
            standardise_head(trainer.classifier.head, augmented.features)
        result = check(augmented, compiled=True)
    noise = None if result.use_augmentation else trainer.features.without_warps
    trainer._say(result.describe(noise=noise is not None))
    trainer.state.augmentation = result.to_dict()
    trainer.state.seconds = trainer.stopwatch.run_seconds()
    trainer.state.save(trainer.run_dir)
    if result.use_augmentation:
        return augmented
    trainer.augment = noise  # what every later phase (and a resumed run: Trainer.run) trains with
    kept = clean if noise is None else _features_through(trainer, noise, index, phase)[0]
    if index == 0:  # as a resumed run standardises: on the features the head trains on
        standardise_head(trainer.classifier.head, kept.features)
    return kept


def _checked(
    trainer: Trainer,
    head: keras.Model,
    clean: CachedFeatures,
    validation: tuple,
    phase: Phase,
    augmented: CachedFeatures,
    *,
    compiled: bool,
    class_weight: dict | None,
) -> AugmentCheck:
    """One :func:`check_augmentation` of ``augmented`` against ``clean``, timed as the check."""
    steps = len(augmented)  # the same for any number of passes: one per batch of the training images

    def compile_for_phase(model: keras.Model) -> None:
        trainer._compile(model, phase, steps, steps_per_execution=steps)

    with trainer.stopwatch.stage("augmentation check"):
        return check_augmentation(
            head,
            None if compiled else compile_for_phase,
            augmented,
            clean,
            validation,
            epochs=phase.epochs,
            patience=phase.patience or phase.epochs,
            seed=trainer.recipe.seed,
            class_weight=class_weight,
        )


def start_head(trainer: Trainer, train: CachedFeatures, validation: tuple) -> bool:
    """The untrained head's start: the recipe's ``[head] init`` (:mod:`.head_init`); True when fitted."""
    if trainer.recipe.head.init != "logistic":
        return False
    fitted = initialise_head(trainer.classifier.head, train.features, train.labels, validation)
    trainer._say(fitted.describe())
    return True


def start_loss(head: keras.Model, validation: tuple, batch_size: int) -> float | None:
    """The compiled head's validation loss at its fitted start, as ``fit`` will measure epochs.

    Training on from a regression fitted to the same features can drift away from it (Adam's
    first steps at the phase's rate): early stopping keeps the start unless an epoch beats it.
    The compiled loss (and any weight penalties) over all the validation rows, computed eagerly
    (the head's forward pass in batches): the mean that ``fit``'s validation pass takes over its
    batches, without the test function ``evaluate`` would trace for this one call (0.2-0.5 s of a
    fitted start at 1,280 features).

    Args:
        head: the compiled head training graph, at its start.
        validation: ``(features, labels)`` of the validation images.
        batch_size: the batch ``fit`` validates with (rows are scored in chunks of it).
    """
    features, labels = validation
    if not len(labels):
        return None
    chunks = range(0, len(labels), batch_size)
    probabilities = np.concatenate(
        [keras.ops.convert_to_numpy(head(features[i : i + batch_size], training=False)) for i in chunks]
    )
    return float(head.compute_loss(y=np.asarray(labels), y_pred=probabilities, training=False))


def standardise_head(head: keras.Model, features: np.ndarray) -> None:
    """Set ``head``'s feature scale and standardisation (``feature_scale``, ``feature_norm``) from
    training features.

    The scale is the power of two nearest to one over the features' root mean variance, or 1 if
    that is smaller (``feature_norm`` handles large features; ``feature_scale``'s own factor is
    floored at 1e-7) or the features are constant. Each feature's variance is floored at a
    hundredth of the average one: a feature that barely varies on the training images (common
    after ReLU + pooling) would otherwise be scaled up by orders of magnitude and turn tiny
    differences on new images into huge logits.

    Args:
        head: a head from :func:`transferkit.training.model.build_head`.
        features: ``[..., N, D]`` training features (e.g. one set per augmented pass), as the head
            will be trained on them; in memory or memory-mapped (read in chunks).
    """
    mean, variance, rows = feature_moments(features)
    average = float(variance.mean())
    if average > 0:
        variance = np.maximum(variance, VARIANCE_FLOOR * average)
        scale = 2.0 ** max(round(-0.5 * np.log2(average)), 0)  # feature_scale can't shrink
    else:  # constant features
        variance, scale = np.ones_like(variance), 1.0
    mean, variance = mean * np.float32(scale), variance * np.float32(scale**2)  # exact: powers of two
    count = np.asarray(rows, dtype="int64")
    for name, weights in (
        ("feature_scale", [np.float32(0), np.float32(scale**2), count]),  # x -> 0 + x * sqrt(scale**2)
        ("feature_norm", [mean, variance, count]),
    ):
        layer = head.get_layer(name)
        layer.set_weights(weights)
        # Normalization computes with the constants its finalize_state() copies from its variables,
        # and a traced step keeps the constants it was traced with. Pointed at the variables, every
        # step reads the statistics as they are now: standardising again (when the augmentation
        # check drops augmentation) needs no new trace of the head's train and test steps (0.5 s of
        # a 6-s fit). Same values; a saved and reloaded model computes with constants again.
        layer.mean, layer.variance = layer.adapt_mean, layer.adapt_variance


def _pretrained(recipe: Recipe, index: int) -> bool:
    """Whether the base is still as loaded when phase ``index`` starts: no phase up to it trains it."""
    return all(phase.train == "head" for phase in recipe.phases[: index + 1])
