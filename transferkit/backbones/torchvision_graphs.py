"""Keras graphs that compute exactly what torchvision's networks compute.

Torchvision weights loaded into the stock Keras graphs work but degrade: Keras pads stride-2
convolutions asymmetrically (TensorFlow's "same") and uses BatchNorm epsilon 1e-3, while
torchvision pads one pixel on every side and uses 1e-5. The builders here rebuild the graph
torchvision's way while keeping the Keras layer names, so the backbone registry's block regex,
cut points and everything downstream treat them like the Keras originals.
"""

from __future__ import annotations

import keras
from keras import layers

from transferkit.errors import TransferkitError

_TORCH_BN = {"epsilon": 1e-5, "momentum": 0.999}  # torch's epsilon; Keras' MobileNetV2 momentum

# (expansion, output channels, stride) of each inverted residual block, as in the paper.
_MOBILENET_V2_BLOCKS = (
    (1, 16, 1),
    (6, 24, 2), (6, 24, 1),
    (6, 32, 2), (6, 32, 1), (6, 32, 1),
    (6, 64, 2), (6, 64, 1), (6, 64, 1), (6, 64, 1),
    (6, 96, 1), (6, 96, 1), (6, 96, 1),
    (6, 160, 2), (6, 160, 1), (6, 160, 1),
    (6, 320, 1),
)  # fmt: skip


def _inverted_residual(x: keras.KerasTensor, block_id: int, expansion: int, filters: int, stride: int):
    """One MobileNetV2 block with Keras' layer names and torchvision's padding."""
    prefix = f"block_{block_id}_" if block_id else "expanded_conv_"
    inputs = x
    in_channels = x.shape[-1]
    if block_id:
        x = layers.Conv2D(expansion * in_channels, 1, use_bias=False, name=f"{prefix}expand")(x)
        x = layers.BatchNormalization(name=f"{prefix}expand_BN", **_TORCH_BN)(x)
        x = layers.ReLU(6.0, name=f"{prefix}expand_relu")(x)
    if stride == 2:
        x = layers.ZeroPadding2D(1, name=f"{prefix}pad")(x)  # symmetric, as torch's padding=1
    x = layers.DepthwiseConv2D(
        3,
        strides=stride,
        use_bias=False,
        padding="same" if stride == 1 else "valid",
        name=f"{prefix}depthwise",
    )(x)
    x = layers.BatchNormalization(name=f"{prefix}depthwise_BN", **_TORCH_BN)(x)
    x = layers.ReLU(6.0, name=f"{prefix}depthwise_relu")(x)
    x = layers.Conv2D(filters, 1, use_bias=False, name=f"{prefix}project")(x)
    x = layers.BatchNormalization(name=f"{prefix}project_BN", **_TORCH_BN)(x)
    if in_channels == filters and stride == 1:
        x = layers.Add(name=f"{prefix}add")([inputs, x])
    return x


def mobilenet_v2_torchvision(
    include_top: bool = False,
    weights: str | None = None,
    input_shape: tuple[int, int, int] | None = None,
    classes: int = 1000,
) -> keras.Model:
    """MobileNetV2 1.0 with torchvision's graph and ``keras.applications.MobileNetV2``'s layer names.

    Differences from the Keras graph: an explicit symmetric ``Conv1_pad`` before ``Conv1`` and
    symmetric ``block_*_pad`` layers, all stride-2 convolutions ``padding="valid"``, BatchNorm
    epsilon 1e-5, and a dropout before ``predictions`` (torchvision's classifier). The headless
    output is ``out_relu`` (7x7x1280 at 224 px).

    Args:
        include_top: add global average pooling, dropout 0.2 and ``Dense(classes, softmax)``
            named ``predictions``.
        weights: only ``None`` (random init). Pretrained weights are loaded by
            :func:`transferkit.backbones.weights.build_base`, which converts torchvision's file.
        input_shape: ``(height, width, 3)``; defaults to ``(224, 224, 3)``.
        classes: number of classes of the top.

    Example:
        >>> model = mobilenet_v2_torchvision(input_shape=(96, 96, 3))
        >>> model.output.shape
        (None, 3, 3, 1280)
    """
    if weights is not None:
        raise TransferkitError(
            f"mobilenet_v2_torchvision builds random-init graphs only (got weights={weights!r}). "
            "Load pretrained weights with transferkit.backbones.weights.build_base(spec, weights='imagenet')."
        )
    input_shape = tuple(input_shape or (224, 224, 3))
    if input_shape[-1] != 3:
        raise TransferkitError(
            f"mobilenet_v2_torchvision needs 3-channel RGB input, got {input_shape}; use (size, size, 3)."
        )
    inputs = keras.Input(input_shape)
    x = layers.ZeroPadding2D(1, name="Conv1_pad")(inputs)
    x = layers.Conv2D(32, 3, strides=2, padding="valid", use_bias=False, name="Conv1")(x)
    x = layers.BatchNormalization(name="bn_Conv1", **_TORCH_BN)(x)
    x = layers.ReLU(6.0, name="Conv1_relu")(x)
    for block_id, (expansion, filters, stride) in enumerate(_MOBILENET_V2_BLOCKS):
        x = _inverted_residual(x, block_id, expansion, filters, stride)
    x = layers.Conv2D(1280, 1, use_bias=False, name="Conv_1")(x)
    x = layers.BatchNormalization(name="Conv_1_bn", **_TORCH_BN)(x)
    x = layers.ReLU(6.0, name="out_relu")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="global_average_pooling2d")(x)
        x = layers.Dropout(0.2, name="dropout")(x)
        x = layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, x, name=f"mobilenet_v2_torchvision_{input_shape[0]}")
