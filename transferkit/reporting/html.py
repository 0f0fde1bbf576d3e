"""``report.html``: one self-contained page that summarises a run folder, pictures embedded.

:func:`write_html_report` reads whatever a run folder holds (every file optional) and writes the
page atomically; all text taken from the files is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import json
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path

from transferkit.errors import TransferkitError
from transferkit.fileio import write_text
from transferkit.reporting.figures import (
    _confusion_figure,
    _history_figure,
    _phases_from_column,
    _png_bytes,
    _read_history,
)
from transferkit.reporting.metrics import Metrics

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
    """``{split: Metrics}`` from ``{"headline": "test", "test": {...}, "validation": {...}}`` or one flat
    Metrics dict; the headline split (the held-out test split when there is one) comes first."""
    if not data:
        notes.append("No readable metrics.json: this run has not been evaluated.")
    splits = {"": data} if "accuracy" in data else {k: v for k, v in data.items() if isinstance(v, Mapping)}
    first = data.get("headline", "test")
    splits = {k: splits[k] for k in sorted(splits, key=lambda k: k != first)}
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
        suffix = f" ({'held-out test' if split == 'test' else split})" if split else ""
        top5 = "n/a (5 classes or fewer)" if m.top5_accuracy is None else f"{m.top5_accuracy:.1%}"
        low, high = m.accuracy_interval
        accuracy = f"{m.accuracy:.1%} (95% CI {low:.1%}-{high:.1%}, n={m.num_samples})"
        rows += [(f"Accuracy{suffix}", accuracy), (f"Top-5 accuracy{suffix}", top5)]
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
