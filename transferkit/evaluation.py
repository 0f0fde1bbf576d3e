"""``evaluate``: a finished run's model on labelled images (its own held-out split by default), with TTA."""

from __future__ import annotations

import dataclasses
import logging
import shlex
from pathlib import Path

import numpy as np

from transferkit.data.loading import ImageSet, labelled_images, make_dataset, source_path
from transferkit.data.scan import detect_layout
from transferkit.errors import TransferkitError, setting
from transferkit.prediction import TTAViews, tta_model, tta_views
from transferkit.reporting import runfolder
from transferkit.reporting.diagnostics import load_predictions
from transferkit.reporting.metrics import (
    SIGNIFICANCE,
    Metrics,
    compute_metrics,
    evaluate_model,
    paired_exact_p,
    predict_dataset,
)
from transferkit.runtime.tf_logging import tensorflow_warnings_muted
from transferkit.session import (
    as_float,
)

logger = logging.getLogger(__name__)


@tensorflow_warnings_muted
def evaluate(
    run_dir: str | Path, data: str | Path | None = None, *, batch_size: int = 32, tta: bool = False
) -> Metrics:
    """Evaluate a finished run on labelled data: its ``test`` split if it has one, else all of it
    (:func:`~transferkit.data.loading.labelled_images`).

    Args:
        run_dir: a finished run's folder.
        data: labelled images, as for :func:`fit`; None: the run's own held-out images (those
            its ``predictions.npz`` lists: the test split, else validation).
        batch_size: images per forward pass.
        tta: with test-time augmentation, as ``predict(..., tta=True)``; compare with a call
            without it to see whether it helps (``transferkit evaluate --tta`` prints both).

    Returns:
        :class:`~transferkit.reporting.metrics.Metrics`: ``accuracy`` with its 95% Wilson
        ``accuracy_interval``, ``top5_accuracy``, ``per_class`` precision, recall and F1, the
        ``confusion`` matrix, and which images were ``scored``.
    """
    if not isinstance(tta, bool):  # "no" would read as True
        raise TransferkitError(f"evaluate: tta must be True or False (got {tta!r}).")
    run, dataset, scored = _scored_images(run_dir, data, batch_size)
    model = tta_model(run.model, views=tta_views(run.run_dir)) if tta else run.model
    metrics = evaluate_model(model, dataset, run.class_names)
    return dataclasses.replace(metrics, scored=scored)


@dataclasses.dataclass(frozen=True)
class TTAComparison:
    """The same images scored without and with test-time augmentation, image by image."""

    plain: Metrics
    augmented: Metrics
    only_plain_right: int  # images only the model without TTA classifies right
    only_tta_right: int  # images only the model with TTA classifies right
    views: TTAViews = TTAViews()  # what TTA averaged (the run's training decides: tta_views)

    @property
    def p_value(self) -> float:
        """McNemar's exact test (:func:`~transferkit.reporting.metrics.paired_exact_p`) of "TTA
        makes no difference"."""
        return paired_exact_p(self.only_tta_right, self.only_plain_right)

    def verdict(self) -> str:
        """Whether TTA helped, in one line, with how sure that is.

        Example:
            >>> from transferkit.reporting.metrics import compute_metrics
            >>> metrics = compute_metrics(np.array([[0.9, 0.1], [0.3, 0.7]]), np.array([0, 1]), ["a", "b"])
            >>> TTAComparison(metrics, metrics, only_plain_right=0, only_tta_right=0).verdict()
            'TTA made no difference: the same answers on all 2 images'
        """
        n, gained = self.plain.num_samples, self.only_tta_right - self.only_plain_right
        if not self.views.any:
            return f"TTA has no views to average for this run ({self.views.left_out})"
        if not self.only_plain_right + self.only_tta_right:
            return f"TTA made no difference: the same answers on all {n} images"
        chance = "within chance" if self.p_value >= SIGNIFICANCE else "beyond chance"
        detail = (
            f"{self.only_tta_right} right only with it, {self.only_plain_right} only without: "
            f"{chance}, p = {self.p_value:.2f}"
        )
        if not gained:
            return f"TTA left the accuracy as it was on {n} images ({detail})"
        word, change = ("helped", "more") if gained > 0 else ("hurt", "fewer")
        if self.p_value >= SIGNIFICANCE:  # a lead of an image or two is no evidence either way
            word = "made no clear difference"
        points = f"{100 * gained / n:+.1f} points"
        return f"TTA {word}: {points} ({abs(gained)} {change} of {n} images right; {detail})"


@tensorflow_warnings_muted
def compare_tta(run_dir: str | Path, data: str | None = None, *, batch_size: int = 32) -> TTAComparison:
    """:func:`evaluate` without and with test-time augmentation on the same images, with which
    images each gets right (``transferkit evaluate --tta`` prints its :meth:`~TTAComparison.verdict`)."""
    run, dataset, scored = _scored_images(run_dir, data, batch_size)
    views = tta_views(run.run_dir)
    plain, labels = predict_dataset(run.model, dataset)
    augmented, again = predict_dataset(tta_model(run.model, views=views), dataset)
    if not np.array_equal(labels, again):
        raise TransferkitError("The evaluation images came in another order on the second pass.")
    plain_right, tta_right = plain.argmax(axis=1) == labels, augmented.argmax(axis=1) == labels
    return TTAComparison(
        dataclasses.replace(compute_metrics(plain, labels, run.class_names), scored=scored),
        dataclasses.replace(compute_metrics(augmented, labels, run.class_names), scored=scored),
        only_plain_right=int(np.sum(plain_right & ~tta_right)),
        only_tta_right=int(np.sum(tta_right & ~plain_right)),
        views=views,
    )


def _scored_images(run_dir: str | Path, data: str | None, batch_size: int):
    """The loaded run, the dataset of the images to score (read once a pass) and which they are."""
    if data is not None and not isinstance(data, str | Path):
        raise TransferkitError(
            f"evaluate: data is a folder of class subfolders (or tfds:NAME), as for fit; received "
            f"{type(data).__name__}. To score image files one by one, predict them."
        )
    run = runfolder.load_run(run_dir)
    if data is None:
        images, scored = _held_out_images(run.run_dir)
    else:
        images, part = labelled_images(data, run.class_names, run.white_level)
        _warn_if_trained_on(run, data, part)
        scored = f"{'all' if part == 'all of it' else part.replace('its ', 'the ')} of {source_path(data)}"
    return run, as_float(make_dataset(images, run.image_size, batch_size, cache=False)), scored


def _warn_if_trained_on(run: runfolder.SavedRun, data: str, part: str) -> None:
    """Warn when ``data`` is (inside, or holds) the folder the run trained on: its training and
    validation images are among those evaluated, and their accuracy flatters the model. Not when
    it is that folder and only its ``test/`` split is evaluated, nor when it is that ``test/``
    folder itself: the run held that split out."""
    trained_on = run.info.get("data")
    if not trained_on or str(data).startswith("tfds:") or str(trained_on).startswith("tfds:"):
        return
    given, source = Path(source_path(data)), Path(trained_on)
    if given == source and part == "its test split":
        return
    if given != source and given.is_relative_to(source) and _is_test_folder(given, source):
        return
    if given == source or given.is_relative_to(source) or source.is_relative_to(given):
        logger.warning(
            "%s holds images this run trained or early-stopped on (it trained on %s): their accuracy "
            "flatters the model. `transferkit evaluate %s` without --data measures its held-out images.",
            data,
            trained_on,
            shlex.quote(str(run.run_dir)),
        )


def _is_test_folder(given: Path, source: Path) -> bool:
    """Whether ``given`` is (inside) the ``test/`` folder that a fit on ``source`` held out as it is."""
    folder = detect_layout(source).get("test")
    return folder is not None and given.is_relative_to(folder.resolve())


def _held_out_images(run_dir: Path) -> tuple[ImageSet, str]:
    """The held-out image files and labels that the run's ``predictions.npz`` records, and which
    split they are."""
    predictions = load_predictions(run_dir)
    if predictions is None or not predictions.paths or predictions.paths[0].startswith("tfds:"):
        raise TransferkitError(
            f"{str(run_dir)!r} lists no held-out image files (no predictions.npz, or a tfds: source); "
            f"give the labelled images to evaluate on with {setting('data')}."
        )
    labels = tuple(int(label) for label in predictions.labels)
    images = ImageSet(predictions.paths, labels, white_level=predictions.white_level)
    if predictions.split == "test":
        return images, "the run's held-out test split"
    # No test split: the validation images, which early stopping watched (figures that flatter).
    return images, f"the run's {predictions.split} split (watched by early stopping: no test split)"
