"""The export vocabulary: formats, TFLite quantizations, file names, and the optional packages they need.

Nothing here imports TensorFlow or a converter, so the CLI can offer the choices cheaply.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

from transferkit.errors import TransferkitError, choices_error, extra_install, setting
from transferkit.fileio import require_writable_folder

FORMATS = ("saved_model", "tflite", "onnx")
FORMAT_NAMES = {"saved_model": "a SavedModel", "tflite": "a TFLite", "onnx": "an ONNX"}  # "... file"
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")  # TFLite only; int8: integer base, float head
AUTO = "auto"  # the smallest of AUTO_ORDER that keeps accuracy within --max-drop
AUTO_ORDER = ("int8", "dynamic", "float16", "none")  # smallest (and fastest on integer hardware) first
QUANTIZE_CHOICES = (*QUANTIZATIONS, AUTO)
DEFAULT_MAX_DROP = 0.01  # an export may lose at most one accuracy point on the held-out images
CALIBRATION_IMAGES = 100  # training images the int8 converter calibrates its ranges on
EXPORT_FOLDER = "export"  # inside the run folder, unless --out says otherwise
INPUT_NAME = "pixels"  # raw 0-255 RGB, float32 [batch, size, size, 3], as model.keras takes
OUTPUT_NAME = "probabilities"
ONNX_LABELS_KEY = "labels"  # ONNX metadata_props key holding the class names as a JSON list
EXTRAS_HINT = extra_install("export")


def default_path(run_dir: Path, fmt: str, quantize: str) -> Path:
    """Where an export goes unless told: ``RUN_DIR/export/model[_QUANTIZE].tflite`` and so on.

    ``auto`` is named after the quantization it chose; before choosing, its folder is that of the others.
    """
    folder = Path(run_dir) / EXPORT_FOLDER
    if fmt == "saved_model":
        return folder / "saved_model"
    suffix = "" if quantize in ("none", AUTO) else f"_{quantize}"
    return folder / f"model{suffix}.{fmt}"


def output_path(out: str | Path | None, run_dir: Path, fmt: str, quantize: str) -> Path:
    """Where the export goes, checked before any work: ``out`` (default :func:`default_path`).

    A TFLite or ONNX ``out`` that is a folder gets the default file name inside it, as ``cp`` does;
    so does a new path written as one (ending in ``/``) or without a file extension (``exports``):
    a model file named without its ``.tflite`` or ``.onnx`` is never what was meant.
    A SavedModel replaces its folder, so ``out`` must be new, empty or an earlier SavedModel: a
    folder of other files (a parent such as ``./serving``, the run folder itself) is refused,
    never emptied.

    Raises:
        TransferkitError: a folder for ``out`` that cannot be created or written; a SavedModel
            ``out`` that is a file, or a folder of other files.
    """
    default = default_path(run_dir, fmt, quantize)
    if out is None:
        return default
    path = Path(out).expanduser()
    if fmt != "saved_model":
        as_folder = path.is_dir() or str(out).endswith(("/", os.sep)) or not path.suffix
        path = path / default.name if as_folder else path
        if path.suffix.lower() != default.suffix:  # ONNX bytes in a .tflite file open nowhere
            raise TransferkitError(
                f"{setting('out', out)} ends in {path.suffix!r}, but {FORMAT_NAMES[fmt]} file is "
                f"{default.suffix!r}: "
                f"name it e.g. {path.with_suffix(default.suffix)}, or give a folder."
            )
        require_writable_folder(path.parent, setting("out"))
        return path
    require_writable_folder(path.parent, setting("out"))
    if path.is_file():
        raise TransferkitError(
            f"{setting('out', out)} is a file; a SavedModel is a folder. Give a new folder's path."
        )
    if path.is_dir() and any(path.iterdir()) and not (path / "saved_model.pb").is_file():
        raise TransferkitError(
            f"{setting('out', out)} is a folder of other files, and a SavedModel export replaces the folder "
            f"it writes. Give a new or empty folder, e.g. {path / default.name}."
        )
    return path


def labels_path(path: Path, fmt: str) -> Path:
    """The labels file that travels with an export: inside a SavedModel, else ``<file name>.labels.txt``
    (``model_int8.tflite.labels.txt``), so a TFLite and an ONNX file in one folder keep their own."""
    if fmt == "saved_model":
        return Path(path) / "assets" / "labels.txt"
    return Path(path).with_name(f"{Path(path).name}.labels.txt")


def record_path(path: Path) -> Path:
    """The parity record written next to an export: ``<file or folder name>.export.json``."""
    return Path(path).with_name(f"{Path(path).name}.export.json")


def require(module: str, purpose: str) -> ModuleType:
    """Import an optional export dependency, or say how to install it.

    Args:
        module: the import name, e.g. ``"tf2onnx"``.
        purpose: what needs it, e.g. ``"ONNX export"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise TransferkitError(
            f"{purpose} needs the package {module!r}, which is not installed ({error}). "
            f"Install the export extras: {EXTRAS_HINT}"
        ) from None


def check_choices(fmt: str, quantize: str, max_drop: float | None = DEFAULT_MAX_DROP) -> None:
    """Reject an unknown format or quantization, quantizing anything but TFLite, and auto without a bar."""
    if fmt not in FORMATS:
        raise choices_error("export format", fmt, FORMATS)
    if quantize not in QUANTIZE_CHOICES:
        raise choices_error("quantization", quantize, QUANTIZE_CHOICES)
    if quantize != "none" and fmt != "tflite":
        raise TransferkitError(
            f"{setting('quantize', quantize)} applies to {setting('format', 'tflite')} only; received "
            f"{setting('format', fmt)}. Drop {setting('quantize')}, or export TFLite."
        )
    if quantize == AUTO and max_drop is None:
        raise TransferkitError(
            f"{setting('quantize', 'auto')} keeps the smallest file within {setting('max_drop')}; it needs "
            "that bar."
        )
    number = isinstance(max_drop, int | float) and not isinstance(max_drop, bool)
    if max_drop is not None and not (number and 0 <= max_drop <= 1):
        raise TransferkitError(
            f"{setting('max_drop')} is a share of accuracy in [0, 1], 0.01 = one point; got {max_drop!r}."
        )
