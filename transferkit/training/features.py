"""Cached backbone features for phases whose base is frozen.

A frozen base computes the same activations every epoch. Running it once per *augmented copy*
of the training set (``cached_passes``, default 4) and training the head on the cached pooled
features was measured 3.4-3.7x faster than plain Keras with augmentation (20-24x without),
with the same model: the head sees a different augmented copy each epoch, cycling through the
cached ones. The head trained here is the very head inside the saved classifier.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import keras
import numpy as np
import tensorflow as tf

from transferkit.training.progress import progress_bar


def feature_step(extractor: keras.Model, augment: keras.layers.Layer | None = None):
    """A compiled float32 ``images -> features`` function; make it once and reuse it for every pass.

    The signature leaves the batch size open, so the last, smaller batch reuses the same graph
    instead of tracing a second one (~2 s each on CPU).
    """
    signature = [tf.TensorSpec([None, *extractor.input_shape[1:]], tf.float32)]

    @tf.function(input_signature=signature)
    def step(images):
        if augment is not None:
            images = augment(images, training=True)
        return extractor(images, training=False)

    return step


def extract_features(
    step,
    dataset: tf.data.Dataset,
    *,
    feature_dim: int,
    verbose: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """One pass of ``dataset`` (batches of uint8 images, int labels) through ``step``.

    Args:
        step: from :func:`feature_step`.
        dataset: batched ``(images, labels)``; iterated exactly once.
        feature_dim: width of the features (for an empty dataset).
        verbose: 1 = a bar that goes away when done (the phase's bar follows it); else silent.

    Returns:
        ``(features [N, D] float32, labels [N] int32)``.
    """
    steps = int(dataset.cardinality())
    features, labels = [], []
    with progress_bar(
        total=steps if steps > 0 else None,
        desc="caching features",
        unit="batch",
        leave=False,
        disable=verbose != 1,
    ) as progress:
        for images, batch_labels in dataset:
            features.append(step(tf.cast(images, tf.float32)).numpy().astype("float32"))
            labels.append(batch_labels.numpy().astype("int32"))
            progress.update(1)
    if not features:
        return np.zeros((0, feature_dim), "float32"), np.zeros((0,), "int32")
    return np.concatenate(features), np.concatenate(labels)


class CachedFeatures(keras.utils.PyDataset):
    """Epoch ``e`` serves augmented copy ``e % passes``, shuffled with seed ``seed + e``.

    The epoch is set from outside (by :class:`EpochSetter`) rather than counted, so a run
    resumed at epoch 7 sees exactly the batches an uninterrupted run would.
    """

    def __init__(self, features: np.ndarray, labels: np.ndarray, batch_size: int, seed: int):
        super().__init__()
        self.features = features  # [passes, N, D]
        self.labels = labels
        self.batch_size = batch_size
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.order = np.random.default_rng(self.seed + epoch).permutation(len(self.labels))

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, index: int):
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        return self.features[self.epoch % len(self.features)][rows], self.labels[rows]

    def cycle(self) -> Iterator:
        """The batches epoch after epoch, as ``fit`` would serve them (moves the epoch along)."""
        for epoch in itertools.count():
            self.set_epoch(epoch)
            yield from (self[index] for index in range(len(self)))


class EpochSetter(keras.callbacks.Callback):
    """Tell a :class:`CachedFeatures` which epoch is starting."""

    def __init__(self, data: CachedFeatures):
        super().__init__()
        self.data = data

    def on_epoch_begin(self, epoch, logs=None):
        self.data.set_epoch(epoch)
