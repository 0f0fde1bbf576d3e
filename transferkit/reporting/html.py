"""``report.html``: one self-contained page that reads as a document about a run, pictures embedded.

It leads with the held-out result and what to do next, then the evidence. :func:`write_html_report`
reads whatever a run folder holds (every file optional) and writes the page atomically; all text
taken from the files is HTML-escaped; :func:`report` also redraws missing interpretation figures.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import tomllib
from collections.abc import Mapping
from pathlib import Path

from transferkit.console import format_p, run_time
from transferkit.errors import TransferkitError
from transferkit.fileio import write_text
from transferkit.reporting.figures import (
    _confusion_figure,
    _history_figure,
    _phases_from_column,
    _png_bytes,
    _read_history,
    kept_marks,
    plot_run,
    undrawable_classes,
)
from transferkit.reporting.html_parts import (
    bullets,
    esc,
    image,
    missing,
    record_table,
    records,
    scalars_and_records,
    section,
    table,
)
from transferkit.reporting.interpretation import FIGURES, INTERPRETATION_FILE, write_interpretation
from transferkit.reporting.metrics import Metrics
from transferkit.reporting.next_steps import next_steps
from transferkit.reporting.robustness import Robustness
from transferkit.reporting.runfolder import run_beside

SECTIONS = (  # every report has these headings, in this order
    "Result",
    "What to do next",
    "Training curves",
    "Confusion matrix",
    "Most-confused pairs",
    "Highest-loss images",
    "Grad-CAM heat maps",
    "Calibration",
    "Per-class results",
    "Model selection",
    "Dataset",
    "Run details",
    "Recipe",
)
_JSON_FILES = ("metrics", "run", "dataset_card", "selection", Path(INTERPRETATION_FILE).stem)
_SPLIT_NAMES = {"test": "held-out test", "validation": "validation", "": "evaluation"}
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;"
    "line-height:1.45}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
    "padding:.2em .6em;text-align:left;vertical-align:top;overflow-wrap:anywhere}td.n{text-align:right;"
    "font-variant-numeric:tabular-nums}img{max-width:100%}pre{background:#f6f6f6;padding:1em;overflow:auto}"
    ".note{color:#a40}.lead{font-size:1.25em}.muted{color:#666}h2{border-bottom:1px solid #ddd;"
    "padding-bottom:.2em;margin-top:1.8em}li{margin:.3em 0}code{background:#f2f2f2;padding:0 .2em}"
)


def report(run_dir: str | os.PathLike) -> Path:
    """Rebuild a run folder's ``report.html``, drawing the figures that are missing (all of them
    after ``fit(report=False)``).

    The interpretation figures need the run's ``predictions.npz`` (written by ``fit``), a missing
    Grad-CAM figure ``model.keras``; the curves ``history.csv``, the confusion matrix ``metrics.json``.

    Args:
        run_dir: a transferkit run folder.

    Example:
        >>> import transferkit
        >>> transferkit.report("runs/flowers")  # doctest: +SKIP
        PosixPath('runs/flowers/report.html')
    """
    run_dir = _check_folder(Path(run_dir))
    _plot_missing(run_dir)
    write_interpretation(run_dir, only_missing=True)
    return write_html_report(run_dir)


def _plot_missing(run_dir: Path) -> None:
    """``curves.png`` and ``confusion.png`` where the run has none (``fit(report=False)``). A run
    whose recipe or metrics cannot be read is left as it is: the page draws them in memory, or says
    what it could not read."""
    from transferkit import recipes

    notes: list[str] = []
    record = _load_json(run_dir / "metrics.json", notes)
    metrics = _load_metrics(record, notes)
    if notes or not metrics or not (run_dir / "history.csv").exists():
        return
    try:
        recipe = recipes.load(run_dir / "recipe.toml")
    except (OSError, TransferkitError):
        return
    split = next(iter(metrics))
    plot_run(run_dir, metrics[split], recipe, split=split or None, only_missing=True)


def write_html_report(run_dir: str | os.PathLike) -> Path:
    """Write ``run_dir/report.html``: one self-contained page about a run folder.

    Reads ``metrics.json``, ``interpretation.json``, ``run.json``, ``recipe.toml``, ``history.csv``,
    ``dataset_card.json``, ``selection.json`` and the folder's PNGs. Every file is optional: a
    missing one leaves a short note in its section, an unreadable one adds a note at the top.
    Pictures are embedded as data URIs (curves and confusion are drawn in memory when their PNG is
    missing) and all text from the files is HTML-escaped.

    Args:
        run_dir: a transferkit run folder.

    Example:
        >>> write_html_report("runs/flowers")  # doctest: +SKIP
        PosixPath('runs/flowers/report.html')
    """
    run_dir = _check_folder(Path(run_dir))
    notes: list[str] = []
    data = {name: _load_json(run_dir / f"{name}.json", notes) for name in _JSON_FILES}
    recipe_text, recipe = _load_recipe(run_dir / "recipe.toml", notes)
    metrics = _load_metrics(data["metrics"], notes)
    pictures = _pictures(run_dir, metrics, notes)
    name = run_dir.resolve().name
    body = f"<h1>transferkit run {esc(name)}</h1>{_byline(data['run'], recipe)}"
    body += "".join(f'<p class="note">{esc(note)}</p>' for note in notes)
    body += _result(
        metrics,
        data["interpretation"],
        data["metrics"].get("members") or {},
        data["metrics"].get("robustness") or {},
        data["metrics"].get("averaging") or {},
    )
    body += section(
        "What to do next",
        bullets(
            next_steps(
                metrics,
                data["interpretation"],
                data["selection"],
                shlex.quote(str(run_dir)),
                has_model=(run_dir / "model.keras").exists(),
                temperature=data["metrics"].get("calibration"),
                data=shlex.quote(str(data["run"].get("data") or "DATA")),
            )
        ),
    )
    body += _evidence(data, metrics, pictures, recipe_text)
    page = '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    page += f"<title>transferkit report: {esc(name)}</title><style>{_STYLE}</style></head>"
    page += f"<body>{body}</body></html>\n"
    path = run_dir / "report.html"
    write_text(path, page)
    return path


RUN_MARKS = ("run.json", "selection.json", "metrics.json")  # fit (from its start) or analyze wrote it


def _check_folder(run_dir: Path) -> Path:
    if not run_dir.is_dir():
        raise TransferkitError(
            f"Run folder {str(run_dir)!r} does not exist. Pass a folder `transferkit fit` wrote."
        )
    if (run_dir / "comparison.json").is_file():  # its runs are the runs: a report of each
        raise TransferkitError(f"{str(run_dir)!r} holds no transferkit run{run_beside(run_dir)}.")
    if not any((run_dir / name).is_file() for name in RUN_MARKS):
        if beside := run_beside(run_dir):
            raise TransferkitError(f"{str(run_dir)!r} holds no transferkit run{beside}.")
        raise TransferkitError(
            f"{str(run_dir)!r} holds no transferkit run (none of {', '.join(RUN_MARKS)}). Pass a "
            "folder `transferkit fit` or `transferkit analyze` wrote, e.g. runs/<run>."
        )
    return run_dir


# ---------------------------------------------------------------- reading the folder


def _finished(run: dict) -> dict:
    """``run.json`` as the report shows it: ``fit`` writes the report in its last step, while the
    status reads "reporting" (a run stopped there writes it again on ``--resume``), so it describes
    a finished run."""
    return {**run, "status": "finished"} if run.get("status") == "reporting" else run


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


_NOT_SPLITS = (
    "members",
    "robustness",
    "calibration",
    "averaging",
)  # metrics.json's other records beside its splits


def _load_metrics(data: Mapping[str, object], notes: list[str]) -> dict[str, Metrics]:
    """``{split: Metrics}`` from ``{"headline": "test", "test": {...}, "validation": {...}}`` or one flat
    Metrics dict; the headline split (the held-out test split when there is one) comes first."""
    if not data:
        notes.append("No readable metrics.json: this run has not been evaluated.")
    splits = (
        {"": data}
        if "accuracy" in data
        else {k: v for k, v in data.items() if isinstance(v, Mapping) and k not in _NOT_SPLITS}
    )
    first = data.get("headline", "test")
    splits = {k: splits[k] for k in sorted(splits, key=lambda k: k != first)}
    loaded = {}
    for split, values in splits.items():
        try:
            loaded[split] = Metrics.from_dict(values)
        except (TransferkitError, TypeError, ValueError, AttributeError) as error:
            notes.append(f"metrics.json {split} is not in the expected format: {error}")
    return loaded


def _pictures(run_dir: Path, metrics: Mapping[str, Metrics], notes: list[str]) -> dict[str, bytes]:
    """The folder's PNGs by file name; curves and confusion are drawn in memory if missing."""
    # Dot-files are atomic_path temporaries of a write in progress: never embed half a picture.
    pictures = {p.name: p.read_bytes() for p in sorted(run_dir.glob("*.png")) if not p.name.startswith(".")}
    history = run_dir / "history.csv"
    if "curves.png" not in pictures and history.exists():
        try:
            columns = _read_history(history)
            figure = _history_figure(columns, _phases_from_column(columns), kept_marks(run_dir))
            pictures["curves.png"] = _png_bytes(figure)
        except (OSError, ValueError, TypeError, TransferkitError) as error:
            notes.append(f"Could not draw the training curves from history.csv: {error}")
    if "confusion.png" not in pictures and metrics:
        pictures["confusion.png"] = _png_bytes(
            _confusion_figure(next(iter(metrics.values())), normalize=True)
        )
    return pictures


# ---------------------------------------------------------------- the document


def _byline(run: Mapping[str, object], recipe: Mapping[str, object]) -> str:
    parts = [
        run.get("backbone") or recipe.get("backbone", {}).get("name"),
        recipe.get("name") and f"recipe {recipe.get('name')} ({recipe.get('strategy', '?')})",
        run.get("data") and f"data {run['data']}",
        run.get("seconds") is not None
        and "trained in "
        + run_time(
            float(run["seconds"]),
            resumed="seconds_counted_from" in run or "seconds_before_the_stop" in run,
            before=float(run.get("seconds_before_the_stop", 0.0)),
        ),
    ]
    text = " · ".join(str(p) for p in parts if p)
    return f'<p class="muted">{esc(text)}</p>' if text else ""


def _result(
    metrics: Mapping[str, Metrics],
    interpretation: Mapping[str, object],
    members: Mapping[str, dict],
    robustness: Mapping[str, object],
    averaging: Mapping[str, object],
) -> str:
    if not metrics:
        return section("Result", missing("Not evaluated yet."))
    lines = []
    for split, m in metrics.items():
        low, high = m.accuracy_interval
        role = {"test": "seen by no training step", "validation": "watched by early stopping"}.get(split, "")
        text = (
            f"Accuracy ({_SPLIT_NAMES.get(split, split)}): <b>{m.accuracy:.1%}</b> "
            f"(95% CI {low:.1%}–{high:.1%}, {m.num_samples:,} images{', ' + role if role else ''})"
        )
        lines.append(f'<p class="{"lead" if not lines else "muted"}">{text}</p>')
    rows = [
        (f"{_SPLIT_NAMES.get(s, s)}", m.accuracy, m.top5_accuracy, m.macro_f1, m.loss, m.num_samples)
        for s, m in metrics.items()
    ]
    summary = table(rows, ("split", "accuracy", "top-5 accuracy", "macro F1", "loss", "images"))
    if members:  # an averaged model (transferkit.training.averaging): each network alone
        from transferkit.training.averaging import in_words

        headline = next(iter(metrics))
        each = ", ".join(
            f"{in_words(name)} {m[headline]['accuracy']:.1%}" for name, m in members.items() if headline in m
        )
        main, partner = (in_words(name) for name in list(members)[:2])
        text = (
            f"The model averages the probabilities of {len(members)} networks (the {main}'s run "
            f"folder here, the {partner}'s in partner/); each alone on the same images: {each}."
        )
        if averaging.get("kept") is False:
            text = (
                f"The {partner} was trained beside the {main} (partner/), to be averaged with it, "
                f"and dropped: on the validation images the {main} got "
                f"{averaging.get('main_correct', averaging.get('whole_correct'))} right against "
                f"{_rival_counts(averaging, partner)} of {averaging.get('images')} "
                f"(sign test, {format_p(float(averaging.get('p_value', 1)))}). The model is the "
                f"{main} alone. Each network on the same images: {each}"
            )
            averaged = (averaging.get("averaged_accuracy") or {}).get(headline)
            text += f"; their average would have scored {averaged:.1%}." if averaged is not None else "."
        summary += f"<p>{esc(text)}</p>"
    summary += _robustness(robustness)
    split = interpretation.get("split")
    used = (
        f"The interpretation below (confused pairs, highest losses, heat maps, calibration) uses the "
        f"{_SPLIT_NAMES.get(str(split), split)} images ({interpretation.get('num_samples')})."
        if split
        else "No saved predictions (predictions.npz): the interpretation sections are empty."
    )
    return section("Result", "".join(lines) + summary + f'<p class="muted">{esc(used)}</p>')


def _robustness(record: Mapping[str, object]) -> str:
    """The run's accuracy under invisible pixel noise (metrics.json ``robustness``), with the advice
    when it falls; nothing for runs made before it was measured."""
    try:
        robustness = Robustness.from_dict(record)
    except (KeyError, TypeError):
        return ""
    split = _SPLIT_NAMES.get(robustness.split, robustness.split)
    if robustness.fragile:
        return f'<p class="note">{esc(robustness.warning())}</p>'
    return f'<p class="muted">{esc(dataclasses.replace(robustness, split=split).describe())}</p>'


def _evidence(
    data: Mapping[str, dict], metrics: Mapping[str, Metrics], pictures: dict, recipe_text: str
) -> str:
    interpretation = data["interpretation"]
    figure = {key: pictures.pop(name, None) for key, name in FIGURES.items()}
    no_predictions = "Needs predictions.npz, which `transferkit fit` writes."
    notes = bullets(interpretation.get("notes") or [])
    parts = [
        section(
            "Training curves", image(pictures.pop("curves.png", None), "training curves", "No history.csv.")
        ),
        section(
            "Confusion matrix",
            image(pictures.pop("confusion.png", None), "confusion", "Not evaluated.") + _class_key(metrics),
        ),
        section("Most-confused pairs", _pairs(interpretation)),
        section(
            "Highest-loss images",
            image(figure["top_losses"], "highest-loss images", no_predictions) + _losses(interpretation),
        ),  # fmt: skip
        section("Grad-CAM heat maps", image(figure["grad_cam"], "Grad-CAM", no_predictions) + notes),
        section(
            "Calibration",
            _calibration(interpretation, data["metrics"].get("calibration") or {})
            + image(figure["calibration"], "calibration", ""),
        ),
        section("Per-class results", _per_class(metrics)),
        section("Model selection", _selection(data["selection"], data["metrics"].get("averaging") or {})),
        section("Dataset", _dataset(data["dataset_card"])),
        section("Run details", scalars_and_records(_finished(data["run"]), skip=("class_names",))),
        section("Recipe", f"<pre>{esc(recipe_text)}</pre>" if recipe_text else missing("No recipe.toml.")),
    ]
    if pictures:  # e.g. selection.png, augment_preview.png
        titled = {Path(n).stem.replace("_", " "): png for n, png in pictures.items()}
        figures = "".join(f"<h3>{esc(t)}</h3>{image(png, t, '')}" for t, png in titled.items())
        parts.append(section("Other figures", figures))
    return "".join(parts)


def _pairs(interpretation: Mapping[str, object]) -> str:
    pairs = interpretation.get("confused_pairs")
    if not pairs:
        return missing("No confusions." if "confused_pairs" in interpretation else "No saved predictions.")
    rows = [(p["true"], p["predicted"], int(p["count"]), f"{float(p['rate']):.0%}") for p in pairs]
    return table(rows, ("true class", "predicted as", "images", "share of the true class"))


def _losses(interpretation: Mapping[str, object]) -> str:
    rows = [
        (r.get("path") or "—", r["true"], r["predicted"], r["probability"], r["true_probability"], r["loss"])
        for r in interpretation.get("top_losses") or []
    ]
    return table(rows, ("image", "true", "predicted", "p(predicted)", "p(true)", "loss"))


def _calibration(interpretation: Mapping[str, object], temperature: Mapping[str, object]) -> str:
    calibration = interpretation.get("calibration")
    if not calibration:
        return missing("No saved predictions.")
    over = float(calibration.get("overconfidence", 0.0))
    text = (
        f"Expected calibration error (ECE) {float(calibration['ece']):.3f} "
        f"over {calibration.get('bins')} bins "
        f"(0 is perfect: a prediction made with confidence p is right a fraction p of the time). Mean "
        f"confidence is {abs(over):.1%} {'above' if over >= 0 else 'below'} accuracy."
    )
    if temperature.get("applied"):
        text += (
            f" The model divides its logits by a temperature of {float(temperature['temperature']):.2f}, "
            f"fitted on {temperature['images']} validation images (their ECE "
            f"{float(temperature['ece_before']):.3f} -> {float(temperature['ece_after']):.3f})"
        )
        if interpretation.get("split") == "test":
            text += "; the figures here are on test images it never saw."
        else:
            text += "; the figures here are on those validation images, which flatters them."
    elif temperature:
        text += f" Not calibrated: {temperature.get('reason')}."
    return f"<p>{esc(text)}</p>"


def _class_key(metrics: Mapping[str, Metrics]) -> str:
    """The classes the figures number (``#i``) because no font installed here draws their names."""
    numbered = undrawable_classes(next(iter(metrics.values())).class_names) if metrics else []
    if not numbered:
        return ""
    intro = (
        '<p class="muted">The figures number the classes whose names no font installed on this machine '
        "can draw (a font with their script, e.g. Noto Sans CJK, draws the names):</p>"
    )
    return intro + table([(f"#{i}", name) for i, name in numbered], ("in the figures", "class"))


def _per_class(metrics: Mapping[str, Metrics]) -> str:
    if not metrics:
        return missing("Not evaluated.")
    split, m = next(iter(metrics.items()))
    rows = [(name, *shown) for name, shown in m.per_class_shown().items()]
    intro = f'<p class="muted">On the {esc(_SPLIT_NAMES.get(split, split))} images.</p>'
    return intro + table(rows, ("class", "precision", "recall", "F1", "images"))


def _rival_counts(averaging: Mapping[str, object], partner: str) -> str:
    """What the dropped partner's check weighed the run's own network against, and its count."""
    if averaging.get("rival") == "average":
        return f"{averaging.get('average_correct')} for the average with the {partner}"
    return f"the {partner}'s {averaging.get('partner_correct')}"


def _selection(selection: Mapping[str, object], averaging: Mapping[str, object]) -> str:
    if not selection:
        return missing("Not measured: the recipe was given (or size and similarity were).")
    picked = f"{selection.get('quadrant', '?')} → {selection.get('recipe', '?')}"
    cut = f" at {selection['cut_point']}" if selection.get("cut_point") else ""
    if selection.get("partner_cut"):
        cut += f", averaged with a truncation at {selection['partner_cut']}"
    elif selection.get("partner"):
        cut += f", averaged with {selection['partner']}"
    if selection.get("partner") or selection.get("partner_cut"):
        if averaging.get("kept") is False:
            cut += " (trained, then dropped: see Result)"
    close = " It was a close call." if selection.get("close_call") else ""
    confidence = float(selection.get("confidence", 0.0))
    head = f"<p>Picked <b>{esc(picked + cut)}</b> with confidence {confidence:.2f}.{esc(close)}</p>"
    reasons = [str(r) for r in selection.get("reasons") or []]
    why = "<h3>Why</h3>" + bullets(reasons) if reasons else ""
    skip = (
        "quadrant",
        "recipe",
        "cut_point",
        "partner",
        "partner_cut",
        "confidence",
        "close_call",
        "reasons",
    )
    return head + why + scalars_and_records(selection, skip=skip)


def _dataset(card: Mapping[str, object]) -> str:
    if not card:
        return missing("No dataset_card.json.")
    counts = card.get("counts") if isinstance(card.get("counts"), Mapping) else {}
    splits = [s for s in ("train", "val", "validation", "test") if s in counts] + [
        s for s in counts if s not in ("train", "val", "validation", "test")
    ]
    classes = list(dict.fromkeys(c for s in splits for c in counts[s]))
    per_split = table([[c, *(counts[s].get(c, 0) for s in splits)] for c in classes], ("class", *splits))
    skipped = card.get("skipped") or []
    left_out = f"<h3>Left out ({len(skipped)})</h3>{record_table(skipped)}" if records(skipped) else ""
    return per_split + scalars_and_records(card, skip=("counts", "class_names", "skipped")) + left_out
