"""The feature bank: one clean pass through the base, pooled for each candidate head, for trials and fit."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from transferkit.backbones.registry import BackboneSpec
from transferkit.data.loading import ImageSet
from transferkit.errors import choices_error
from transferkit.recipes import Recipe
from transferkit.training.features import caching_bar
from transferkit.training.model import preprocessing_layer
from transferkit.training.pooling import pool
from transferkit.training.timing import BatchClock, steady_seconds


@dataclass(frozen=True)
class FeatureView:
    """Where a recipe's head reads the base: its cut (None: the whole base's output) and its pooling."""

    cut: str | None
    pooling: str

    @classmethod
    def of(cls, recipe: Recipe) -> FeatureView:
        """The view of ``recipe``'s classifier extractor (its cut resolved: not ``"auto"``)."""
        cut = recipe.backbone.cut if recipe.strategy == "truncate" else None
        return cls(cut, recipe.head.pooling)


@dataclass(frozen=True, eq=False)  # arrays: equal only to itself
class CleanFeatures:
    """Un-augmented features of the training and validation images, as one classifier's extractor
    computes them; each is ``(features [N, D] float32, labels [N] int32)`` in its split's order."""

    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class BankInputs:
    """What clean features are computed from: the pretrained base, the images in order, the batching
    (a different batch can round differently). Equal inputs and view: equal features."""

    backbone: str
    weights: str
    image_size: int
    batch_size: int
    train: ImageSet
    val: ImageSet


@dataclass(frozen=True)
class FeatureBank:
    """Clean features per view, and what they were computed from (so a fit can tell they are its own)."""

    views: Mapping[FeatureView, CleanFeatures]
    inputs: BankInputs
    seconds: float  # its own passes, building and tracing their step included
    pass_seconds: float  # of those, the passes less the trace: what a fit taking its features saves
    # The selector's pass over the training images, where the bank took their features from it
    # (:class:`transferkit.selection.measure.ProbePass`): the selection's time, not ``seconds``.
    probe_seconds: float = 0.0

    def features_for(self, recipe: Recipe, inputs: BankInputs) -> CleanFeatures | None:
        """``recipe``'s clean features when this bank holds them for the same inputs; else None.

        Only for a recipe whose first phase trains the head alone: its first features are clean
        features of the pretrained base.

        Args:
            recipe: the recipe a fit or trial trains (its cut resolved).
            inputs: what its own features would be computed from.
        """
        if not recipe.phases or recipe.phases[0].train != "head" or inputs != self.inputs:
            return None
        return self.views.get(FeatureView.of(recipe))


def build_feature_bank(
    base: keras.Model,
    spec: BackboneSpec,
    views: Sequence[FeatureView],
    train_data: tf.data.Dataset,
    val_data: tf.data.Dataset,
    inputs: BankInputs,
    *,
    verbose: int = 1,
) -> FeatureBank:
    """Pass the training and validation images once through ``base`` and pool them for every view.

    Each view's features are what :func:`transferkit.training.model.build_classifier`'s extractor
    computes on the same base: the backbone's pixel normalisation, the base (cut at the view's
    cut) in inference mode, then :func:`transferkit.training.pooling.pool` with the view's pooling.

    Args:
        base: the headless pretrained base, full depth (it is not changed).
        spec: its registry entry (for the pixel normalisation).
        views: the cuts and poolings to keep; duplicates are computed once.
        train_data, val_data: batched ``(uint8 or float pixels, int labels)`` in a fixed order (no
            shuffling, no augmentation): the images of ``inputs.train`` and ``inputs.val``.
        inputs: what the features are computed from (the datasets' images, size and batch).
        verbose: 1 = a bar per pass that goes away when done; else silent.
    """
    started = time.perf_counter()
    views = tuple(dict.fromkeys(views))
    model = bank_model(base, spec, views)
    dims = [int(output.shape[-1]) for output in model.outputs]
    step = _bank_step(model)
    train, train_seconds = _pass(step, train_data, dims, verbose)
    val, val_seconds = _pass(step, val_data, dims, verbose)
    features = {
        view: CleanFeatures((train[0][i], train[1]), (val[0][i], val[1])) for i, view in enumerate(views)
    }
    passes = steady_seconds(train_seconds) + sum(val_seconds)  # the training pass traced the step
    return FeatureBank(features, inputs, time.perf_counter() - started, passes)


def bank_model(base: keras.Model, spec: BackboneSpec, views: Sequence[FeatureView]) -> keras.Model:
    """Raw pixels -> one pooled output per view, through ``base``'s own layers (shared weights)."""
    names = [layer.name for layer in base.layers]
    cuts = list(dict.fromkeys(view.cut for view in views))
    for cut in cuts:
        if cut is not None and cut not in names:
            raise choices_error(f"cut point of {base.name!r}", cut, names)
    maps = [base.outputs[0] if cut is None else base.get_layer(cut).output for cut in cuts]
    cut_maps = keras.Model(base.inputs, maps, name=f"{base.name}_bank_maps")
    size = base.input_shape[1]
    inputs = keras.Input((size, size, 3), name="pixels")
    layer = preprocessing_layer(spec.preprocessing)
    x = layer(inputs) if layer is not None else inputs
    outputs = cut_maps(x, training=False)
    outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
    by_cut = dict(zip(cuts, outputs, strict=True))
    pooled = [pool(by_cut[view.cut], view.pooling, name=f"view{i}_pool") for i, view in enumerate(views)]
    return keras.Model(inputs, pooled, name=f"{base.name}_feature_bank")


def _bank_step(model: keras.Model):
    """A compiled float32 ``images -> [features per view]`` function (the batch size left open)."""
    signature = [tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)]

    @tf.function(input_signature=signature)
    def step(images):
        outputs = model(images, training=False)
        return list(outputs) if isinstance(outputs, list | tuple) else [outputs]

    return step


def _pass(
    step, dataset: tf.data.Dataset, dims: list[int], verbose: int
) -> tuple[tuple[list[np.ndarray], np.ndarray], list[float]]:
    """One pass of ``dataset`` through ``step``: ``(([features [N, D] per view], labels [N]), the
    seconds of each batch, its loading included)``."""
    chunks: list[list[np.ndarray]] = [[] for _ in dims]
    labels = []
    clock = BatchClock(dataset)
    with caching_bar(dataset, verbose, desc="feature bank") as progress:
        for images, batch_labels in clock:
            for chunk, output in zip(chunks, step(tf.cast(images, tf.float32)), strict=True):
                chunk.append(output.numpy().astype("float32"))
            labels.append(batch_labels.numpy().astype("int32"))
            progress.update(1)
    seconds = clock.seconds
    if not labels:
        return ([np.zeros((0, dim), "float32") for dim in dims], np.zeros((0,), "int32")), seconds
    return ([np.concatenate(chunk) for chunk in chunks], np.concatenate(labels)), seconds
