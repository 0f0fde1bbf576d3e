"""The tiny backbone: a three-block CNN for tests and smoke runs, with the keras.applications interface."""

from __future__ import annotations

import keras

from transferkit.errors import TransferkitError


def tiny_backbone(
    include_top: bool = False,
    weights: str | None = None,
    input_shape: tuple[int, int, int] = (32, 32, 3),
    classes: int = 1000,
) -> keras.Model:
    """A three-block CNN (~25k params) for tests and smoke runs; same interface as keras.applications."""
    if weights not in (None, "random"):
        raise TransferkitError(f"The tiny backbone has no pretrained weights (got weights={weights!r}).")
    layers = keras.layers
    inputs = keras.Input(input_shape)
    x = inputs
    for block, filters in enumerate((16, 32, 64), start=1):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{block}_conv")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"block{block}_bn")(x)
        x = layers.ReLU(name=f"block{block}_relu")(x)
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, x, name="tiny")
