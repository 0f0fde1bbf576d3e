"""Writing a classifier as a SavedModel, a TFLite file (four quantizations) or an ONNX file, labels included.

Every format goes through a SavedModel first (Keras' public ``ExportArchive``), because both
the TFLite converter and ``tf2onnx`` read one reliably: converting the Keras model directly
with ``model.export(format="onnx")`` turns the head's Normalization constants into extra graph
inputs (Keras 3.15, tf2onnx 1.17), and the SavedModel route freezes them.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from transferkit.exporting.formats import (
    INPUT_NAME,
    ONNX_LABELS_KEY,
    OUTPUT_NAME,
    labels_path,
    require,
)
from transferkit.fileio import atomic_path, staging_dir, write_text
from transferkit.runtime.tf_logging import stderr_muted
from transferkit.training.device import float32_model

ONNX_OPSET = 17  # supported by onnxruntime >= 1.14 and every current tf2onnx
SERVE = "serve"  # the SavedModel signature that classifies; "labels" returns the class names


def write_saved_model(model: keras.Model, path: Path, class_names: Sequence[str]) -> Path:
    """Write a SavedModel with a ``serve`` signature (pixels -> probabilities) and a ``labels`` one.

    The class names are also in ``assets/labels.txt``. The folder is written next to ``path``
    and moved into place at the end, so a failed export never leaves half a SavedModel.

    Args:
        model: the run's classifier (raw 0-255 RGB float input, probabilities out).
        path: the SavedModel folder to create (replaced if it exists).
        class_names: output index -> class name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(path)
    try:
        _archive(model, class_names).write_out(str(staging / "model"), verbose=False)
        write_text(labels_path(staging / "model", "saved_model"), _lines(class_names))
        if path.exists():  # a SavedModel: output_path refuses any other folder
            shutil.rmtree(path)
        (staging / "model").rename(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):  # left by a killed export
        shutil.rmtree(stale, ignore_errors=True)
    return path


def _archive(model: keras.Model, class_names: Sequence[str]) -> keras.export.ExportArchive:
    model = float32_model(model)
    size = int(model.input_shape[1])
    archive = keras.export.ExportArchive()
    # Not `archive.track(model)`: it stores every weight a second time beside the endpoint's own
    # copies (keras-team/keras#23553, open in Keras 3.15: a 20.0 MB SavedModel for a 9.7 MB
    # model.keras, MobileNetV2). The endpoint tracks the variables it reads; the model holds nothing
    # else to track (no lookup tables).
    archive.add_endpoint(
        SERVE,
        model.__call__,
        input_signature=[tf.TensorSpec((None, size, size, 3), tf.float32, name=INPUT_NAME)],
    )
    names = list(class_names)
    archive.add_endpoint("labels", tf.function(lambda: {"labels": tf.constant(names)}), input_signature=[])
    return archive


def write_tflite(
    model: keras.Model,
    path: Path,
    class_names: Sequence[str],
    quantize: str,
    calibration: Callable[[], Iterator[np.ndarray]] | None = None,
) -> Path:
    """Write a TFLite flatbuffer and ``<name>.labels.txt`` next to it.

    Args:
        model: the run's classifier.
        path: the ``.tflite`` file.
        class_names: output index -> class name.
        quantize: "none" (float32), "float16" (float16 weights), "dynamic" (int8 weights, float
            activations) or "int8" (the base in integers: int8 weights and activations; the pooling and
            head in float32, and float32 input and output, so the file takes the same pixels as
            ``model.keras``: :func:`_int8_float_tail`).
        calibration: for "int8": yields single float32 images ``[1, size, size, 3]`` (training
            images) the converter measures activation ranges on.
    """
    ((_, flatbuffer),) = tflite_flatbuffers(model, class_names, (quantize,), calibration)
    return save_tflite(flatbuffer, path, class_names)


def tflite_flatbuffers(
    model: keras.Model,
    class_names: Sequence[str],
    quantizations: Sequence[str],
    calibration: Callable[[], Iterator[np.ndarray]] | None = None,
) -> Iterator[tuple[str, bytes]]:
    """Yield ``(quantize, flatbuffer)`` for each quantization in turn, from one SavedModel.

    A generator, so a caller looking for the first acceptable one converts no further.
    """
    with tempfile.TemporaryDirectory() as scratch:
        saved = write_saved_model(model, Path(scratch) / "saved_model", class_names)
        for quantize in quantizations:
            converter = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=[SERVE])
            _quantize(converter, quantize, calibration)
            with stderr_muted():  # the converter prints its quantization settings there
                if quantize == "int8":
                    flatbuffer = _int8_float_tail(converter, calibration)
                else:
                    flatbuffer = converter.convert()
            yield quantize, flatbuffer


# The classifier's layers after the base (:func:`transferkit.training.model.build_classifier`): the
# pooling and the head. In the SavedModel's graph their ops are named ``.../pool_1/...`` and
# ``.../head_1/...`` (a base's own layers, such as ``block1_pool``, are not).
_FLOAT_TAIL = re.compile(r"/(pool|head)(_\d+)?/")


def _int8_float_tail(converter, calibration) -> bytes:
    """Full-integer quantization of the base, with the pooling and the head left in float32.

    Integer pooling and head statistics broke truncated models: the mean-absolute-deviation pooling
    subtracts a channel's mean from its map, and the head scales each feature by one over its
    spread, so a step of the int8 grid became several standard deviations of a feature (the
    quantization debugger's error per step: 27 at the subtraction, 33 at the standardisation, 55
    at the logits, on a truncated typefaces model; about 0.3 everywhere in its base). Kept in
    float32 (tens of kB: the pooled features and one dense layer), truncated models at 96 px, test
    accuracy float32 / int8 before / int8 now: science tiles 1.000 / 0.400 / 1.000 (n = 50),
    playing cards 0.841 / 0.602 / 0.795 (88), card ranks 0.923 / 0.399 / 0.899 (208), typefaces
    0.656 / 0.149 / 0.364 (154: there the base's own integer error is too much, and the parity
    check says so). A frozen base (Animal-MNIST) and a fine-tuned one (emoji) scored the same as
    before. The split is made by TensorFlow Lite's quantization debugger (``denylisted_nodes``).
    """
    experimental = tf.lite.experimental
    if not hasattr(experimental, "QuantizationDebugger"):  # a TensorFlow without it: all integer
        return converter.convert()
    options = experimental.QuantizationDebugOptions()
    with warnings.catch_warnings():  # its interpreter: "tf.lite.Interpreter is deprecated"
        warnings.simplefilter("ignore")
        debugger = experimental.QuantizationDebugger(
            converter=converter,
            debug_dataset=lambda: ([image] for image in calibration()),  # never run: no statistics
            debug_options=options,
        )
        calibrated = tf.lite.Interpreter(model_content=debugger.calibrated_model)
    names = [tensor["name"] for tensor in calibrated.get_tensor_details()]
    options.denylisted_nodes = sorted({name for name in names if _FLOAT_TAIL.search(name)})
    return debugger.get_nondebug_quantized_model()


def save_tflite(flatbuffer: bytes, path: Path, class_names: Sequence[str]) -> Path:
    """Write a converted flatbuffer to ``path`` (atomically) and ``<name>.labels.txt`` next to it."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(flatbuffer)
    write_text(labels_path(path, "tflite"), _lines(class_names))
    return Path(path)


def _quantize(converter, quantize: str, calibration) -> None:
    if quantize == "none":
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        if calibration is None:
            raise ValueError("int8 quantization needs calibration images.")
        converter.representative_dataset = lambda: ([image] for image in calibration())
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.float32
        converter.inference_output_type = tf.float32


def write_onnx(model: keras.Model, path: Path, class_names: Sequence[str]) -> Path:
    """Write an ONNX file (input ``pixels``, output ``probabilities``, NHWC like ``model.keras``).

    The class names are in the model's ``metadata_props`` under ``labels`` (a JSON list) and
    in ``<name>.labels.txt`` next to it.
    """
    tf2onnx = require("tf2onnx", "ONNX export")
    onnx = require("onnx", "ONNX export")
    from tf2onnx import tf_loader

    with tempfile.TemporaryDirectory() as scratch, _quiet("tf2onnx", "tensorflow"):
        saved = write_saved_model(model, Path(scratch) / "saved_model", class_names)
        graph_def, inputs, outputs = tf_loader.from_saved_model(str(saved), None, None, signatures=[SERVE])
        proto, _ = tf2onnx.convert.from_graph_def(
            graph_def, input_names=inputs, output_names=outputs, opset=ONNX_OPSET
        )
    _rename_value(proto.graph, proto.graph.input[0].name, INPUT_NAME)
    _rename_value(proto.graph, proto.graph.output[0].name, OUTPUT_NAME)
    for value in (proto.graph.input[0], proto.graph.output[0]):  # tf2onnx names it e.g. "unk__1056"
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_LABELS_KEY, json.dumps(list(class_names))
    onnx.checker.check_model(proto)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    write_text(labels_path(path, "onnx"), _lines(class_names))
    return Path(path)


def _rename_value(graph, old: str, new: str) -> None:
    """Rename a graph input or output (``pixels:0`` -> ``pixels``) wherever nodes refer to it."""
    for value in (*graph.input, *graph.output):
        if value.name == old:
            value.name = new
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Raise the named loggers to ERROR for a block (converter chatter), then restore their levels."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _lines(class_names: Sequence[str]) -> str:
    return "".join(f"{name}\n" for name in class_names)
