"""Feature-map pooling: the one definition shared by the classifier's head and the selector's probe.

A truncated base ends in a narrow map (32 channels at MobileNetV2's ``block_5_add``); global
average pooling crushes it to 32 numbers, and a head trained on those scored 9 points below
what the probe promised. The richer modes keep more of the map:

- ``"avg"``: global average, ``C`` features (the classic head; deep bases are already wide);
- ``"avg_max"``: global average and global max, ``2C``;
- ``"avg_dev"``: global average and each channel's mean absolute deviation from it, ``2C``
  (pool statistics: the spread of a channel says how much texture or stroke it saw, which
  typeface and style classes are made of);
- ``"pyramid"``: global average and a 2x2 grid of averages (a small spatial pyramid), ``5C``
  (where in the image a channel fired: silhouettes and shapes).

Every mode is built from built-in Keras layers only, so a saved classifier still loads with
plain ``keras.models.load_model(..., safe_mode=True)`` without transferkit installed.
"""

from __future__ import annotations

import keras

from transferkit.errors import choices_error
from transferkit.recipes import POOLINGS

_WIDTH = {"avg": 1, "avg_max": 2, "avg_dev": 2, "pyramid": 5}  # pooled features per channel of the map


def pooled_dim(channels: int, pooling: str) -> int:
    """Width of the pooled features of a ``channels``-channel map.

    Example:
        >>> pooled_dim(32, "pyramid")
        160
    """
    _check(pooling)
    return channels * _WIDTH[pooling]


def pool(feature_map: keras.KerasTensor, pooling: str, name: str = "pool") -> keras.KerasTensor:
    """Pool a (B, H, W, C) map to (B, D) features with built-in layers; a (B, C) input passes through.

    Args:
        feature_map: a symbolic Keras tensor (a layer's output inside a functional model).
        pooling: one of :data:`transferkit.recipes.POOLINGS`.
        name: the pooled output's layer name; the parts are named ``{name}_avg`` etc.

    Returns:
        The pooled symbolic tensor, ``pooled_dim(C, pooling)`` wide.
    """
    _check(pooling)
    if len(feature_map.shape) != 4:
        return feature_map
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name=name)(feature_map)
    # The parts are wrapped in one nested functional model, so the classifier stays a chain of
    # top-level layers (pixels -> preprocess -> base -> pool -> head) that Grad-CAM can re-wire.
    inputs = keras.Input(feature_map.shape[1:], name=f"{name}_map")
    parts = [keras.layers.GlobalAveragePooling2D(name=f"{name}_avg")(inputs)]
    if pooling == "avg_max":
        parts.append(keras.layers.GlobalMaxPooling2D(name=f"{name}_max")(inputs))
    elif pooling == "avg_dev":
        parts.append(_mean_absolute_deviation(inputs, name))
    else:  # pyramid: a 2x2 grid of averages (each cell covers about a quarter of the map)
        grid = keras.layers.AdaptiveAveragePooling2D((2, 2), name=f"{name}_grid")(inputs)
        parts.append(keras.layers.Flatten(name=f"{name}_grid_flat")(grid))
    pooled = keras.layers.Concatenate(axis=-1, name=f"{name}_features")(parts)
    return keras.Model(inputs, pooled, name=name)(feature_map)


def _mean_absolute_deviation(feature_map: keras.KerasTensor, name: str) -> keras.KerasTensor:
    """Per channel, the mean of ``|x - mean(x)|`` over space: a spread without ``sqrt`` (no layer has it)."""
    mean = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_center")(feature_map)
    deviation = keras.layers.Subtract(name=f"{name}_deviation")([feature_map, mean])
    flipped = keras.layers.Rescaling(-1.0, name=f"{name}_negated")(deviation)
    absolute = keras.layers.Maximum(name=f"{name}_absolute")([deviation, flipped])
    return keras.layers.GlobalAveragePooling2D(name=f"{name}_dev")(absolute)


def _check(pooling: str) -> None:
    if pooling not in POOLINGS:
        raise choices_error("pooling", pooling, POOLINGS)
