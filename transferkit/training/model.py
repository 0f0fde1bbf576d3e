"""Backbone + head -> one ``keras.Model`` that takes raw 0-255 RGB pixels.

The backbone's pixel normalisation is a frozen per-channel affine map inside the graph (a
``Dense(3)`` on the channel axis: scaling, mean/std and the RGB->BGR swap of Caffe-style
backbones are all affine), so the saved model contains only built-in Keras layers, loads with
plain ``keras.models.load_model`` in safe mode, and a downstream app never has to know which
normalisation its backbone wants.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from transferkit.backbones.folding import folded_view
from transferkit.backbones.registry import BackboneSpec
from transferkit.errors import TransferkitError
from transferkit.recipes import HeadConfig
from transferkit.training.pooling import pool

_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], "float32")
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], "float32")
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], "float32")


@dataclass(frozen=True)
class Classifier:
    """The parts of a transfer model; every part shares its layers with ``model``."""

    model: keras.Model  # raw pixels -> class probabilities: what is saved and served
    base: keras.Model  # the (maybe truncated) pretrained backbone, headless
    head: keras.Model  # pooled features -> class probabilities
    extractor: keras.Model  # raw pixels -> pooled features (for cached-feature training)
    batchnorm_inference: bool = True  # the base runs with training=False (BatchNorm statistics frozen)

    def training_model(self) -> keras.Model:
        """``model`` as phases on images fit it: the same variables and function, faster steps.

        Where the base's BatchNorm runs in inference mode it is folded into the convolutions on
        the fly (:func:`~transferkit.backbones.folding.folded_view`); otherwise, or where nothing
        folds, ``model`` itself.
        """
        view = folded_view(self.model) if self.batchnorm_inference else None
        return view if view is not None else self.model


def pixel_affine(preprocessing: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Kernel (3x3) and bias (3,) with ``normalised = pixels @ kernel + bias``; None for identity."""
    if preprocessing == "tf":  # x / 127.5 - 1
        return np.eye(3, dtype="float32") / 127.5, -np.ones(3, "float32")
    if preprocessing == "torch":  # (x / 255 - mean) / std
        return np.diag(1.0 / (255.0 * _IMAGENET_STD)), -_IMAGENET_MEAN / _IMAGENET_STD
    if preprocessing == "caffe":  # RGB -> BGR, minus the ImageNet mean
        return np.eye(3, dtype="float32")[:, ::-1].copy(), -_CAFFE_MEAN_BGR
    if preprocessing == "none":
        return None
    raise TransferkitError(f"Unknown preprocessing {preprocessing!r}.")


def preprocessing_layer(preprocessing: str) -> keras.layers.Layer | None:
    """A frozen float32 ``Dense(3)`` applying the backbone's normalisation on the channel axis."""
    affine = pixel_affine(preprocessing)
    if affine is None:
        return None
    kernel, bias = affine
    layer = keras.layers.Dense(3, name="preprocess", trainable=False, dtype="float32")
    layer.build((None, 3))
    layer.set_weights([kernel.astype("float32"), bias.astype("float32")])
    return layer


def build_head(feature_dim: int, num_classes: int, config: HeadConfig) -> keras.Model:
    """Scale -> standardise -> dropout -> softmax on pooled features; all but dropout in float32 always.

    The features are standardised the way a linear probe standardises them: pooled activations
    differ in scale by orders of magnitude between cut points, and an unscaled softmax head then
    trains slowly (it ended 35 points below a probe on the same truncated features). The trainer
    sets the statistics from the training features before the first phase; they stay fixed.

    ``feature_scale`` multiplies by one power of two (1 or more) that brings small features to
    about unit variance (a ``Normalization`` run inverted: ``x * sqrt(variance)`` with mean 0), because
    ``feature_norm`` divides by ``max(std, 1e-7)``: features as small as a random base's
    (MobileNetV2's are ~1e-12, torchvision's own random init gives the same) would otherwise come
    out near zero and the head would barely learn. A power of two scales exactly, so features of
    ordinary size standardise to the same values as without it.
    """
    features = keras.Input((feature_dim,), name="features")
    x = keras.layers.Normalization(axis=None, invert=True, dtype="float32", name="feature_scale")(features)
    x = keras.layers.Normalization(axis=-1, dtype="float32", name="feature_norm")(x)
    x = keras.layers.Dropout(config.dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)
    return keras.Model(features, outputs, name="head")


def standardised(head: keras.Model, features: np.ndarray) -> np.ndarray:
    """``features`` as ``head``'s dense layer sees them: scaled and standardised (float32)."""
    scaled = head.get_layer("feature_scale")(np.asarray(features, "float32"))
    return keras.ops.convert_to_numpy(head.get_layer("feature_norm")(scaled))


def truncate(base: keras.Model, cut: str, cut_points: tuple[str, ...] = ()) -> keras.Model:
    """The part of ``base`` up to and including layer ``cut`` (a block end), sharing its weights.

    ``cut_points``: the backbone's block ends, named in the error when ``cut`` is not a layer
    (with "auto", which measures the cut)."""
    names = [layer.name for layer in base.layers]
    if cut not in names:
        if cut_points:
            raise TransferkitError(
                f"Cut point {cut!r} is not a layer of this backbone. Choose one of its block ends: "
                f'{", ".join(cut_points)}; or "auto" to measure it.'
            )
        raise TransferkitError(f"Cut point {cut!r} is not a layer of {base.name}.")
    return keras.Model(base.input, base.get_layer(cut).output, name=f"{base.name}_to_{cut}")


def build_classifier(
    spec: BackboneSpec,
    base: keras.Model,
    num_classes: int,
    head_config: HeadConfig,
    *,
    batchnorm_inference: bool = True,
) -> Classifier:
    """Wire preprocessing, base, pooling and head into one raw-pixel classifier.

    Args:
        spec: the backbone's registry entry (for its preprocessing).
        base: the headless, possibly truncated, backbone with its weights loaded.
        num_classes: output classes.
        head_config: the recipe's ``[head]`` table (its ``pooling``: see
            :mod:`transferkit.training.pooling`).
        batchnorm_inference: call the base with ``training=False``, as the Keras transfer
            guide does, so BatchNorm keeps its pretrained statistics even when layers are
            unfrozen. Recipes whose phases train BatchNorm pass False.
    """
    size = base.input_shape[1]
    inputs = keras.Input((size, size, 3), name="pixels")
    layer = preprocessing_layer(spec.preprocessing)
    x = layer(inputs) if layer is not None else inputs
    # The base runs in inference mode: BatchNorm must not update its statistics on small batches.
    x = base(x, training=False) if batchnorm_inference else base(x)
    pooled = pool(x, head_config.pooling)  # the same pooling the selector's probe scored
    head = build_head(int(pooled.shape[-1]), num_classes, head_config)
    model = keras.Model(inputs, head(pooled), name=f"{spec.name}_classifier")
    extractor = keras.Model(inputs, pooled, name=f"{spec.name}_features")
    return Classifier(
        model=model, base=base, head=head, extractor=extractor, batchnorm_inference=batchnorm_inference
    )
