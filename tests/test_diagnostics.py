"""Interpretation: calibration error, confused pairs, Grad-CAM maps, and the files a tiny fit leaves."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner

import transferkit
from transferkit.backbones.registry import get_backbone
from transferkit.backbones.weights import build_base
from transferkit.cli import main
from transferkit.recipes import HeadConfig
from transferkit.reporting.diagnostics import (
    Predictions,
    calibration,
    confused_pairs,
    load_predictions,
    top_losses,
)
from transferkit.reporting.grad_cam import grad_cam, map_size
from transferkit.testing import make_image_folder
from transferkit.training.model import build_classifier, truncate


def test_ece_is_near_zero_when_calibrated_and_large_when_overconfident():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, 20_000)
    labels = (rng.uniform(size=confidence.size) >= confidence).astype(int)  # right with probability p
    calibrated = np.stack([confidence, 1 - confidence], axis=1)
    assert calibration(calibrated, labels).ece < 0.02

    overconfident = np.tile([0.99, 0.01], (1000, 1))
    result = calibration(overconfident, np.arange(1000) % 2)  # claims 99%, right half the time
    assert result.ece == pytest.approx(0.49, abs=1e-6) and result.overconfidence > 0.4
    assert sum(result.counts) == 1000 and len(result.counts) == 15


def test_confused_pairs_rank_off_diagonal_cells_by_count_then_rate():
    confusion = [[5, 3, 0], [1, 8, 1], [0, 3, 2]]
    pairs = confused_pairs(confusion, ["cat", "dog", "fox"], top=3)
    assert [(p.true, p.predicted, p.count) for p in pairs] == [
        ("fox", "dog", 3),
        ("cat", "dog", 3),
        ("dog", "cat", 1),
    ]
    assert pairs[0].rate == pytest.approx(0.6) and pairs[1].rate == pytest.approx(3 / 8)
    assert confused_pairs([[4, 0], [0, 4]], ["a", "b"]) == ()


def test_the_gallery_shows_one_of_each_set_of_byte_identical_files(tmp_path):
    files = []
    for name, content in (("a.png", b"one"), ("b.png", b"one"), ("c.png", b"two"), ("d.png", b"three")):
        (tmp_path / name).write_bytes(content)
        files.append(str(tmp_path / name))
    probabilities = np.array([[0.1, 0.9], [0.1, 0.9], [0.3, 0.7], [0.6, 0.4]])  # all class 0: a = b > c > d
    labels = np.zeros(4, dtype=int)
    predictions = Predictions("test", ("x", "y"), labels, probabilities, tuple(files))
    assert top_losses(predictions, 3).tolist() == [0, 2, 3] and top_losses(predictions, 2).tolist() == [0, 2]
    unpaired = Predictions("test", ("x", "y"), labels, probabilities)  # no paths: the rows as ranked
    assert top_losses(unpaired, 3).tolist() == [0, 1, 2]
    (tmp_path / "a.png").unlink()  # a file that can no longer be read is kept, as it cannot be compared
    assert top_losses(predictions, 3).tolist() == [0, 1, 2]


@pytest.mark.parametrize("cut", [None, "block2_pool"])
def test_grad_cam_maps_match_the_image_and_are_finite(cut):
    spec = get_backbone("tiny")
    base, _ = build_base(spec, 16, "random")
    base = truncate(base, cut) if cut else base
    model = build_classifier(spec, base, 3, HeadConfig()).model
    images = np.random.default_rng(1).integers(0, 256, (5, 16, 16, 3)).astype("float32")
    maps = grad_cam(model, images)
    assert maps.shape == (5, 16, 16) and np.isfinite(maps).all()
    assert map_size(model) == ((2, 2) if cut is None else (4, 4))  # what the figure's title states
    assert maps.min() >= 0 and maps.max() <= 1 and maps.max() == pytest.approx(1.0)
    own = np.asarray(model(images, training=False))
    np.testing.assert_array_equal(grad_cam(model, images, probabilities=own), maps)
    # probabilities that are not the model's own do not reject the chain: the model is asked
    assert np.array_equal(grad_cam(model, images, probabilities=np.zeros_like(own)), maps)


def test_grad_cam_is_none_without_a_4d_feature_map():
    flat = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")]
    )
    assert grad_cam(flat, np.zeros((2, 8, 8, 3), "float32")) is None and map_size(flat) is None


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("interpret")
    data = make_image_folder(root / "data", classes=3, per_class=14, size=24)
    run = transferkit.fit(
        str(data), size="small", similar=True, backbone="tiny", weights="random", image_size=16,
        epochs=1, out=root / "runs", name="tiny", verbose=0,
    )  # fmt: skip
    return run


def test_a_grad_cam_map_with_no_positive_evidence_is_captioned_and_noted(tmp_path, monkeypatch):
    from transferkit.reporting import interpretation
    from transferkit.reporting.figures import image_grid_figure

    drawn = []

    def recorded(images, captions, title, **options):
        drawn.append((captions, options))
        return image_grid_figure(images, captions, title, **options)

    monkeypatch.setattr(interpretation, "image_grid_figure", recorded)
    images = np.random.default_rng(0).integers(0, 255, (2, 8, 8, 3)).astype("float32")
    inputs = keras.Input((8, 8, 3))
    pixels = keras.layers.Rescaling(1 / 255)(inputs)
    # Zero everywhere (ReLU of -1): no location carries evidence for any class, so the maps are flat.
    below_zero = keras.initializers.Constant(-1.0)
    dark = keras.layers.Conv2D(
        4, 3, activation="relu", kernel_initializer="zeros", bias_initializer=below_zero
    )
    lit = keras.layers.Conv2D(4, 3, activation="relu", bias_initializer="ones")
    for layer, flat in ((dark, True), (lit, False)):
        pooled = keras.layers.GlobalAveragePooling2D()(layer(pixels))
        model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(pooled))
        notes = []
        probabilities = model.predict(images, verbose=0)
        interpretation._write_grad_cam(tmp_path, model, images, probabilities, ["a\nb", "c\nd"], notes)
        captions, options = drawn.pop()
        assert (tmp_path / "grad_cam.png").stat().st_size > 0
        if flat:
            assert captions == ["a\nb\nno positive evidence", "c\nd\nno positive evidence"]
            assert options["caption_lines"] == 3 and notes[0].startswith("2 of the 2 Grad-CAM maps")
        else:
            assert captions == ["a\nb", "c\nd"] and options["caption_lines"] == 2 and notes == []


def test_a_tiny_fit_leaves_its_interpretation_in_the_run_folder(tiny_run):
    run_dir = tiny_run.run_dir
    for name in (
        "predictions.npz",
        "interpretation.json",
        "top_losses.png",
        "grad_cam.png",
        "calibration.png",
    ):
        assert (run_dir / name).stat().st_size > 0, name
    predictions = load_predictions(run_dir)
    assert predictions.split == "test" == tiny_run.headline
    assert len(predictions.labels) == tiny_run.metrics.num_samples == len(predictions.paths)
    assert float((predictions.predicted == predictions.labels).mean()) == pytest.approx(
        tiny_run.metrics.accuracy
    )
    record = json.loads((run_dir / "interpretation.json").read_text())
    assert record["split"] == "test" and 0 <= record["calibration"]["ece"] <= 1
    assert record["notes"] == [] and len(record["top_losses"]) == len(predictions.labels)
    page = (run_dir / "report.html").read_text()
    assert "Grad-CAM heat maps" in page and "uses the held-out test images" in page


def test_cli_report_rebuilds_the_report_and_missing_figures(tiny_run):
    run_dir = tiny_run.run_dir
    (run_dir / "report.html").unlink()
    (run_dir / "grad_cam.png").unlink()
    kept = (run_dir / "top_losses.png").stat().st_mtime_ns
    result = CliRunner().invoke(main, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert (run_dir / "report.html").exists() and (run_dir / "grad_cam.png").exists()
    assert (run_dir / "top_losses.png").stat().st_mtime_ns == kept  # present figures are kept
    assert str(run_dir / "report.html") in result.output
