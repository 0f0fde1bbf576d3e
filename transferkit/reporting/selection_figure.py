"""The selector's evidence as a picture: the data set on the size x similarity plane, and the
per-cut probe scores it was measured with (``selection.png`` in a run folder and from ``analyze``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from transferkit.reporting.figures import new_figure, save_figure
from transferkit.selection.decision import Selection
from transferkit.selection.quadrants import QUADRANTS, STRATEGIES
from transferkit.selection.rules import (
    SMALL_IMAGES_PER_CLASS,
    TRUNCATE_MARGIN,
    _compare,
    retrain_images_per_class,
)


def plot_selection(selection: Selection, path: str | Path) -> Path:
    """Draw the dataset on the size x similarity plane (left) and the per-cut scores (right); PNG.

    x: median training images per class (log scale; the line is :data:`SMALL_IMAGES_PER_CLASS`, for
    dissimilar data :func:`~transferkit.selection.rules.retrain_images_per_class` at the image size);
    y: deepest minus best-earlier probe accuracy (the line is ``-TRUNCATE_MARGIN``), with its
    standard error. A value the user gave instead of a measurement is drawn mid-quadrant.
    """
    fig = new_figure(figsize=(10, 4.2), layout="constrained")
    plane, bars = fig.subplots(1, 2, width_ratios=(1.1, 1))
    _draw_plane(plane, selection)
    _draw_scores(bars, selection)
    fig.suptitle(
        f"{selection.quadrant} -> {selection.recipe}"
        + (f" at {selection.cut_point}" if selection.cut_point else "")
        + f" (confidence {selection.confidence:.2f}{', close call' if selection.close_call else ''})"
    )
    path = Path(path)
    save_figure(fig, path)
    return path


def _draw_plane(ax: Any, selection: Selection) -> None:
    low, high = -0.5, 0.5
    ax.set_xscale("log")
    ax.set_xlim(5, 2e5)
    ax.set_ylim(low, high)
    # The size line: dissimilar data needs more images a class to retrain below full resolution.
    floor = retrain_images_per_class(selection.image_size)
    ax.plot([SMALL_IMAGES_PER_CLASS] * 2, [-TRUNCATE_MARGIN, high], color="grey", lw=1)
    ax.plot([floor] * 2, [low, -TRUNCATE_MARGIN], color="grey", lw=1)
    if floor != SMALL_IMAGES_PER_CLASS:
        ax.text(floor * 1.08, low * 0.55, f"{floor} a class\nat {selection.image_size} px", fontsize=7)
    ax.axhline(-TRUNCATE_MARGIN, color="grey", lw=1)
    corners = ((8, high), (8, low), (1.5e5, high), (1.5e5, low))  # in QUADRANTS' order
    for (x, y), quadrant in zip(corners, QUADRANTS, strict=True):
        ax.text(
            x, y * 0.92, f"{quadrant}\n({STRATEGIES[quadrant]})", ha="left" if x < 100 else "right",
            va="top" if y > 0 else "bottom", fontsize=8,
            fontweight="bold" if quadrant == selection.quadrant else "normal",
        )  # fmt: skip
    given_x = 100 if selection.size == "small" else 10_000
    x = selection.images_per_class if selection.images_per_class else given_x
    comparison = _compare(selection.scores)
    if comparison is not None:
        y, err = float(np.clip(comparison.margin, low, high)), comparison.noise
    else:
        y, err = (0.25 if selection.similar else -0.25), 0.0
    ax.errorbar([x], [y], yerr=[err], fmt="o", color="tab:red", capsize=4)
    region = QUADRANTS[
        2 * (x >= (SMALL_IMAGES_PER_CLASS if y > -TRUNCATE_MARGIN else floor)) + (y <= -TRUNCATE_MARGIN)
    ]
    if selection.images_per_class and comparison is not None and region != selection.quadrant:
        ax.text(  # e.g. similar data whose probe is saturated keeps the base frozen: the reasons say why
            0.5, 0.5, f"picked {selection.quadrant}, not {region}:\nsee the reasons (selection.json)",
            transform=ax.transAxes, ha="center", va="center", fontsize=8, color="tab:red",
        )  # fmt: skip
    ax.set_xlabel("median training images per class")
    ax.set_ylabel("probe accuracy: deepest - best earlier cut")
    ax.set_title("dataset on the size x similarity plane", fontsize=10)


def _draw_scores(ax: Any, selection: Selection) -> None:
    scores = selection.scores
    ax.set_title("per-cut scores (shallow -> deep)", fontsize=10)
    if not scores:
        ax.text(
            0.5, 0.5, "not measured (given by the user)", ha="center", va="center", transform=ax.transAxes
        )
        ax.set_axis_off()
        return
    chosen = selection.cut_point or scores[-1].cut
    positions = np.arange(len(scores))
    colors = ["tab:red" if s.cut == chosen else "tab:blue" for s in scores]
    ax.bar(positions, [s.probe_accuracy for s in scores], yerr=[s.probe_stderr for s in scores], color=colors)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("linear-probe accuracy (bars)")
    ax.set_xticks(positions, [s.cut for s in scores], rotation=30, ha="right", fontsize=7)
    twin = ax.twinx()
    twin.plot(positions, [s.logme for s in scores], "k.-")
    twin.set_ylabel("LogME (line)")
