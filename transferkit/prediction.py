"""``predict`` with a finished run's model: the top-k ranking, test-time augmentation, contact sheets.

Keras is imported on use only: the CLI reads :data:`DEFAULT_TOP_K` from here without loading
TensorFlow.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from transferkit.errors import TransferkitError, TransferkitWarning, setting
from transferkit.runtime.tf_logging import tensorflow_warnings_muted

if TYPE_CHECKING:
    import keras

    from transferkit.reporting.runfolder import SavedRun

logger = logging.getLogger(__name__)

DEFAULT_TOP_K = 3  # labels listed per image, by `predict` in the API and in the CLI
TTA_CROP = 0.9  # side of each test-time crop, as a fraction of the image's side
TTA_VIEWS = ("image", "flip", "centre", "top_left", "top_right", "bottom_left", "bottom_right")
CONTACT_SHEET_MAX = 48  # images on a contact sheet; more would make every thumbnail unreadable
# Images decoded at a time: memory stays flat on a folder of any size (512 at 224 px: 77 MB of
# pixels, 308 MB as float32), where decoding a whole folder of 20,000 first needed 12 GB.
PREDICT_CHUNK = 512
# An image whose brightest pixel decodes below this (of 255) is almost black: most often a 16-bit
# file holding 12-bit values given to a run that trained on 8-bit images (read through its high
# byte), which the model then classifies with confidence. predict says so.
NEARLY_BLACK_MAX = 20  # 12-bit values read through the high byte reach 16


@dataclass(frozen=True)
class TTAViews:
    """Which views test-time augmentation averages for a run: those its training showed the model.

    A flip where every network trained with horizontal flips, the crops (a zoom and a shift) where
    they trained with zoom or translation; neither where a network's augmentation check dropped
    the warps (:mod:`transferkit.training.augment_check`): a model trained on unflipped card
    indices lost 11.5 points to the flipped view. ``left_out`` says why a view is missing.
    """

    flip: bool = True
    crops: bool = True
    left_out: str = ""

    @property
    def any(self) -> bool:
        return self.flip or self.crops

    def describe(self) -> str:
        """The views in words, e.g. "the image and five crops (no flip: the run trained without flips)".

        Example:
            >>> TTAViews().describe()
            'the image, its flip and five crops'
        """
        views = ", ".join(["the image"] + ["its flip"] * self.flip + ["five crops"] * self.crops)
        views = " and ".join(views.rsplit(", ", 1))
        return views + (f" ({self.left_out})" if self.left_out else "")


def tta_views(run_dir: str | Path) -> TTAViews:
    """The :class:`TTAViews` of the run in ``run_dir`` (and its partner network, if it averages two),
    from its ``recipe.toml`` and the augmentation check recorded in ``state.json``; every view for a
    folder without them."""
    import json

    from transferkit import recipes as recipe_io
    from transferkit.training.averaging import partner_dir

    flip = crops = True
    reasons = []
    for folder in (Path(run_dir), partner_dir(Path(run_dir))):
        if not (folder / "recipe.toml").is_file():
            continue
        augment = recipe_io.load(folder / "recipe.toml").augment
        state = folder / "state.json"
        check = json.loads(state.read_text(encoding="utf-8")).get("augmentation") if state.is_file() else None
        if check is not None and not check.get("use_augmentation", True):
            flip = crops = False
            reasons.append("its augmentation check found the warps hurt and trained without them")
            continue
        if augment.flip not in ("horizontal", "both"):
            flip = False
            reasons.append("it trained without horizontal flips")
        if not (augment.zoom or augment.translation):
            crops = False
            reasons.append("it trained without zoom or shifts")
    missing = [name for name, kept in (("flip", flip), ("crops", crops)) if not kept]
    left_out = f"no {' or '.join(missing)}: {'; '.join(dict.fromkeys(reasons))}" if missing else ""
    return TTAViews(flip, crops, left_out)


def tta_model(model: keras.Model, crop: float = TTA_CROP, views: TTAViews = TTAViews()) -> keras.Model:
    """A model that averages ``model``'s probabilities over :data:`TTA_VIEWS` of each image.

    The views are the image, its horizontal flip, and five crops of side ``crop`` (centre and
    the four corners) resized back to the input size; ``views`` leaves out the flip or the crops
    (:func:`tta_views`: those the run's training did not show the model). All views of a batch go
    through ``model`` as one batch; the result is the mean of their probabilities, so each row
    still sums to 1.

    Args:
        model: a classifier taking ``(batch, height, width, 3)`` pixels, softmax out.
        crop: side of the crops as a fraction of the image's side, in ``(0, 1]``.
        views: which views to average (all of them by default).

    Example:
        >>> import keras, numpy as np
        >>> base = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
        ...                          keras.layers.Dense(2, activation="softmax")])
        >>> tta_model(base).predict(np.ones((3, 8, 8, 3), "float32"), verbose=0).shape
        (3, 2)
    """
    import keras

    height, width = model.input_shape[1:3]
    crop_height, crop_width = max(1, round(crop * height)), max(1, round(crop * width))
    down, right = height - crop_height, width - crop_width
    corners = [(down // 2, right // 2), (0, 0), (0, right), (down, 0), (down, right)]
    inputs = keras.Input(model.input_shape[1:], name="pixels")
    crops = [
        keras.ops.image.resize(
            inputs[:, top : top + crop_height, left : left + crop_width, :], (height, width)
        )
        for top, left in corners
    ]
    shown = [inputs] + [keras.ops.flip(inputs, axis=2)] * views.flip + crops * views.crops
    probabilities = model(keras.ops.concatenate(shown, axis=0))
    per_view = keras.ops.reshape(probabilities, (len(shown), -1, probabilities.shape[-1]))
    return keras.Model(inputs, keras.ops.mean(per_view, axis=0), name="test_time_augmentation")


def ranked(probabilities: np.ndarray, class_names: Sequence[str], top_k: int = DEFAULT_TOP_K) -> list:
    """The ``top_k`` most probable ``(label, probability)`` pairs of one image, most probable first.

    Example:
        >>> ranked(np.array([0.2, 0.7, 0.1]), ["cat", "dog", "fox"], top_k=2)
        [('dog', 0.7), ('cat', 0.2)]
    """
    order = np.argsort(probabilities)[::-1][: max(1, top_k)]
    return [(class_names[i], float(probabilities[i])) for i in order]


def write_contact_sheet(
    images: np.ndarray,
    rows: Sequence[dict],
    path: str | os.PathLike,
    class_names: Sequence[str] = (),
    unreadable: int = 0,
) -> None:
    """A PNG grid of predicted images, each captioned with its file's name, label and probability.

    Args:
        images: ``(N, H, W, 3)`` pixels of the images ``rows`` describe, in the same order.
        rows: ``predict``'s results for those images (``path``, ``label`` and ``probability`` each).
        path: where to write the PNG; the first :data:`CONTACT_SHEET_MAX` images are shown.
        class_names: the run's classes; a label no installed font can draw is captioned by its
            index (``#3``), and the key is logged.
        unreadable: files given that could not be read (not on the sheet; its title says how many).
    """
    from transferkit.reporting.figures import class_labels, plot_image_grid, undrawable_classes

    shown = min(len(rows), CONTACT_SHEET_MAX)
    numbered = dict(zip(class_names, class_labels(class_names, 22), strict=True))
    titles = [
        f"{Path(row['path']).name}\n{numbered.get(row['label'], row['label'])} ({row['probability']:.2f})"
        for row in rows[:shown]
    ]
    shown_labels = {row["label"] for row in rows[:shown]}
    key = [f"#{i} = {name}" for i, name in undrawable_classes(class_names) if name in shown_labels]
    if key:
        logger.warning(
            "The contact sheet numbers the classes no installed font can draw (a font with their script, "
            "e.g. Noto Sans CJK, would show the names): %s",
            ", ".join(key),
        )
    note = f"first {shown} of {len(rows)} images" if shown < len(rows) else f"{shown} images"
    if unreadable:
        note += f" ({unreadable} more could not be read: see the errors in predict's rows)"
    plot_image_grid(images[:shown], path, titles=titles, columns=8, suptitle=f"Predictions: {note}")


@tensorflow_warnings_muted
def predict(
    run_dir: str | Path | SavedRun,
    inputs: list[str] | str,
    *,
    top_k: int = DEFAULT_TOP_K,
    batch_size: int = 32,
    tta: bool = False,
    contact_sheet: str | Path | None = None,
) -> list[dict]:
    """Classify image files (or every image in a folder) with a finished run's model.

    Args:
        run_dir: a finished run's folder (``model.keras`` and its labels), or the run loaded
            once by :func:`transferkit.load_run` (an app that classifies again and again: no reload
            per call; ``run.predict(inputs)`` is the same).
        inputs: image files and/or folders (searched recursively).
        top_k: labels listed per image, most probable first.
        batch_size: images per forward pass.
        tta: average the probabilities over the image, its flip and five crops, those of them
            the run trained with (:func:`transferkit.prediction.tta_views`);
            ``evaluate(run_dir, tta=True)`` against ``evaluate(run_dir)`` tells whether that helps on
            the run's held-out images.
        contact_sheet: also write a PNG grid of the images captioned with their predictions.

    Returns:
        One dict per image file, in the order given (a folder's files sorted):
        ``{"path", "label", "probability", "top": [(label, p), ...]}``; an unreadable or missing
        file's is ``{"path", "error"}``.

    Raises:
        TransferkitError: where none of ``inputs`` exists (a mistyped path, most likely) or a
            folder holds no images, and for a bad argument.

    Warns:
        TransferkitWarning: ``tta=True`` for a run that trained without flips, zoom or shifts: no
            view to average, the model's own predictions.

    Example:
        >>> rows = transferkit.predict("runs/pets", "photos/", tta=True)  # doctest: +SKIP
        >>> rows[0]["label"], rows[0]["top"]  # doctest: +SKIP
        ('cat', [('cat', 0.93), ('dog', 0.05), ('fox', 0.02)])
    """
    from transferkit.data.decode import high_bit_depth
    from transferkit.data.loading import load_images  # TensorFlow loads here, not at import
    from transferkit.reporting import runfolder

    for key, value, example in (("top_k", top_k, DEFAULT_TOP_K), ("batch_size", batch_size, 32)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:  # as the CLI's flags
            raise TransferkitError(
                f"predict: {key} must be an int >= 1 (got {value!r}); e.g. {key}={example}."
            )
    run = run_dir if isinstance(run_dir, runfolder.SavedRun) else runfolder.load_run(run_dir)
    paths = _expand_inputs(inputs)
    views = tta_views(run.run_dir) if tta else None
    if views is not None and not views.any:
        message = f"{setting('tta', True)} has no views to average for this run ({views.left_out})"
        warnings.warn(f"{message}: the predictions are the model's alone.", TransferkitWarning, stacklevel=2)
    model = tta_model(run.model, views=views) if tta else run.model
    rows, results, shown, dark, bright = [], [], [], [], []  # results: the classified rows, as the sheet
    with _progress(len(paths)) as bar:
        for start in range(0, len(paths), PREDICT_CHUNK):
            chunk = paths[start : start + PREDICT_CHUNK]
            images, skipped = load_images(chunk, run.image_size, run.white_level)
            left_out = dict(skipped)
            usable = [path for path in chunk if path not in left_out]
            predicted = iter(_probabilities(model, images, batch_size))
            for path in chunk:  # rows in the order given, unreadable files among them
                if path in left_out:
                    rows.append({"path": path, "error": left_out[path]})
                    continue
                top = ranked(next(predicted), run.class_names, top_k)
                results.append({"path": path, "label": top[0][0], "probability": top[0][1], "top": top})
                rows.append(results[-1])
            if contact_sheet is not None and sum(map(len, shown)) < CONTACT_SHEET_MAX:
                shown.append(images[: CONTACT_SHEET_MAX - sum(map(len, shown))])
            dark += [
                path
                for path, image in zip(usable, images, strict=True)
                if image.max() < NEARLY_BLACK_MAX and high_bit_depth(path)  # a dark 8-bit photo is fine
            ]
            if run.white_level is not None:
                bright += _over_white_level(usable, images, run.white_level)
            bar.update(len(chunk))
    if bright:
        path, peak = bright[0]
        logger.warning(
            "%d image(s) hold values above the white level this run scaled its training images by "
            "(%d; e.g. %s, up to %d): their brighter parts decode as plain white. Their predictions mean "
            "little: scale them to the training images' range, or train on images like them.",
            len(bright),
            run.white_level,
            path,
            peak,
        )
    if dark and run.white_level is None:  # a run that scaled its deep images reads these alike
        logger.warning(
            "%d image(s) decode nearly black (e.g. %s): 16-bit files holding 12-bit values, scaled from "
            "the full 16-bit range (0-65535) as this run (trained on 8-bit images) scales them? Their "
            "predictions mean little: convert them to 8 bits per channel, or train on images like them.",
            len(dark),
            dark[0],
        )
    if contact_sheet is not None and results:
        unreadable = len(rows) - len(results)
        write_contact_sheet(np.concatenate(shown), results, contact_sheet, run.class_names, unreadable)
    return rows


def _over_white_level(paths: list[str], images: np.ndarray, white_level: int) -> list[tuple[str, int]]:
    """``(path, peak)`` of the high-bit-depth images whose samples go above ``white_level``: they were
    clipped to white. Only files with saturated pixels and a high-bit header are read again."""
    from transferkit.data.decode import UnusableImage, high_bit_depth, probe

    over = []
    for path, image in zip(paths, images, strict=True):
        if image.max() < 255 or not high_bit_depth(path):
            continue
        try:
            peak = probe(path).peak
        except UnusableImage:
            continue
        if peak is not None and peak > white_level:
            over.append((path, peak))
    return over


def _probabilities(model: keras.Model, images: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """``model``'s probabilities for uint8 ``images``, a batch at a time through one traced step."""
    from transferkit.reporting.metrics import predict_rows  # pads the last batch: no second trace

    batches = (images[first : first + batch_size] for first in range(0, len(images), batch_size))
    return [
        row
        for batch in batches
        for row in predict_rows(model.predict_on_batch, batch.astype("float32"), batch_size)
    ]


def _progress(total: int):
    """A bar on stderr (stdout may carry the CLI's table), shown on a terminal and for many images only."""
    from tqdm.std import tqdm

    quiet = total <= PREDICT_CHUNK or not sys.stderr.isatty()
    return tqdm(
        total=total, desc="predicting", unit="img", file=sys.stderr, disable=quiet, dynamic_ncols=True
    )


def _expand_inputs(inputs: list[str] | str) -> list[str]:
    from transferkit.data.scan import walk_images

    if isinstance(inputs, str | Path):
        items = [inputs]
    elif isinstance(inputs, Sequence) and all(isinstance(item, str | Path) for item in inputs):
        items = list(inputs)
    else:
        raise TransferkitError(
            f"predict takes image file or folder paths (a path or a list of them); received "
            f"{type(inputs).__name__}. For pixels already in memory, call the model itself: "
            "load_run(run_dir).model.predict(images), raw 0-255 RGB [N, size, size, 3]."
        )
    if not items:
        raise TransferkitError("predict received an empty list of paths: give image files or folders.")
    paths: list[str] = []
    missing = [str(item) for item in map(Path, items) if not item.exists()]
    if len(missing) == len(items):
        raise TransferkitError(f"No such file or folder: {', '.join(map(repr, missing))}.")
    for item in map(Path, items):
        if item.is_dir():  # walked as training walks class folders: links followed, hidden names not
            paths += walk_images(item, skipped=[])
        else:  # a missing one too: its row says so, as an unreadable file's does, and the rest are classified
            paths.append(str(item))
    if not paths:
        raise TransferkitError(f"No images found in {', '.join(map(str, items))}.")
    return paths
