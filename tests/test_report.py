"""Plots are valid PNGs of a plausible size; the HTML report is self-contained, escaped and tolerant."""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import re
import shutil
import subprocess
from types import SimpleNamespace

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from matplotlib import colormaps
from matplotlib import image as mpimg

from transferkit.cli import main
from transferkit.errors import TransferkitError
from transferkit.reporting.figures import (
    image_grid_figure,
    kept_marks,
    plot_confusion,
    plot_history,
    plot_image_grid,
)
from transferkit.reporting.html import SECTIONS, write_html_report
from transferkit.reporting.interpretation import _caption
from transferkit.reporting.metrics import compute_metrics
from transferkit.testing import make_image_folder

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EVIL = "<script>alert(1)</script>"
LONG_REASON = "similarity: " + " ".join(["the deepest cut's probe accuracy beats every earlier cut"] * 8)


def assert_png(path, min_width=200, min_height=150):
    """A real PNG that matplotlib reads back, at least this many pixels, and no temp file beside it."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    height, width, channels = mpimg.imread(path).shape
    assert width >= min_width and height >= min_height and channels in (3, 4)
    assert [p.name for p in path.parent.iterdir() if ".tmp" in p.name] == []


def metrics_for(class_names, correct_fraction=7 / 8, samples_per_class=8):
    """Metrics where each class has ``samples_per_class`` samples, a fraction of them right."""
    n = len(class_names)
    labels = np.repeat(np.arange(n), samples_per_class)
    predicted = labels.copy()
    wrong = np.arange(len(labels)) % samples_per_class >= round(correct_fraction * samples_per_class)
    predicted[wrong] = (labels[wrong] + 1) % n
    probs = np.full((len(labels), n), 0.4 / (n - 1))
    probs[np.arange(len(labels)), predicted] = 0.6
    return compute_metrics(probs, labels, class_names)


def test_plot_history_from_a_mapping_with_phase_lines(tmp_path):
    history = {
        "loss": [1.2, 0.9, 0.7, 0.5],
        "val_loss": [1.3, 1.0, 0.8, 0.75],
        "accuracy": [0.4, 0.6, 0.7, 0.8],
        "val_accuracy": [0.35, 0.55, 0.65, 0.7],
    }
    plot_history(history, tmp_path / "curves.png", phase_starts=[(1, "warmup"), (3, "fine_tune")])
    assert_png(tmp_path / "curves.png", min_width=800)


def test_the_weights_each_phase_kept_are_marked_where_they_sit_on_the_epoch_axis(tmp_path):
    state = {"phase_epochs": [5, 3, 4], "kept_epochs": [0, 2, None]}  # the start, epoch 2, the last
    (tmp_path / "state.json").write_text(json.dumps(state))
    marks = kept_marks(tmp_path)
    assert marks == [(0.5, "kept: start"), (7.0, "kept")]  # phase 2 runs epochs 6-8 on the axis
    history = {"loss": list(np.linspace(1, 0.1, 12)), "val_loss": list(np.linspace(1, 0.5, 12))}
    plot_history(history, tmp_path / "curves.png", phase_starts=[(1, "head"), (6, "all")], kept=marks)
    assert_png(tmp_path / "curves.png", min_width=800)
    assert kept_marks(tmp_path / "no-such-run") == []  # a run from before kept_epochs: no marks
    (tmp_path / "state.json").write_text(json.dumps({"phase_epochs": [5]}))
    assert kept_marks(tmp_path) == []


def test_plot_history_from_a_keras_csv_logger_file(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = np.random.default_rng(0).normal(size=(16, 3)), np.arange(16) % 2
    logger = keras.callbacks.CSVLogger(str(tmp_path / "history.csv"))
    model.fit(x, y, validation_split=0.25, epochs=3, verbose=0, callbacks=[logger])
    plot_history(tmp_path / "history.csv", tmp_path / "curves.png")
    assert_png(tmp_path / "curves.png", min_width=800)


def test_plot_history_reads_phase_column_and_tolerates_blank_cells(tmp_path):
    csv_text = "epoch,loss,val_loss,phase\n0,1.0,,warmup\n1,0.8,0.9,warmup\n0,0.6,0.7,fine_tune\n"
    (tmp_path / "history.csv").write_text(csv_text)
    plot_history(tmp_path / "history.csv", tmp_path / "curves.png")
    assert_png(tmp_path / "curves.png")


def test_plot_history_refuses_an_empty_history(tmp_path):
    with pytest.raises(TransferkitError, match="empty"):
        plot_history({"loss": []}, tmp_path / "curves.png")
    assert not (tmp_path / "curves.png").exists()


@pytest.mark.parametrize("normalize", [True, False])
def test_plot_confusion_few_classes(tmp_path, normalize):
    plot_confusion(metrics_for(["cat", "dog", EVIL]), tmp_path / "confusion.png", normalize=normalize)
    assert_png(tmp_path / "confusion.png")


def test_a_normalised_confusion_cell_says_how_many_images_and_the_title_which_split():
    from transferkit.reporting.figures import _confusion_figure, _history_figure

    metrics = metrics_for(["cat", "dog", "fox"])
    ax = _confusion_figure(metrics, normalize=True, split="test").axes[0]
    counts = np.array(metrics.confusion)
    shown = [text.get_text() for text in ax.texts if "\n(" in text.get_text()]
    assert len(shown) == np.count_nonzero(counts)  # every cell with images carries its count
    assert f"{metrics.num_samples} test images, accuracy" in ax.get_title()
    ranks = _confusion_figure(metrics_for(["10", "2", "9", "ace"]), normalize=True).axes[0]  # sorted
    assert [tick.get_text() for tick in ranks.get_yticklabels()] == ["2", "9", "10", "ace"]  # as counted
    figure = _history_figure({"loss": [1.0, 0.5]}, [(1, "head")], network="the truncation")
    assert figure._suptitle.get_text() == "Training curves of the truncation"


def test_an_image_grid_shortens_each_line_of_a_caption_on_its_own(tmp_path, monkeypatch):
    from transferkit.reporting import figures

    shown = []
    monkeypatch.setattr(figures, "image_grid_figure", lambda images, titles, *a, **k: shown.append(titles))
    monkeypatch.setattr(figures, "save_figure", lambda *a: None)
    images = np.zeros((1, 8, 8, 3), np.uint8)
    plot_image_grid(images, tmp_path / "grid.png", titles=["a_very_long_file_name_indeed.jpg\ndog (0.50)"])
    assert shown == [["a_very_long_file_name…\ndog (0.50)"]]  # the label is not cut off by the name


def test_plot_confusion_forty_classes_with_awkward_names_grows_the_figure(tmp_path):
    names = [f"class {i} with a rather long descriptive name" for i in range(38)] + ["$x^", "$5 $10"]
    plot_confusion(metrics_for(names), tmp_path / "confusion.png")
    assert_png(tmp_path / "confusion.png", min_width=1200, min_height=1200)


def test_installed_fallback_fonts_join_the_family_behind_the_default_once(monkeypatch):
    """Class names in scripts DejaVu Sans lacks (CJK, Arabic, ...) are drawn in an installed font
    that has them, glyph by glyph, instead of as boxes; fonts that are not installed are not named."""
    import matplotlib
    from matplotlib import font_manager

    from transferkit.reporting import figures

    fonts = [*font_manager.fontManager.ttflist]
    fake = dataclasses.replace(fonts[0], name="WenQuanYi Zen Hei")  # as fonts-wqy-zenhei installs it
    monkeypatch.setattr(font_manager.fontManager, "ttflist", [*fonts, fake])
    monkeypatch.setitem(matplotlib.rcParams, "font.family", ["sans-serif"])
    figures.use_fallback_fonts.cache_clear()
    try:
        added = figures.use_fallback_fonts()
        installed = {font.name for font in font_manager.fontManager.ttflist}
        assert added == tuple(name for name in figures.FALLBACK_FONTS if name in installed)
        assert "WenQuanYi Zen Hei" in added
        assert matplotlib.rcParams["font.family"] == ["sans-serif", *added]
        figures.new_figure()
        assert matplotlib.rcParams["font.family"] == ["sans-serif", *added]  # once, not per figure
    finally:
        figures.use_fallback_fonts.cache_clear()


def test_a_class_name_is_drawable_when_a_font_of_the_family_has_every_glyph(monkeypatch, no_fallback_fonts):
    import matplotlib

    figures = no_fallback_fonts
    assert figures.drawable("Café au lait 2") and figures.drawable("dog\u200d")  # a joiner needs no glyph
    assert not figures.drawable("猫") and not figures.drawable("cat 猫")
    monkeypatch.setitem(matplotlib.rcParams, "font.family", ["cmr10"])  # TeX's roman: ASCII and little else
    assert figures.drawable("cafe") and not figures.drawable("café")
    monkeypatch.setitem(matplotlib.rcParams, "font.family", ["cmr10", "DejaVu Sans"])  # glyph by glyph
    assert figures.drawable("café") and figures.class_labels(["café", "猫"]) == ["café", "#1"]
    monkeypatch.setitem(matplotlib.rcParams, "font.family", ["not a font", "DejaVu Sans"])
    assert figures.drawable("café")


def test_class_names_no_font_can_draw_are_numbered_in_the_figures_and_keyed_in_the_report(
    no_fallback_fonts, run_dir
):
    """Chinese or Japanese class names on a machine without a CJK font were rows of boxes in the
    confusion matrix and the image captions: they are numbered by class index, and the report
    (which the browser draws with its own fonts) says which number is which class."""
    figures = no_fallback_fonts
    names = ["cat", "猫", "犬 (dog)", "$5"]
    assert figures.class_labels(names) == ["cat", "#1", "#2", r"\$5"]
    assert figures.undrawable_classes(names) == [(1, "猫"), (2, "犬 (dog)")]
    fig = figures._confusion_figure(metrics_for(names), normalize=True)
    (ax, *_) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cat", "#1", "#2", r"\$5"]
    assert "#i: a class no installed font can name" in ax.get_title()
    plain = figures._confusion_figure(metrics_for(["cat", "dog"]), normalize=True)
    assert "#i" not in plain.axes[0].get_title()
    held_out = SimpleNamespace(
        class_names=names, labels=np.array([1]), probabilities=np.array([[0.1, 0.2, 0.6, 0.1]])
    )
    assert _caption(held_out, 0) == "true #1 (0.20)\npred #2 (0.60)"  # the top-loss and Grad-CAM grids

    (run_dir / "metrics.json").write_text(json.dumps({"validation": metrics_for(names).to_dict()}))
    page = write_html_report(run_dir).read_text(encoding="utf-8")
    key = page[page.index("The figures number the classes") :]
    assert re.search(r"<td>#1</td>\s*<td>猫</td>", key) and re.search(
        r"<td>#2</td>\s*<td>犬 \(dog\)</td>", key
    )
    (run_dir / "metrics.json").write_text(json.dumps({"validation": metrics_for(["a", "b"]).to_dict()}))
    assert "The figures number the classes" not in write_html_report(run_dir).read_text(encoding="utf-8")


def test_plot_image_grid_uint8_float_and_grey(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(10, 24, 24, 3), dtype=np.uint8)
    plot_image_grid(images, tmp_path / "grid.png", titles=[f"img {i}" for i in range(10)], columns=4)
    assert_png(tmp_path / "grid.png", min_width=400, min_height=400)
    plot_image_grid(images[:4].astype(np.float32) + 0.4, tmp_path / "float.png", suptitle="augmented $")
    assert_png(tmp_path / "float.png", min_width=700, min_height=100)
    plot_image_grid(images[:3, :, :, :1], tmp_path / "grey.png")
    assert_png(tmp_path / "grey.png", min_width=250, min_height=100)


def test_image_grid_figure_is_one_mosaic_with_each_caption_over_its_image_and_heat_blended():
    images = np.stack([np.full((20, 20, 3), 10 * i, np.uint8) for i in range(5)])
    titles = [f"image {i}" for i in range(5)]
    fig = image_grid_figure(images, titles, "grid", heat=np.ones((5, 20, 20)), columns=2)
    (ax,) = fig.axes  # one axes, not one per image
    mosaic = np.asarray(ax.images[0].get_array())
    assert [text.get_text() for text in ax.texts] == titles
    for i, text in enumerate(ax.texts):  # the caption sits right above its own tile
        x, y = text.get_position()
        row, col = int(y + 1), int(x)
        assert mosaic[row, col].tolist() != [255, 255, 255], f"no tile under caption {i}"
        expected = np.rint(0.55 * 10 * i + 0.45 * np.array(colormaps["jet"](1.0)[:3]) * 255)
        assert np.abs(mosaic[row + 2, col].astype(int) - expected).max() <= 1
    plain = np.asarray(image_grid_figure(images, columns=5).axes[0].images[0].get_array())
    assert plain.shape[0] < mosaic.shape[0] / 2  # one row, and no caption band
    assert sorted({int(v) for v in np.unique(plain)}) == [0, 10, 20, 30, 40, 255]


def test_a_grid_title_wider_than_its_grid_wraps_inside_the_figure_whole(monkeypatch):
    """augment-preview with 2 copies drew its title on one line past both edges, and the 100
    characters it kept cut the pixel noise off the small_dissimilar recipe's title."""
    from transferkit.reporting import figures

    title = (
        "fill_mode=reflect, rotation ±15°, zoom ±0.1, shift ±0.1, flip horizontal, contrast ±0.1, "
        "pixel noise up to 1.5"
    )
    drawn = []
    monkeypatch.setattr(figures, "save_figure", lambda figure, path: drawn.append(figure))
    plot_image_grid(np.zeros((6, 40, 40, 3), np.uint8), "unused.png", suptitle=title, columns=3)
    (fig,) = drawn
    fig.canvas.draw()
    box = fig._suptitle.get_window_extent()
    assert " ".join(fig._suptitle.get_text().split()) == title
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height


@pytest.mark.parametrize(
    ("images", "kwargs", "message"),
    [
        (np.zeros((2, 8, 8), np.uint8), {}, "received shape"),
        (np.zeros((2, 8, 8, 3), np.uint8), {"titles": ["only one"]}, "1 titles for 2 images"),
        (np.zeros((2, 8, 8, 3), np.uint8), {"columns": 0}, "columns >= 1"),
    ],
)
def test_plot_image_grid_rejects_bad_input(tmp_path, images, kwargs, message):
    with pytest.raises(TransferkitError, match=message):
        plot_image_grid(images, tmp_path / "grid.png", **kwargs)


def embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


@pytest.fixture
def run_dir(tmp_path):
    """A run folder as ``transferkit fit`` leaves it (file formats as api.py writes them), no pictures."""
    run = tmp_path / "runs" / "flowers"
    run.mkdir(parents=True)
    validation, test = metrics_for(["daisy", "rose", EVIL]), metrics_for(["daisy", "rose", EVIL], 5 / 8)
    metrics = {"validation": validation.to_dict(), "test": test.to_dict()}
    (run / "metrics.json").write_text(json.dumps(metrics))
    plan = [{"name": "warmup", "train": "head", "epochs": 2, "learning_rate": 1e-3, "trainable_params": 3843}]
    run_info = {"data": "data/flowers", "backbone": "mobilenet_v2", "weights": "imagenet (torchvision)"}
    run_info |= {"seconds": 42.5, "plan": plan, "status": "finished"}
    (run / "run.json").write_text(json.dumps(run_info))
    recipe = 'name = "small_similar"\nstrategy = "freeze"\n[backbone]\nname = "mnv2"\n'
    (run / "recipe.toml").write_text(recipe)
    header = "epoch,phase,accuracy,loss,val_accuracy,val_loss,seconds\n"
    rows = "1,warmup,0.5,1.0,0.4,1.1,3.0\n2,warmup,0.7,0.8,0.6,0.9,6.1\n3,fine_tune,0.8,0.6,0.7,0.8,9.9\n"
    (run / "history.csv").write_text(header + rows)
    card = {"source": "data/flowers", "counts": {"train": {"daisy": 8}}, "skipped": []}
    card["skipped"] = [{"path": "rose/<bad>.jpg", "reason": "not an image"}]
    (run / "dataset_card.json").write_text(json.dumps(card))
    scores = [{"cut": "block_13_add", "logme": 1.5, "probe_accuracy": 0.9}]
    selection = {"quadrant": "small_similar", "recipe": "freeze", "scores": scores, "close_call": True}
    selection |= {"confidence": 0.55, "similar": True, "reasons": [LONG_REASON, "size: 8 images per class"]}
    trial = {"quadrant": "small_dissimilar", "val_accuracy": 0.75, "seconds": 1.5}
    selection["trials"] = {"budget_seconds": 4.0, "candidates": [trial]}
    (run / "selection.json").write_text(json.dumps(selection))
    return run


def test_html_report_summarises_escapes_and_embeds(run_dir):
    path = write_html_report(run_dir)
    page = path.read_text(encoding="utf-8")
    assert path == run_dir / "report.html"
    assert "87.5%" in page and "62.5%" in page  # validation and test accuracy
    assert EVIL not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "rose/&lt;bad&gt;.jpg" in page and "not an image" in page
    for expected in (
        "data/flowers",
        "mobilenet_v2",
        "imagenet (torchvision)",
        '<td class="n">3843</td>',
        "42.5",
    ):
        assert expected in page
    assert "small_similar" in page and "block_13_add" in page and "<pre>" in page
    pngs = embedded_pngs(page)
    assert len(pngs) == 2 and all(png[:8] == PNG_SIGNATURE for png in pngs)  # curves + confusion
    assert "<img" in page and 'src="runs' not in page  # self-contained: no links to files


def test_the_report_written_in_a_fits_last_step_calls_the_run_finished(run_dir):
    info = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**info, "status": "reporting"}))  # as fit writes it
    page = write_html_report(run_dir).read_text(encoding="utf-8")
    assert "reporting" not in page and "finished" in page


def test_html_report_reads_a_flat_metrics_file(run_dir):
    (run_dir / "metrics.json").write_text(json.dumps(metrics_for(["a", "b"], 3 / 4).to_dict()))
    page = write_html_report(run_dir).read_text(encoding="utf-8")
    assert "75.0%" in page and "Per-class results</h2>" in page


def test_html_report_prefers_existing_pictures_and_adds_extra_ones(run_dir):
    images = np.zeros((2, 8, 8, 3), np.uint8)
    plot_image_grid(images, run_dir / "augment_preview.png")
    plot_confusion(metrics_for(["a", "b"]), run_dir / "confusion.png")
    (run_dir / ".curves.abc123.tmp.png").write_bytes(b"half a picture")  # a write in progress
    page = write_html_report(run_dir).read_text(encoding="utf-8")
    assert len(embedded_pngs(page)) == 3
    assert (run_dir / "confusion.png").read_bytes() in embedded_pngs(page)
    assert "augment preview" in page


def test_html_report_tolerates_missing_and_broken_optional_files(run_dir):
    for name in ("run.json", "dataset_card.json", "selection.json", "history.csv", "recipe.toml"):
        (run_dir / name).unlink()
    page = write_html_report(run_dir).read_text(encoding="utf-8")
    assert "87.5%" in page and len(embedded_pngs(page)) == 1  # confusion only: no history

    (run_dir / "run.json").write_text("{not json")
    (run_dir / "history.csv").write_text("")
    (run_dir / "metrics.json").unlink()
    page = write_html_report(run_dir).read_text(encoding="utf-8")
    assert "Could not read run.json" in page and "holds no trained model" in page  # no model.keras here
    (run_dir / "model.keras").write_bytes(b"")  # a model, but no metrics: evaluate it (a command that runs)
    page = write_html_report(run_dir).read_text(encoding="utf-8")
    assert f"transferkit evaluate {run_dir} --data DATA" in html.unescape(page)


def test_html_report_needs_an_existing_folder(tmp_path):
    with pytest.raises(TransferkitError, match="does not exist"):
        write_html_report(tmp_path / "nope")


def test_report_refuses_a_folder_that_holds_no_run_and_writes_nothing_there(tmp_path):
    data = make_image_folder(tmp_path / "data", classes=2, per_class=2, size=8)
    result = CliRunner().invoke(main, ["report", str(data)])
    assert result.exit_code == 2 and "holds no transferkit run" in result.output, result.output
    assert not (data / "report.html").exists()


def test_report_on_a_compare_folder_names_its_runs_and_writes_nothing(tmp_path):
    compared = tmp_path / "cmp"
    (compared / "small_similar").mkdir(parents=True)
    (compared / "comparison.json").write_text("{}")
    (compared / "selection.json").write_text("{}")
    (compared / "small_similar" / "run.json").write_text("{}")
    result = CliRunner().invoke(main, ["report", str(compared)])
    assert result.exit_code == 2 and "give one of its runs" in result.output, result.output
    assert not (compared / "report.html").exists()


def test_html_report_reads_as_a_document(run_dir):
    page = write_html_report(run_dir).read_text(encoding="utf-8")
    headings = re.findall(r"<h2[^>]*>([^<]+)</h2>", page)
    assert headings == list(SECTIONS)  # every section, in order, even when its files are missing
    assert page.index("Accuracy (held-out test): <b>62.5%</b>") < page.index("Accuracy (validation)")
    assert f"<li>{html.escape(LONG_REASON)}</li>" in page  # the full reason, as a list item
    assert "transferkit compare --data data/flowers" in page  # the selector's close call, on its data
    assert "Class &#x27;" in page and "is weak" in page  # the weakest classes need images
    assert "<td>yes</td>" in page and '<td class="n">yes' not in page  # booleans read as words, left
    assert '<td class="n">0.900</td>' in page  # numbers right-aligned


def test_html_report_shows_saved_interpretation(run_dir):
    pairs = [{"true": EVIL, "predicted": "rose", "count": 3, "rate": 0.375}]
    losses = [{"path": f"x/{EVIL}.jpg", "true": EVIL, "predicted": "rose", "probability": 0.9}]
    losses[0] |= {"true_probability": 0.05, "loss": 3.0}
    calibration = {"ece": 0.31, "overconfidence": 0.3, "bins": 15}
    record = {"split": "test", "num_samples": 24, "confused_pairs": pairs, "top_losses": losses}
    record |= {"calibration": calibration, "notes": []}
    (run_dir / "interpretation.json").write_text(json.dumps(record))
    page = write_html_report(run_dir).read_text(encoding="utf-8")
    assert EVIL not in page and "in 3 of 8 held-out images (38%)" in page
    assert "overconfident (ECE 0.31" in page and "x/&lt;script&gt;" in page


CHROMIUM = shutil.which("chromium")
CHROMIUM_FLAGS = (
    "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking "
    "--disable-component-update --disable-sync --enable-logging=stderr --v=0"
).split()


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (`make browser` installs it as root)"
)
def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    plot_image_grid(images, run_dir / "top_losses.png")
    url = write_html_report(run_dir).resolve().as_uri()
    command = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    for title in SECTIONS:
        assert f">{title}</h2>" in dom, title
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom and "<script>alert(1)" not in dom
    assert "<script" not in dom  # the hostile class name is text, never an element
    errors = [
        line
        for line in done.stderr.splitlines()
        if "Uncaught" in line or ("CONSOLE" in line and "rror" in line)
    ]
    assert errors == []
    assert dom.count("data:image/png;base64,") >= 3  # curves, confusion, top losses: embedded


def test_report_open_says_so_when_no_browser_can_start(run_dir, monkeypatch):
    import webbrowser

    opened = []
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url) or False)
    result = CliRunner().invoke(main, ["report", str(run_dir), "--open"])
    assert result.exit_code == 0 and opened == [(run_dir / "report.html").resolve().as_uri()]
    assert result.stdout.strip() == str(run_dir / "report.html")
    assert "No web browser could be started" in result.stderr


def test_a_table_reads_a_negative_zero_as_zero():
    from transferkit.reporting.html_parts import cell

    assert cell(-0.0) == cell(0.0) == '<td class="n">0.000</td>'
    assert (
        cell(20.0) == '<td class="n">20</td>' and cell(1.0) == '<td class="n">1.000</td>'
    )  # a count, a share


def test_the_trials_nested_in_selection_json_read_as_a_table_not_as_json(run_dir):
    page = write_html_report(run_dir).read_text(encoding="utf-8")
    assert "<h3>trials: candidates (1)</h3>" in page and "<td>small_dissimilar</td>" in page
    assert "&quot;quadrant&quot;" not in page  # no raw JSON of the records


def test_a_wide_interval_names_the_split_it_was_measured_on():
    from transferkit.reporting.metrics import compute_metrics
    from transferkit.reporting.next_steps import next_steps

    two = compute_metrics(np.eye(2)[[0, 1]], np.array([0, 1]), ["a", "b"])
    assert "Only 2 held-out images" in " ".join(next_steps({"test": two}, {}, {}))
    untested = " ".join(next_steps({"validation": two}, {}, {}))
    assert "Only 2 validation images" in untested and "held-out images:" not in untested
