"""The normal Keras path: ``keras.applications`` downloads ImageNet weights into ``~/.keras/models``.

Users with internet get Keras' own download and cache. Without it, the download fails and the
user gets one actionable error naming the exact file Keras wanted, where to put it, and the
offline alternatives. Keras' downloader (``urlretrieve``) has no timeout of its own, so a
black-holed network could hang it; while it runs, sockets get a default timeout
(:data:`DOWNLOAD_TIMEOUT_S` per connect/read, so slow but live downloads still finish). Where DNS
fails outright, as on the build machines, the error comes back in milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import socket
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import keras

from transferkit.backbones.registry import BackboneSpec
from transferkit.errors import TransferkitError

DOWNLOAD_TIMEOUT_S = 20.0
OFFLINE_BACKBONES = ("mobilenet_v2_torchvision", "mobilenet")
_STEMS = {
    "resnet50": "resnet50",
    "resnet101": "resnet101",
    "resnet152": "resnet152",
    "resnet50_v2": "resnet50v2",
    "inception_v3": "inception_v3",
    "inception_resnet_v2": "inception_resnet_v2",
    "vgg16": "vgg16",
    "vgg19": "vgg19",
}


def keras_models_dir() -> Path:
    """Where ``keras.utils.get_file`` caches application weights (``$KERAS_HOME`` or ``~/.keras``)."""
    from keras.src.backend import config

    home = Path(config.keras_home()).expanduser()
    if not os.access(home, os.W_OK):  # get_file's own fallback
        home = Path("/tmp/.keras")
    return home / "models"


def keras_weights_file(backbone: str, image_size: int, include_top: bool) -> str:
    """The file name ``keras.applications`` fetches for ``backbone`` (mirrors Keras' source).

    Args:
        backbone: a registered backbone whose ImageNet weights come from Keras (or ``mobilenet``).
        image_size: input size; MobileNets have one file per supported size.
        include_top: with the 1000-class top, or headless (``*_notop``).
    """
    if backbone == "mobilenet_v2":
        rows = image_size if image_size in (96, 128, 160, 192, 224) else 224
        return (
            f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}{'' if include_top else '_no_top'}.h5"
        )
    if backbone == "mobilenet":
        rows = image_size if image_size in (128, 160, 192, 224) else 224
        return f"mobilenet_1_0_{rows}_tf{'' if include_top else '_no_top'}.h5"
    if backbone == "efficientnet_b0":
        return "efficientnetb0" + (".h5" if include_top else "_notop.h5")
    return f"{_STEMS[backbone]}_weights_tf_dim_ordering_tf_kernels{'' if include_top else '_notop'}.h5"


class NotInKerasCache(Exception):
    """Raised instead of downloading when downloads are not allowed."""


class _DownloadFailed(Exception):
    def __init__(self, fname: str, origin: str, reason: Exception) -> None:
        super().__init__(fname)
        self.fname, self.origin, self.reason = fname, origin, reason


@contextlib.contextmanager
def _watched_downloads(allow_download: bool) -> Iterator[list[str]]:
    """Record the files Keras asks for; bound the download's socket waits, or forbid downloading."""
    from keras.src.utils import file_utils  # keras.applications call file_utils.get_file

    real_get_file, requested = file_utils.get_file, []

    def get_file(fname=None, origin=None, **kwargs):
        fname = fname or os.path.basename(urllib.parse.urlsplit(origin).path)
        requested.append(fname)
        if not allow_download and not (keras_models_dir() / fname).is_file():
            raise NotInKerasCache(fname)
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        try:
            return real_get_file(fname, origin, **kwargs)
        except Exception as error:
            raise _DownloadFailed(fname, origin, error) from error
        finally:
            socket.setdefaulttimeout(previous)

    with mock.patch.object(file_utils, "get_file", get_file):
        yield requested


def build_keras_imagenet(
    spec: BackboneSpec, image_size: int | None, include_top: bool, allow_download: bool = True
) -> tuple[keras.Model, str]:
    """Build ``spec`` with ``weights="imagenet"`` through Keras (download + ``~/.keras/models`` cache).

    Args:
        spec: a backbone whose builder is a ``keras.applications`` function.
        image_size: input size (default: the spec's).
        include_top: keep the 1000-class ImageNet top.
        allow_download: when False, raise :class:`NotInKerasCache` instead of downloading.

    Returns:
        The model and a one-line description of where its weights came from.
    """
    try:
        with _watched_downloads(allow_download) as requested:
            model = spec.build(image_size, weights="imagenet", include_top=include_top)
    except _DownloadFailed as failure:
        raise _offline_error(spec, failure) from None
    where = keras_models_dir() / requested[-1] if requested else "the Keras cache"
    return model, f"ImageNet weights: keras.applications {spec.builder.__name__} ({where})"


def _offline_error(spec: BackboneSpec, failure: _DownloadFailed) -> TransferkitError:
    reason = str(failure.reason).splitlines()[0] if str(failure.reason) else type(failure.reason).__name__
    return TransferkitError(
        f"Could not get ImageNet weights for {spec.name}: Keras needs the file {failure.fname} and could not "
        f"download it ({reason}). To fix, either: download {failure.origin} on a machine with internet and "
        f"place it at {keras_models_dir() / failure.fname} (running once with internet does this); or pass "
        f"--weights PATH to a .weights.h5/.h5 file for {spec.name}; or use a backbone whose ImageNet weights "
        f"resolve offline: {', '.join(OFFLINE_BACKBONES)}; or train from scratch with --weights random."
    )
