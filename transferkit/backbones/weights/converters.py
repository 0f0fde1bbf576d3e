"""Convert foreign ImageNet checkpoints (torchvision ``.pth``, TF1 frozen graphs) into Keras weights.

Each :class:`Converter` maps every Keras layer that has weights to the source's name for it and
says how each tensor is laid out. :func:`assign` checks that every expected tensor is present
with the right shape (reporting all that are missing) before it touches the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from transferkit.backbones.registry import BACKBONES, BackboneSpec, get_backbone
from transferkit.backbones.weights.torch_pickle import load_torch_state_dict
from transferkit.errors import TransferkitError, choices_error, setting
from transferkit.fileio import atomic_path

Transform = Callable[[np.ndarray], np.ndarray]
Keys = list[tuple[str, Transform]]


def _same(array: np.ndarray) -> np.ndarray:
    return array


def load_tf_frozen_graph_constants(path: str | Path) -> dict[str, np.ndarray]:
    """Read the ``Const`` nodes of a TF1 frozen GraphDef (``.pb``) as numpy arrays.

    Args:
        path: a binary ``GraphDef`` as written by ``freeze_graph``.

    Returns:
        Node name -> value, e.g. ``"MobilenetV1/Conv2d_0/weights"`` -> a ``(3, 3, 3, 32)`` array.
    """
    import tensorflow as tf

    graph = tf.compat.v1.GraphDef()
    try:
        graph.ParseFromString(Path(path).read_bytes())
    except Exception as error:  # protobuf raises its own DecodeError
        raise TransferkitError(
            f"Could not read {path} as a TensorFlow frozen graph (.pb GraphDef): {error}. "
            "Expected a file written by freeze_graph / tf.io.write_graph(as_text=False)."
        ) from error
    return {
        node.name: tf.make_ndarray(node.attr["value"].tensor) for node in graph.node if node.op == "Const"
    }


def _torch_keys(layer: keras.layers.Layer, prefix: str) -> Keys:
    """Torch tensor names and layout changes for one Keras layer."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return [(f"{prefix}.{part}", _same) for part in ("weight", "bias", "running_mean", "running_var")]
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        keys = [(f"{prefix}.weight", lambda w: w.transpose(2, 3, 0, 1))]  # (C,1,kh,kw) -> (kh,kw,C,1)
    elif isinstance(layer, keras.layers.Conv2D):
        keys = [(f"{prefix}.weight", lambda w: w.transpose(2, 3, 1, 0))]  # (out,in,kh,kw) -> (kh,kw,in,out)
    else:
        keys = [(f"{prefix}.weight", np.transpose)]  # Dense: (out, in) -> (in, out)
    if len(layer.weights) == 2:
        keys.append((f"{prefix}.bias", _same))
    return keys


def _tf_slim_keys(layer: keras.layers.Layer, prefix: str) -> Keys:
    """TF-slim tensor names for one Keras layer; TF layouts already match Keras."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return [(f"{prefix}/{part}", _same) for part in ("gamma", "beta", "moving_mean", "moving_variance")]
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return [(f"{prefix}/depthwise_weights", _same)]
    if layer.name == "conv_preds":  # 1001 logits, index 0 = background: drop it
        return [(f"{prefix}/weights", lambda w: w[..., 1:]), (f"{prefix}/biases", lambda b: b[1:])]
    return [(f"{prefix}/weights", _same)]


def _mobilenet_v2_torchvision_names() -> dict[str, str]:
    names = {
        "Conv1": "features.0.0",
        "bn_Conv1": "features.0.1",
        "expanded_conv_depthwise": "features.1.conv.0.0",
        "expanded_conv_depthwise_BN": "features.1.conv.0.1",
        "expanded_conv_project": "features.1.conv.1",
        "expanded_conv_project_BN": "features.1.conv.2",
        "Conv_1": "features.18.0",
        "Conv_1_bn": "features.18.1",
        "predictions": "classifier.1",
    }
    parts = ("expand", "expand_BN", "depthwise", "depthwise_BN", "project", "project_BN")
    torch_parts = ("conv.0.0", "conv.0.1", "conv.1.0", "conv.1.1", "conv.2", "conv.3")
    for i in range(2, 18):
        names.update(
            {f"block_{i - 1}_{p}": f"features.{i}.{t}" for p, t in zip(parts, torch_parts, strict=True)}
        )
    return names


def _mobilenet_v1_tf_slim_names() -> dict[str, str]:
    names = {
        "conv1": "MobilenetV1/Conv2d_0",
        "conv1_bn": "MobilenetV1/Conv2d_0/BatchNorm",
        "conv_preds": "MobilenetV1/Logits/Conv2d_1c_1x1",
    }
    for i in range(1, 14):
        for kind, slim in (("dw", "depthwise"), ("pw", "pointwise")):
            names[f"conv_{kind}_{i}"] = f"MobilenetV1/Conv2d_{i}_{slim}"
            names[f"conv_{kind}_{i}_bn"] = f"MobilenetV1/Conv2d_{i}_{slim}/BatchNorm"
    return names


@dataclass(frozen=True)
class Converter:
    """How to turn one framework's checkpoint into one backbone's Keras weights."""

    name: str  # what a spec's PackagedFile.converter names
    suffixes: tuple[str, ...]  # accepted source file suffixes
    source: str  # what the source file must be, for messages
    read: Callable[[Path], dict[str, np.ndarray]]
    names: Callable[[], dict[str, str]]
    keys: Callable[[keras.layers.Layer, str], Keys]


CONVERTERS: dict[str, Converter] = {
    c.name: c
    for c in (
        Converter(
            "torchvision_mobilenet_v2", (".pth", ".pt"), "a torchvision MobileNetV2 state dict (.pth)",
            load_torch_state_dict, _mobilenet_v2_torchvision_names, _torch_keys,
        ),
        Converter(
            "tf_slim_mobilenet_v1", (".pb",),
            "a TF frozen graph (.pb) of TF-slim MobileNet v1 1.0 (MobilenetV1/...)",
            load_tf_frozen_graph_constants, _mobilenet_v1_tf_slim_names, _tf_slim_keys,
        ),
    )
}  # fmt: skip


def _gather(model: keras.Model, converter: Converter, tensors: dict[str, np.ndarray]):
    """Collect each layer's converted arrays; list every missing tensor and shape mismatch."""
    names, values, problems = converter.names(), {}, []
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in names:
            problems.append(f"no source name for layer {layer.name}")
            continue
        keys = converter.keys(layer, names[layer.name])
        missing = [key for key, _ in keys if key not in tensors]
        problems += [f"missing {key}" for key in missing]
        if missing:
            continue
        arrays = [transform(tensors[key]) for key, transform in keys]
        expected = [tuple(w.shape) for w in layer.weights]
        if [a.shape for a in arrays] != expected:
            problems.append(f"{layer.name}: got {[a.shape for a in arrays]}, expected {expected}")
        values[layer.name] = arrays
    return values, problems


def assign(model: keras.Model, spec: BackboneSpec, tensors: dict[str, np.ndarray], origin: str) -> None:
    """Set every weight of ``model`` (built from ``spec``) from ``tensors``; raise listing what is
    missing or mis-shaped."""
    converter = converter_for(spec)
    values, problems = _gather(model, converter, tensors)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... ({len(problems) - 5} more)" if len(problems) > 5 else "")
        raise TransferkitError(
            f"{origin} does not hold {spec.name} weights: {len(problems)} problem(s): {shown}. "
            f"Expected {converter.source}."
        )
    for name, arrays in values.items():
        model.get_layer(name).set_weights(arrays)


def converter_for(spec: BackboneSpec) -> Converter:
    """The converter named by ``spec``'s packaged ImageNet source; the error lists convertible backbones."""
    if spec.imagenet is None or spec.imagenet.packaged is None:
        convertible = [s.name for s in BACKBONES.values() if s.imagenet and s.imagenet.packaged]
        raise choices_error("backbone to import weights for", spec.name, convertible)
    return CONVERTERS[spec.imagenet.packaged.converter]


def convert(spec: BackboneSpec, source_file: Path) -> keras.Model:
    """Build ``spec``'s network with its 1000-class top and fill it from ``source_file``."""
    model = spec.build(include_top=True, classes=1000)
    assign(model, spec, converter_for(spec).read(source_file), str(source_file))
    return model


def import_weights(source_file: str | Path, backbone: str, out: str | Path | None = None) -> Path:
    """Convert a foreign checkpoint into a Keras ``.weights.h5`` for ``backbone`` (with its ImageNet top).

    Backs ``transferkit weights import FILE --backbone NAME``. Use the result with
    ``--weights PATH``; it also loads into headless and truncated bases.

    Args:
        source_file: a torchvision ``.pth`` (legacy or zip format) for ``mobilenet_v2_torchvision``,
            or a TF frozen graph ``.pb`` of TF-slim MobileNet v1 for ``mobilenet``.
        backbone: the registered backbone the weights are for.
        out: where to write; must end in ``.weights.h5``. Defaults to
            ``<source stem>.<backbone>.weights.h5`` next to the source.

    Returns:
        The path written (atomically).

    Example:
        >>> import_weights("w/mobilenet_v2-b0353104.pth", "mobilenet_v2_torchvision")  # doctest: +SKIP
        PosixPath('w/mobilenet_v2-b0353104.mobilenet_v2_torchvision.weights.h5')
    """
    spec = get_backbone(backbone)  # unknown names get the registry's error
    converter, source_file = converter_for(spec), Path(source_file)
    if source_file.suffix.lower() not in converter.suffixes:
        raise TransferkitError(
            f"{backbone} imports from {converter.source}, got {source_file.name!r}. "
            f"Pass a file ending in {' or '.join(converter.suffixes)}."
        )
    if not source_file.is_file():
        raise TransferkitError(f"Weights file {source_file} does not exist. Check the path.")
    out = Path(out) if out is not None else source_file.with_name(f"{source_file.stem}.{backbone}.weights.h5")
    if not out.name.endswith(".weights.h5"):
        raise TransferkitError(f"Output {out} must end in .weights.h5 (Keras' weights format).")
    model = convert(spec, source_file)
    try:
        with atomic_path(out, suffix=".weights.h5") as tmp:
            model.save_weights(tmp)
    except PermissionError as error:
        raise TransferkitError(
            f"Cannot write {out} ({error.strerror}). Choose another place with {setting('out')}."
        ) from None
    return out
