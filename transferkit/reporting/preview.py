"""``transferkit augment-preview``: a picture of what the augmentation does to real samples."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from transferkit import recipes as recipe_io
from transferkit.data.decode import load_images, white_level_for
from transferkit.data.loading import load_data, source_path
from transferkit.data.scan import detect_layout, high_bit_peak, training_images, walk_images
from transferkit.errors import TransferkitError
from transferkit.reporting.figures import plot_image_grid
from transferkit.selection.quadrants import PROVISIONAL
from transferkit.training.augment import preview


def augment_preview(
    data: str,
    *,
    recipe: str = PROVISIONAL,
    fill_mode: str | None = None,
    count: int = 6,
    copies: int = 5,
    image_size: int = 160,
    out: str | Path = "augment_preview.png",
    seed: int = 0,
) -> Path:
    """Write a grid: one row per sampled training image, the original then ``copies`` augmented versions.

    Example:
        >>> augment_preview("./pets", fill_mode="constant", out="aug.png")  # doctest: +SKIP
    """
    config = recipe_io.load(recipe).augment
    if fill_mode:
        config = dataclasses.replace(config, fill_mode=fill_mode)
    labelled, white_level = _training_images(data, seed)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(labelled), size=min(count, len(labelled)), replace=False)
    sampled = [labelled[i] for i in sorted(chosen)]
    images, skipped = load_images([path for _, path in sampled], image_size, white_level)
    if not len(images):
        raise TransferkitError(f"None of the sampled images under {data!r} could be decoded.")
    unreadable = {path for path, _ in skipped}
    names = [_caption(*pair) for pair in sampled if pair[1] not in unreadable]  # the decoded ones, in order
    grid = preview(images, config, copies=copies, seed=seed)
    out = Path(out) if Path(out).suffix else Path(out).with_suffix(".png")  # a picture opens by its name
    titles = [title for name in names for title in (name, *(f"augmented {i + 1}" for i in range(copies)))]
    checked = " (fit keeps them only where its check finds they help)" if config.measure else ""
    plot_image_grid(
        grid,
        out,
        titles=titles,
        columns=copies + 1,
        suptitle=f"fill_mode={config.fill_mode}, rotation ±{config.rotation_degrees:g}°, "
        f"zoom ±{config.zoom:g}, shift ±{config.translation:g}, flip {config.flip}, "
        f"contrast ±{config.contrast:g}"
        + (f", pixel noise up to {config.noise:g}" if config.noise else "")
        + checked,
    )
    return out


def _caption(class_name: str | None, path: str) -> str:
    """``class/file`` for an original's caption (the grid shortens it); the file alone where no class
    is known."""
    name = Path(path).name
    return name if class_name is None else f"{class_name}/{name}"


def _training_images(data: str, seed: int) -> tuple[list[tuple[str | None, str]], int | None]:
    """``(class, path)`` of the images to sample from, and their white level: a folder's training
    images (its ``train/`` when split, else all of it; one class, or none, is enough for a picture),
    or a TFDS source's training split.

    A folder's white level is found over all of it, every split, as ``fit``'s scan finds it: with
    none, 12-bit values in 16-bit files showed nearly black here while training scaled them to 0-255.
    """
    source = source_path(data)
    if source.startswith("tfds:"):
        splits = load_data(source, seed=seed)
        train = splits.train
        labelled = [(splits.class_names[y], p) for p, y in zip(train.paths, train.labels, strict=True)]
        return labelled, train.white_level
    root = Path(source)
    if not root.is_dir():
        raise TransferkitError(f"Data folder {data!r} does not exist (or is not a folder).")
    labelled = training_images(detect_layout(root).get("train", root))
    if not labelled:
        raise TransferkitError(f"No image files under {data!r} (searched recursively).")
    peak = high_bit_peak(walk_images(root, skipped=[]))
    return labelled, None if peak is None else white_level_for(peak)
