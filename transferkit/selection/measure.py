"""Measure a dataset's quadrant with a pretrained backbone: the glue between data and :mod:`selector`.

One forward pass of a stratified sample of the training split through the base gives pooled
features at every cut point (each pooled as the recipe that would train there pools it);
:func:`transferkit.selection.rules.select` scores them (linear probe + LogME) and combines them
with the dataset card's size figures.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np

from transferkit.backbones.registry import BackboneSpec
from transferkit.data.loading import DataSplits, ImageSet, make_dataset
from transferkit.recipes import Recipe, load_builtin
from transferkit.selection.decision import Selection, select, too_few_to_probe
from transferkit.selection.quadrants import PROVISIONAL, quadrant_for
from transferkit.selection.transferability import CutFeatures
from transferkit.training.feature_bank import BankInputs, CleanFeatures, FeatureBank, FeatureView
from transferkit.training.model import preprocessing_layer
from transferkit.training.progress import progress_bar

SAMPLE_PER_CLASS = 100  # enough for a 5-fold probe to resolve a few points of accuracy
SAMPLE_MAX = 2000  # bounds the forward pass: selection must stay a small fraction of training


def size_figures(splits: DataSplits) -> dict[str, float]:
    """The dataset card's figures the size decision reads."""
    card = splits.card
    per_class = card.images_per_class
    return {
        "num_classes": card.num_classes,
        "num_train": card.num_train,
        "min_images_per_class": per_class["min"],
        "median_images_per_class": per_class["median"],
        "imbalance": card.imbalance,
    }


def stratified_sample(images: ImageSet, per_class: int, total: int, seed: int) -> ImageSet:
    """At most ``per_class`` images of each class (and ``total`` overall), chosen with ``seed``."""
    labels = np.asarray(images.labels)
    classes = np.unique(labels)
    per_class = max(2, min(per_class, total // max(1, len(classes))))
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes]
    return images.subset(sorted(int(i) for i in np.concatenate(chosen)))


def probe_poolings(cut_points: tuple[str, ...], recipe: Recipe) -> dict[str, str]:
    """How each cut is pooled for the probe: as the recipe that would train a head there pools it.

    The deepest cut feeds the whole-base recipes (freeze, fine-tune); every earlier cut feeds
    truncation. ``recipe`` speaks for its own kind; the other kind's pooling comes from its
    built-in recipe. So the probe's accuracy at a cut is a promise the chosen recipe can keep.

    Example:
        >>> from transferkit.recipes import load_builtin
        >>> probe_poolings(("block_5_add", "out_relu"), load_builtin("small_similar"))
        {'block_5_add': 'avg_dev', 'out_relu': 'avg'}
    """
    truncating = recipe.strategy == "truncate"
    cut_recipe = recipe if truncating else load_builtin(quadrant_for("small", similar=False))
    whole_recipe = load_builtin(PROVISIONAL) if truncating else recipe
    poolings = {cut: cut_recipe.head.pooling for cut in cut_points[:-1]}
    return poolings | {cut_points[-1]: whole_recipe.head.pooling} if cut_points else poolings


@dataclass(frozen=True, eq=False)  # arrays and a traced pass: equal only to itself
class ProbePass:
    """The probe's pass where its sample was the whole training split: the pooled features at every
    cut, in the split's order, and the traced pass, which gives the same features of more images.

    The trials' feature bank (:func:`transferkit.training.feature_bank.build_feature_bank`) needs
    the training images' clean features at the candidates' cuts and poolings, which the probe
    computed already on small data (its sample is every training image below
    :data:`SAMPLE_PER_CLASS` a class): :meth:`bank` passes only the validation images.
    """

    features: dict[str, np.ndarray]
    labels: np.ndarray
    extract: CutFeatures
    whole: str  # the cut that is the whole base's output (a view without a cut reads it)
    seconds: float  # the pass less its trace: what a fit taking its features saves (timing.steady_seconds)

    def bank(self, views: Sequence[FeatureView], val_data, inputs: BankInputs) -> FeatureBank | None:
        """The feature bank of ``views`` from this pass and one pass of ``val_data`` (batched
        ``(pixels, labels)`` of ``inputs.val``); None where a view's cut or pooling is not one the
        probe computed, or there are no validation images (the bank's own pass handles that)."""
        started = time.perf_counter()
        cuts = [self.whole if view.cut is None else view.cut for view in views]
        if any(self.extract.poolings.get(cut) != view.pooling for cut, view in zip(cuts, views, strict=True)):
            return None
        if not len(inputs.val):
            return None
        labels: list[np.ndarray] = []

        def images():
            for batch, batch_labels in val_data:
                labels.append(batch_labels.numpy())
                yield batch

        val = self.extract(images())
        val_labels = np.concatenate(labels).astype("int32")
        clean = {
            view: CleanFeatures((self.features[cut], self.labels), (val[cut], val_labels))
            for cut, view in zip(cuts, views, strict=True)
        }
        seconds = time.perf_counter() - started  # through the traced step: a pass as a fit's would be
        return FeatureBank(clean, inputs, seconds, seconds, probe_seconds=self.seconds)


def probe_quadrant(
    splits: DataSplits,
    spec: BackboneSpec,
    base: keras.Model,
    recipe: Recipe,
    *,
    size: str = "auto",
    similar: bool | None = None,
    verbose: int = 1,
) -> tuple[Selection, ProbePass | None]:
    """Decide size, similarity and cut point for ``splits`` with the pretrained ``base``.

    Args:
        splits: the loaded data (its card gives the size figures).
        spec: the backbone's registry entry (cut points, preprocessing).
        base: the headless pretrained base, full depth.
        recipe: gives the image size, batch size and seed.
        size: "auto" | "small" | "large".
        similar: None (measure) | True | False (then only the cut point is measured).
        verbose: print what is measured.
    """
    started = time.perf_counter()
    image_size = int(base.input_shape[1])
    if similar is True or (similar is False and size == "large"):  # no cut to find: nothing to measure
        selection = select(
            size_figures(splits),
            None,
            None,
            size=size,
            similar=similar,
            seed=recipe.seed,
            image_size=image_size,
        )
        return selection, None
    sample = stratified_sample(splits.train, SAMPLE_PER_CLASS, SAMPLE_MAX, recipe.seed)
    if verbose:
        print(
            f"Measuring transferability: {len(sample)} images through {spec.name}, "
            f"{len(spec.cut_points)} cut points",
            flush=True,
        )
    labels: list[np.ndarray] = []
    batch_size = recipe.data.batch_size
    # The same bar as every feature pass (tqdm: a widget in Jupyter, one redrawn line in a terminal).
    progress = progress_bar(
        total=-(-len(sample) // batch_size), desc="measuring", unit="batch", leave=False, disable=verbose != 1
    )

    def images():
        with progress:
            for batch, batch_labels in make_dataset(sample, image_size, batch_size, cache=False):
                labels.append(batch_labels.numpy())
                yield batch
                progress.update(1)

    extract = CutFeatures(
        base,
        spec.cut_points,
        preprocessing_layer(spec.preprocessing),
        probe_poolings(spec.cut_points, recipe),
    )
    features = extract(images())
    sampled = np.concatenate(labels)
    if verbose and not too_few_to_probe(sampled):
        print(f"Scoring {len(features)} cut points (cross-validated linear probe, LogME)", flush=True)
    selection = select(
        size_figures(splits),
        features,
        sampled,
        size=size,
        similar=similar,
        seed=recipe.seed,
        image_size=image_size,
    )
    # The whole measurement, the forward pass included, as the console and timings.json give it.
    selection = dataclasses.replace(selection, seconds=time.perf_counter() - started)
    if verbose:
        print(
            f"Selected {selection.quadrant} (confidence {selection.confidence:.2f}"
            f"{', close call' if selection.close_call else ''}) in {selection.seconds:.1f} s",
            flush=True,
        )
        for reason in selection.reasons:
            print(f"  - {reason}", flush=True)
    last = base.layers[-1]  # the layer giving the whole base's output
    whole = last.name if last.output is base.outputs[0] else None
    covered = len(sample) == len(splits.train) and whole in features  # in the split's order: subset sorts
    probe = (
        ProbePass(features, sampled.astype("int32"), extract, whole, extract.steady_seconds)
        if covered
        else None
    )
    return selection, probe
