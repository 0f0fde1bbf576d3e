"""The run's figures: training curves, confusion matrix, image grids, the learning-rate range test.

Figures are built with :func:`new_figure` (a :class:`matplotlib.figure.Figure` directly: no pyplot
state, so plotting is thread-safe and never opens a window; class names in scripts the default font
lacks fall back to an installed font that has them) and all saved through :func:`save_figure` (one
DPI, written atomically with :func:`transferkit.fileio.atomic_path`). The selector's evidence plot is in
:mod:`transferkit.reporting.selection_figure`.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import math
import os
import re
import textwrap
import unicodedata
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import ConfusionMatrixDisplay

from transferkit.errors import TransferkitError
from transferkit.fileio import atomic_path
from transferkit.reporting.metrics import Metrics

DPI = 110
PNG_OPTIONS = {"compress_level": 1}
"""zlib's fastest level: four of a run's figures (curves, calibration, the two image grids) saved in
0.31 s instead of 0.37 s at the default level 6, the run's PNGs 19% larger (644 KB instead of 543;
Animal-MNIST at 128 px, 2-core CPU, best of three)."""
# Fonts tried, in this order, for characters the default (DejaVu Sans) lacks: class names in Chinese,
# Japanese, Korean, Arabic, Hebrew, Indic or Thai script. Whichever are installed join the font
# family behind the default (matplotlib falls back glyph by glyph); without one such names are boxes.
FALLBACK_FONTS = (
    "Noto Sans CJK JP",
    "Noto Sans CJK SC",
    "Noto Sans CJK TC",
    "Noto Sans CJK KR",
    "Source Han Sans",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Droid Sans Fallback",
    "Noto Sans Arabic",
    "Noto Sans Hebrew",
    "Noto Sans Devanagari",
    "Noto Sans Thai",
    "Noto Sans Symbols 2",
)
ANNOTATE_MAX_CLASSES = 12  # above this, cell numbers become unreadable; the colour carries the value
_ACCURACY_KEYS = ("accuracy", "sparse_categorical_accuracy", "categorical_accuracy", "acc")
History = Mapping[str, Sequence[float]] | str | os.PathLike


def new_figure(**kwargs: Any) -> Figure:
    """A :class:`~matplotlib.figure.Figure` (``kwargs`` as its), drawing text in the default font
    with the installed fallbacks (:data:`FALLBACK_FONTS`) behind it."""
    use_fallback_fonts()
    return Figure(**kwargs)


@functools.cache
def use_fallback_fonts() -> tuple[str, ...]:
    """Put the installed :data:`FALLBACK_FONTS` behind matplotlib's font family, once per process;
    returns the ones added. Text keeps the font it was created with, so this runs before any is."""
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    family = list(matplotlib.rcParams["font.family"])
    added = tuple(name for name in FALLBACK_FONTS if name in installed and name not in family)
    if added:
        matplotlib.rcParams["font.family"] = [*family, *added]
        # A CJK font with no regular (400) weight is logged once per font as it is read ("Failed to
        # find font weight normal ..., now using 500"): the medium weight is what it has to offer.
        logging.getLogger("matplotlib.font_manager").addFilter(
            lambda record: "Failed to find font weight" not in str(record.msg)
        )
    return added


def drawable(text: object) -> bool:
    """Whether the figures' fonts (the default and its installed :data:`FALLBACK_FONTS`) have a
    glyph for every character of ``text``; spaces and invisible format characters (joiners,
    variation selectors) need none."""
    use_fallback_fonts()
    covered = _covered_characters(tuple(matplotlib.rcParams["font.family"]))
    return all(ord(c) in covered or c.isspace() or unicodedata.category(c) == "Cf" for c in str(text))


@functools.cache
def _covered_characters(families: tuple[str, ...]) -> frozenset[int]:
    """The code points the first installed font of each of ``families`` maps to a glyph: the
    fonts matplotlib falls back through, glyph by glyph."""
    from matplotlib import font_manager, ft2font

    covered: set[int] = set()
    for family in families:
        try:
            path = font_manager.findfont(
                font_manager.FontProperties(family=[family]), fallback_to_default=False
            )
        except ValueError:  # not installed
            continue
        covered.update(ft2font.FT2Font(path).get_charmap())
    return frozenset(covered)


def class_labels(class_names: Sequence[object], width: int = 20) -> list[str]:
    """Each class as the figures name it: its name (shortened as plain text), or ``#i``, its index
    in ``class_names`` (the model's output), where no installed font can draw the name (Chinese or
    Japanese names on a machine without a CJK font would be rows of boxes).
    :func:`undrawable_classes` is the key the report prints beside the figures.

    Example:
        >>> class_labels(["cat", "dog"])
        ['cat', 'dog']
    """
    use_fallback_fonts()  # before the font family is read
    return list(_class_labels(tuple(map(str, class_names)), width, tuple(matplotlib.rcParams["font.family"])))


@functools.cache
def _class_labels(class_names: tuple[str, ...], width: int, families: tuple[str, ...]) -> tuple[str, ...]:
    """:func:`class_labels`, once per class list and font family (``families``, the cache key:
    a figure's captions ask for it per image)."""
    return tuple(_label(name, width) if drawable(name) else f"#{i}" for i, name in enumerate(class_names))


def undrawable_classes(class_names: Sequence[object]) -> list[tuple[int, str]]:
    """``(index, name)`` of the classes :func:`class_labels` numbers instead of naming."""
    return [(i, str(name)) for i, name in enumerate(class_names) if not drawable(name)]


def save_figure(fig: Figure, path: str | os.PathLike) -> None:
    """Write ``fig`` as a PNG at the one DPI every transferkit figure uses, atomically."""
    with atomic_path(path) as tmp, _missing_glyphs_quiet():
        fig.savefig(tmp, format="png", dpi=DPI, pil_kwargs=PNG_OPTIONS)


def _png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    with _missing_glyphs_quiet():
        fig.savefig(buffer, format="png", dpi=DPI, pil_kwargs=PNG_OPTIONS)
    return buffer.getvalue()


@contextlib.contextmanager
def _missing_glyphs_quiet():
    """Class names the font cannot draw (emoji, some scripts) come out as boxes in a figure; the
    names are in the report's text and the run's files, so matplotlib's warning per glyph is noise."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from font")
        yield


def _label(text: object, width: int = 24) -> str:
    """Plain text for matplotlib: shortened, and '$' escaped so no name is parsed as mathtext."""
    text = " ".join(str(text).split())
    text = text if len(text) <= width else text[: width - 1] + "…"
    return text.replace("$", r"\$")


def _read_history(history: History) -> dict[str, list]:
    if isinstance(history, str | os.PathLike):
        from transferkit.training.callbacks import read_history  # the one reader of history.csv

        rows = read_history(Path(history))
        return {key: [row[key] for row in rows] for key in (rows[0] if rows else {})}
    return {key: list(values) for key, values in history.items()}


def _floats(values: Sequence[object]) -> np.ndarray:
    return np.array([float(v) if v not in ("", None) else math.nan for v in values], dtype=float)


def _phases_from_column(columns: Mapping[str, Sequence[object]]) -> list[tuple[int, str]]:
    phases = [str(p) for p in columns.get("phase", ())]
    return [(i + 1, p) for i, p in enumerate(phases) if i == 0 or p != phases[i - 1]]


def kept_marks(run_dir: str | os.PathLike) -> list[tuple[float, str]]:
    """Where the weights each phase ended with sit on the curves' epoch axis, from ``state.json``.

    Only phases whose early stopping put back earlier weights are marked: ``(epoch, "kept")`` for an
    epoch, ``(phase start - 0.5, "kept: start")`` for a fitted start no epoch beat (the head's
    logistic regression). Without them a curve that ends lower reads as the model's own figure.
    """
    import json

    path = Path(run_dir) / "state.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except ValueError:
        return []
    marks, start = [], 1
    for epochs, kept in zip(state.get("phase_epochs", []), state.get("kept_epochs", []), strict=False):
        if kept is not None:
            marks.append((start - 0.5, "kept: start") if kept == 0 else (float(start + kept - 1), "kept"))
        start += int(epochs)
    return marks


def _history_figure(
    columns: Mapping[str, Sequence[object]],
    phase_starts: Sequence[tuple[int, str]],
    kept: Sequence[tuple[float, str]] = (),
    network: str | None = None,
) -> Figure:
    if not any(len(v) for v in columns.values()):
        raise TransferkitError(
            "The training history is empty: no epoch was recorded, so there is nothing to plot."
        )
    fig = new_figure(figsize=(11, 4.2), layout="constrained")
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "accuracy"), strict=True):
        names = ("loss",) if metric == "loss" else _ACCURACY_KEYS
        for prefix, split in (("", "train"), ("val_", "validation")):
            key = next((prefix + n for n in names if prefix + n in columns), None)
            if key is not None:
                values = _floats(columns[key])
                ax.plot(np.arange(1, len(values) + 1), values, marker="o", markersize=3, label=split)
        if ax.lines:
            ax.legend(loc="best")
        else:
            ax.text(0.5, 0.5, f"no {metric} recorded", transform=ax.transAxes, ha="center", color="grey")
        for start, name in phase_starts:
            ax.axvline(start - 0.5, color="grey", linestyle="--", linewidth=1)
            ax.text(start - 0.4, 0.98, _label(name), transform=ax.get_xaxis_transform(), va="top", fontsize=8)
        for epoch, name in kept:
            ax.axvline(epoch, color="tab:green", linestyle=":", linewidth=1.5)
            axis = ax.get_xaxis_transform()
            ax.text(epoch + 0.1, 0.02, name, transform=axis, fontsize=8, color="tab:green")
        ax.set(xlabel="epoch", ylabel=metric, title=metric)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if network is not None:
        fig.suptitle(f"Training curves of {network}", fontsize=10)
    return fig


def plot_history(
    history: History,
    path: str | os.PathLike,
    *,
    phase_starts: Sequence[tuple[int, str]] = (),
    kept: Sequence[tuple[float, str]] = (),
    network: str | None = None,
) -> None:
    """Plot train/validation loss and accuracy against epoch into ``path`` (PNG).

    Args:
        history: ``keras.callbacks.History.history``-style mapping, or the path of a
            ``keras.callbacks.CSVLogger`` file. Epochs are numbered 1..N by row, so phases appended
            to one CSV line up. A ``phase`` column, if present, supplies the phase starts.
        path: where to write the PNG (atomically).
        phase_starts: ``(first epoch of the phase, phase name)`` pairs, epochs numbered from 1 as on
            the x axis and in transferkit's ``history.csv``; a dashed line and the name mark each
            start, e.g. ``[(1, "warmup"), (4, "fine_tune")]``.
        kept: ``(epoch, label)`` pairs marked with a dotted line: the weights a phase kept
            (:func:`kept_marks`).
        network: which network the curves are of, for a title (an averaged run has two).

    Example:
        >>> h = {"loss": [1.0, 0.7, 0.5], "val_loss": [1.1, 0.8, 0.7], "accuracy": [0.5, 0.7, 0.8]}
        >>> plot_history(h, "/tmp/curves.png", phase_starts=[(1, "warmup"), (3, "fine_tune")])
    """
    columns = _read_history(history)
    starts = phase_starts or _phases_from_column(columns)
    save_figure(_history_figure(columns, starts, kept, network), path)


def natural_order(names: Sequence[str]) -> list[int]:
    """Indices that put ``names`` in the order a person counts them where they are in string order
    (as ``fit`` sorts class folders): numbers by value, "2" before "10"; names in an order of their
    own (a TFDS data set's labels) stay in it.

    Example:
        >>> names = sorted(["10", "2", "9", "ace", "king"])  # ['10', '2', '9', 'ace', 'king']
        >>> [names[i] for i in natural_order(names)]
        ['2', '9', '10', 'ace', 'king']
    """
    if list(names) != sorted(names):
        return list(range(len(names)))

    def key(index: int) -> list:
        parts = re.split(r"(\d+)", str(names[index]))
        return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in parts if part]

    return sorted(range(len(names)), key=key)


def _confusion_figure(metrics: Metrics, normalize: bool, split: str | None = None) -> Figure:
    order = natural_order(metrics.class_names)  # "2" before "10": the labels' own order is string order
    counts = np.array(metrics.confusion, dtype=np.int64)[np.ix_(order, order)]
    values = counts
    if normalize:  # each row as a fraction of that true class; empty rows stay 0
        totals = counts.sum(axis=1, keepdims=True)
        values = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    n = len(metrics.class_names)
    side = min(max(5.5, 0.3 * n + 2.5), 16)
    fig = new_figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.subplots()
    few = n <= ANNOTATE_MAX_CLASSES
    labels = class_labels(metrics.class_names)
    display = ConfusionMatrixDisplay(values, display_labels=[labels[i] for i in order]).plot(
        ax=ax,
        include_values=few,
        values_format=".2f" if normalize else "d",
        cmap="Blues",
        xticks_rotation=45 if few else 90,
        im_kw={"vmin": 0, "vmax": 1} if normalize else None,
    )
    if few:
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")
        if normalize:  # a share of 1.00 can be one image: each cell also says how many
            for (row, column), text in np.ndenumerate(display.text_):
                if counts[row, column]:
                    text.set_text(f"{values[row, column]:.2f}\n({counts[row, column]})")
    ax.tick_params(labelsize=9 if n <= 20 else 7)
    title = (
        "Confusion matrix (rows: true class, share of it; images in brackets)"
        if normalize and few
        else ("Confusion matrix (row-normalised)" if normalize else "Confusion matrix (counts)")
    )
    if split is not None:
        title += f"\n{metrics.num_samples} {split} images"
    key = "\n#i: a class no installed font can name (report.html lists them)"
    ax.set_title(
        f"{title}, accuracy {metrics.accuracy:.1%}" + (key if undrawable_classes(metrics.class_names) else "")
    )
    return fig


def plot_run(
    run_dir: str | os.PathLike,
    metrics: Metrics,
    recipe: Any,
    split: str | None = None,
    *,
    only_missing: bool = False,
) -> None:
    """A run folder's ``curves.png`` (an averaged run's partner's too, each naming its network) and
    ``confusion.png`` of ``metrics`` (the ``split`` it is on).

    Args:
        run_dir: the run folder (``history.csv``, ``state.json``, ``partner/``).
        metrics: the headline split's figures.
        recipe: the run's :class:`~transferkit.recipes.Recipe` (an averaged run names its networks).
        split: "test" or "validation", for the confusion matrix's title.
        only_missing: keep the figures that exist (``transferkit report`` after ``fit(report=False)``).
    """
    from transferkit.training import averaging

    run_dir = Path(run_dir)
    partner = averaging.read_partner(run_dir)
    for folder in (run_dir, averaging.partner_dir(run_dir)):  # the partner's: only if there is one
        if folder != run_dir and not (folder / "history.csv").exists():
            continue
        if only_missing and (folder / "curves.png").exists():
            continue
        network = None
        if partner is not None:  # two networks, two figures: each says which it is
            name = averaging.in_words(averaging.member_name(recipe if folder == run_dir else partner))
            other = "partner/curves.png" if folder == run_dir else "../curves.png"
            network = f"the {name} (the other network's curves: {other})"
        # kept_marks: the epochs whose weights a phase ended with (state.json)
        plot_history(folder / "history.csv", folder / "curves.png", kept=kept_marks(folder), network=network)
    if not (only_missing and (run_dir / "confusion.png").exists()):
        plot_confusion(metrics, run_dir / "confusion.png", split=split)


def plot_confusion(
    metrics: Metrics, path: str | os.PathLike, *, normalize: bool = True, split: str | None = None
) -> None:
    """Draw ``metrics.confusion`` (rows = true class) into ``path`` (PNG).

    Args:
        metrics: evaluation results.
        path: where to write the PNG (atomically).
        normalize: show each row as a fraction of its true class (readable with imbalanced
            classes); False shows counts. Cells are annotated up to 12 classes (normalised: with
            their counts too).
        split: which images these are ("test", "validation"), for the title.

    Example:
        >>> from transferkit.reporting.metrics import compute_metrics
        >>> m = compute_metrics(np.array([[0.9, 0.1], [0.6, 0.4]]), np.array([0, 1]), ["cat", "dog"])
        >>> plot_confusion(m, "/tmp/confusion.png")
    """
    save_figure(_confusion_figure(metrics, normalize, split), path)


def plot_image_grid(
    images: np.ndarray,
    path: str | os.PathLike,
    *,
    titles: Sequence[str] | None = None,
    columns: int = 8,
    suptitle: str | None = None,
) -> None:
    """Lay images out in a grid with optional per-image titles, into ``path`` (PNG).

    Args:
        images: ``(N, H, W, 3)`` (or ``(N, H, W, 1)``) pixels in 0-255; uint8, or float that is
            rounded and clipped (as Keras augmentation layers output it).
        path: where to write the PNG (atomically).
        titles: one caption per image (e.g. label or "pred (p=0.93)").
        columns: images per row.
        suptitle: a title over the whole grid.

    Example:
        >>> images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
        >>> plot_image_grid(images, "/tmp/grid.png", titles=list("abcdef"), columns=3)
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or not len(images) or columns < 1:
        raise TransferkitError(
            f"Expected a non-empty (N, H, W, 3) image array and columns >= 1; received shape {images.shape} "
            f"and columns={columns}. Stack the images with np.stack first."
        )
    if titles is not None and len(titles) != len(images):
        raise TransferkitError(f"Received {len(titles)} titles for {len(images)} images; pass one per image.")
    # Each line of a caption shortened on its own: a file name over its label keeps both.
    titles = (
        None if titles is None else ["\n".join(_label(line, 22) for line in t.split("\n")) for t in titles]
    )
    figure = image_grid_figure(images, titles, _label(suptitle, 200) if suptitle else None, columns=columns)
    save_figure(figure, path)


TITLE_INCHES_PER_CHARACTER = 0.085  # a grid title's average character at 10 pt, with room to spare


def _wrapped(title: str, inches: float) -> str:
    """``title`` in lines that fit a figure ``inches`` wide: on one line it ran off both sides of a
    narrow grid (``augment-preview --copies 2`` cut "fill_mode=... ±0.1" to "l_mode=... ±0.")."""
    return "\n".join(textwrap.wrap(title, max(20, int(inches / TITLE_INCHES_PER_CHARACTER))))


def image_grid_figure(
    images: np.ndarray,
    titles: Sequence[str] | None = None,
    title: str | None = None,
    *,
    heat: np.ndarray | None = None,
    columns: int = 6,
    tile_inches: float = 1.9,
    caption_lines: int = 2,
) -> Figure:
    """Images in a grid, each with its caption above; ``heat`` maps in [0, 1] blended over them.

    The grid is drawn as one mosaic in one axes: an axes per image costs about 50 ms to build and
    lay out (its ticks, constrained layout), over a second for a 20-image grid on CPU.

    Args:
        images: ``(N, H, W, 3)`` or ``(N, H, W, 1)`` pixels in 0-255 (float is rounded and clipped).
        titles: one caption per image (plain text, up to ``caption_lines`` lines), or None.
        title: a title over the whole grid, or None.
        heat: ``(N, H, W)`` maps in [0, 1], drawn in the ``jet`` colours at 45% opacity (Grad-CAM).
        columns: images per row.
        tile_inches: the width of one cell in the figure.
        caption_lines: the lines of caption each cell makes room for.
    """
    tiles = np.clip(np.rint(np.asarray(images, dtype=np.float32)), 0, 255)
    if tiles.shape[-1] == 1:
        tiles = np.repeat(tiles, 3, axis=-1)
    if heat is not None:
        from matplotlib import colormaps

        colours = colormaps["jet"](np.clip(heat, 0, 1))[..., :3] * 255.0
        tiles = 0.55 * tiles + 0.45 * colours
    count, height, width = tiles.shape[:3]
    cols = min(columns, count)
    rows = math.ceil(count / cols)
    pad = max(2, width // 16)
    inches_per_pixel = tile_inches / (width + pad)
    caption = math.ceil(0.14 * caption_lines / inches_per_pixel) if titles is not None else 0
    cell_height, cell_width = caption + height + pad, width + pad
    mosaic = np.full((rows * cell_height, cols * cell_width, 3), 255, np.uint8)
    for i, tile in enumerate(tiles.astype(np.uint8)):
        top, left = (i // cols) * cell_height + caption, (i % cols) * cell_width + pad // 2
        mosaic[top : top + height, left : left + width] = tile
    figure_inches = cols * cell_width * inches_per_pixel
    title = _wrapped(title, figure_inches) if title else None
    title_inches = 0.4 + 0.17 * title.count("\n") if title else 0.0
    grid_inches = mosaic.shape[0] * inches_per_pixel
    fig = new_figure(figsize=(figure_inches, grid_inches + title_inches))
    ax = fig.add_axes((0, 0, 1, grid_inches / (grid_inches + title_inches)))
    ax.imshow(mosaic)
    ax.set_axis_off()
    for i, text in enumerate(titles or ()):
        x = (i % cols) * cell_width + cell_width / 2
        y = (i // cols) * cell_height + caption - pad / 2
        ax.text(x, y, text, ha="center", va="bottom", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.08 / (grid_inches + title_inches), va="top")
    return fig


def plot_lr_find(result: Any, path: str | os.PathLike, title: str = "learning-rate range test") -> None:
    """The learning-rate range test: loss (raw, faint; smoothed, bold) against rate, suggestion marked.

    Args:
        result: a :class:`transferkit.training.lr_find.LRFindResult`.
        path: where to write the PNG (atomically).
        title: the figure's title (the recipe and phase swept, say).
    """
    fig = new_figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(result.learning_rates, result.losses, color="tab:blue", alpha=0.3, label="loss")
    ax.plot(result.learning_rates, result.smoothed, color="tab:blue", label="smoothed loss")
    ax.axvline(result.suggestion, color="tab:red", linestyle="--", label=f"suggested {result.suggestion:.2g}")
    ax.set_xscale("log")
    smoothed = [v for v in result.smoothed if math.isfinite(v)]
    raw = [v for v in result.losses if math.isfinite(v)]
    if smoothed:  # the diverging tail would squash the interesting part of the curve; raw dips stay in
        low = min(smoothed + raw)
        ax.set_ylim(low * 0.9, min(max(smoothed), 4 * min(smoothed)) * 1.05 + 1e-9)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    save_figure(fig, path)
