"""``transferkit export``: a run's model as SavedModel, TFLite or ONNX, checked on held-out images.

Example:
    >>> import transferkit
    >>> result = transferkit.export("runs/pets", "tflite", quantize="int8")  # doctest: +SKIP
    >>> result.parity.top1_agreement, result.file_bytes  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from transferkit import recipes as recipe_io
from transferkit.data.loading import DataSplits, ImageSet, labelled_images, load_data, make_dataset
from transferkit.data.scan import nfc
from transferkit.errors import QualityGateError, TransferkitError, setting
from transferkit.exporting import converters
from transferkit.exporting.formats import (
    AUTO,
    AUTO_ORDER,
    CALIBRATION_IMAGES,
    DEFAULT_MAX_DROP,
    check_choices,
    labels_path,
    output_path,
    record_path,
)
from transferkit.exporting.parity import Parity, check_parity, compare_predictions
from transferkit.exporting.runtimes import keras_runner, open_runner
from transferkit.fileio import write_json
from transferkit.reporting.metrics import SIGNIFICANCE
from transferkit.reporting.runfolder import SavedRun, load_run
from transferkit.runtime.tf_logging import tensorflow_warnings_muted


@dataclass(frozen=True)
class HeldOut:
    """The images the parity check runs on, and where they came from."""

    images: np.ndarray
    labels: np.ndarray
    split: str  # "test" | "validation" (the run's) or "data" (--data)
    source: str
    note: str = ""

    def describe(self) -> dict[str, object]:
        return {"split": self.split, "source": self.source, "num_images": len(self.labels), "note": self.note}


@dataclass(frozen=True)
class ExportResult:
    """What ``export`` wrote and how it compares with ``model.keras`` (also in ``<name>.export.json``).

    ``white_level``: the run's, for high-bit-depth inputs (None: it had none); an app scales
    such pixels by ``255 / white_level`` before the model, as ``transferkit predict`` does.
    ``chosen``: with ``quantize="auto"``, how the quantization was chosen: the images it was
    chosen on and each quantization tried, smallest first (None otherwise).
    """

    path: Path
    format: str
    quantize: str
    labels_path: Path
    file_bytes: int
    keras_file_bytes: int
    held_out: dict
    parity: Parity
    max_drop: float | None
    passed: bool
    white_level: int | None = None
    chosen: dict | None = None

    def to_dict(self) -> dict[str, object]:
        """Plain JSON types, as written to the record."""
        data = dataclasses.asdict(self)
        data.update(path=str(self.path), labels_path=str(self.labels_path), parity=self.parity.to_dict())
        data["versions"] = _versions()
        return data

    def summary(self) -> str:
        """Three lines: the file, the parity figures, the verdict."""
        ratio = self.keras_file_bytes / max(1, self.file_bytes)
        compared = f"{ratio:.1f}x smaller" if ratio >= 1 else f"{1 / ratio:.1f}x larger"
        held = self.held_out
        if self.max_drop is None:  # recorded, not judged
            verdict = "Parity recorded (no bar to pass)"
        else:
            bar = setting("max_drop", self.max_drop)
            verdict = f"Parity check {'passed' if self.passed else 'FAILED'} ({bar})"
        return self._choice_line() + (
            f"Wrote {self.path} ({_mb(self.file_bytes)}; model.keras {_mb(self.keras_file_bytes)}, "
            f"{compared}), labels in {self.labels_path}\n"
            f"Parity on the {held['split']} images: {self.parity.summary()}\n"
            f"{verdict}; record: {record_path(self.path)}"
        )

    def _choice_line(self) -> str:
        if self.chosen is None:
            return ""
        on = self.chosen["on"]
        drops = ", ".join(f"{t['quantize']} {100 * t['accuracy_drop']:.1f}" for t in self.chosen["tried"])
        return (
            f"Chose {self.quantize}: the smallest within {setting('max_drop', self.max_drop)} on the "
            f"{on['num_images']} {on['split']} images (accuracy drop in points: {drops})\n"
        )


@tensorflow_warnings_muted
def export(
    run_dir: str | Path,
    format: str,
    *,
    quantize: str = "none",
    out: str | Path | None = None,
    max_drop: float | None = DEFAULT_MAX_DROP,
    data: str | Path | None = None,
    verbose: int = 1,
) -> ExportResult:
    """Export a finished run's model and check it against ``model.keras`` on held-out images.

    The exported model takes raw 0-255 RGB float32 pixels ``[N, size, size, 3]`` like
    ``model.keras`` and returns probabilities (high-bit-depth images scaled by the run's white level,
    in the record); a ``.tflite`` file takes one image as converted (``[1, size, size, 3]``: resize
    its input for a batch). The class names travel with it: a SavedModel has
    a ``labels`` signature and ``assets/labels.txt``; TFLite and ONNX files get
    ``<name>.labels.txt`` next to them, and ONNX also ``metadata_props["labels"]`` (JSON).

    Args:
        run_dir: the run folder ``fit`` wrote.
        format: "saved_model" | "tflite" | "onnx".
        quantize: TFLite only: "none" | "float16" | "dynamic" | "int8" (an integer base, the
            pooling and head in float, a float interface; calibrated on up to 100 of the run's
            training images) | "auto" (the first of int8, dynamic, float16 and none that loses at
            most ``max_drop`` on the run's validation split; the parity figures are then on the
            test split as usual).
        out: the file (or SavedModel folder) to write; a folder for a TFLite or ONNX file puts it
            there under its default name; default ``RUN_DIR/export/...``
            (:func:`~transferkit.exporting.formats.output_path`).
        max_drop: the largest accuracy loss allowed (0.01 = one point); None records without
            judging.
        data: labelled images to check on (their ``test/`` split if present, else all of them);
            default: the run's own test split (re-derived with its recipe and seed), else its
            validation split.
        verbose: 1 prints the summary, 0 prints nothing.

    Returns:
        An :class:`ExportResult`; the same figures are in ``<name>.export.json`` next to the file.

    Raises:
        QualityGateError: after writing the file and its record, when the export's accuracy
            drops by more than ``max_drop``.
    """
    format, quantize = (str.lower(v) if isinstance(v, str) else v for v in (format, quantize))  # "TFLite"
    check_choices(format, quantize, max_drop)
    # Before any work, so that a refusal is instant (auto's folder is that of every quantization).
    path = output_path(out, Path(run_dir), format, quantize)
    run = load_run(run_dir, as_trained=True)  # the parity check compares with the model as trained
    needs_training_images = quantize in ("int8", AUTO)  # calibration
    splits = _run_splits(run) if data is None or needs_training_images else None
    held_out = _data_held_out(data, run) if data else _run_held_out(run, splits)
    chosen = None
    if quantize == AUTO:
        quantize, flatbuffer, chosen = _smallest_within(run, splits, held_out, max_drop, verbose)
        path = output_path(out, Path(run_dir), format, quantize)
        converters.save_tflite(flatbuffer, path, run.class_names)
    else:
        _write(run, path, format, quantize, splits)
    parity = check_parity(
        keras_runner(run.model), open_runner(path, format), held_out.images, held_out.labels
    )
    passed = max_drop is None or parity.accuracy_drop <= max_drop
    result = ExportResult(
        path=path,
        format=format,
        quantize=quantize,
        labels_path=labels_path(path, format),
        file_bytes=_size(path),
        keras_file_bytes=_size(run.run_dir / "model.keras"),
        held_out=held_out.describe(),
        parity=parity,
        max_drop=max_drop,
        passed=passed,
        white_level=run.white_level,
        chosen=chosen,
    )
    write_json(record_path(path), result.to_dict())
    if verbose:
        print(result.summary(), flush=True)
    if not passed:
        raise QualityGateError(_gate_message(result))
    return result


def _gate_message(result: ExportResult) -> str:
    parity, name = result.parity, record_path(result.path).name
    what = f"The {result.format} export" + ("" if result.quantize == "none" else f" ({result.quantize})")
    if result.chosen is not None:
        what += f", chosen by {setting('quantize', 'auto')} on the {result.chosen['on']['split']} images,"
    quantize, larger = setting("quantize"), f"a larger {setting('max_drop')}"
    if result.quantize == "none":
        advice = larger
    elif result.chosen is None:
        advice = (
            f"{setting('quantize', 'auto')} (the smallest within the bar), a milder {quantize} or {larger}"
        )
    else:
        advice = f"a milder {quantize} or {larger}"
    chance = parity.drop_p_value
    chance_only = "a drop this size can be chance; more test images would tell"
    verdict = chance_only if chance >= SIGNIFICANCE else "a real loss"
    evidence = (
        f"{parity.only_keras_right} images right only before, {parity.only_export_right} only after: "
        f"McNemar p = {chance:.2g}, {verdict}"
    )
    return (
        f"{what} loses {100 * parity.accuracy_drop:.1f} accuracy points on {parity.num_images} held-out "
        f"images ({parity.keras_accuracy:.3f} -> {parity.export_accuracy:.3f}; {evidence}), more than "
        f"{setting('max_drop', result.max_drop)}. The file and {name} are kept; try {advice}."
    )


def _write(run: SavedRun, path: Path, fmt: str, quantize: str, splits: DataSplits | None) -> None:
    names = run.class_names
    if fmt == "saved_model":
        converters.write_saved_model(run.model, path, names)
    elif fmt == "onnx":
        converters.write_onnx(run.model, path, names)
    else:
        calibration = _calibration(splits.train, run.image_size, _seed(run)) if quantize == "int8" else None
        converters.write_tflite(run.model, path, names, quantize, calibration)


def _smallest_within(
    run: SavedRun, splits: DataSplits, held_out: HeldOut, max_drop: float, verbose: int
) -> tuple[str, bytes, dict]:
    """The first of :data:`AUTO_ORDER` whose TFLite file loses at most ``max_drop`` accuracy.

    It is chosen on the run's validation split, so that the parity figures reported afterwards, on
    the test split, come from images the choice never saw (the held-out images themselves only
    when the run has no validation images). Float32 is the last resort, kept whatever it loses.

    Returns:
        The quantization, its flatbuffer, and the record of the choice.
    """
    if held_out.split == "validation" or not len(splits.val):  # already decoded, or nothing else to use
        on = dataclasses.replace(held_out, note="the same images the parity figures are on")
    else:
        on = _held_out(splits.val, run.image_size, "validation", run.info["data"], "")
    keras_probabilities = keras_runner(run.model)(on.images)
    calibration = _calibration(splits.train, run.image_size, _seed(run))
    tried: list[dict] = []
    if verbose:
        print(f"Choosing the quantization on {len(on.labels)} {on.split} images, smallest first", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        flatbuffers = converters.tflite_flatbuffers(run.model, run.class_names, AUTO_ORDER, calibration)
        for quantize, flatbuffer in flatbuffers:
            candidate = Path(scratch) / f"{quantize}.tflite"
            candidate.write_bytes(flatbuffer)
            parity = compare_predictions(
                keras_probabilities, open_runner(candidate, "tflite")(on.images), on.labels
            )
            passed = parity.accuracy_drop <= max_drop
            tried.append(
                {
                    "quantize": quantize,
                    "file_bytes": len(flatbuffer),
                    "accuracy_drop": parity.accuracy_drop,
                    "top1_agreement": parity.top1_agreement,
                    "passed": passed,
                }
            )
            if verbose:
                bar = (
                    f"{setting('max_drop')} ({100 * max_drop:.1f} points)"  # the drop beside it is in points
                )
                verdict = f"within {bar}: kept" if passed else f"over {bar}"
                print(
                    f"  {quantize:<8} {_mb(len(flatbuffer)):>9}  accuracy {parity.keras_accuracy:.3f} -> "
                    f"{parity.export_accuracy:.3f} (drop {100 * parity.accuracy_drop:.1f} points): {verdict}",
                    flush=True,
                )
            if passed:
                break
        flatbuffers.close()  # the SavedModel's scratch folder goes now, not when collected
    return (
        quantize,
        flatbuffer,
        {
            "rule": f"the first of {', '.join(AUTO_ORDER)} within max_drop",
            "on": on.describe(),
            "tried": tried,
        },
    )


def _seed(run: SavedRun) -> int:
    return int(run.info.get("seed", 1337))


def _run_splits(run: SavedRun) -> DataSplits:
    """The run's splits, re-derived from its data with its recipe's fractions and seed."""
    source = run.info.get("data")
    recipe = recipe_io.load(run.run_dir / "recipe.toml")
    try:
        splits = load_data(
            source,
            validation_split=recipe.data.validation_split,
            test_split=recipe.data.test_split,
            seed=recipe.seed,
        )
    except TransferkitError as error:
        raise TransferkitError(
            f"Cannot re-read the run's data {source!r} ({error}). The parity check and int8 calibration "
            f"need it: restore it, or pass {setting('data')} with labelled images (no int8 without the "
            "training data)."
        ) from None
    if list(map(nfc, splits.class_names)) != list(map(nfc, run.class_names)):
        raise TransferkitError(
            f"The classes in {source!r} changed since the run ({', '.join(splits.class_names)} now, "
            f"{', '.join(run.class_names)} then). Pass {setting('data')} with images of the run's classes."
        )
    return splits


def _run_held_out(run: SavedRun, splits: DataSplits) -> HeldOut:
    """The run's test split when it has one, else its validation split (which early stopping saw)."""
    if splits.test is not None and len(splits.test):
        recorded = (run.info.get("test_split") or {}).get("sha256")
        changed = recorded is not None and recorded != splits.holdout.sha256
        note = "differs from the test split the run recorded: the data changed since" if changed else ""
        return _held_out(splits.test, run.image_size, "test", run.info["data"], note)
    note = "no test split: validation images, which early stopping saw"
    return _held_out(splits.val, run.image_size, "validation", run.info["data"], note)


def _data_held_out(data: str, run: SavedRun) -> HeldOut:
    """``data``'s own test split if it has one, else all of it; labels mapped to the run's classes."""
    images, part = labelled_images(data, run.class_names, run.white_level)
    return _held_out(images, run.image_size, "data", str(data), part)


def _held_out(images: ImageSet, size: int, split: str, source: str, note: str) -> HeldOut:
    pixels, labels = _pixels(images, size)
    if not len(labels):
        raise TransferkitError(f"No usable images in the {split} split of {source!r} to check the export on.")
    return HeldOut(pixels, labels, split, source, note)


def _pixels(images: ImageSet, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode a split to float32 raw pixels and int labels (files that fail to decode are left out)."""
    pixels, labels = [], []
    for batch, batch_labels in make_dataset(images, size, 64, cache=False):
        pixels.append(tf.cast(batch, tf.float32).numpy())
        labels.append(batch_labels.numpy())
    if not pixels:
        return np.zeros((0, size, size, 3), np.float32), np.zeros((0,), np.int64)
    return np.concatenate(pixels), np.concatenate(labels)


def _calibration(train: ImageSet, size: int, seed: int):
    """Up to CALIBRATION_IMAGES training images, a seeded sample, as a generator of single images."""
    count = min(CALIBRATION_IMAGES, len(train))
    chosen = np.sort(np.random.default_rng(seed).choice(len(train), size=count, replace=False))
    pixels, _ = _pixels(train.subset([int(i) for i in chosen]), size)
    return lambda: (image[None] for image in pixels)


def _size(path: Path) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _mb(size: int) -> str:
    return f"{size / 1e6:.2f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found
