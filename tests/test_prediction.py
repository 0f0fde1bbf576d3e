"""Prediction: test-time augmentation, contact sheets, one top-k default (API and CLI)."""

import dataclasses
import inspect
import json
import re
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import transferkit
from transferkit import api, cli
from transferkit.prediction import DEFAULT_TOP_K, TTA_VIEWS, tta_model
from transferkit.testing import make_image_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data") / "shapes", classes=5, per_class=6, size=24)


@pytest.fixture(scope="module")
def run_dir(folder, tmp_path_factory):
    run = transferkit.fit(
        str(folder),
        recipe="small_similar",
        backbone="tiny",
        weights="random",
        image_size=16,
        epochs=1,
        out=tmp_path_factory.mktemp("runs"),
        verbose=0,
        report=False,  # predicting reads the model and labels, not the fit's figures
    )
    return run.run_dir


def _flip_sensitive_model(size: int = 8) -> keras.Model:
    """Softmax over a dense layer on the raw pixels: a flip or a crop changes its output."""
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((size, size, 3)), keras.layers.Flatten(), keras.layers.Dense(4, activation="softmax")]
    )


def test_tta_averages_over_the_views_one_probability_row_per_image():
    model = _flip_sensitive_model()
    images = np.random.default_rng(0).uniform(0, 255, (5, 8, 8, 3)).astype("float32")
    probabilities = tta_model(model).predict(images, verbose=0)
    assert probabilities.shape == (5, 4)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert not np.allclose(probabilities, model.predict(images, verbose=0), atol=1e-4)


def test_tta_with_whole_image_crops_is_the_mean_of_image_and_flip_weighted_by_views():
    model = _flip_sensitive_model()
    images = np.random.default_rng(1).uniform(0, 255, (3, 8, 8, 3)).astype("float32")
    plain = model.predict(images, verbose=0)
    flipped = model.predict(images[:, :, ::-1], verbose=0)
    crops = len(TTA_VIEWS) - 2  # each crop is the whole image when crop=1.0
    expected = ((1 + crops) * plain + flipped) / len(TTA_VIEWS)
    np.testing.assert_allclose(tta_model(model, crop=1.0).predict(images, verbose=0), expected, atol=1e-5)


def test_tta_leaves_out_the_views_the_runs_training_did_not_show_the_model(tmp_path):
    from transferkit import recipes as recipe_io
    from transferkit.prediction import TTAViews, tta_views

    model = _flip_sensitive_model()
    images = np.random.default_rng(2).uniform(0, 255, (3, 8, 8, 3)).astype("float32")
    plain = model.predict(images, verbose=0)
    flipped = model.predict(images[:, :, ::-1], verbose=0)
    no_flip = tta_model(model, crop=1.0, views=TTAViews(flip=False)).predict(images, verbose=0)
    np.testing.assert_allclose(no_flip, plain, atol=1e-5)  # the image and five whole-image crops
    just_flip = tta_model(model, views=TTAViews(crops=False)).predict(images, verbose=0)
    np.testing.assert_allclose(just_flip, (plain + flipped) / 2, atol=1e-5)

    recipe = recipe_io.load_builtin("small_similar")

    def write(folder, recipe):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "recipe.toml").write_text(recipe_io.dumps(recipe))

    write(tmp_path / "plain", recipe)
    assert tta_views(tmp_path / "plain") == TTAViews()
    unflipped = dataclasses.replace(recipe, augment=dataclasses.replace(recipe.augment, flip="none"))
    write(tmp_path / "unflipped", unflipped)
    assert tta_views(tmp_path / "unflipped").describe() == (
        "the image and five crops (no flip: it trained without horizontal flips)"
    )
    write(tmp_path / "dropped", recipe)
    (tmp_path / "dropped" / "state.json").write_text(
        json.dumps({"augmentation": {"use_augmentation": False}})
    )
    write(tmp_path / "dropped" / "partner", recipe)
    views = tta_views(tmp_path / "dropped")
    assert not views.any and views.left_out.startswith("no flip or crops: its augmentation check found")


def test_predict_with_tta_returns_distributions_and_writes_a_contact_sheet(run_dir, folder, tmp_path):
    sheet = tmp_path / "sheet.png"
    rows = transferkit.predict(run_dir, str(folder / "class_0"), tta=True, contact_sheet=sheet)
    assert len(rows) == 6 and all(len(row["top"]) == DEFAULT_TOP_K for row in rows)
    assert all(row["top"][0] == (row["label"], row["probability"]) for row in rows)
    full = transferkit.predict(run_dir, str(folder / "class_0"), tta=True, top_k=5)
    assert all(abs(sum(p for _, p in row["top"]) - 1) < 1e-4 for row in full)
    plain = transferkit.predict(run_dir, str(folder / "class_0"), top_k=5)
    assert any(  # the averaged views give other probabilities than the image alone
        abs(a["probability"] - b["probability"]) > 1e-6 for a, b in zip(full, plain, strict=True)
    )
    with Image.open(sheet) as image:
        assert image.format == "PNG" and image.width > 200


def test_tta_with_no_view_to_average_says_so_once_and_predicts_as_the_model(run_dir, folder, tmp_path):
    """A run whose augmentation check dropped the warps: tta=True has nothing to average."""
    plain_run = shutil.copytree(run_dir, tmp_path / "run")
    state = json.loads((plain_run / "state.json").read_text())
    (plain_run / "state.json").write_text(json.dumps({**state, "augmentation": {"use_augmentation": False}}))
    images = str(folder / "class_0")
    with pytest.warns(transferkit.TransferkitWarning, match=r"^tta=True has no views to average") as said:
        rows = transferkit.predict(plain_run, images, tta=True)
    assert len(said) == 1 and "the predictions are the model's alone" in str(said[0].message)
    assert rows == transferkit.predict(plain_run, images)
    result = CliRunner().invoke(cli.main, ["predict", str(plain_run), images, "--tta"])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [str(said[0].message).replace("tta=True", "--tta", 1)]


def test_a_loaded_run_predicts_again_and_again_without_loading_its_model_again(run_dir, folder, monkeypatch):
    run = transferkit.load_run(run_dir)
    expected = transferkit.predict(run_dir, str(folder / "class_3"), top_k=2)

    def no_reload(*args, **kwargs):
        raise AssertionError("the loaded run read model.keras again")

    monkeypatch.setattr(keras.models, "load_model", no_reload)
    assert run.predict(str(folder / "class_3"), top_k=2) == expected
    assert run.predict([str(folder / "class_4")], top_k=1) == transferkit.predict(
        run, [str(folder / "class_4")], top_k=1
    )


def test_predict_walks_a_folder_as_training_does(run_dir, folder, tmp_path):
    photos = tmp_path / "photos"
    (photos / ".ipynb_checkpoints").mkdir(parents=True)
    shutil.copy(folder / "class_0" / "img_0.png", photos / ".ipynb_checkpoints" / "img_0-checkpoint.png")
    shutil.copy(folder / "class_0" / "img_0.png", photos / "._img_0.png")  # macOS resource fork
    (photos / "album").symlink_to(folder / "class_1", target_is_directory=True)
    rows = transferkit.predict(run_dir, str(photos))
    assert sorted(row["path"] for row in rows) == sorted(
        str(photos / "album" / p.name) for p in (folder / "class_1").iterdir()
    )
    assert all("label" in row for row in rows)


def test_api_and_cli_share_one_top_k_default(run_dir, folder):
    assert inspect.signature(api.predict).parameters["top_k"].default == DEFAULT_TOP_K
    option = next(p for p in cli.predict.params if p.name == "top_k")
    assert option.default == DEFAULT_TOP_K < 5  # fewer than the classes: the default shows
    result = CliRunner().invoke(
        cli.main, ["predict", str(run_dir), str(folder / "class_1"), "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    assert {len(row["top"]) for row in json.loads(result.output)} == {DEFAULT_TOP_K}


def test_a_contact_sheet_numbers_the_classes_no_font_can_draw_and_logs_the_key(
    no_fallback_fonts, monkeypatch, tmp_path, caplog
):
    from transferkit.prediction import write_contact_sheet

    drawn, real = [], no_fallback_fonts.plot_image_grid
    monkeypatch.setattr(
        no_fallback_fonts,
        "plot_image_grid",
        lambda images, path, **kw: (drawn.append(kw), real(images, path, **kw)),
    )
    names = ("a.png", "a_very_long_file_name_indeed.jpg", "c.png")
    rows = [
        {"path": f"/x/{name}", "label": label, "probability": 0.5}
        for name, label in zip(names, "猫d猫", strict=True)
    ]
    rows[1]["label"] = "dog"
    sheet = tmp_path / "sheet.png"
    write_contact_sheet(np.zeros((3, 16, 16, 3), np.uint8), rows, sheet, ["dog", "猫", "犬"], unreadable=2)
    assert drawn[0]["titles"] == [
        "a.png\n#1 (0.50)",
        "a_very_long_file_name_indeed.jpg\ndog (0.50)",
        "c.png\n#1 (0.50)",
    ]
    assert (
        drawn[0]["suptitle"]
        == "Predictions: 3 images (2 more could not be read: see the errors in predict's rows)"
    )
    (record,) = [r for r in caplog.records if "contact sheet numbers" in r.getMessage()]
    assert record.getMessage().endswith(": #1 = 猫")  # only the classes on the sheet
    with Image.open(tmp_path / "sheet.png") as image:
        assert image.format == "PNG"


def test_cli_predict_writes_the_contact_sheet_and_keeps_stdout_for_the_table(run_dir, folder, tmp_path):
    sheet = tmp_path / "out.png"
    result = CliRunner().invoke(
        cli.main, ["predict", str(run_dir), str(folder / "class_2"), "--tta", "--contact-sheet", str(sheet)]
    )
    assert result.exit_code == 0, result.output
    assert sheet.stat().st_size > 1000
    assert result.stdout.splitlines()[0] == "path,label,probability,top,error"
    assert f"Wrote {sheet}" in result.stderr


def test_predict_says_on_stderr_what_it_could_not_classify_and_fails_when_it_classified_nothing(
    run_dir, folder, tmp_path
):
    good = sorted((folder / "class_1").iterdir())[0]
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    result = CliRunner().invoke(cli.main, ["predict", str(run_dir), str(bad), str(good)])
    header, first, second = result.stdout.splitlines()  # a row each, in the order given
    assert result.exit_code == 0 and first.startswith(f"{bad},,,,") and second.startswith(f"{good},")
    assert result.stderr.startswith(f"1 of 2 inputs could not be classified (first: {bad}: ")
    result = CliRunner().invoke(cli.main, ["predict", str(run_dir), str(bad)])
    assert result.exit_code == 2 and "None of the 1 input(s) could be classified" in result.stderr


def test_a_missing_or_empty_file_among_the_inputs_gets_its_row_and_the_reason_a_scan_gives(
    run_dir, folder, tmp_path
):
    """A typo in one path costs that row, not the batch; an empty file and a text file read as the
    dataset card reads them."""
    good = sorted((folder / "class_1").iterdir())[0]
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    named = [tmp_path / "missing.png", tmp_path / "empty.jpg", tmp_path / "notes.txt", good]
    rows = transferkit.predict(run_dir, [str(path) for path in named])
    assert [row["path"] for row in rows] == [str(path) for path in named]
    assert [row.get("error", "").split(" (")[0] for row in rows] == [
        "file not found",
        "empty file",
        "not an image file",
        "",
    ]
    assert "label" in rows[3]
    result = CliRunner().invoke(cli.main, ["predict", str(run_dir), str(tmp_path / "missing.png")])
    assert result.exit_code == 2 and "No such file or folder" in result.stderr  # nothing to classify


def test_an_output_file_that_cannot_be_created_is_one_line_naming_it_not_a_temporary_file(
    run_dir, folder, tmp_path, monkeypatch
):
    """As in /proc, a folder that exists but takes no new files (ENOENT on create)."""
    import errno
    import os

    from transferkit import fileio

    def refused(*args, **kwargs):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(tmp_path / ".p.csv.x.tmp.csv"))

    monkeypatch.setattr(fileio.tempfile, "mkstemp", refused)
    out = str(tmp_path / "p.csv")
    image = str(sorted((folder / "class_1").iterdir())[0])
    result = CliRunner().invoke(cli.main, ["predict", str(run_dir), image, "-o", out])
    assert result.exit_code == 2, result.output
    assert (
        result.stderr.startswith("Error: ") and f": {out}. " in result.stderr and ".tmp" not in result.stderr
    )


def test_evaluate_with_tta_prints_both_accuracies_and_the_verdict(run_dir, folder):
    result = CliRunner().invoke(cli.main, ["evaluate", str(run_dir), "--data", str(folder), "--tta"])
    assert result.exit_code == 0, result.output
    scored, *lines = result.output.splitlines()
    plain, augmented = api.evaluate(run_dir, str(folder)), api.evaluate(run_dir, str(folder), tta=True)
    assert scored == f"Scored all of {folder.resolve()}: {plain.num_samples} images."
    assert lines[0].startswith("without TTA  accuracy ") and lines[1].startswith("with TTA     accuracy ")
    assert lines[2].startswith("TTA ")
    assert f"{plain.accuracy:.4f}" in lines[0] and f"{augmented.accuracy:.4f}" in lines[1]
    result = CliRunner().invoke(
        cli.main, ["evaluate", str(run_dir), "--data", str(folder), "--tta", "--json"]
    )
    record = json.loads(result.output)
    assert (record["accuracy"], record["tta"]["accuracy"]) == (plain.accuracy, augmented.accuracy)
    gained = record["tta"]["only_tta_right"] - record["tta"]["only_plain_right"]
    assert gained == round((augmented.accuracy - plain.accuracy) * plain.num_samples)
    assert 0.0 <= record["tta"]["p_value"] <= 1.0


def test_the_tta_verdict_says_whether_the_images_it_changed_are_beyond_chance():
    from transferkit.evaluation import TTAComparison
    from transferkit.reporting.metrics import compute_metrics

    metrics = compute_metrics(np.array([[0.9, 0.1], [0.3, 0.7]]), np.array([0, 1]), ["a", "b"])
    n = metrics.num_samples  # 2; the counts below are what a larger set would give
    one = TTAComparison(metrics, metrics, only_plain_right=0, only_tta_right=1)
    assert one.p_value == 1.0
    assert "1 right only with it, 0 only without: within chance, p = 1.00" in one.verdict()
    assert one.verdict().startswith(
        f"TTA made no clear difference: {100 / n:+.1f} points (1 more of {n} images right"
    )
    many = TTAComparison(metrics, metrics, only_plain_right=1, only_tta_right=12)
    assert many.p_value == pytest.approx(0.0034, abs=1e-4) and "beyond chance, p = 0.00" in many.verdict()
    assert many.verdict().startswith("TTA helped: ")
    worse = TTAComparison(metrics, metrics, only_plain_right=3, only_tta_right=1)
    assert worse.verdict().startswith("TTA made no clear difference: -100.0 points (2 fewer")
    assert "within chance, p = 0.62" in worse.verdict()
    level = TTAComparison(metrics, metrics, only_plain_right=2, only_tta_right=2)
    assert level.verdict().startswith("TTA left the accuracy as it was")


def test_predict_warns_when_a_16_bit_image_of_12_bit_values_decodes_nearly_black(run_dir, tmp_path, caplog):
    deep = tmp_path / "deep.png"
    Image.fromarray((np.arange(24 * 24).reshape(24, 24) * 7 % 4096).astype(np.uint16)).save(deep)
    plain = tmp_path / "plain.png"
    Image.fromarray(np.full((24, 24, 3), 200, np.uint8)).save(plain)
    night = tmp_path / "night.png"  # an 8-bit photo that is simply dark: no 16-bit advice
    Image.fromarray(np.full((24, 24, 3), 12, np.uint8)).save(night)
    with caplog.at_level("WARNING"):
        rows = transferkit.predict(run_dir, [str(plain), str(night)])
    assert len(rows) == 2 and not caplog.records
    with caplog.at_level("WARNING"):
        rows = transferkit.predict(run_dir, [str(deep), str(plain)])
    (record,) = caplog.records
    assert len(rows) == 2 and "1 image(s) decode nearly black" in record.getMessage()


def test_predict_warns_when_16_bit_images_go_above_the_runs_white_level(run_dir, tmp_path, caplog):
    import dataclasses

    from transferkit.reporting import runfolder

    run = runfolder.load_run(run_dir)
    twelve_bit = dataclasses.replace(run, info={**run.info, "white_level": 4095})
    inside = tmp_path / "inside.png"  # 12-bit values, as the run trained on
    Image.fromarray(np.full((24, 24), 4095, np.uint16)).save(inside)
    above = tmp_path / "above.png"  # full 16-bit range: clipped to white above 4095
    Image.fromarray(np.full((24, 24), 60000, np.uint16)).save(above)
    white = tmp_path / "white.png"  # an 8-bit white image is just white
    Image.fromarray(np.full((24, 24, 3), 255, np.uint8)).save(white)
    with caplog.at_level("WARNING"):
        rows = transferkit.predict(twelve_bit, [str(inside), str(white)])
    assert len(rows) == 2 and not caplog.records
    with caplog.at_level("WARNING"):
        rows = transferkit.predict(twelve_bit, [str(inside), str(above), str(white)])
    (record,) = caplog.records
    message = record.getMessage()
    assert len(rows) == 3 and "1 image(s) hold values above the white level" in message
    assert "(4095; e.g." in message and "above.png, up to 60000" in message
    with caplog.at_level("WARNING"):
        caplog.clear()
        transferkit.predict(run, [str(above)])  # a run of 8-bit images: 65535 is its white
    assert not caplog.records


def test_evaluate_takes_images_of_one_class_and_warns_about_the_folder_the_run_trained_on(
    run_dir, folder, tmp_path, caplog
):
    one = tmp_path / "new photos"
    shutil.copytree(folder / "class_3", one / "class_3")
    with caplog.at_level("WARNING"):
        metrics = api.evaluate(run_dir, str(one))  # recall on new images of one class
    assert metrics.num_samples == 6 and not caplog.records
    assert metrics.scored == f"all of {one.resolve()}"
    with caplog.at_level("WARNING"):
        api.evaluate(run_dir, str(folder))  # the folder it trained on
    (record,) = caplog.records
    assert "holds images this run trained or early-stopped on" in record.getMessage()


def test_evaluating_the_test_split_of_the_folder_it_trained_on_is_not_a_flattering_evaluation(folder, caplog):
    from types import SimpleNamespace

    from transferkit.evaluation import _warn_if_trained_on

    run = SimpleNamespace(info={"data": str(folder.resolve())}, run_dir="runs/r")
    with caplog.at_level("WARNING"):
        _warn_if_trained_on(run, str(folder), "its test split")  # held out by that very run
    assert not caplog.records
    with caplog.at_level("WARNING"):
        _warn_if_trained_on(run, str(folder), "all of it")
    assert len(caplog.records) == 1


def test_evaluating_the_test_folder_of_a_pre_split_folder_it_trained_on_is_not_a_flattering_evaluation(
    tmp_path, caplog
):
    from types import SimpleNamespace

    from transferkit.evaluation import _warn_if_trained_on

    splits = make_image_folder(tmp_path / "pets", classes=2, per_class=1, splits=("train", "val", "test"))
    run = SimpleNamespace(info={"data": str(splits.resolve())}, run_dir="runs/r")
    with caplog.at_level("WARNING"):
        _warn_if_trained_on(run, str(splits / "test"), "all of it")  # the split the run held out as given
    assert not caplog.records
    with caplog.at_level("WARNING"):
        _warn_if_trained_on(run, str(splits / "val"), "all of it")  # early stopping saw these
    assert len(caplog.records) == 1


def test_the_suggested_evaluate_command_quotes_a_run_folder_with_spaces(folder, caplog):
    from types import SimpleNamespace

    from transferkit.evaluation import _warn_if_trained_on

    run = SimpleNamespace(info={"data": str(folder.resolve())}, run_dir=Path("my runs/r"))
    with caplog.at_level("WARNING"):
        _warn_if_trained_on(run, str(folder), "all of it")
    (record,) = caplog.records
    assert "`transferkit evaluate 'my runs/r'` without --data" in record.getMessage()


def test_evaluate_without_data_uses_the_runs_own_held_out_images(run_dir):
    from transferkit.reporting.diagnostics import load_predictions

    recorded = load_predictions(run_dir)
    metrics = api.evaluate(run_dir)
    assert metrics.num_samples == len(recorded.labels) > 0
    assert metrics.accuracy == pytest.approx(float((recorded.predicted == recorded.labels).mean()))
    result = CliRunner().invoke(cli.main, ["evaluate", str(run_dir), "--tta"])
    assert result.exit_code == 0, result.output
    split = "held-out test split" if recorded.split == "test" else "validation split (watched by early"
    scored = f"Scored the run's {split}"
    assert result.output.startswith(scored)
    assert f" split: {metrics.num_samples} images.\nwithout TTA  accuracy " in result.output


def test_evaluate_without_data_on_a_run_without_predictions_says_to_give_data(run_dir, tmp_path):
    import shutil

    copy = shutil.copytree(run_dir, tmp_path / "old_run")
    (copy / "predictions.npz").unlink()
    result = CliRunner().invoke(cli.main, ["evaluate", str(copy)])
    assert result.exit_code == 2 and "with --data" in result.output


def test_a_run_on_twelve_bit_images_predicts_and_evaluates_them_as_it_trained(tmp_path):
    from transferkit.reporting.diagnostics import load_predictions

    root = tmp_path / "scans"
    rng = np.random.default_rng(0)
    for k, level in enumerate((500, 1500, 3500)):  # three brightness classes of 12-bit values
        (root / f"c{k}").mkdir(parents=True)
        for i in range(8):
            values = np.clip(rng.normal(level, 150, (20, 20)), 0, 4095).astype(np.uint16)
            Image.fromarray(values).save(root / f"c{k}" / f"{i}.png")
    run = transferkit.fit(
        str(root), recipe="small_similar", backbone="tiny", weights="random", image_size=16,
        epochs=2, out=tmp_path / "runs", verbose=0,
    )  # fmt: skip
    info = json.loads((run.run_dir / "run.json").read_text())
    recorded = load_predictions(run.run_dir)
    assert info["white_level"] == 4095 and recorded.white_level == 4095
    rows = transferkit.predict(run.run_dir, list(recorded.paths), top_k=3)
    by_class = [dict(row["top"]) for row in rows]
    predicted = np.array([[p[name] for name in recorded.class_names] for p in by_class])
    np.testing.assert_allclose(predicted, recorded.probabilities, atol=1e-5)
    assert api.evaluate(run.run_dir).accuracy == pytest.approx(
        float((recorded.predicted == recorded.labels).mean())
    )


def test_predict_decodes_a_folder_in_chunks_with_the_same_results(run_dir, folder, tmp_path, monkeypatch):
    from transferkit import prediction

    (tmp_path / "in").mkdir()
    for index, path in enumerate(sorted((folder / "class_1").iterdir())):
        (tmp_path / "in" / f"{index}.png").write_bytes(path.read_bytes())
    (tmp_path / "in" / "3b.png").write_bytes(b"not an image")  # an unreadable file mid-way
    whole = transferkit.predict(run_dir, str(tmp_path / "in"), top_k=5)
    monkeypatch.setattr(prediction, "PREDICT_CHUNK", 2)  # 7 files: 4 chunks, one of them short
    sheet = tmp_path / "sheet.png"
    chunked = transferkit.predict(run_dir, str(tmp_path / "in"), top_k=5, contact_sheet=sheet)
    files = sorted(str(path) for path in (tmp_path / "in").iterdir())
    assert [row["path"] for row in chunked] == [row["path"] for row in whole] == files  # in order
    assert [Path(row["path"]).name for row in chunked if "error" in row] == ["3b.png"]  # mid-way
    for a, b in zip(whole, chunked, strict=True):
        if "error" in a:
            continue
        assert a["label"] == b["label"]
        np.testing.assert_allclose([p for _, p in a["top"]], [p for _, p in b["top"]], atol=1e-6)
    assert sheet.stat().st_size > 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"top_k": 0}, "predict: top_k must be an int >= 1 (got 0); e.g. top_k=3."),
        ({"top_k": 2.0}, "predict: top_k must be an int >= 1 (got 2.0)"),
        ({"top_k": True}, "predict: top_k must be an int >= 1 (got True)"),
        ({"batch_size": 0}, "predict: batch_size must be an int >= 1 (got 0); e.g. batch_size=32."),
    ],
)
def test_predict_refuses_a_top_k_or_batch_size_the_cli_would(tmp_path, arguments, message):
    with pytest.raises(transferkit.TransferkitError, match=re.escape(message)):
        transferkit.predict(tmp_path, [str(tmp_path)], **arguments)


def test_predict_given_pixels_or_nothing_says_what_it_takes(run_dir):
    from transferkit.errors import TransferkitError

    saved = transferkit.load_run(run_dir)
    with pytest.raises(TransferkitError, match=r"takes image file or folder paths .* received ndarray"):
        saved.predict(np.zeros((1, 16, 16, 3), np.uint8))
    with pytest.raises(TransferkitError, match="empty list of paths"):
        transferkit.predict(run_dir, [])


def test_cli_predict_json_keeps_class_names_and_paths_as_written(tmp_path, monkeypatch):
    """Names in any script come out as written (UTF-8), not as \\u escapes a reader must decode."""
    row = {"path": str(tmp_path / "été.png"), "label": "chiens été", "probability": 0.9}
    monkeypatch.setattr(api, "predict", lambda *args, **kwargs: [{**row, "top": [["chiens été", 0.9]]}])
    out = tmp_path / "predictions.json"
    result = CliRunner().invoke(cli.main, ["predict", str(tmp_path), "x.png", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert "chiens été" in result.stdout and json.loads(result.stdout)[0]["label"] == "chiens été"
    result = CliRunner().invoke(
        cli.main, ["predict", str(tmp_path), "x.png", "--format", "json", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert '"label": "chiens été"' in out.read_text(encoding="utf-8")


def test_run_files_keep_non_ascii_text_as_written(tmp_path):
    from transferkit.fileio import write_json

    write_json(tmp_path / "card.json", {"class_names": ["chiens été", "猫"]})
    assert "chiens été" in (tmp_path / "card.json").read_text(encoding="utf-8")
    assert json.loads((tmp_path / "card.json").read_text(encoding="utf-8"))["class_names"][1] == "猫"
