"""MixUp and CutMix of whole-network training batches: Keras' own layers, in tf.data, one seed per batch.

Mixing needs soft labels, so a phase that mixes trains on one-hot labels (its validation batches
too) with a categorical loss (:func:`transferkit.training.optimizers.compile_classifier`). The
mixing runs in the input pipeline, not in the model: the saved classifier never contains it.
Class weights (Keras' ``class_weight`` on soft labels) weigh a mixed image as the class of its
larger share. Head phases on cached features never mix, and the augmentation check
(:mod:`~transferkit.training.augment_check`), which measures the warp there, does not decide it.

Each batch draws its mix from a seed made of the run's seed and the batch's number in the run
(epoch x steps per epoch + step), never from a stream's position: prefetching, a learning-rate
range test before the phase or a resume after an interruption cannot shift which batch gets which
mix, so a resumed run mixes exactly as an uninterrupted one.

Example:
    >>> import tensorflow as tf
    >>> from transferkit.recipes import AugmentConfig
    >>> batches = tf.data.Dataset.from_tensor_slices((tf.zeros((8, 16, 16, 3)), tf.range(8) % 2)).batch(4)
    >>> mixed = mix_batches(batches, AugmentConfig(mixup_alpha=0.2), num_classes=2, seed=0)
    >>> [tuple(t.shape) for t in next(iter(mixed))]
    [(4, 16, 16, 3), (4, 2)]
"""

from __future__ import annotations

import keras
import tensorflow as tf

from transferkit.recipes import AugmentConfig

# Seed positions reserved per batch: the batch's draws use [seed, n * this + 0, 1, 2, ...]. One
# mix draws far fewer (MixUp 2, CutMix 5, the MixUp-or-CutMix switch 1).
DRAWS_PER_BATCH = 1_000
SWITCH_PROBABILITY = 0.5  # both on: each batch is CutMix'ed with this chance, else MixUp'ed (timm's)


def mixes(config: AugmentConfig) -> bool:
    """True when the recipe's ``[augment]`` asks for MixUp or CutMix."""
    return bool(config.mixup_alpha or config.cutmix_alpha)


def mixing_layers(config: AugmentConfig) -> list[keras.layers.Layer]:
    """Keras' ``MixUp`` and/or ``CutMix`` for the recipe's alphas, MixUp first (float32 always:
    mixed labels and 0-255 pixels need it, whatever the precision policy)."""
    layers = []
    if config.mixup_alpha:
        layers.append(keras.layers.MixUp(alpha=config.mixup_alpha, dtype="float32", name="mixup"))
    if config.cutmix_alpha:  # CutMix draws its Beta's alpha from the range `factor`: a point fixes it
        alpha = config.cutmix_alpha
        layers.append(keras.layers.CutMix(factor=(alpha, alpha), dtype="float32", name="cutmix"))
    return layers


def one_hot_batches(data: tf.data.Dataset, num_classes: int) -> tf.data.Dataset:
    """``(pixels, int labels)`` batches as ``(pixels, one-hot float32 labels)``: what a mixing
    phase validates on (its loss and metrics take one-hot labels)."""
    return data.map(lambda images, labels: (images, tf.one_hot(labels, num_classes)))


def mix_batches(
    data: tf.data.Dataset, config: AugmentConfig, *, num_classes: int, seed: int, first_batch: int = 0
) -> tf.data.Dataset:
    """``(pixels, int labels)`` batches mixed into ``(float32 pixels, soft labels)`` that sum to 1.

    Args:
        data: the training batches, in order.
        config: the recipe's ``[augment]`` table; at least one of ``mixup_alpha`` and ``cutmix_alpha``
            is above 0. Both on: each batch gets one of them (CutMix with ``SWITCH_PROBABILITY``).
        num_classes: width of the labels.
        seed: the run's seed.
        first_batch: the number, in the run, of ``data``'s first batch (the batch seeds count from it).
    """
    layers = mixing_layers(config)
    if not layers:
        raise ValueError("mix_batches needs mixup_alpha or cutmix_alpha above 0.")
    # A generator of this stream's own (another stream iterated at the same time cannot move it),
    # restarted at every batch; the map is sequential, so a restart and its batch's draws stay together.
    generator = keras.random.SeedGenerator(seed)

    def mix(number, batch):
        images, labels = batch
        generator.state.assign(tf.cast(tf.stack([seed, number * DRAWS_PER_BATCH]), generator.state.dtype))
        data = {"images": tf.cast(images, tf.float32), "labels": tf.one_hot(labels, num_classes)}
        if len(layers) == 1:
            return _apply(layers[0], data, generator)
        cutmix = keras.random.uniform((), seed=generator) < SWITCH_PROBABILITY
        return tf.cond(
            cutmix, lambda: _apply(layers[1], data, generator), lambda: _apply(layers[0], data, generator)
        )

    return data.enumerate(first_batch).map(mix)


def _apply(layer: keras.layers.Layer, data: dict, generator: keras.random.SeedGenerator):
    """What ``layer(data)`` does, with its random draws taken from ``generator``."""
    transformation = layer.get_random_transformation(data, training=True, seed=generator)
    images = layer.transform_images(data["images"], transformation, training=True)
    return images, layer.transform_labels(data["labels"], transformation, training=True)
