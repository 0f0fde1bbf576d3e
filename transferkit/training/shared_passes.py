"""One set of augmented passes for both networks of an averaged run: their first head phases.

Where a run averages two networks (:mod:`.averaging`) that both start with a head phase on cached
features of the same pretrained base (the whole network's warm-up and its truncation's head; a
truncation's head and the frozen base's), both heads train on the same images, the same warps, the
same seeds, pooled at two depths (the base's output and the truncation's cut). Each used to pass
the images through the base on its own; here one graph, the base with both pooled outputs,
passes them once, and each network's first phase trains on its columns. On the playing cards at
224 px (424 training images) the partner took 15.2-15.7 s of a 108-110 s fit, and 9.3-9.5 s of
103-105 s since, the figures the same to the image (docs/MEASUREMENTS.md).

Only the first pass is computed up front: each network's augmentation check looks at it first
(:func:`~transferkit.training.head_phase.settle_augmentation`), and where the check drops the warps
there the other passes are never needed. Where the run's own check asks for them, its first phase
computes them through the same graph for both; where only the partner's does, it computes them
through its own extractor (the base may have trained by then), the same seeded warps.

The partner's first phase always takes its first pass from this graph, in a first run and in a
resumed one alike (the base is still pretrained before the run's phases start), and the others from
it or from its own extractor (a resumed run whose own first phase is done computes them there):
the same warps through the same pretrained layers, so a run interrupted anywhere trains the same
partner as one that was not, to float rounding.
"""

from __future__ import annotations

import keras
import numpy as np

from transferkit.backbones.weights import build_base
from transferkit.recipes import Recipe
from transferkit.training.augment import RandomAffine
from transferkit.training.averaging import in_words, member_name
from transferkit.training.feature_bank import FeatureView, bank_model
from transferkit.training.features import CachedFeatures
from transferkit.training.head_phase import FeatureCache, FirstPasses, SharedProgress, cached_passes
from transferkit.training.trainer import Trainer, on_cached_features, run_augmentation


def share_first_passes(trainer: Trainer, partner: Recipe) -> FirstPasses | None:
    """Compute the first head phase's passes of ``trainer``'s run and of its ``partner`` in one go.

    Shared only where both first phases would compute the same passes (head phases on cached
    features, the same augmentation, seed, number of passes and batches) on one replica: ``trainer``
    gets its own (:attr:`FeatureCache.first_passes`, used if its first phase is still to run), and
    the partner's are returned for its trainer. None where nothing is shared (each computes its own).

    Call it before ``trainer.run()``: its base must still hold the pretrained weights.
    """
    recipe = trainer.recipe
    first, theirs = recipe.phases[0], partner.phases[0]
    augment, partner_augment = trainer.augment, run_augmentation(partner)
    passes = cached_passes(recipe, first, augment)
    same = (
        augment is not None
        and partner_augment is not None
        and augment.get_config() == partner_augment.get_config()
        and passes == cached_passes(partner, theirs, partner_augment)
        and (recipe.seed, recipe.data.batch_size) == (partner.seed, partner.data.batch_size)
    )
    alone = trainer.replicas == 1 and not trainer.multi_worker
    if not (same and alone and on_cached_features(first) and on_cached_features(theirs)):
        return None
    base = _whole_base(trainer, partner)
    if base is None:
        return None
    mine, theirs_name = (in_words(member_name(r)) for r in (recipe, partner))
    trainer._say(f"Caching features for the {mine} and its partner {theirs_name} at once")
    with trainer.stopwatch.stage("shared features"):
        ours, partners = _compute(trainer, base, partner, augment, passes)
    trainer.features.first_passes = ours
    return partners


def _whole_base(trainer: Trainer, partner: Recipe) -> keras.Model | None:
    """The base both views are read from: the run's, or where the run truncates and its partner
    reads the whole base's output (a frozen base beside a truncation), the whole pretrained base
    built again (the layers below the cut the same weights as the run's). None with random
    weights: a base built again would not be the run's."""
    base = trainer.classifier.base
    if FeatureView.of(partner).cut is not None or trainer.recipe.strategy != "truncate":
        return base
    if trainer.recipe.backbone.weights == "random":
        return None
    whole, _ = build_base(trainer.spec, int(base.input_shape[1]), trainer.recipe.backbone.weights)
    return whole


def _compute(
    trainer: Trainer, base: keras.Model, partner: Recipe, augment: RandomAffine, passes: int
) -> tuple[FirstPasses, FirstPasses]:
    """The first pass through one graph on ``base`` with both networks' pooled outputs, split into each
    one's; the run's own first phase computes the others through it (:class:`SharedProgress`)."""
    recipe = trainer.recipe
    views = [FeatureView.of(recipe), FeatureView.of(partner)]
    pooled = bank_model(base, trainer.spec, views)
    widths = [int(output.shape[-1]) for output in pooled.outputs]
    both = keras.layers.Concatenate(name="both_views")(pooled.outputs)  # one array per pass for the cache
    extractor = keras.Model(pooled.inputs, both, name="shared_features")
    cache = FeatureCache(
        extractor,
        trainer.ordered_train_data,
        trainer.val_data,
        batch_size=trainer.batch_size,
        steps_per_epoch=trainer.steps_per_epoch,
        validation_steps=trainer.validation_steps,
        clean_features=None,
        cache=trainer.cache,
        stopwatch=trainer.stopwatch,
        verbose=trainer.verbose,
        augment=augment,
    )
    # The first pass now; the others where a network's first phase asks for them (its augmentation
    # check's first look does not drop the warps): while the run's own first phase runs, through
    # this graph for both; later (the base may train by then), through the partner's own extractor.
    train, (val, val_labels) = cache.for_phase(0, augment, passes, recipe.seed, pretrained=True, first=1)
    store = cache.pass_store  # [passes, rows, ours + theirs]: the run's columns first, then the partner's
    ours, theirs = widths
    # The run's own columns are a view: its first phase trains on them, then they go. The partner
    # trains after the run's phases: its columns are copied, so the run's go with its phase.
    shape = (passes, store.shape[1], theirs)
    budget = trainer.cache
    partner_columns = np.empty(shape, "float32") if budget is None else budget.array(shape, name="partner")

    def grow() -> None:
        done = progress.cached
        if done < passes:
            cache.more_passes()
            partner_columns[done:] = store[done:, :, ours:]
            progress.cached = passes

    partner_columns[0] = store[0, :, ours:]
    progress = SharedProgress(cached=1, grow=grow)
    rows = len(train.labels)

    def passes_of(columns: np.ndarray, start: int, end: int, grows: bool) -> FirstPasses:
        features = CachedFeatures(columns[:, :rows], train.labels, train.batch_size, train.seed)
        validation = (val[:, start:end].copy(), val_labels)
        return FirstPasses(
            features, validation, augment.get_config(), passes, recipe.seed, columns, progress, grows
        )

    return (
        passes_of(store[..., :ours], 0, ours, grows=True),
        passes_of(partner_columns, ours, ours + theirs, grows=False),
    )
