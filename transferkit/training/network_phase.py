"""Phases that fit the whole training graph on image batches, and the batches they train on.

Every phase that trains the base runs here, as do head phases under multi-worker training
(each worker would need the cached features of its own shard). Augmentation is inside the graph;
MixUp / CutMix (:mod:`transferkit.training.mixing`) are in the batch stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from transferkit.recipes import AugmentConfig, Phase, low_res_epochs, low_res_size
from transferkit.training.distribute import MultiWorkerModel
from transferkit.training.mixing import mix_batches, mixes, one_hot_batches

if TYPE_CHECKING:
    from transferkit.training.trainer import Trainer


@dataclass(frozen=True, eq=False)  # a dataset: equal only to itself
class TrainingStream:
    """The training batches of the phases that fit the whole graph.

    Attributes:
        data: one epoch of shuffled training batches, ``(pixels, int labels)``.
        steps_per_epoch: its number of batches.
        augment: the recipe's augmentation (its MixUp and CutMix are read here).
        num_classes: output classes (mixed labels are one-hot).
        seed: the run's seed; each mix is seeded by its batch's number in the run.
        image_size: the side of the images ``data`` yields (progressive resizing scales from it).
    """

    data: tf.data.Dataset
    steps_per_epoch: int
    augment: AugmentConfig
    num_classes: int
    seed: int
    image_size: int

    def mixes(self, phase: Phase) -> bool:
        """Whether ``phase`` trains on MixUp/CutMix batches: only phases that train the base do."""
        return phase.train != "head" and mixes(self.augment)

    def batches(self, phase: Phase, epoch: int, trained: int = 0) -> tf.data.Dataset:
        """The training batches of ``phase`` (which starts at run epoch ``epoch``), ``trained`` epochs in.

        A repeated stream with a fixed epoch length: exact epochs (and schedule length) even if a
        file that passed the scan fails to decode later and is left out. After an interruption it
        skips the batches of the epochs already trained, so the resumed run sees the same batches in
        the same order, (Reseed) the same augmentations and (seeded by batch number) the same mixes
        as an uninterrupted one.
        """
        stream = self.data.repeat().skip(trained * self.steps_per_epoch)
        if self.mixes(phase):
            first = (epoch + trained) * self.steps_per_epoch  # the batch's number in the run
            stream = mix_batches(
                stream, self.augment, num_classes=self.num_classes, seed=self.seed, first_batch=first
            )
        return self._resized(stream, phase, trained)

    def _resized(self, stream: tf.data.Dataset, phase: Phase, trained: int) -> tf.data.Dataset:
        """Progressive resizing: the batches of the phase's first low-res epochs, smaller.

        Which epoch a batch belongs to comes from its number in the phase, so a resumed phase
        switches size at the same batch. Both sizes come out as float32 pixels of unknown side,
        so one traced training step (:func:`training_graph` with ``any_size``) serves both.
        """
        small_epochs = low_res_epochs(phase, self.image_size) if phase.train != "head" else 0
        if small_epochs <= trained:
            return stream
        side, steps = low_res_size(phase, self.image_size), self.steps_per_epoch

        def resize(number, batch):
            images, labels = batch
            images = tf.cast(images, tf.float32)
            small = (number + trained * steps) // steps < small_epochs
            images = tf.cond(
                small, lambda: tf.image.resize(images, (side, side), antialias=True), lambda: images
            )
            return images, labels

        return stream.enumerate().map(resize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def training_graph(
    classifier: keras.Model, augment: keras.layers.Layer | None, multi_worker: bool, any_size: bool = False
) -> keras.Model:
    """Augmentation (training only) -> ``classifier``: the graph these phases compile and fit.

    Args:
        classifier: the classifier's model (raw pixels in), or its
            :meth:`~transferkit.training.model.Classifier.training_model` (the same variables).
        augment: the augmentation layer, or ``None`` for none.
        multi_worker: build a :class:`~transferkit.training.distribute.MultiWorkerModel`.
        any_size: accept images of any side (progressive resizing); the classifier's
            convolutions and global pooling do not depend on it.
    """
    shape = (None, None, classifier.input_shape[-1]) if any_size else classifier.input_shape[1:]
    inputs = keras.Input(shape, name="pixels")
    x = augment(inputs) if augment is not None else inputs
    graph = MultiWorkerModel if multi_worker else keras.Model
    return graph(inputs, classifier(x), name="training_graph")


def fit_network_phase(trainer: Trainer, index: int, phase: Phase, initial_epoch: int) -> int:
    """Train ``trainer``'s training graph through phase ``index`` on image batches; returns its epochs.

    In order: resolve an ``"auto"`` rate (range test); compile; fit (through the Trainer's
    callbacks), resuming within the phase from its backup.
    """
    model, stream, steps = trainer._training_graph(), trainer.stream, trainer.steps_per_epoch
    phase = trainer._resolve_rate(index, phase, model, iter(stream.batches(phase, initial_epoch)), steps)
    trainer._compile(model, phase, steps)
    trained = max(0, trainer._backed_up_epoch(index, initial_epoch) - initial_epoch)
    validation = trainer.val_data
    if stream.mixes(phase):
        validation = one_hot_batches(validation, trainer.num_classes)
    return trainer._fit(
        model,
        stream.batches(phase, initial_epoch, trained),
        index,
        phase,
        initial_epoch,
        steps_per_epoch=steps,
        validation_data=validation.repeat(),
        validation_steps=trainer.validation_steps,
        # Mixed labels weigh as the class of their largest share (Keras' class_weight on soft labels).
        class_weight=trainer._class_weight(None),
    )
