"""Run-folder pictures and the HTML report: training curves, confusion matrix, image grids.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot state, so plotting is
thread-safe and never opens a window) and written atomically with
:func:`transferkit.fileio.atomic_path`. :func:`write_html_report` reads whatever a run folder
holds and writes one self-contained ``report.html`` with the pictures embedded as data URIs.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import ConfusionMatrixDisplay

from transferkit.errors import TransferkitError
from transferkit.evaluate import Metrics
from transferkit.fileio import atomic_path, write_text

DPI = 110
ANNOTATE_MAX_CLASSES = 12  # above this, cell numbers become unreadable; the colour carries the value
_ACCURACY_KEYS = ("accuracy", "sparse_categorical_accuracy", "categorical_accuracy", "acc")
History = Mapping[str, Sequence[float]] | str | os.PathLike


def _save(fig: Figure, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)


def _png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _label(text: object, width: int = 24) -> str:
    """Plain text for matplotlib: shortened, and '$' escaped so no name is parsed as mathtext."""
    text = " ".join(str(text).split())
    text = text if len(text) <= width else text[: width - 1] + "…"
    return text.replace("$", r"\$")


def _read_history(history: History) -> dict[str, list]:
    if isinstance(history, str | os.PathLike):
        with open(history, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        return {key: [row[key] for row in rows] for key in (rows[0] if rows else {})}
    return {key: list(values) for key, values in history.items()}


def _floats(values: Sequence[object]) -> np.ndarray:
    return np.array([float(v) if v not in ("", None) else math.nan for v in values], dtype=float)


def _phases_from_column(columns: Mapping[str, Sequence[object]]) -> list[tuple[int, str]]:
    phases = [str(p) for p in columns.get("phase", ())]
    return [(i + 1, p) for i, p in enumerate(phases) if i == 0 or p != phases[i - 1]]


def _history_figure(
    columns: Mapping[str, Sequence[object]], phase_starts: Sequence[tuple[int, str]]
) -> Figure:
    if not any(len(v) for v in columns.values()):
        raise TransferkitError(
            "The training history is empty: no epoch was recorded, so there is nothing to plot."
        )
    fig = Figure(figsize=(11, 4.2), layout="constrained")
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
        ax.set(xlabel="epoch", ylabel=metric, title=metric)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def plot_history(
    history: History, path: str | os.PathLike, *, phase_starts: Sequence[tuple[int, str]] = ()
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

    Example:
        >>> h = {"loss": [1.0, 0.7, 0.5], "val_loss": [1.1, 0.8, 0.7], "accuracy": [0.5, 0.7, 0.8]}
        >>> plot_history(h, "/tmp/curves.png", phase_starts=[(1, "warmup"), (3, "fine_tune")])
    """
    columns = _read_history(history)
    _save(_history_figure(columns, phase_starts or _phases_from_column(columns)), path)


def _confusion_figure(metrics: Metrics, normalize: bool) -> Figure:
    counts = np.array(metrics.confusion, dtype=np.int64)
    values = counts
    if normalize:  # each row as a fraction of that true class; empty rows stay 0
        totals = counts.sum(axis=1, keepdims=True)
        values = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    n = len(metrics.class_names)
    side = min(max(5.5, 0.3 * n + 2.5), 16)
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.subplots()
    few = n <= ANNOTATE_MAX_CLASSES
    ConfusionMatrixDisplay(values, display_labels=[_label(c, 20) for c in metrics.class_names]).plot(
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
    ax.tick_params(labelsize=9 if n <= 20 else 7)
    title = "Confusion matrix (row-normalised)" if normalize else "Confusion matrix (counts)"
    ax.set_title(f"{title}\naccuracy {metrics.accuracy:.1%}")
    return fig


def plot_confusion(metrics: Metrics, path: str | os.PathLike, *, normalize: bool = True) -> None:
    """Draw ``metrics.confusion`` (rows = true class) into ``path`` (PNG).

    Args:
        metrics: evaluation results.
        path: where to write the PNG (atomically).
        normalize: show each row as a fraction of its true class (readable with imbalanced
            classes); False shows counts. Cells are annotated up to 12 classes.

    Example:
        >>> from transferkit.evaluate import compute_metrics
        >>> m = compute_metrics(np.array([[0.9, 0.1], [0.6, 0.4]]), np.array([0, 1]), ["cat", "dog"])
        >>> plot_confusion(m, "/tmp/confusion.png")
    """
    _save(_confusion_figure(metrics, normalize), path)


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
    if images.dtype != np.uint8:
        images = np.clip(np.rint(images), 0, 255).astype(np.uint8)
    cols = min(columns, len(images))
    rows = math.ceil(len(images) / cols)
    fig = Figure(figsize=(1.8 * cols, 1.9 * rows + (0.4 if suptitle else 0)), layout="constrained")
    for i, ax in enumerate(fig.subplots(rows, cols, squeeze=False).ravel()):
        ax.set_axis_off()
        if i < len(images):
            ax.imshow(
                images[i, ..., 0] if images.shape[-1] == 1 else images[i], cmap="gray", vmin=0, vmax=255
            )
            if titles is not None:
                ax.set_title(_label(titles[i], 22), fontsize=8)
    if suptitle:
        fig.suptitle(_label(suptitle, 100))
    _save(fig, path)


# ---------------------------------------------------------------- HTML report

_SUMMARY_KEYS = {  # row label -> dotted keys, tried in order, in {run, recipe, card}
    "Dataset": ("run.data", "run.dataset", "run.dataset.path", "card.source"),
    "Backbone": ("run.backbone", "run.backbone.name", "recipe.backbone.name"),
    "Recipe": ("run.recipe", "recipe.name"),
    "Strategy": ("run.strategy", "recipe.strategy"),
    "Weights": ("run.weights", "run.weights_source", "recipe.backbone.weights"),
    "Training time (s)": ("run.seconds",),
    "Trainable params": ("run.trainable_params",),
}
_JSON_FILES = ("metrics", "run", "dataset_card", "selection")
_TITLES = {"curves.png": "Training curves", "confusion.png": "Confusion matrix"}
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}"
    "td.n{text-align:right}img{max-width:100%}pre{background:#f6f6f6;padding:1em}.note{color:#a40}"
)


def _load_json(path: Path, notes: list[str]) -> dict:
    """Read an optional JSON object: {} when missing; {} and a note when unreadable."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        error: object = "not a JSON object"
        if isinstance(data, dict):
            return data
    except (OSError, ValueError) as exc:
        error = exc
    notes.append(f"Could not read {path.name}: {error}")
    return {}


def _load_recipe(path: Path, notes: list[str]) -> tuple[str, dict]:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        notes.append(f"Could not parse recipe.toml: {error}")
        return text, {}


def _load_metrics(data: Mapping[str, object], notes: list[str]) -> dict[str, Metrics]:
    """``{split: Metrics}`` from ``{"validation": {...}, "test": {...}}`` or one flat Metrics dict."""
    if not data:
        notes.append("No readable metrics.json: this run has not been evaluated.")
    splits = {"": data} if "accuracy" in data else {k: v for k, v in data.items() if isinstance(v, Mapping)}
    loaded = {}
    for split, values in splits.items():
        try:
            loaded[split] = Metrics.from_dict(values)
        except (TransferkitError, TypeError, ValueError, AttributeError) as error:
            notes.append(f"metrics.json {split} is not in the expected format: {error}")
    return loaded


def _flatten(data: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _cell(value: object) -> str:
    if isinstance(value, float):
        return (
            f'<td class="n">{value:.3f}</td>'
            if value == 0 or 1e-3 <= abs(value) < 1e5
            else f"<td>{value:.3g}</td>"
        )
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = text if len(text) <= 300 else text[:299] + "…"
    return f"<td{' class=n' if isinstance(value, int) else ''}>{html.escape(text)}</td>"


def _table(title: str, rows: Sequence[Sequence[object]], header: Sequence[str] = ()) -> str:
    if not rows:
        return ""
    head = "<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(map(_cell, row)) + "</tr>" for row in rows)
    return f"<h2>{html.escape(title)}</h2><table>{head}{body}</table>"


def _records(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _mapping_tables(title: str, data: Mapping[str, object], limit: int = 200) -> str:
    """Scalars as one key/value table; each list of records (plan, scores, skipped) as its own table."""
    out = _table(title, [(key, value) for key, value in data.items() if not _records(value)])
    for key, records in data.items():
        if _records(records):
            header = list(dict.fromkeys(k for record in records for k in record))
            rows = [[record.get(h, "") for h in header] for record in records[:limit]]
            more = f" (first {limit} of {len(records)})" if len(records) > limit else f" ({len(records)})"
            out += _table(f"{title}: {key}{more}", rows, header)
    return out


def _plain(value: object) -> object:
    """Numbers as readable text (thousands separators, one decimal); anything else unchanged."""
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}" if type(value) is int else value


def _summary(flat: Mapping[str, object], run: Mapping, metrics: Mapping[str, Metrics]) -> list[tuple]:
    rows = []
    for label, keys in _SUMMARY_KEYS.items():
        value = next((flat[k] for k in keys if flat.get(k) not in (None, "")), None)
        if value is None and label == "Trainable params" and _records(run.get("plan")):
            value = ", ".join(f"{p.get('name')}: {_plain(p.get('trainable_params'))}" for p in run["plan"])
        if value is not None:
            rows.append((label, _plain(value)))
    for split, m in metrics.items():
        suffix = f" ({split})" if split else ""
        top5 = "n/a (5 classes or fewer)" if m.top5_accuracy is None else f"{m.top5_accuracy:.1%}"
        rows += [(f"Accuracy{suffix}", f"{m.accuracy:.1%}"), (f"Top-5 accuracy{suffix}", top5)]
        rows += [(f"Macro F1{suffix}", f"{m.macro_f1:.3f}"), (f"Loss{suffix}", f"{m.loss:.4f}")]
        rows.append((f"Evaluated images{suffix}", str(m.num_samples)))
    return rows


def _pictures(run_dir: Path, metrics: Mapping[str, Metrics], notes: list[str]) -> str:
    """The folder's PNGs as <img> data URIs; curves and confusion are drawn in memory if missing."""
    # Dot-files are atomic_path temporaries of a write in progress: never embed half a picture.
    pictures = {p.name: p.read_bytes() for p in sorted(run_dir.glob("*.png")) if not p.name.startswith(".")}
    history = run_dir / "history.csv"
    if "curves.png" not in pictures and history.exists():
        try:
            columns = _read_history(history)
            pictures["curves.png"] = _png_bytes(_history_figure(columns, _phases_from_column(columns)))
        except (OSError, ValueError, TypeError, TransferkitError) as error:
            notes.append(f"Could not draw the training curves from history.csv: {error}")
    if "confusion.png" not in pictures and metrics:
        pictures["confusion.png"] = _png_bytes(
            _confusion_figure(next(iter(metrics.values())), normalize=True)
        )
    ordered = {name: pictures.pop(name) for name in _TITLES if name in pictures} | pictures
    return "".join(
        f"<h2>{html.escape(title)}</h2>"
        f'<img alt="{html.escape(title)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        for title, png in ((_TITLES.get(n, Path(n).stem.replace("_", " ")), b) for n, b in ordered.items())
    )


def _sections(data: Mapping[str, dict], recipe: dict, metrics: Mapping[str, Metrics], pictures: str) -> str:
    run = data["run"]
    flat = _flatten({"run": run, "recipe": recipe, "card": data["dataset_card"]})
    parts = [_table("Summary", _summary(flat, run, metrics)), pictures]
    for split, m in metrics.items():
        rows = [
            (name, s["precision"], s["recall"], s["f1"], int(s["support"])) for name, s in m.per_class.items()
        ]
        title = f"Per class ({split})" if split else "Per class"
        parts.append(_table(title, rows, ("class", "precision", "recall", "F1", "support")))
    parts.append(_mapping_tables("Model selection", data["selection"]))
    parts.append(_mapping_tables("Dataset", data["dataset_card"]))
    parts.append(_mapping_tables("Run details", run))
    return "".join(parts)


def write_html_report(run_dir: str | os.PathLike) -> Path:
    """Write ``run_dir/report.html``: one self-contained page summarising a run folder.

    Reads ``metrics.json`` (``{"validation": ..., "test": ...}`` or one :meth:`Metrics.to_dict`),
    ``run.json``, ``recipe.toml``, ``history.csv``, ``dataset_card.json``, ``selection.json`` and
    the folder's PNGs. Every file is optional: a missing one leaves its section out, an
    unreadable one adds a note at the top. Pictures are embedded as base64 data URIs (curves and
    confusion are drawn in memory when their PNG is missing) and all text from the files is
    HTML-escaped.

    Args:
        run_dir: a transferkit run folder.

    Example:
        >>> write_html_report("runs/flowers")  # doctest: +SKIP
        PosixPath('runs/flowers/report.html')
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise TransferkitError(
            f"Run folder {str(run_dir)!r} does not exist. Pass a folder `transferkit fit` wrote."
        )
    notes: list[str] = []
    data = {name: _load_json(run_dir / f"{name}.json", notes) for name in _JSON_FILES}
    recipe_text, recipe = _load_recipe(run_dir / "recipe.toml", notes)
    metrics = _load_metrics(data["metrics"], notes)
    pictures = _pictures(run_dir, metrics, notes)
    body = f"<h1>transferkit run {html.escape(run_dir.resolve().name)}</h1>"
    body += "".join(f'<p class="note">{html.escape(note)}</p>' for note in notes)
    body += _sections(data, recipe, metrics, pictures)
    if recipe_text:
        body += f"<h2>Recipe</h2><pre>{html.escape(recipe_text)}</pre>"
    page = '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>transferkit report</title>'
    page += f"<style>{_STYLE}</style></head><body>{body}</body></html>\n"
    path = run_dir / "report.html"
    write_text(path, page)
    return path
