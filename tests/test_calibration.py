"""Temperature scaling: the fitted temperature, when it is left out, and the model that carries it."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

import transferkit
from transferkit.backbones.registry import get_backbone
from transferkit.backbones.weights import build_base
from transferkit.exporting.converters import write_onnx, write_tflite
from transferkit.exporting.runtimes import open_runner
from transferkit.recipes import HeadConfig
from transferkit.testing import make_image_folder
from transferkit.training import averaging, calibration
from transferkit.training.averaging import average_models
from transferkit.training.calibration import fit_temperature, fold_temperature, scaled_probabilities
from transferkit.training.model import build_classifier


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def _overconfident(temperature: float, n: int = 4000, classes: int = 5, seed: int = 0):
    """Probabilities ``softmax(z)`` of labels drawn from ``softmax(z / temperature)``: a model
    ``temperature`` times too sure of itself."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (n, classes))
    truth = _softmax(logits / temperature)
    labels = np.array([rng.choice(classes, p=row) for row in truth])
    return _softmax(logits), labels


@pytest.mark.parametrize("true_temperature", [1.5, 2.5])
def test_the_fit_finds_the_temperature_that_drew_the_labels(true_temperature):
    probabilities, labels = _overconfident(true_temperature)
    fit = fit_temperature(probabilities, labels)
    assert fit.applied and fit.temperature == pytest.approx(true_temperature, rel=0.1)
    assert fit.nll_after < fit.nll_before and fit.ece_after < fit.ece_before
    assert fit.images == 4000 and fit.errors == int(np.sum(probabilities.argmax(1) != labels))


@pytest.mark.parametrize("true_temperature", [0.5, 1.0])
def test_a_calibrated_or_underconfident_model_is_never_sharpened(true_temperature):
    """The validation images flatter the model (they chose its epochs): only softening is trusted."""
    probabilities, labels = _overconfident(true_temperature)
    fit = fit_temperature(probabilities, labels)
    assert fit.temperature == pytest.approx(1.0, abs=0.05)  # applied or not, next to nothing moves


@pytest.mark.parametrize(
    ("images", "wrong", "reason"),
    [(10, 3, "10 validation images (needs 20)"), (50, 1, "1 of 50 validation images wrong")],
)
def test_too_few_images_or_errors_fit_nothing(images, wrong, reason):
    labels = np.arange(images) % 3
    probabilities = np.full((images, 3), 0.01)
    probabilities[np.arange(images), labels] = 0.98
    probabilities[:wrong] = probabilities[:wrong, [1, 2, 0]]  # confidently wrong
    fit = fit_temperature(probabilities, labels)
    assert not fit.applied and fit.temperature == 1.0 and reason in fit.reason
    assert fit.describe().startswith("Probabilities not calibrated: ")


def test_the_message_says_why_ece_can_rise_where_the_nll_fell():
    from transferkit.training.calibration import TemperatureFit

    fit = TemperatureFit(1.01, True, 200, 45, 0.6712, 0.6709, 0.072, 0.081)  # the demo's random control
    assert "ECE 0.072 -> 0.081, up: the temperature is fitted to the NLL" in fit.describe()
    better = TemperatureFit(1.5, True, 200, 45, 0.9, 0.7, 0.15, 0.05)
    assert "ECE 0.150 -> 0.050; the predicted classes are unchanged" in better.describe()
    level = TemperatureFit(1.1, True, 200, 45, 0.9, 0.8, 0.0651, 0.0652)  # equal as printed: no "up"
    assert "ECE 0.065 -> 0.065; the predicted classes are unchanged" in level.describe()


def _classifier(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    outputs = keras.layers.Dense(4, activation="softmax", name="predictions")(hidden)
    return keras.Model(inputs, outputs)


def test_folding_gives_the_scaled_probabilities_and_the_same_classes():
    model = _classifier(0)
    x = np.random.default_rng(2).normal(0, 2, (64, 6)).astype("float32")
    plain = model.predict_on_batch(x)
    fold_temperature(model, 1.7)
    after = model.predict_on_batch(x)
    np.testing.assert_allclose(after, scaled_probabilities(plain, 1.7), atol=2e-6)
    assert (after.argmax(1) == plain.argmax(1)).all() and after.max(1).mean() < plain.max(1).mean()


def _member(seed: int, pooling: str = "avg") -> keras.Model:
    """A transferkit classifier (tiny base, 3 classes) with a confident random softmax layer."""
    keras.utils.set_random_seed(seed)
    spec = get_backbone("tiny")
    base, _ = build_base(spec, 32, "random")
    model = build_classifier(spec, base, 3, HeadConfig(pooling=pooling)).model
    dense = model.get_layer("head").get_layer("predictions")
    rng = np.random.default_rng(seed)
    dense.set_weights([rng.normal(0, 3, weights.shape).astype("float32") for weights in dense.get_weights()])
    return model


@pytest.fixture(scope="module")
def averaged_members():
    members = {"whole_network": _member(0), "truncation": _member(1, pooling="pyramid")}
    pixels = np.random.default_rng(2).uniform(0, 255, (64, 32, 32, 3)).astype("float32")
    return members, pixels, {name: m.predict_on_batch(pixels) for name, m in members.items()}


def test_an_averaged_model_is_calibrated_after_the_mean_of_its_networks(averaged_members, tmp_path):
    """The temperature goes after the mean (inside each network it would change the class the mean
    picks): fitted to the mean's likelihood, the rebuilt model gives softmax(log mean / T)."""
    members, pixels, by_member = averaged_members
    model = average_models(members)
    mean = model.predict_on_batch(pixels)
    labels = (mean.argmax(1) + (np.arange(64) % 4 == 0)) % 3  # a quarter wrong, at confident odds
    fit = calibration.calibrate(model, "temperature", by_member, labels)
    assert fit.applied and fit.temperature > 1 and fit.errors == 16
    np.testing.assert_array_equal(model.predict_on_batch(pixels), mean)  # calibrate leaves it: rebuilt
    calibrated = average_models(members, fit.temperature)
    after = calibrated.predict_on_batch(pixels)
    np.testing.assert_allclose(after, scaled_probabilities(mean, fit.temperature), atol=2e-6)
    assert (after.argmax(1) == mean.argmax(1)).all() and after.max(1).mean() < mean.max(1).mean()
    calibrated.save(tmp_path / "model.keras")  # Keras' own layers: loads in safe mode without transferkit
    loaded = keras.models.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict_on_batch(pixels), after, atol=1e-6)
    for name, member in averaging.members_of(loaded).items():  # each network's own probabilities
        np.testing.assert_allclose(member.predict_on_batch(pixels), by_member[name], atol=1e-5)
    with pytest.raises(ValueError, match="2 Dense layers named 'predictions'"):
        fold_temperature(model, 2.0)


def test_a_calibrated_averaged_model_converts_to_tflite_and_onnx(averaged_members, tmp_path):
    members, pixels, _ = averaged_members
    model = average_models(members, 2.0)
    expected = model.predict_on_batch(pixels[:4])
    classes = ["a", "b", "c"]
    for fmt, path in (("tflite", tmp_path / "m.tflite"), ("onnx", tmp_path / "m.onnx")):
        if fmt == "tflite":
            write_tflite(model, path, classes, "none")
        else:
            write_onnx(model, path, classes)
        np.testing.assert_allclose(open_runner(path, fmt)(pixels[:4]), expected, atol=1e-5)


def test_a_model_without_the_softmax_layer_is_refused():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax", name="out")])
    with pytest.raises(ValueError, match="0 Dense layers named 'predictions'"):
        fold_temperature(model, 2.0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data") / "shapes", classes=3, per_class=10)


def _fit(folder, out, **options):
    """A tiny fit without figures or report.html (report=False): nothing here reads them."""
    defaults = dict(
        recipe="small_similar", backbone="tiny", weights="random", epochs=1, batch_size=8, report=False
    )
    options = {**defaults, **options}
    return transferkit.fit(str(folder), out=out, verbose=0, **options)


def _counting_passes(patch, passes: list):
    """Record the name of each network the session passes a data set through (predict_dataset)."""
    from transferkit import session

    original = session.predict_dataset

    def counted(model, data, predict=None):
        passes.append(model.name)
        return original(model, data, predict)

    patch.setattr(session, "predict_dataset", counted)


@pytest.fixture(scope="module")
def calibrated(folder, tmp_path_factory):
    """A frozen (small_similar) fit whose temperature is fitted, and the networks its images passed
    through: shared by the tests of what the temperature does and of how it is fitted."""
    passes = []
    with pytest.MonkeyPatch.context() as patch:
        # 6 validation images: too few by default; here any number and any errors will do.
        patch.setattr(calibration, "MIN_IMAGES", 1)
        patch.setattr(calibration, "MIN_ERRORS", 0)
        patch.setattr(calibration, "TEMPERATURE_BOUNDS", (0.25, 8.0))  # whichever way this one moves
        _counting_passes(patch, passes)
        run = _fit(folder, tmp_path_factory.mktemp("calibrated"))
    return run, passes


def test_fit_reports_the_temperature_and_saves_the_model_that_carries_it(calibrated, folder, tmp_path):
    run, _ = calibrated
    record = json.loads((run.run_dir / "metrics.json").read_text())["calibration"]
    assert record["method"] == "temperature" and record["fitted_on"] == "validation"
    assert record["applied"] and record["temperature"] != 1.0 and record["images"] == 6
    assert run.calibration.to_dict() == record  # the API's result says the same
    assert record["nll_after"] < record["nll_before"]
    assert record["nll_after"] == pytest.approx(run.validation_metrics.loss, rel=1e-4, abs=1e-6)
    again = transferkit.evaluate(run.run_dir)  # model.keras on the test split: the temperature is in it
    assert again.loss == pytest.approx(run.metrics.loss, rel=1e-4, abs=1e-6)
    assert again.accuracy == run.metrics.accuracy

    plain = _fit(folder, tmp_path / "plain", recipe=_recipe_without_calibration())
    assert "calibration" not in json.loads((plain.run_dir / "metrics.json").read_text())
    assert plain.calibration is None
    assert plain.metrics.accuracy == run.metrics.accuracy  # the same network, the same answers
    assert plain.metrics.loss != pytest.approx(run.metrics.loss)


def test_a_frozen_network_is_calibrated_on_its_cached_validation_features_without_a_pass(
    calibrated, folder, tmp_path, monkeypatch
):
    from transferkit.data.decode import load_images
    from transferkit.reporting.diagnostics import load_validation_predictions
    from transferkit.reporting.runfolder import load_run

    run, passes = calibrated  # its temperature fitted (applied) on the validation images
    assert run.calibration.applied
    assert passes == []  # the head on the features cached for its phase
    validation = load_validation_predictions(run.run_dir)
    images, _ = load_images(list(validation.paths), validation.image_size, validation.white_level)
    model = load_run(run.run_dir).model
    np.testing.assert_allclose(
        model.predict(np.asarray(images, "float32"), verbose=0), validation.probabilities, atol=1e-5
    )
    record = json.loads((run.run_dir / "metrics.json").read_text())["validation"]
    assert record["num_samples"] == len(validation.labels) == 6

    passes = []
    _counting_passes(monkeypatch, passes)
    _fit(folder, tmp_path / "whole", recipe="large_similar")  # its base trains: the images pass again
    assert len(passes) == 1


def _recipe_without_calibration():
    import dataclasses

    from transferkit import recipes

    recipe = recipes.load_builtin("small_similar")
    return dataclasses.replace(recipe, head=dataclasses.replace(recipe.head, calibration="none"))


def test_a_recipe_names_a_known_calibration():
    from transferkit import recipes
    from transferkit.errors import TransferkitError

    text = recipes.dumps(recipes.load_builtin("small_similar")).replace(
        'calibration = "temperature"', 'calibration = "platt"'
    )
    with pytest.raises(TransferkitError, match="platt"):
        recipes.loads(text)


@pytest.mark.parametrize(
    ("record", "advice"),
    [
        ({"applied": True, "temperature": 2.6, "images": 146}, "even after the temperature (2.60)"),
        ({"applied": False, "reason": "12 validation images (needs 20)"}, "not calibrated: 12 validation"),
        (None, 'calibration = "temperature"'),
    ],
)
def test_the_advice_on_overconfidence_says_what_calibration_did(record, advice):
    from transferkit.reporting.metrics import compute_metrics
    from transferkit.reporting.next_steps import next_steps

    metrics = {"test": compute_metrics(np.eye(3)[[0, 1, 2, 0]], np.array([0, 1, 2, 1]), ["a", "b", "c"])}
    overconfident = {"calibration": {"ece": 0.3, "overconfidence": 0.25}}
    steps = " ".join(next_steps(metrics, overconfident, {}, temperature=record))
    assert "overconfident (ECE 0.30" in steps and advice in steps and "Do not threshold on them" in steps
