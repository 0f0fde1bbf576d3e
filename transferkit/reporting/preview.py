"""``transferkit augment-preview``: a picture of what the augmentation does to real samples."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from transferkit import recipes as recipe_io
from transferkit.data.loading import load_data, load_images
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
    splits = load_data(data, seed=seed)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(splits.train.paths), size=min(count, len(splits.train.paths)), replace=False)
    images, _ = load_images(
        [splits.train.paths[i] for i in sorted(chosen)], image_size, splits.train.white_level
    )
    grid = preview(images, config, copies=copies, seed=seed)
    titles = (["original"] + [f"augmented {i + 1}" for i in range(copies)]) * len(images)
    plot_image_grid(
        grid,
        out,
        titles=titles,
        columns=copies + 1,
        suptitle=f"fill_mode={config.fill_mode}, rotation ±{config.rotation_degrees:g}°, "
        f"zoom ±{config.zoom:g}, shift ±{config.translation:g}, flip {config.flip}, "
        f"contrast ±{config.contrast:g}" + (f", pixel noise up to {config.noise:g}" if config.noise else ""),
    )
    return Path(out)
