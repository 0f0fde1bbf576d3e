"""Class-activation heat maps (Grad-CAM) on the last 4-D feature map of a raw-pixel classifier."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras

_EPSILON = 1e-7  # keeps log(probability) finite


def feature_map_model(model: keras.Model) -> keras.Model | None:
    """``pixels -> [last 4-D feature map, probabilities]`` for a chain of top-level layers.

    The classifier is ``pixels -> preprocess -> base -> pool -> head``; the base's output is the
    last 4-D map (also for a truncated base). The chain is re-wired through the same layers (a
    nested base's own ``output`` is not connected to the outer inputs). None when the model has
    no 4-D feature map, or is not such a chain (its re-wired outputs differ from the model's).
    """
    import keras

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if len(model.inputs) != 1 or not layers:
        return None
    maps = [i for i, layer in enumerate(layers) if len(layer.output.shape) == 4 and i > 0]
    maps = [i for i in maps if layers[i].output.shape[-1] != 3] or maps  # not the pixels themselves
    if not maps:
        return None
    inputs = keras.Input(model.inputs[0].shape[1:])
    x, feature_map = inputs, None
    try:
        for i, layer in enumerate(layers):
            x = layer(x)
            feature_map = x if i == maps[-1] else feature_map
    except (ValueError, TypeError):  # a layer that takes several inputs: not a chain
        return None
    return keras.Model(inputs, [feature_map, x], name=f"{model.name}_grad_cam")


def grad_cam(
    model: keras.Model, images: np.ndarray, classes: Sequence[int] | None = None
) -> np.ndarray | None:
    """Grad-CAM heat maps (Selvaraju et al. 2017) on the last 4-D feature map, one per image.

    The gradient of the log-probability of ``classes`` (default: the predicted class) with
    respect to the feature map, averaged over space, weights its channels; the weighted sum,
    rectified, is resized to the image and scaled to [0, 1] per image.

    Args:
        model: a classifier taking raw pixels (``model.keras``).
        images: ``(N, H, W, 3)`` pixels as the model takes them.
        classes: the class to explain per image; None explains each image's prediction.

    Returns:
        ``(N, H, W)`` float32 maps in [0, 1], or None when the model has no 4-D feature map
        (see :func:`feature_map_model`).
    """
    import tensorflow as tf

    explainer = feature_map_model(model)
    if explainer is None:
        return None
    pixels = tf.convert_to_tensor(np.asarray(images, dtype=np.float32))
    with tf.GradientTape() as tape:
        feature_map, probabilities = explainer(pixels, training=False)
        probabilities = tf.cast(probabilities, tf.float32)
        chosen = tf.argmax(probabilities, axis=1) if classes is None else tf.constant(classes, tf.int64)
        score = tf.math.log(tf.gather(probabilities, chosen, axis=1, batch_dims=1) + _EPSILON)
    reference = np.asarray(model(pixels, training=False), dtype=np.float32)
    if not np.allclose(probabilities.numpy(), reference, atol=1e-4):
        return None  # re-wiring changed what the model computes: it is not a chain
    gradients = tf.cast(tape.gradient(score, feature_map), tf.float32)
    return _weighted_maps(tf.cast(feature_map, tf.float32), gradients, images.shape[1:3])


def _weighted_maps(feature_map, gradients, size) -> np.ndarray:
    """Channels weighted by their mean gradient, summed, rectified, resized, scaled to [0, 1]."""
    import tensorflow as tf

    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    maps = tf.nn.relu(tf.reduce_sum(weights * feature_map, axis=-1, keepdims=True))
    maps = tf.image.resize(maps, size, method="bilinear")[..., 0].numpy()
    peaks = maps.reshape(len(maps), -1).max(axis=1)[:, None, None]
    maps = np.divide(maps, peaks, out=np.zeros_like(maps), where=peaks > 0)
    return np.nan_to_num(maps, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
