"""A run's interpretation: ``interpretation.json`` and its figures (top losses, Grad-CAM, calibration).

:func:`write_interpretation` reads ``predictions.npz`` (written by ``fit``'s held-out pass) and
writes the figures through :func:`transferkit.reporting.figures.save_figure`; the numbers come
from :mod:`transferkit.reporting.diagnostics`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from transferkit.fileio import write_json
from transferkit.reporting import diagnostics
from transferkit.reporting.figures import class_labels, image_grid_figure, new_figure, save_figure
from transferkit.reporting.metrics import compute_metrics

if TYPE_CHECKING:
    import keras

INTERPRETATION_FILE = "interpretation.json"
FIGURES = {"top_losses": "top_losses.png", "grad_cam": "grad_cam.png", "calibration": "calibration.png"}
GALLERY_SIZE = 12
CAM_PER_KIND = 4  # right and wrong predictions each


def write_interpretation(
    run_dir: str | os.PathLike,
    model: keras.Model | None = None,
    *,
    only_missing: bool = False,
    figures: bool = True,
) -> dict | None:
    """Write ``interpretation.json`` and the figures from the run's ``predictions.npz``.

    Args:
        run_dir: a run folder with ``predictions.npz``.
        model: the trained classifier for the Grad-CAM maps; None loads ``model.keras`` when the
            Grad-CAM figure has to be drawn.
        only_missing: keep figures that exist (``transferkit report``); the JSON is always rewritten.
        figures: False writes the JSON alone (``fit(report=False)``).

    Returns:
        The interpretation record, or None when the run has no ``predictions.npz``.
    """
    run_dir = Path(run_dir)
    predictions = diagnostics.load_predictions(run_dir)
    if predictions is None:
        return None
    metrics = compute_metrics(predictions.probabilities, predictions.labels, predictions.class_names)
    calibration = diagnostics.calibration(predictions.probabilities, predictions.labels)
    gallery = diagnostics.top_losses(predictions, GALLERY_SIZE)
    notes: list[str] = []
    drawn = {key for key, name in FIGURES.items() if only_missing and (run_dir / name).exists()}
    todo = {key: figures and key not in drawn for key in FIGURES}
    if todo["calibration"]:
        save_figure(_reliability_figure(calibration, predictions.split), run_dir / FIGURES["calibration"])
    _write_image_figures(run_dir, model, predictions, gallery, todo, notes)
    record = {
        "split": predictions.split,
        "num_samples": len(predictions.labels),
        "confused_pairs": [
            vars(p) for p in diagnostics.confused_pairs(metrics.confusion, metrics.class_names)
        ],
        "calibration": calibration.to_dict(),
        "top_losses": [_loss_record(predictions, i) for i in gallery],
        "notes": notes,
    }
    write_json(run_dir / INTERPRETATION_FILE, record)
    return record


def _write_image_figures(run_dir: Path, model, predictions, gallery, todo, notes: list[str]) -> None:
    """The top-loss gallery and the Grad-CAM grid; each image decoded once, as the model saw it."""
    right, wrong = diagnostics.grad_cam_samples(predictions, CAM_PER_KIND)
    explained = [*wrong, *right]
    needed = [*(gallery if todo["top_losses"] else ()), *(explained if todo["grad_cam"] else ())]
    images = _images(predictions, sorted(set(map(int, needed))), notes) if needed else None
    if images is None:
        return
    if todo["top_losses"]:
        titles = [_caption(predictions, i) for i in gallery]
        gallery_images = np.stack([images[i] for i in gallery])
        figure = image_grid_figure(gallery_images, titles, "Highest-loss held-out images")
        save_figure(figure, run_dir / FIGURES["top_losses"])
    if todo["grad_cam"]:
        captions = [
            ("WRONG " if n < len(wrong) else "right ") + _caption(predictions, i)
            for n, i in enumerate(explained)
        ]
        pixels = np.stack([images[i] for i in explained])
        own = predictions.probabilities[list(explained)]  # the held-out pass's output for them
        _write_grad_cam(run_dir, model, pixels, own, captions, notes)


def _images(predictions: diagnostics.Predictions, rows: list[int], notes: list[str]) -> dict | None:
    """``{row: image}`` decoded as the model saw them; None (and a note) when they cannot be."""
    from transferkit.data.decode import load_images

    if not predictions.paths:
        notes.append("The held-out images could not be paired with their predictions; no gallery.")
        return None
    try:
        images, skipped = load_images(
            [predictions.paths[i] for i in rows], predictions.image_size, predictions.white_level
        )
    except Exception as error:  # a TFDS split gone from TFDS_DATA_DIR since the run: a figure, not the run
        notes.append(f"The held-out images cannot be read ({error}).")
        return None
    if skipped:
        notes.append(f"{len(skipped)} held-out image(s) can no longer be read (e.g. {skipped[0][0]}).")
        return None
    return dict(zip(rows, images, strict=True))


def _write_grad_cam(
    run_dir: Path, model, images: np.ndarray, probabilities: np.ndarray, captions: list[str], notes: list[str]
) -> None:
    from transferkit.reporting.grad_cam import grad_cam, map_size
    from transferkit.training.averaging import in_words, members_of

    if model is None:
        if not (run_dir / "model.keras").exists():
            notes.append("No model.keras in the run folder: no Grad-CAM heat maps.")
            return
        from transferkit.reporting.runfolder import load_run

        model = load_run(run_dir).model
    title, order = "Grad-CAM: where the evidence for the predicted class is", " (wrong predictions first)"
    members = members_of(model)
    if members:  # an averaged model: explain its prediction in the run's own network's last feature map
        name, model = next(iter(members.items()))
        maps = grad_cam(model, images.astype(np.float32), classes=probabilities.argmax(axis=1))
        title = f"Grad-CAM of the {in_words(name)} (one of the two averaged) for the averaged prediction"
        order = ""
    else:
        maps = grad_cam(model, images.astype(np.float32), probabilities=probabilities)
    if maps is None:
        notes.append("The model has no 4-D feature map to explain (or is not a plain chain); no Grad-CAM.")
        return
    if side := map_size(model):  # a 7 x 7 map at 224 px: the heat marks regions, not pixels
        title += f", on a {side[0]}x{side[1]} feature map upsampled to the image"
    title += order
    # A map with no positive evidence anywhere (every location's weighted sum <= 0) is all zero and
    # draws as an even blue wash, which reads as "weak evidence everywhere": its caption says so.
    flat = maps.reshape(len(maps), -1).max(axis=1) <= 0
    if flat.any():
        captions = [
            f"{text}\nno positive evidence" if none else text
            for text, none in zip(captions, flat, strict=True)
        ]
        notes.append(
            f"{int(flat.sum())} of the {len(flat)} Grad-CAM maps show no positive evidence for the "
            "explained class anywhere in the feature map (drawn flat, captioned so)."
        )
    figure = image_grid_figure(images, captions, title, heat=maps, caption_lines=3 if flat.any() else 2)
    save_figure(figure, run_dir / FIGURES["grad_cam"])


def _caption(predictions: diagnostics.Predictions, row: int) -> str:
    names, probabilities = class_labels(predictions.class_names, 16), predictions.probabilities[row]
    true, predicted = int(predictions.labels[row]), int(probabilities.argmax())
    return (
        f"true {names[true]} ({probabilities[true]:.2f})\n"
        f"pred {names[predicted]} ({probabilities[predicted]:.2f})"
    )


def _loss_record(predictions: diagnostics.Predictions, row: int) -> dict:
    probabilities = predictions.probabilities[row]
    return {
        "path": predictions.paths[row] if predictions.paths else None,
        "true": predictions.class_names[int(predictions.labels[row])],
        "predicted": predictions.class_names[int(probabilities.argmax())],
        "probability": float(probabilities.max()),
        "true_probability": float(probabilities[int(predictions.labels[row])]),
        "loss": float(predictions.losses[row]),
    }


def _reliability_figure(calibration: diagnostics.Calibration, split: str = "held-out") -> Figure:
    """Accuracy against confidence per bin (a calibrated model sits on the diagonal), counts below;
    a bin whose images were all wrong is marked with a red tick, not left to look empty."""
    bins = len(calibration.counts)
    edges = np.linspace(0, 1, bins + 1)
    centres, width = (edges[:-1] + edges[1:]) / 2, 1 / bins
    accuracy = np.array([np.nan if a is None else a for a in calibration.accuracy])
    fig = new_figure(figsize=(5.5, 5.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=(3, 1), sharex=True)
    top.bar(centres, np.nan_to_num(accuracy), width=width * 0.9, color="tab:blue", label="accuracy")
    all_wrong = (accuracy == 0) & (np.asarray(calibration.counts) > 0)
    if all_wrong.any():
        top.plot(centres[all_wrong], np.full(all_wrong.sum(), 0.01), "_", color="tab:red", markersize=14,
                 markeredgewidth=3, label="every image wrong")  # fmt: skip
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfectly calibrated")
    top.set(ylim=(0, 1), ylabel="accuracy in bin")
    images = int(np.sum(calibration.counts))
    top.set_title(
        f"Reliability diagram, {images} {split} images: ECE {calibration.ece:.3f} ({bins} bins)", fontsize=10
    )
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centres, calibration.counts, width=width * 0.9, color="tab:grey")
    bottom.set(xlim=(0, 1), xlabel="confidence (top probability)", ylabel="images")
    return fig
