"""Running an exported file the way a downstream app would: SavedModel, LiteRT/TFLite, onnxruntime.

Each runner takes float32 raw 0-255 RGB images ``[N, size, size, 3]`` and returns probabilities
``[N, classes]``, so the parity check can treat every format alike.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from transferkit.exporting.formats import ONNX_LABELS_KEY, require
from transferkit.runtime.tf_logging import stderr_muted

Runner = Callable[[np.ndarray], np.ndarray]
BATCH = 32


def open_runner(path: Path, fmt: str) -> Runner:
    """Load an exported model and return a function from images to probabilities.

    Args:
        path: the exported file (or SavedModel folder).
        fmt: its format, one of :data:`transferkit.exporting.formats.FORMATS`.
    """
    openers = {"saved_model": _saved_model, "tflite": _tflite, "onnx": _onnx}
    return openers[fmt](Path(path))


def _batched(run_batch: Runner) -> Runner:
    def run(images: np.ndarray) -> np.ndarray:
        parts = [run_batch(images[i : i + BATCH]) for i in range(0, len(images), BATCH)]
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

    return run


def keras_runner(model) -> Runner:
    """``model.keras`` as a runner: one traced function for every batch size (no retracing)."""
    import tensorflow as tf

    size = int(model.input_shape[1])
    spec = tf.TensorSpec((None, size, size, 3), tf.float32)
    call = tf.function(lambda images: model(images, training=False), input_signature=[spec])
    return _batched(lambda batch: call(tf.constant(batch, tf.float32)).numpy())


def _saved_model(path: Path) -> Runner:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))  # the closure keeps it alive: its functions need its variables
    return _batched(lambda batch: loaded.serve(tf.constant(batch, tf.float32)).numpy())


def tflite_interpreter(path: Path):
    """A LiteRT interpreter (``ai-edge-litert``) when installed, else TensorFlow's ``tf.lite`` one."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter  # noqa: N806 - the class, chosen at run time
    with stderr_muted():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
        interpreter = Interpreter(model_path=str(path))
        interpreter.allocate_tensors()
    return interpreter


def _tflite(path: Path) -> Runner:
    interpreter = tflite_interpreter(path)
    (source,) = interpreter.get_input_details()
    (target,) = interpreter.get_output_details()

    def run(images: np.ndarray) -> np.ndarray:
        rows = []
        for image in images:  # the converted graph has a batch of one
            interpreter.set_tensor(source["index"], image[None].astype(source["dtype"]))
            interpreter.invoke()
            rows.append(interpreter.get_tensor(target["index"])[0].astype(np.float32))
        return np.stack(rows) if rows else np.zeros((0, 0), np.float32)

    return run


def _onnx(path: Path) -> Runner:
    ort = require("onnxruntime", "Running an ONNX export")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return _batched(lambda batch: session.run(None, {name: batch.astype(np.float32)})[0])


def onnx_labels(path: Path) -> list[str]:
    """The class names stored in an ONNX file's metadata (``metadata_props["labels"]``)."""
    ort = require("onnxruntime", "Reading an ONNX export")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return json.loads(session.get_modelmeta().custom_metadata_map[ONNX_LABELS_KEY])
