"""End to end through the public API and the CLI, on the tiny backbone and synthetic folders."""

import csv
import dataclasses
import json
import platform
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import transferkit
from transferkit import api, recipes
from transferkit.cli import main
from transferkit.data import loading
from transferkit.reporting.diagnostics import load_predictions
from transferkit.testing import Interrupted, add_trainer_callback, interrupt_at, make_image_folder, stopped

RUN_FILES = {
    "model.keras",
    "labels.txt",
    "recipe.toml",
    "run.json",
    "dataset_card.json",
    "history.csv",
    "metrics.json",
    "curves.png",
    "confusion.png",
    "report.html",
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data") / "shapes", classes=3, per_class=10)


# The quadrants whose recipes test_recipe_learns_separable_data checks train long enough to learn, the
# others one epoch; a fit's cost is mostly fixed (tracing, the augmentation check, plots, report).
LEARNING_EPOCHS = {("small", True): 30, ("large", False): 30}


@pytest.fixture(scope="module")
def quadrant_run(folder, tmp_path_factory):
    """``quadrant_run(size, similar)``: the fit of that quadrant on ``folder``, made when a test first
    asks for it and shared by the tests that check different aspects of it. None of them changes
    the run folder (those that do change a copy), nor traces the model's predict function
    (test_fit_evaluates_through_its_traced_steps_with_the_saved_models_figures checks it was not)."""
    runs = {}

    def run(size, similar):
        if (size, similar) not in runs:
            with pytest.MonkeyPatch.context() as patch:
                patch.chdir(folder.parent)  # a relative --data: the run records where its images are
                runs[size, similar] = transferkit.fit(
                    folder.name,
                    size=size,
                    similar=similar,
                    backbone="tiny",
                    weights="random",
                    epochs=LEARNING_EPOCHS.get((size, similar), 1),
                    batch_size=8,
                    out=tmp_path_factory.mktemp("runs"),
                    verbose=0,
                )
        return runs[size, similar]

    return run


def _copy_of(run, tmp_path):
    """A copy of a shared run's folder, for a test that changes it."""
    return Path(shutil.copytree(run.run_dir, tmp_path / run.run_dir.name))


@pytest.mark.parametrize(
    ("size", "similar", "strategy"),
    [
        ("small", True, "freeze"),
        ("small", False, "truncate"),
        ("large", True, "fine_tune"),
        ("large", False, "retrain"),
    ],
)
def test_each_quadrant_trains_and_writes_the_full_run_folder(quadrant_run, size, similar, strategy):
    run = quadrant_run(size, similar)  # 1 epoch, or 30 where test_recipe_learns_separable_data shares it
    assert run.recipe.strategy == strategy
    assert RUN_FILES <= {p.name for p in run.run_dir.iterdir()}
    metrics = json.loads((run.run_dir / "metrics.json").read_text())["validation"]
    assert 0.0 <= metrics["accuracy"] <= 1.0 and len(metrics["confusion"]) == 3
    assert (run.run_dir / "labels.txt").read_text().split() == ["class_0", "class_1", "class_2"]
    saved = transferkit.recipes.load(run.run_dir / "recipe.toml")
    assert saved == run.recipe and (strategy != "truncate" or saved.backbone.cut in run.recipe.backbone.cut)
    assert saved.backbone.image_size == transferkit.get_backbone("tiny").default_size  # resolved, not 0
    if strategy == "truncate":
        assert run.recipe.backbone.cut in transferkit.get_backbone("tiny").cut_points
    model = keras.models.load_model(run.run_dir / "model.keras", safe_mode=True)
    pixels = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3)).astype("float32")
    # The fit's model called, not its predict(): that would trace the shared run's predict function.
    in_memory = keras.ops.convert_to_numpy(run.model(pixels, training=False))
    np.testing.assert_allclose(model.predict(pixels, verbose=0), in_memory, atol=1e-6)


@pytest.mark.parametrize("recipe", ["small_similar", "large_dissimilar"])
def test_recipe_learns_separable_data(quadrant_run, recipe):
    size, similar = {"small_similar": ("small", True), "large_dissimilar": ("large", False)}[recipe]
    run = quadrant_run(size, similar)  # that quadrant's fit, trained 30 epochs (LEARNING_EPOCHS)
    assert run.recipe.name == recipe and run.recipe.phases[-1].epochs == 30
    with open(run.run_dir / "history.csv", newline="") as handle:
        losses = [float(row["loss"]) for row in csv.DictReader(handle)]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    if recipe == "small_similar":  # frozen: only the head trains, in every phase
        assert all(phase.train == "head" for phase in run.plan)
    assert run.metrics.accuracy > 0.5  # chance is 0.33


@pytest.mark.parametrize(
    "name,rates,first",
    # large_similar and large_dissimilar train the whole network above the stem (frozen_input_stride
    # = 4: Conv1 to block_3); a phase whose blocks would learn at under 1/20 of the head's rate (0.8
    # per block) keeps them frozen (min_block_lr_factor): up to block_4
    [
        ("small_similar", {}, None),
        ("large_similar", {}, "block_4_expand"),
        ("large_dissimilar", {}, "block_4_expand"),
        ("large_similar", {"frozen_input_stride": 2}, "block_2_expand"),
        ("large_similar", {"frozen_input_stride": 0}, "Conv1"),
        ("large_similar", {"lr_decay_per_block": 0.8, "min_block_lr_factor": 0.05}, "block_5_expand"),
    ],
)
def test_dry_run_on_a_real_backbone_shows_what_trains(folder, name, rates, first):
    recipe = recipes.load_builtin(name)
    last = dataclasses.replace(recipe.phases[-1], **rates)
    recipe = dataclasses.replace(recipe, phases=(*recipe.phases[:-1], last))
    run = transferkit.fit(
        str(folder),
        recipe=recipe,
        backbone="mobilenet_v2",
        weights="random",
        image_size=64,
        dry_run=True,
        verbose=0,
    )
    assert run.run_dir is None and run.metrics is None
    last = run.plan[-1]
    assert last.first_trainable_layer == first
    if name == "small_similar":
        assert last.trainable_params == 1280 * 3 + 3
    else:
        assert last.trainable_params > 1280 * 3 + 3 and last.frozen_params > 0  # BatchNorm stays frozen


def test_dry_run_of_truncate_cuts_the_base(folder):
    run = transferkit.fit(
        str(folder),
        size="small",
        similar=False,
        backbone="mobilenet_v2",
        weights="random",
        image_size=64,
        dry_run=True,
        verbose=0,
    )
    assert run.recipe.backbone.cut in transferkit.get_backbone("mobilenet_v2").cut_points[:-1]
    assert run.model.get_layer("head").input_shape[-1] < 1280


def test_cli_fit_then_predict_returns_labels(folder, tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "fit",
            "--data",
            str(folder),
            "--size",
            "small",
            "--similar",
            "--backbone",
            "tiny",
            "--weights",
            "random",
            "--epochs",
            "1",
            "--out",
            str(tmp_path),
            "--name",
            "r",
            "--test-split",
            "0.3",
            "--no-report",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("test accuracy ") and "(95% CI " in result.output  # test figures lead
    assert not (tmp_path / "r" / "report.html").exists() and (tmp_path / "r" / "metrics.json").exists()
    card = json.loads((tmp_path / "r" / "dataset_card.json").read_text())
    assert (card["test_split"]["fraction"], card["test_split"]["num_test"]) == (0.3, 9)
    result = runner.invoke(
        main, ["predict", str(tmp_path / "r"), str(folder / "class_1"), "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert len(rows) == 10 and {row["label"] for row in rows} <= {"class_0", "class_1", "class_2"}
    assert all(abs(sum(p for _, p in row["top"]) - 1) < 1e-4 for row in rows)
    table = tmp_path / "new" / "predictions.csv"  # --out, as other commands name it; folder made
    result = runner.invoke(
        main, ["predict", str(tmp_path / "r"), str(folder / "class_1"), "--out", str(table)]
    )
    assert result.exit_code == 0 and result.stdout == "", result.output
    assert len(table.read_text().splitlines()) == 1 + 10
    result = runner.invoke(main, ["evaluate", str(tmp_path / "r"), "--data", str(folder), "--format", "json"])
    assert result.exit_code == 0 and json.loads(result.output)["num_samples"] == 30  # all of it, as before
    low, high = json.loads(result.output)["accuracy_interval"]
    assert low <= json.loads(result.output)["accuracy"] <= high
    two = tmp_path / "two_classes"  # class_2 has no images here: no recall to show, not 0.000
    for name in ("class_0", "class_1"):
        shutil.copytree(folder / name, two / name)
    result = runner.invoke(main, ["evaluate", str(tmp_path / "r"), "--data", str(two)])
    assert result.exit_code == 0, result.output
    (row,) = [line.split() for line in result.output.splitlines() if line.startswith("class_2")]
    assert row[2:] == ["-", "-", "0"]


def _tiny_fit(data, out, **options):
    options = (
        dict(recipe="small_similar", backbone="tiny", weights="random", epochs=1, batch_size=8) | options
    )
    return transferkit.fit(str(data), out=out, verbose=0, **options)


def test_plain_fit_without_a_test_folder_reports_held_out_test_figures(folder, quadrant_run):
    run = quadrant_run("small", True)  # small_similar, made from a relative --data (quadrant_run)
    paths = load_predictions(run.run_dir).paths
    assert len(paths) == 6 and all(Path(p).is_absolute() and Path(p).is_file() for p in paths)
    record = json.loads((run.run_dir / "metrics.json").read_text())
    assert record["headline"] == "test" and record["test"]["num_samples"] == 6  # 15% of 3 x 10, 2 a class
    low, high = record["test"]["accuracy_interval"]
    assert 0 <= low <= record["test"]["accuracy"] <= high <= 1 and high - low > 0.2  # 6 images: wide
    assert record["validation"]["num_samples"] == 6 and "accuracy_interval" in record["validation"]
    held_out = json.loads((run.run_dir / "run.json").read_text())["test_split"]
    assert record["test"]["scored"] == held_out["note"] and "seen by no training step" in held_out["note"]
    assert record["validation"]["scored"].startswith("validation split: 6 images, watched by early stopping")
    assert run.headline == "test" and run.metrics.num_samples == 6 and run.validation_metrics.num_samples == 6
    splits = transferkit.load_data(str(folder), seed=run.recipe.seed)
    assert held_out["sha256"] == splits.holdout.sha256 and held_out["origin"] == "held_out"
    assert run.summary().startswith(f"test accuracy {run.metrics.accuracy:.3f} (95% CI ")
    assert f"| validation {run.validation_metrics.accuracy:.3f} |" in run.summary()
    report = (run.run_dir / "report.html").read_text()
    assert "Accuracy (held-out test)" in report and "not in the expected format" not in report
    assert "Under invisible pixel noise" in report or "relies on exact pixel values" in report
    robustness = record["robustness"]  # the same test images, with invisible pixel noise
    assert robustness["split"] == "test" and robustness["num_samples"] == 6
    clean = round(record["test"]["accuracy"], 4)
    assert robustness["clean_accuracy"] == clean == run.robustness.clean_accuracy
    assert robustness["pixel_noise"] == 2.0 and 0 <= robustness["accuracy"] <= 1


def test_a_fit_without_a_report_writes_every_number_and_report_draws_the_pictures_later(folder, tmp_path):
    run = _tiny_fit(folder, tmp_path / "runs", report=False)
    written = {p.name for p in run.run_dir.iterdir()}
    pictures = {
        "curves.png",
        "confusion.png",
        "report.html",
        "top_losses.png",
        "grad_cam.png",
        "calibration.png",
    }
    assert RUN_FILES - pictures <= written and not written & pictures
    assert {"predictions.npz", "interpretation.json", "timings.json"} <= written
    interpretation = json.loads((run.run_dir / "interpretation.json").read_text())
    assert (
        len(interpretation["top_losses"]) == run.metrics.num_samples
        and "ece" in interpretation["calibration"]
    )
    assert json.loads((run.run_dir / "run.json").read_text())["report"] is False  # a resume follows it
    stages = json.loads((run.run_dir / "timings.json").read_text())["totals"]
    assert "plots" not in stages and "interpretation" in stages
    assert transferkit.report(run.run_dir) == run.run_dir / "report.html"
    assert pictures <= {p.name for p in run.run_dir.iterdir()}  # every figure a fit with a report draws
    assert "Grad-CAM heat maps" in (run.run_dir / "report.html").read_text()
    with pytest.raises(transferkit.TransferkitError, match="report must be True or False"):
        _tiny_fit(folder, tmp_path / "runs", report="no")
    refused = CliRunner().invoke(main, ["fit", "--resume", str(run.run_dir), "--no-report"])
    assert refused.exit_code == 2 and "--report cannot be used with --resume" in refused.output


def test_fit_evaluates_through_its_traced_steps_with_the_saved_models_figures(quadrant_run):
    run = quadrant_run("small", True)  # small_similar, 30 epochs: its best epoch restored and saved
    assert run.model.predict_function is None  # Keras' predict function was never traced
    again = transferkit.evaluate(run.run_dir)  # the saved model.keras, predict_on_batch, same test split
    assert again.num_samples == run.metrics.num_samples == 6
    assert again.accuracy == run.metrics.accuracy
    assert again.loss == pytest.approx(run.metrics.loss, rel=1e-4, abs=1e-6)


def test_tiny_data_holds_out_no_test_split_and_says_the_figures_are_validation(tmp_path, capsys):
    tiny = make_image_folder(tmp_path / "tiny", classes=2, per_class=2)
    run = transferkit.fit(str(tiny), recipe="small_similar", backbone="tiny", weights="random",
                          epochs=1, out=tmp_path, verbose=2)  # fmt: skip
    printed = capsys.readouterr().out
    assert (
        "test split: none, 2 of 2 classes have fewer than 3 images; accuracy below is validation" in printed
    )
    record = json.loads((run.run_dir / "metrics.json").read_text())
    assert record["headline"] == "validation" and "test" not in record
    assert run.summary().startswith("validation accuracy ") and "no test split" in run.summary()


def test_a_run_that_started_with_no_test_split_resumes_on_the_images_it_started_with(tmp_path, monkeypatch):
    data = make_image_folder(tmp_path / "tail", classes=3, per_class=8)
    for path in sorted((data / "class_2").iterdir())[2:]:
        path.unlink()  # 8, 8 and 2 images: a test split from the first two classes now, none before

    def none_held_out(labels, test_split, seed, groups=None):  # as transferkit split until 2026-12-08
        return np.arange(len(labels)), np.zeros(0, np.int64), "the smallest class has 2 images"

    with monkeypatch.context() as patch:
        patch.setattr(loading, "hold_out_test", none_held_out)
        add_trainer_callback(patch, lambda trainer: interrupt_at(1))
        with pytest.raises(Interrupted):
            transferkit.fit(str(data), recipe="small_similar", backbone="tiny", weights="random", epochs=3,
                            out=tmp_path, name="r", report=False, verbose=0)  # fmt: skip
    run_dir = tmp_path / "r"
    assert json.loads((run_dir / "run.json").read_text())["test_split"]["origin"] == "none"
    assert loading.load_data(data).holdout.origin == "held_out"  # as a new fit would split it now
    resumed = transferkit.resume(run_dir, verbose=0)
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["headline"] == "validation" and "test" not in record  # the run's own splits, as started
    assert resumed.metrics.num_samples == 5  # 2 + 2 + 1 validation images of 18, none held out


def test_auto_selection_on_one_training_image_a_class_keeps_the_base_frozen(tmp_path):
    # 3 images a class: one each for test, validation and training; no probe can be cross-validated.
    tiny = make_image_folder(tmp_path / "tiny", classes=2, per_class=3)
    run = transferkit.fit(
        str(tiny), backbone="tiny", weights="random", epochs=1, out=tmp_path, verbose=0, report=False
    )
    selection = json.loads((run.run_dir / "selection.json").read_text())
    assert run.recipe.name == "small_similar" and not selection["close_call"]
    assert any("similarity not measured" in reason for reason in selection["reasons"])
    assert run.headline == "test" and run.metrics.num_samples == 2


def test_the_selectors_sample_is_drawn_from_the_training_split_only(folder, monkeypatch):
    from transferkit.selection import measure

    samples = []
    original = measure.stratified_sample
    monkeypatch.setattr(
        measure, "stratified_sample", lambda images, *a: samples.append(original(images, *a)) or samples[-1]
    )
    transferkit.fit(str(folder), backbone="tiny", weights="random", dry_run=True, verbose=0)
    splits = transferkit.load_data(str(folder))
    (sample,) = samples
    assert len(sample) and set(sample.paths) <= set(splits.train.paths)


@pytest.mark.parametrize("size", ["auto", "small", "large"])
def test_a_given_similarity_skips_the_forward_pass_it_would_discard(folder, monkeypatch, size):
    from transferkit.selection import measure

    def measured(*args, **kwargs):
        raise AssertionError("features were extracted although similarity was given")

    monkeypatch.setattr(measure, "CutFeatures", measured)
    run = transferkit.fit(
        str(folder), size=size, similar=True, backbone="tiny", weights="random", dry_run=True, verbose=0
    )
    assert run.selection is None or (run.selection.similar and not run.selection.scores)


def test_resume_dry_run_trains_nothing_and_writes_nothing(quadrant_run, tmp_path):
    run_dir = _copy_of(quadrant_run("small", True), tmp_path)
    info = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**info, "status": "training"}))
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    result = CliRunner().invoke(main, ["fit", "--resume", str(run_dir), "--dry-run", "-q"])
    assert result.exit_code == 0, result.output
    assert "nothing was trained" in result.output
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()} == before


def test_resume_rebuilds_the_same_test_split_and_refuses_a_changed_one(folder, quadrant_run, tmp_path):
    # A copy of the shared run on a copy of its images (images are added below): its run.json names
    # that copy, as a run made on it would.
    data = Path(shutil.copytree(folder, tmp_path / "data"))
    run_dir = _copy_of(quadrant_run("small", True), tmp_path)
    info = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**info, "data": str(data), "status": "training"}))
    assert transferkit.resume(run_dir, dry_run=True, verbose=0).run_dir is None  # same split: fine
    make_image_folder(tmp_path / "more", classes=2, per_class=6, seed=1)
    for image in (tmp_path / "more" / "class_0").iterdir():
        image.rename(data / "class_0" / f"extra-{image.name}")
    with pytest.raises(transferkit.TransferkitError, match="held-out test split .* is not the one"):
        transferkit.resume(run_dir, dry_run=True, verbose=0)


def test_a_run_from_before_the_test_split_resumes_on_its_own_split(
    quadrant_run, tmp_path, monkeypatch, capsys
):
    run_dir = _copy_of(quadrant_run("small", True), tmp_path)
    info = json.loads((run_dir / "run.json").read_text())
    del info["test_split"]  # what a run.json written before the held-out split looks like
    (run_dir / "run.json").write_text(json.dumps({**info, "status": "training"}))
    loaded = []
    real_load = api.load_splits
    monkeypatch.setattr(
        api, "load_splits", lambda data, recipe: loaded.append(recipe) or real_load(data, recipe)
    )
    transferkit.resume(run_dir, dry_run=True, verbose=1)
    assert [recipe.data.test_split for recipe in loaded] == [0.0]
    assert "resumes without one" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args,message",
    [
        (["fit", "--data", "/nonexistent/folder"], "does not exist"),
        (["fit", "--data", ".", "--backbone", "resnet5", "--dry-run"], "Unknown backbone 'resnet5'"),
        (["predict", ".", "x.jpg"], "No model.keras"),
        (["inspect", "vgg"], "Choose one of"),
        (["fit", "--resume", "./never-started"], "a fit stopped before then left nothing to resume"),
        (["fit", "--resume", "."], "is not a transferkit run folder (no run.json)"),
    ],
)
def test_cli_errors_are_one_line_with_exit_code_2(args, message, tmp_path, folder):
    args = [
        str(folder) if a == "." and args[:2] == ["fit", "--data"] else (str(tmp_path) if a == "." else a)
        for a in args
    ]
    args = [str(tmp_path / a[2:]) if a.startswith("./") else a for a in args]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


PARTNER_COMMANDS = [
    ["predict", "PARTNER", "x.jpg"],
    ["evaluate", "PARTNER"],
    ["export", "PARTNER", "--format", "onnx"],
    ["fit", "--resume", "PARTNER"],
    ["report", "PARTNER"],
]


@pytest.mark.parametrize("command", PARTNER_COMMANDS)
def test_an_averaged_runs_partner_folder_points_to_the_run_not_to_a_resume(command, tmp_path):
    """partner/ has a state.json and no model: it read as an unfinished fit, and the ``--resume``
    that message asked for refused it (no run.json)."""
    run_dir = tmp_path / "pets-auto-20261205-101500"
    (run_dir / "partner").mkdir(parents=True)
    (run_dir / "run.json").write_text("{}")
    (run_dir / "partner" / "state.json").write_text("{}")
    result = CliRunner().invoke(main, [str(run_dir / "partner") if a == "PARTNER" else a for a in command])
    assert result.exit_code == 2, result.output
    assert f"the second network of the run in '{run_dir}'" in result.output, result.output
    assert "did not finish" not in result.output


def test_a_compare_folder_given_as_a_run_names_its_runs(tmp_path):
    (tmp_path / "cmp" / "small_similar").mkdir(parents=True)
    (tmp_path / "cmp" / "comparison.json").write_text("{}")
    (tmp_path / "cmp" / "small_similar" / "run.json").write_text("{}")
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "cmp"), "x.jpg"])
    runs = tmp_path / "cmp" / "small_similar"
    assert result.exit_code == 2 and f"give one of its runs ({runs})" in result.output, result.output


def test_an_unknown_backbone_in_a_recipe_file_fails_before_the_data_is_read(tmp_path, monkeypatch):
    from transferkit import recipes as recipe_io

    recipe = tmp_path / "mine.toml"
    recipe.write_text(
        recipe_io.dumps(recipe_io.load_builtin("small_similar")).replace(
            '"mobilenet_v2_torchvision"', '"mobilenet_v9"'
        )
    )
    monkeypatch.setattr(api, "load_splits", lambda *a, **k: pytest.fail("scanned the data first"))
    out = tmp_path / "runs"
    result = CliRunner().invoke(
        main, ["fit", "--data", str(tmp_path), "--recipe", str(recipe), "--out", str(out)]
    )
    assert result.exit_code == 2 and "Unknown backbone 'mobilenet_v9'" in result.output, result.output
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--image-size", "16"],
            "Image size 16 is too small for mobilenet_v2_torchvision: it needs at least 32 px (--image-size",
        ),
        (["--weights", "nowhere.weights.h5"], "Weights file nowhere.weights.h5 does not exist"),
        (["--weights", "imagenett"], "Unknown weights 'imagenett'"),
        (["--name", "taken"], "already exists. Pick another --name"),
        (["--test-split", "0.9"], "A test split of 0.9 (--test-split) leaves no images to train on"),
    ],
)
def test_a_setting_that_cannot_work_fails_before_the_data_is_read(flags, message, tmp_path, monkeypatch):
    """Not after a scan and a "Run folder: ... --resume" line for a folder that is then removed."""
    monkeypatch.setattr(api, "load_splits", lambda *a, **k: pytest.fail("scanned the data first"))
    out = tmp_path / "runs"
    (out / "taken").mkdir(parents=True)
    result = CliRunner().invoke(main, ["fit", "--data", str(tmp_path), "--out", str(out), *flags])
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Run folder" not in result.output and [p.name for p in out.iterdir()] == ["taken"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"image_size": 16}, "it needs at least 32 px (image_size=32 or more"),
        ({"name": "taken"}, "already exists. Pick another name=..., or continue"),
        ({"test_split": 0.9}, "A test split of 0.9 (test_split=...) leaves no images to train on"),
        ({"weights": "nowhere.weights.h5"}, "Check the path given as weights=..."),
    ],
)
def test_a_python_caller_is_told_the_keyword_argument_not_the_flag(settings, message, tmp_path):
    out = tmp_path / "runs"
    (out / "taken").mkdir(parents=True)
    with pytest.raises(transferkit.TransferkitError) as raised:
        transferkit.fit(str(tmp_path), out=out, verbose=0, **settings)
    flag = "--" + next(iter(settings)).replace("_", "-")
    assert message in str(raised.value) and flag not in str(raised.value)


@pytest.mark.parametrize("max_drop", ["-0.5", "2"])
def test_export_refuses_a_max_drop_outside_0_to_1(max_drop, tmp_path):
    result = CliRunner().invoke(main, ["export", str(tmp_path), "--format", "onnx", "--max-drop", max_drop])
    assert result.exit_code == 2 and "--max-drop" in result.output and "0<=x<=1" in result.output


def test_datasets_list_is_what_datasets_alone_prints():
    assert (
        CliRunner().invoke(main, ["datasets", "list"]).output == CliRunner().invoke(main, ["datasets"]).output
    )


@pytest.fixture(scope="module")
def stopped_at_report(folder, tmp_path_factory):
    """The folder of a fit stopped while writing its report; the tests that resume it resume a copy."""
    from transferkit import session

    out = tmp_path_factory.mktemp("stopped")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(session, "write_interpretation", stopped)
        with pytest.raises(KeyboardInterrupt):
            _tiny_fit(folder, out)
    (run_dir,) = out.iterdir()
    return run_dir


def test_a_fit_stopped_while_writing_its_report_resumes_and_writes_it(stopped_at_report, tmp_path):
    run_dir = Path(shutil.copytree(stopped_at_report, tmp_path / stopped_at_report.name))
    assert (run_dir / "model.keras").exists() and not (run_dir / "report.html").exists()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "reporting"
    before = json.loads((run_dir / "metrics.json").read_text())
    transferkit.resume(run_dir, verbose=0)
    assert (run_dir / "report.html").exists() and (run_dir / "timings.json").exists()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    assert json.loads((run_dir / "metrics.json").read_text()) == before


def test_run_json_records_the_software_and_machine_and_a_resume_elsewhere_adds_its_own(
    stopped_at_report, tmp_path, monkeypatch
):
    """Fits repeat exactly on one kind of machine, not across kinds: run.json says which it was."""
    import tensorflow as tf

    from transferkit.training.device import vector_extension

    run_dir = Path(shutil.copytree(stopped_at_report, tmp_path / stopped_at_report.name))
    started = json.loads((run_dir / "run.json").read_text())["environment"]
    assert started["tensorflow"] == tf.__version__ and started["keras"] == keras.__version__
    assert started["transferkit"] == transferkit.__version__ and started["cpus"] >= 1
    assert started["cpu_vector_extension"] in {"AVX-512", "AVX2", "AVX", "SSE", platform.machine()}
    elsewhere = {
        **started,
        "cpu_vector_extension": "AVX2" if started["cpu_vector_extension"] != "AVX2" else "AVX",
    }
    monkeypatch.setattr(api, "environment", lambda: elsewhere)
    transferkit.resume(run_dir, verbose=0)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished"
    assert info["environment"] == started and info["resumed_environment"] == elsewhere
    assert vector_extension({"sse2", "avx", "avx2", "avx512f"}, "x86_64") == "AVX-512"
    assert vector_extension(set(), "aarch64") == "aarch64"


def test_a_run_whose_data_moved_resumes_from_the_new_place_and_settings_beside_resume_are_refused(
    folder, tmp_path, monkeypatch
):
    from transferkit import session

    data = tmp_path / "data"
    shutil.copytree(folder, data)

    with monkeypatch.context() as patch:
        patch.setattr(session, "resume_training", stopped)
        with pytest.raises(KeyboardInterrupt):
            _tiny_fit(data, tmp_path / "runs", report=False)
    (run_dir,) = (tmp_path / "runs").iterdir()
    moved = data.rename(tmp_path / "moved")
    with pytest.raises(transferkit.TransferkitError, match="If it moved, give its new place"):
        transferkit.resume(run_dir, verbose=0)
    result = CliRunner().invoke(main, ["fit", "--resume", str(run_dir), "--epochs", "3"])
    assert result.exit_code == 2 and "--epochs cannot be used with --resume" in result.output
    resumed = transferkit.resume(run_dir, data=str(moved), verbose=0)
    assert resumed.metrics.num_samples == 6
    assert not (run_dir / "report.html").exists()  # the resume follows the fit's report=False
    assert json.loads((run_dir / "run.json").read_text())["data"] == str(moved)


def test_an_override_a_recipe_file_cannot_take_names_the_file(tmp_path):
    path = tmp_path / "my.toml"
    path.write_text(recipes.dumps(recipes.load_builtin("small_similar")), encoding="utf-8")
    with pytest.raises(
        transferkit.TransferkitError, match=f"^Invalid recipe {re.escape(str(path))}: data.batch_size"
    ):
        api.resolve_recipe(path, "auto", None, batch_size=0)
    # A test split too large for the recipe's validation split is the flag's error, whichever recipe.
    with pytest.raises(
        transferkit.TransferkitError, match=r"^A test split of 0.9 \(test_split=...\) .* under 0.8"
    ):
        api.resolve_recipe(path, "auto", None, test_split=0.9)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"epochs": 2.5}, "fit: epochs must be None or an int >= 1 (got 2.5); e.g. epochs=10."),
        ({"epochs": True}, "fit: epochs must be None or an int >= 1 (got True)"),
        ({"epochs": 0}, "fit: epochs must be None or an int >= 1 (got 0)"),
        ({"similar": "no"}, "fit: similar must be True, False or None (measured) (got 'no')"),
        ({"image_size": "64"}, "fit: image_size must be None or an int >= 8 (pixels) (got '64')"),
        ({"image_size": False}, "fit: image_size must be None or an int >= 8"),
        ({"image_size": 4}, "fit: image_size must be None or an int >= 8"),
        ({"batch_size": 8.0}, "fit: batch_size must be None or an int >= 1 (got 8.0)"),
        ({"seed": 1.5}, "fit: seed must be None or an int in [0, 2**32) (got 1.5)"),
        ({"seed": -1}, "fit: seed must be None or an int in [0, 2**32) (got -1)"),
        ({"test_split": "0.1"}, "fit: test_split must be None or a number in [0, 1), 0 = none (got '0.1')"),
        ({"test_split": 1.0}, "fit: test_split must be None or a number in [0, 1)"),
        ({"cache_memory": 2**30}, "fit: cache_memory must be None, 'auto' or a size (str)"),
        ({"backbone": 3}, "fit: backbone must be None or a backbone's name (str) (got 3)"),
        ({"recipe": 1}, "fit: recipe must be None, a recipe file"),
        ({"out": None}, "fit: out must be a folder (str or os.PathLike) (got None)"),
        ({"name": 7}, "fit: name must be None or a folder name (str) (got 7)"),
        ({"dry_run": "yes"}, "fit: dry_run must be True or False (got 'yes')"),
        (
            {"callbacks": keras.callbacks.History()},
            "fit: callbacks must be None or a list of keras.callbacks",
        ),
    ],
)
def test_fit_refuses_arguments_of_the_wrong_type_up_front_in_one_line(folder, tmp_path, arguments, message):
    with pytest.raises(transferkit.TransferkitError, match=re.escape(message)) as error:
        transferkit.fit(
            str(folder), **{"backbone": "tiny", "weights": "random", "out": tmp_path, **arguments}
        )
    assert "\n" not in str(error.value)
    assert not any(tmp_path.iterdir())  # no run folder, half or whole


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: transferkit.load_run(None), "A run folder is a path"),
        (lambda: transferkit.evaluate("runs/x", tta="no"), "evaluate: tta must be True or False (got 'no')"),
        (
            lambda: transferkit.evaluate("runs/x", data=["a.png"]),
            "evaluate: data is a folder of class subfolders",
        ),
    ],
)
def test_the_api_refuses_arguments_of_the_wrong_type_in_one_line(call, message):
    with pytest.raises(transferkit.TransferkitError, match=re.escape(message)):
        call()


def test_fit_refuses_data_that_is_not_a_path(tmp_path):
    with pytest.raises(transferkit.TransferkitError, match=re.escape("fit: data must be a folder (str or")):
        transferkit.fit([str(tmp_path)], backbone="tiny", weights="random", dry_run=True)


def test_fit_takes_a_path_object_and_a_test_split_of_int_0(folder):
    run = transferkit.fit(
        folder,
        size="small",
        similar=True,
        backbone="tiny",
        weights="random",
        test_split=0,
        dry_run=True,
        verbose=0,
    )
    assert run.recipe.data.test_split == 0.0 and isinstance(run.recipe.data.test_split, float)


def test_a_fit_that_fails_before_it_measured_anything_leaves_no_run_folder(folder, tmp_path):
    with pytest.raises(transferkit.TransferkitError):  # the tiny test backbone has no ImageNet weights
        transferkit.fit(str(folder), backbone="tiny", weights="imagenet", out=tmp_path, verbose=0)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_fit_names_its_run_folder_quoted_and_after_the_data_folder(
    folder, tmp_path, monkeypatch
):
    monkeypatch.chdir(folder)  # --data . : the run is named after the folder, not "data"

    monkeypatch.setattr(api, "train_and_report", stopped)
    out = tmp_path / "my runs"
    result = CliRunner().invoke(main, ["fit", "--data", ".", "--backbone", "tiny", "--weights", "random",
                                       "--recipe", "small_similar", "--out", str(out)])  # fmt: skip
    (run_dir,) = out.iterdir()
    assert result.exit_code == 130 and run_dir.name.startswith(f"{folder.name}-small_similar-")
    assert f"`transferkit fit --resume '{run_dir}'` continues" in result.output


def test_a_fit_whose_output_pipe_closes_says_it_stopped_and_how_to_resume(folder, tmp_path):
    """``fit ... | head``: the fit stops at its next line of progress. It exited 0 without a word,
    which read as a finished run; it says so on stderr and exits as SIGPIPE would."""
    command = [sys.executable, "-m", "transferkit", "fit", "--data", str(folder), "--backbone", "tiny",
               "--weights", "random", "--recipe", "small_similar", "--out", str(tmp_path)]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as fit:
        while (line := fit.stdout.readline()) and not line.startswith("Phase 1/1"):  # its data saved by then
            pass
        fit.stdout.close()  # as `head` does
        stderr = fit.stderr.read()
    (run_dir,) = tmp_path.iterdir()
    assert fit.returncode == 128 + signal.SIGPIPE and "output pipe closed" in stderr, stderr
    assert f"`transferkit fit --resume {run_dir}` continues" in stderr


def test_an_interrupted_command_that_has_nothing_to_resume_says_only_that(monkeypatch, tmp_path):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "evaluate", interrupted)
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path)])
    assert (result.exit_code, result.output.strip()) == (130, "Interrupted.")


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["fit"],
        ["predict"],
        ["evaluate"],
        ["backbones"],
        ["inspect"],
        ["augment-preview"],
        ["weights", "list"],
        ["weights", "import"],
        ["datasets"],
        ["demo"],
    ],
)
def test_every_command_has_help(command):
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


def test_augment_preview_writes_a_png(folder, tmp_path):
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(
        main,
        [
            "augment-preview",
            "--data",
            str(folder),
            "--fill-mode",
            "constant",
            "--images",
            "2",
            "--copies",
            "2",
            "--image-size",
            "32",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Named without an extension, the picture gets .png: a file a viewer opens.
    from transferkit.reporting.preview import augment_preview

    plain = augment_preview(str(folder), count=1, copies=1, image_size=32, out=tmp_path / "grid2")
    assert plain == tmp_path / "grid2.png" and plain.read_bytes()[:4] == b"\x89PNG"


def test_augment_preview_names_each_original_by_its_class_and_file(folder, tmp_path, monkeypatch):
    from transferkit.reporting import preview

    drawn = []
    monkeypatch.setattr(preview, "plot_image_grid", lambda grid, out, **kw: drawn.append(kw))
    preview.augment_preview(str(folder), count=2, copies=2, image_size=32, out=tmp_path / "grid.png")
    originals = drawn[0]["titles"][::3]
    assert len(originals) == 2 and all(re.fullmatch(r"class_\d/img_\d+\.png", t) for t in originals)
    assert drawn[0]["titles"][1:3] == ["augmented 1", "augmented 2"]


@pytest.mark.parametrize("layout", ["one class", "no class folders", "split"])
def test_augment_preview_needs_only_images(layout, tmp_path):
    """A picture of the augmentation needs images, not a data set a classifier could train on."""
    root = tmp_path / "data"
    make_image_folder(root / "train" if layout == "split" else root, classes=1, per_class=3, size=24)
    if layout == "no class folders":
        for path in (root / "class_0").iterdir():
            path.rename(root / path.name)
        (root / "class_0").rmdir()
    (root / "notes.txt").write_text("not an image")
    out = tmp_path / "grid.png"
    args = ["augment-preview", "--data", str(root), "--images", "2", "--copies", "1", "--image-size", "24"]
    result = CliRunner().invoke(main, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_augment_preview_of_a_folder_without_images_says_so(tmp_path):
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    args = ["augment-preview", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "g.png")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0 and "No image files under" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "g.png").exists()


def test_augment_preview_scales_deep_grey_images_from_the_white_level_fit_finds(tmp_path, monkeypatch):
    """12-bit values in 16-bit PNGs (a detector's 0-4095): training scales them to 0-255 by the
    data set's white level, and the preview showed them nearly black without it."""
    from transferkit.reporting import preview as preview_module

    for label, value in (("dark", 1000), ("bright", 4000)):
        (folder := tmp_path / "data" / label).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((24, 24), value + i, np.uint16)).save(folder / f"{i}.png")
    shown, decode = [], preview_module.load_images

    def recorded(paths, image_size, white_level):
        images, skipped = decode(paths, image_size, white_level)
        shown.append(images)
        return images, skipped

    monkeypatch.setattr(preview_module, "load_images", recorded)
    args = ["augment-preview", "--data", str(tmp_path / "data"), "--images", "4", "--copies", "1"]
    result = CliRunner().invoke(main, [*args, "--image-size", "24", "--out", str(tmp_path / "grid.png")])
    assert result.exit_code == 0, result.output
    assert shown[0].max() == round(4001 * 255 / 4095)  # 249, not the high byte's 15


def test_public_api_names_all_resolve():
    assert set(transferkit.__all__) == {
        *transferkit._EXPORTS,
        "TransferkitError",
        "TransferkitWarning",
        "__version__",
    }
    for name in transferkit.__all__:
        assert getattr(transferkit, name) is not None


def test_a_run_from_before_precision_was_recorded_resumes_in_the_one_its_device_line_names():
    recipe = recipes.load_builtin("large_dissimilar")
    older = {"device": "1 GPU(s), mixed_float16 precision, OneDeviceStrategy"}
    assert api._resumed_precision("auto", older, recipe) == "mixed_float16"
    assert api._resumed_precision("auto", {"device": "CPU, float32 precision, X"}, recipe) == "float32"
    assert api._resumed_precision("float32", {}, recipe) == "float32"  # nothing recorded: as asked
