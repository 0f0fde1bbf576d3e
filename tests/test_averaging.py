"""Averaging the whole network and a truncation between the dissimilar floors: the selector's rule,
the averaged model, a fit that trains both (and resumes either), and compare's row for the pick."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
import shutil

import keras
import numpy as np
import pytest

import transferkit
import transferkit.session as session_module
from transferkit.data.decode import load_images
from transferkit.reporting.comparison import RecipeRun
from transferkit.reporting.diagnostics import (
    VALIDATION_PREDICTIONS_FILE,
    Predictions,
    load_predictions,
    load_validation_predictions,
    save_predictions,
)
from transferkit.reporting.metrics import compute_metrics
from transferkit.reporting.runfolder import load_run
from transferkit.selection import rules
from transferkit.selection.compare import AVERAGED, with_averaged_pick
from transferkit.selection.decision import Selection, select
from transferkit.testing import Interrupted, add_trainer_callback, interrupt_at, make_image_folder
from transferkit.training import augment_check, averaging
from transferkit.training.augment_check import AugmentCheck
from transferkit.training.calibration import scaled_probabilities
from transferkit.training.callbacks import read_history
from transferkit.training.head_phase import FeatureCache
from transferkit.training.trainer import TrainState


@pytest.fixture(scope="module", autouse=True)
def augmentation_checks_train_the_phases_epochs():
    """Every fit here checks augmentation with heads that train the phase's epochs (at most 2) instead
    of at least :data:`augment_check.MIN_EPOCHS` (50), 15-25% of a fit's CPU here: the check's heads
    are thrown away (the phase starts from the weights they started from). What this module checks is
    which passes reach each network's check and head and that a run gives what its counterpart gives,
    with the check's first look forced or measured alike on both sides; not the check's decision."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(augment_check, "MIN_EPOCHS", 1)
        yield


# ----------------------------------------------------------------------------------------------
# The selector's rule
# ----------------------------------------------------------------------------------------------


def _card(per_class: int) -> dict:
    return {
        "num_classes": 4,
        "num_train": 4 * per_class,
        "min_images_per_class": per_class,
        "median_images_per_class": per_class,
        "imbalance": 1.0,
    }


def _features():
    """Features whose earlier cut separates the four classes and whose deepest does not: dissimilar."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 60)
    early = rng.normal(size=(240, 8)) + 3.0 * labels[:, None]
    return {"block_3": early, "out": rng.normal(size=(240, 8))}, labels


@pytest.mark.parametrize("similar", [None, False])
def test_dissimilar_data_between_the_floors_at_full_resolution_averages_the_two(similar):
    features, labels = _features()
    selection = select(_card(98), features, labels, similar=similar, image_size=224)
    assert (selection.quadrant, selection.cut_point, selection.partner_cut) == (
        "large_dissimilar",
        None,
        "block_3",
    )
    assert any("averages their probabilities" in reason for reason in selection.reasons)
    assert selection.to_dict()["partner_cut"] == "block_3"


@pytest.mark.parametrize(
    ("per_class", "image_size", "size", "quadrant"),
    [
        (98, 96, "auto", "small_dissimilar"),  # low resolution: truncation alone below 120
        (40, 224, "auto", "small_dissimilar"),  # small: truncation alone
        (130, 224, "auto", "large_dissimilar"),  # at or over the low-resolution floor: one network
        (98, 224, "large", "large_dissimilar"),  # the size was given: the recipe asked for, alone
    ],
)
def test_one_network_outside_the_band_or_when_the_size_is_given(per_class, image_size, size, quadrant):
    features, labels = _features()
    selection = select(_card(per_class), features, labels, size=size, similar=False, image_size=image_size)
    assert (selection.quadrant, selection.partner_cut) == (quadrant, None)


def test_data_said_to_be_similar_never_averages():
    selection = select(_card(98), None, None, similar=True, image_size=224)
    assert selection.partner_cut is None


# ----------------------------------------------------------------------------------------------
# The averaged model
# ----------------------------------------------------------------------------------------------


def _classifier(seed: int) -> keras.Model:
    """A small conv classifier whose layer names repeat between calls (as two MobileNetV2s' do)."""
    keras.utils.set_random_seed(seed)
    pixels = keras.Input((16, 16, 3))
    maps = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(pixels)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(maps)
    return keras.Model(pixels, keras.layers.Dense(3, activation="softmax", name="predictions")(pooled))


def test_the_averaged_model_is_the_mean_of_its_members_and_saves_and_loads_as_one(tmp_path):
    whole, cut = _classifier(0), _classifier(1)
    model = averaging.average_models({"whole_network": whole, "truncation": cut})
    images = np.random.default_rng(0).uniform(0, 255, (5, 16, 16, 3)).astype("float32")
    expected = (whole.predict_on_batch(images) + cut.predict_on_batch(images)) / 2
    np.testing.assert_allclose(model.predict_on_batch(images), expected, atol=1e-6)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict_on_batch(images), expected, atol=1e-6)
    assert sorted(averaging.members_of(loaded)) == sorted(["whole_network", "truncation"])
    assert averaging.members_of(whole) == {}


def _truncation_beside(root: pathlib.Path, trained_from: str | None = None) -> dict[str, keras.Model]:
    """A truncation of the tiny base at ``block2_pool`` and the network beside it, built from one
    weights file loaded twice (as fit builds the two networks), each with a confident random softmax
    layer: the frozen base, or (``trained_from`` a layer) a whole network whose layers from that one
    on have trained (moved off the file's weights)."""
    from transferkit.backbones.registry import get_backbone
    from transferkit.backbones.weights import build_base
    from transferkit.recipes import HeadConfig
    from transferkit.training.model import build_classifier, truncate

    spec, weights = get_backbone("tiny"), root / "tiny.weights.h5"
    keras.utils.set_random_seed(0)
    base, _ = build_base(spec, 32, "random")
    base.save_weights(weights)
    again, _ = build_base(spec, 32, str(weights))
    beside = "frozen_base" if trained_from is None else "whole_network"
    members = {
        "truncation": build_classifier(
            spec, truncate(again, "block2_pool"), 3, HeadConfig(pooling="avg_dev")
        ).model,
        beside: build_classifier(spec, base, 3, HeadConfig(pooling="avg")).model,
    }
    names = [layer.name for layer in base.layers]
    for layer in base.layers[names.index(trained_from) :] if trained_from else []:
        layer.set_weights([w + 0.01 for w in layer.get_weights()])
    rng = np.random.default_rng(1)
    for member in members.values():
        dense = member.get_layer(averaging.HEAD_LAYER).get_layer("predictions")
        dense.set_weights([rng.normal(0, 3, w.shape).astype("float32") for w in dense.get_weights()])
    return members


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize(
    ("trained_from", "shared_to"),
    [(None, "block2_pool"), ("block2_conv", "block1_pool")],
    ids=["frozen base: to the cut", "whole network: its frozen block"],
)
def test_two_averaged_networks_run_the_early_layers_they_share_once(
    tmp_path, temperature, trained_from, shared_to
):
    """The layers both networks hold alike, up to a block end, run once: the model holds their
    weights once, gives what the two networks' mean gives, saves and loads, and each member is a
    classifier of its own again (Grad-CAM explains its last map)."""
    from transferkit.reporting.grad_cam import grad_cam

    members = _truncation_beside(tmp_path, trained_from)
    images = np.random.default_rng(0).uniform(0, 255, (6, 32, 32, 3)).astype("float32")
    alone = {name: member.predict_on_batch(images) for name, member in members.items()}
    model = averaging.average_models(members, temperature)
    assert averaging.shared_trunk(members).ends == dict.fromkeys(members, shared_to)
    assert averaging.TRUNK_NAME in [layer.name for layer in model.layers]
    truncation = members["truncation"]
    kept = [layer.name for layer in truncation.layers[2].layers]
    shared = (
        truncation.layers[1].count_params()
        + sum(  # the pixel normalisation, the base to shared_to
            layer.count_params() for layer in truncation.layers[2].layers[: kept.index(shared_to) + 1]
        )
    )
    assert model.count_params() == sum(member.count_params() for member in members.values()) - shared
    expected = scaled_probabilities(averaging.mean_probabilities(list(alone.values())), temperature)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras", safe_mode=True)
    for averaged in (model, loaded):
        np.testing.assert_allclose(averaged.predict_on_batch(images), expected, atol=1e-6)
        rebuilt = averaging.members_of(averaged)
        assert list(rebuilt) == list(members)
        for name, member in rebuilt.items():
            np.testing.assert_allclose(member.predict_on_batch(images), alone[name], atol=1e-6)
            assert grad_cam(member, images[:2]).shape == (2, 32, 32)


def test_the_members_of_a_saved_average_average_again_into_the_same_model(tmp_path):
    """Each member rebuilt on the trunk (its base the trunk and the rest of its own) is a classifier
    like any other: averaged again, the two share the same layers and give the same answers."""
    model = averaging.average_models(_truncation_beside(tmp_path, "block2_conv"))
    model.save(tmp_path / "model.keras")
    members = averaging.members_of(keras.models.load_model(tmp_path / "model.keras", safe_mode=True))
    assert averaging.shared_trunk(members).ends == dict.fromkeys(members, "block1_pool")
    images = np.random.default_rng(0).uniform(0, 255, (6, 32, 32, 3)).astype("float32")
    again = averaging.average_models(members)
    np.testing.assert_allclose(again.predict_on_batch(images), model.predict_on_batch(images), atol=1e-6)
    assert again.count_params() == model.count_params()


def test_layers_keras_named_itself_are_paired_by_the_graph_not_by_name():
    """Layers left unnamed (as InceptionV3's convolutions are) get new names in every model built:
    the two networks' shared layers are found by what they compute and read."""
    from transferkit.backbones.registry import get_backbone
    from transferkit.recipes import HeadConfig
    from transferkit.training.model import build_classifier, truncate

    def unnamed() -> keras.Model:
        x = pixels = keras.Input((32, 32, 3))
        for _ in range(2):
            x = keras.layers.MaxPooling2D()(keras.layers.Conv2D(8, 3, padding="same")(x))
        return keras.Model(pixels, x, name="unnamed")

    keras.utils.set_random_seed(0)
    base, again = unnamed(), unnamed()
    again.set_weights(base.get_weights())
    spec, cut = get_backbone("tiny"), again.layers[2].name
    members = {
        "truncation": build_classifier(spec, truncate(again, cut), 3, HeadConfig(pooling="avg_dev")).model,
        "frozen_base": build_classifier(spec, base, 3, HeadConfig(pooling="avg")).model,
    }
    ends = averaging.shared_trunk(members).ends
    assert ends == {"truncation": cut, "frozen_base": base.layers[2].name} and cut != base.layers[2].name
    images = np.random.default_rng(0).uniform(0, 255, (6, 32, 32, 3)).astype("float32")
    expected = averaging.mean_probabilities([member.predict_on_batch(images) for member in members.values()])
    np.testing.assert_allclose(
        averaging.average_models(members).predict_on_batch(images), expected, atol=1e-6
    )


def test_an_average_over_a_shared_trunk_converts_to_tflite_and_onnx(tmp_path):
    from transferkit.exporting.converters import write_onnx, write_tflite
    from transferkit.exporting.runtimes import open_runner

    model = averaging.average_models(_truncation_beside(tmp_path, "block2_conv"), 2.0)
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    expected = model.predict_on_batch(images)
    for fmt, write in (("tflite", lambda path: write_tflite(model, path, list("abc"), "none")),
                       ("onnx", lambda path: write_onnx(model, path, list("abc")))):  # fmt: skip
        write(tmp_path / f"model.{fmt}")
        np.testing.assert_allclose(open_runner(tmp_path / f"model.{fmt}", fmt)(images), expected, atol=1e-5)


def test_networks_whose_early_layers_differ_are_averaged_whole(tmp_path):
    """A truncation whose first block trained (a recipe may unfreeze it) shares nothing."""
    members = _truncation_beside(tmp_path)
    conv = members["truncation"].layers[2].get_layer("block1_conv")
    conv.set_weights([w + 0.01 for w in conv.get_weights()])
    images = np.random.default_rng(0).uniform(0, 255, (6, 32, 32, 3)).astype("float32")
    model = averaging.average_models(members)
    assert averaging.TRUNK_NAME not in [layer.name for layer in model.layers]
    assert model.count_params() == sum(member.count_params() for member in members.values())
    expected = averaging.mean_probabilities([member.predict_on_batch(images) for member in members.values()])
    np.testing.assert_allclose(model.predict_on_batch(images), expected, atol=1e-6)


def test_the_member_predictor_averages_as_the_model_does_and_keeps_each_members_output():
    outputs = {"a": np.array([[0.9, 0.1], [0.2, 0.8]]), "b": np.array([[0.5, 0.5], [0.6, 0.4]])}
    predictor = averaging.MemberPredictor({name: (lambda _, o=o: o) for name, o in outputs.items()})
    np.testing.assert_allclose(predictor(None), [[0.7, 0.3], [0.4, 0.6]], atol=1e-7)
    predictor(None)  # a last batch padded to the first's size: its padding rows are dropped
    assert {name: p.shape for name, p in predictor.probabilities(3).items()} == {"a": (3, 2), "b": (3, 2)}


def _votes(right: int, wrong: int) -> np.ndarray:
    """Probabilities for ``right + wrong`` images of class 0: the first ``right`` predicted right."""
    return np.array([[0.8, 0.2]] * right + [[0.2, 0.8]] * wrong)


@pytest.mark.parametrize(
    "whole, partner, kept",
    [
        ((120, 0), (108, 12), False),  # 12 images only the whole network gets right: p = 0.5**12
        ((116, 4), (110, 10), False),  # 6 only the whole network's: p = 0.5**6 = 0.016
        ((115, 5), (112, 8), True),  # 3 only the whole network's: p = 0.125, within noise
        ((100, 20), (120, 0), True),  # the truncation ahead: never dropped the other way round
        ((60, 60), (60, 60), True),  # the same answers: nothing to tell them apart
    ],
)
def test_the_truncation_is_dropped_only_when_the_whole_network_is_clearly_ahead(whole, partner, kept):
    labels = np.zeros(sum(whole), int)
    check = averaging.check_partner({"whole_network": _votes(*whole), "truncation": _votes(*partner)}, labels)
    assert check.kept is kept
    assert (check.main_correct, check.partner_correct, check.images) == (whole[0], partner[0], sum(whole))
    assert check.only_main - check.only_rival == whole[0] - partner[0]
    assert ("dropped" in check.describe()) is not kept


# ----------------------------------------------------------------------------------------------
# A fit that trains both networks
# ----------------------------------------------------------------------------------------------

# 2 classes x 80 images, 14 moved from one to the other (66 and 94; the errors get the averaged model
# calibrated): 15% test, then validation, leave a median of 52 training images per class ("large");
# 32 px counts as full resolution here (`full_resolution`); similar=False is given, so the cut is
# measured. Batches of 16 pad the 24 test images' last batch (predict_rows), as real splits do.
FIT = dict(
    similar=False, backbone="tiny", weights="random", image_size=32, epochs=2, batch_size=16, verbose=0
)


@contextlib.contextmanager
def _full_resolution_at_fit_size():
    """FIT's image size counts as full resolution (:data:`rules.FULL_RESOLUTION_PIXELS`, 160 px), where
    dissimilar data between the floors averages: the same fit as at 160 px, for 30% of the time."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rules, "FULL_RESOLUTION_PIXELS", FIT["image_size"])
        yield


@pytest.fixture
def full_resolution():
    with _full_resolution_at_fit_size():
        yield


def _recording_feature_passes(patch: pytest.MonkeyPatch) -> list[tuple[str, int, bool]]:
    """Record each :meth:`FeatureCache.for_phase` call (the extractor, the phase, whether it was served
    from passes computed beforehand), then run it as it is."""
    given = []
    original = FeatureCache.for_phase

    def recording(self, index, *args, **kwargs):
        given.append((self.extractor.name, index, self.first_passes is not None))
        return original(self, index, *args, **kwargs)

    patch.setattr(FeatureCache, "for_phase", recording)
    return given


@pytest.fixture(scope="module")
def averaged_fit(tmp_path_factory):
    """The reference averaged fit, with the feature passes it asked for (recorded, not changed)."""
    root = tmp_path_factory.mktemp("averaged")
    data = make_image_folder(root / "data", classes=2, per_class=80, size=32)
    for i in range(0, 80, 6):  # every sixth image of one class filed under the other: validation errors,
        shutil.move(data / "class_0" / f"img_{i}.png", data / "class_1" / f"moved_{i}.png")  # calibrated
    with _full_resolution_at_fit_size(), pytest.MonkeyPatch.context() as patch:
        given = _recording_feature_passes(patch)
        return data, transferkit.fit(str(data), out=root / "runs", name="reference", **FIT), given


@pytest.fixture(scope="module")
def averaged_run(averaged_fit):
    data, run, _ = averaged_fit
    return data, run


@pytest.fixture(scope="module")
def compared_networks(averaged_run, tmp_path_factory):
    """compare on the averaged run's data and seed, told the data is dissimilar as the reference fit
    was: its two recipes fitted each on its own (passing the images itself), then joined; with the
    feature passes its fits asked for (recorded, not changed)."""
    from transferkit.selection import measure

    data, _ = averaged_run
    probe = measure.probe_quadrant
    recipes = ("large_dissimilar", "small_dissimilar")
    settings = {key: value for key, value in FIT.items() if key != "similar"}  # compare measures it
    out = tmp_path_factory.mktemp("compared")
    with _full_resolution_at_fit_size(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(  # as the reference fit was told: dissimilar
            measure, "probe_quadrant", lambda *args, **kwargs: probe(*args, **{**kwargs, "similar": False})
        )
        given = _recording_feature_passes(patch)
        compared = transferkit.compare(data, recipes=recipes, out=out, name="both", **settings)  # a Path
    return compared, given


def test_fit_trains_the_partner_in_its_own_folder_and_saves_the_average(averaged_run):
    _, run = averaged_run
    assert run.recipe.name == "large_dissimilar" and run.selection.partner_cut is not None
    partner = averaging.read_partner(run.run_dir)
    assert partner.strategy == "truncate" and partner.backbone.cut == run.selection.partner_cut
    assert json.loads((run.run_dir / "partner" / "state.json").read_text())["completed_phases"] == 1
    assert json.loads((run.run_dir / "selection.json").read_text())["partner_cut"] == partner.backbone.cut
    info = json.loads((run.run_dir / "run.json").read_text())
    assert info["status"] == "finished" and len(info["partner_plan"]) == len(partner.phases)
    assert (run.run_dir / "partner" / "curves.png").exists() and (run.run_dir / "grad_cam.png").exists()
    notes = json.loads((run.run_dir / "interpretation.json").read_text())["notes"]
    assert not any("Grad-CAM" in note for note in notes)
    report = (run.run_dir / "report.html").read_text()
    assert "averages the probabilities of 2 networks" in report and "not in the expected format" not in report


def test_the_averaged_runs_figures_are_the_mean_of_its_two_networks_on_the_same_images(averaged_run):
    data, run = averaged_run
    saved = load_run(run.run_dir).model
    members = averaging.members_of(saved)
    predictions = load_predictions(run.run_dir)
    images, skipped = load_images(list(predictions.paths), predictions.image_size, predictions.white_level)
    assert not skipped
    pixels = np.asarray(images, "float32")
    each = {name: m.predict(pixels, verbose=0) for name, m in members.items()}
    recorded = json.loads((run.run_dir / "metrics.json").read_text())
    temperature = recorded["calibration"]["temperature"]  # after the mean, where it was fitted
    assert recorded["calibration"]["applied"] and temperature > 1
    mean = scaled_probabilities(sum(each.values()) / 2, temperature)
    np.testing.assert_allclose(predictions.probabilities, mean, atol=1e-5)
    np.testing.assert_allclose(saved.predict(pixels, verbose=0), mean, atol=1e-5)  # the model carries it
    for name, probabilities in each.items():
        alone = compute_metrics(probabilities, predictions.labels, predictions.class_names).accuracy
        assert recorded["members"][name]["test"]["accuracy"] == pytest.approx(alone)
    assert recorded["test"]["accuracy"] == pytest.approx(run.metrics.accuracy)


@pytest.mark.usefixtures("full_resolution")
def test_a_fit_whose_whole_network_is_clearly_ahead_keeps_it_alone(averaged_run, tmp_path, monkeypatch):
    """The check's verdict (tested above on counts) decides the model; both networks' figures stay."""
    data, reference = averaged_run
    real = averaging.check_partner

    def clearly_ahead(by_member, labels):
        return dataclasses.replace(real(by_member, labels), kept=False)

    monkeypatch.setattr(averaging, "check_partner", clearly_ahead)
    run = transferkit.fit(str(data), out=tmp_path, name="alone", **FIT)
    assert averaging.members_of(run.model) == {}  # the whole network itself
    saved = load_run(run.run_dir).model
    assert averaging.members_of(saved) == {} and saved.name == run.model.name
    recorded = json.loads((run.run_dir / "metrics.json").read_text())
    assert recorded["averaging"]["kept"] is False
    reference_metrics = json.loads((reference.run_dir / "metrics.json").read_text())
    assert recorded["averaging"]["averaged_accuracy"]["test"] == pytest.approx(
        reference_metrics["test"]["accuracy"]  # the mean's choice of class, as the averaged run scored
    )
    before = json.loads((reference.run_dir / "metrics.json").read_text())["members"]
    assert recorded["members"] == before  # the same two networks, each measured as before
    assert recorded["test"]["accuracy"] == pytest.approx(before["whole_network"]["test"]["accuracy"])
    predictions = load_predictions(run.run_dir)
    images, _ = load_images(list(predictions.paths), predictions.image_size, predictions.white_level)
    np.testing.assert_allclose(
        saved.predict(np.asarray(images, "float32"), verbose=0), predictions.probabilities, atol=1e-5
    )
    validation = load_validation_predictions(run.run_dir)
    assert (
        validation.split == "validation" and len(validation.labels) == recorded["validation"]["num_samples"]
    )
    report = (run.run_dir / "report.html").read_text()
    assert "and dropped" in report and "averages the probabilities" not in report
    assert "then dropped: see Result" in report  # the selection section says so too


@pytest.mark.usefixtures("full_resolution")
def test_a_fit_stopped_in_the_partner_resumes_it_and_ends_as_an_uninterrupted_one(
    averaged_run, tmp_path, monkeypatch
):
    data, reference = averaged_run
    with monkeypatch.context() as patch:  # the partner's second epoch: the whole network is done
        add_trainer_callback(
            patch, lambda trainer: interrupt_at(1) if trainer.run_dir.name == "partner" else None
        )
        with pytest.raises(Interrupted):
            transferkit.fit(str(data), out=tmp_path, name="stopped", report=False, **FIT)
    run_dir = tmp_path / "stopped"
    assert json.loads((run_dir / "state.json").read_text())["completed_phases"] == 2
    assert not (run_dir / "partner" / "state.json").exists() or (
        json.loads((run_dir / "partner" / "state.json").read_text())["completed_phases"] == 0
    )
    resumed = transferkit.resume(run_dir, verbose=0)
    assert np.array_equal(
        load_predictions(resumed.run_dir).probabilities, load_predictions(reference.run_dir).probabilities
    )
    assert resumed.metrics.accuracy == reference.metrics.accuracy
    # Started with report=False, resumed without pictures; `report` then draws both networks' curves.
    assert not list(run_dir.rglob("*.png")) and not (run_dir / "report.html").exists()
    transferkit.report(run_dir)
    assert (run_dir / "curves.png").exists() and (run_dir / "partner" / "curves.png").exists()
    assert "averages the probabilities of 2 networks" in (run_dir / "report.html").read_text()


# ----------------------------------------------------------------------------------------------
# compare: the averaged pick's row
# ----------------------------------------------------------------------------------------------


def _run_with(tmp_path, name: str, strategy: str, cut: str, probabilities, validation=None) -> RecipeRun:
    from transferkit import recipes as recipe_io

    folder = tmp_path / name
    recipe = recipe_io.with_overrides(
        recipe_io.load_builtin(name), cut=cut if strategy == "truncate" else None
    )
    folder.mkdir(parents=True)
    (folder / "recipe.toml").write_text(recipe_io.dumps(recipe))
    labels = np.array([0, 1, 1, 0])
    save_predictions(
        folder,
        Predictions(
            "test", ("a", "b"), labels, np.asarray(probabilities, "float32"), ("p0", "p1", "p2", "p3"), 32
        ),
    )
    if validation is not None:  # class 0 for every validation image
        rows = np.asarray(validation, "float32")
        names = tuple(f"v{i}" for i in range(len(rows)))
        held = Predictions("validation", ("a", "b"), np.zeros(len(rows), np.int64), rows, names, 32)
        save_predictions(folder, held, VALIDATION_PREDICTIONS_FILE)
    accuracy = float(np.mean(np.argmax(probabilities, axis=1) == labels))
    return RecipeRun(
        name,
        strategy,
        name == "large_dissimilar",
        "test",
        accuracy,
        0.0,
        1.0,
        0.5,
        None,
        10.0,
        100.0,
        5.0,
        7,
        3,
        str(folder),
    )


def test_compare_adds_the_averaged_pick_from_its_members_held_out_predictions(tmp_path):
    whole = _run_with(
        tmp_path, "large_dissimilar", "retrain", "", [[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.45, 0.55]]
    )
    cut = _run_with(
        tmp_path, "small_dissimilar", "truncate", "block_3", [[0.4, 0.6], [0.1, 0.9], [0.2, 0.8], [0.3, 0.7]]
    )
    features, labels = _features()
    selection = select(_card(98), features, labels, similar=False, image_size=224)
    runs = with_averaged_pick((whole, cut), selection)
    assert [(r.recipe, r.picked) for r in runs] == [
        ("large_dissimilar", False),
        ("small_dissimilar", False),
        (AVERAGED, True),
    ]
    averaged = runs[-1]
    # labels 0 1 1 0: each network 2 of 4 right, their mean [.65 .35] [.25 .75] [.4 .6] [.375 .625] 3
    assert (whole.accuracy, cut.accuracy, averaged.accuracy) == (0.5, 0.5, 0.75)
    assert averaged.validation_accuracy is None and averaged.seconds == 20.0
    elsewhere = dataclasses.replace(selection, partner_cut="block_9")
    untrained = with_averaged_pick(
        (whole, cut), elsewhere
    )  # its truncation was not trained: no row is the pick
    assert untrained == tuple(dataclasses.replace(r, picked=False) for r in (whole, cut))
    # A member whose own fit calibrated it: its saved probabilities are taken back before averaging,
    # as fit's averaged model averages them (its own temperature comes after the mean).
    from transferkit.training.calibration import scaled_probabilities

    tempered = scaled_probabilities(np.array([[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.45, 0.55]]), 3.0)
    calibrated = _run_with(tmp_path / "calibrated", "large_dissimilar", "retrain", "", tempered)
    (pathlib.Path(calibrated.run_dir) / "metrics.json").write_text(
        json.dumps({"calibration": {"applied": True, "temperature": 3.0}})
    )
    again = with_averaged_pick((calibrated, cut), selection)[-1]
    assert again.accuracy == 0.75  # averaged as saved (tempered) it would score 1.0


def test_compare_picks_the_whole_network_where_fit_would_drop_the_truncation(tmp_path):
    test_rows = [[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.45, 0.55]]
    whole = _run_with(tmp_path, "large_dissimilar", "retrain", "", test_rows, validation=_votes(40, 0))
    cut_rows = [[0.4, 0.6], [0.1, 0.9], [0.2, 0.8], [0.3, 0.7]]
    weak = _run_with(tmp_path, "small_dissimilar", "truncate", "block_3", cut_rows, validation=_votes(28, 12))
    features, labels = _features()
    selection = select(_card(98), features, labels, similar=False, image_size=224)
    runs = with_averaged_pick((whole, weak), selection)
    assert [(r.recipe, r.picked) for r in runs][-1] == (AVERAGED, True)
    assert runs[-1].accuracy == whole.accuracy == 0.5  # not the mean's 0.75: fit keeps the whole network
    assert runs[-1].validation_accuracy == whole.validation_accuracy
    assert runs[-1].seconds == whole.seconds + weak.seconds  # fit trains both before it checks
    close = _run_with(
        tmp_path / "close", "small_dissimilar", "truncate", "block_3", cut_rows, validation=_votes(38, 2)
    )
    averaged = with_averaged_pick((whole, close), selection)[-1]
    assert averaged.accuracy == 0.75 and averaged.strategy == "average"  # within noise: averaged
    assert averaged.validation_accuracy == 1.0  # [.8 .2] with [.8 .2] or [.2 .8]: class 0 (ties to it)


def test_an_averaged_run_without_a_test_split_records_each_networks_validation_figures(
    tmp_path, monkeypatch, capsys
):
    """Two frozen bases (a truncation and the frozen base) are scored on their cached validation
    features, with no pass of the images: their figures come from those, not from an empty pass."""
    from transferkit.selection import decision

    monkeypatch.setattr(decision, "averages_frozen_base", lambda scores: True)
    monkeypatch.setattr(decision, "averages_leading_cut", lambda scores: True)
    data = make_image_folder(tmp_path / "data", classes=3, per_class=12, size=32)
    # 32 px: both networks are still frozen bases scored on cached validation features, at any size.
    settings = dict(backbone="tiny", weights="random", image_size=32, epochs=2, batch_size=8, verbose=2)
    run = transferkit.fit(
        str(data), size="small", test_split=0, selection="fast", out=tmp_path, report=False, **settings
    )
    assert run.selection.partner is not None and run.headline == "validation"
    members = json.loads((run.run_dir / "metrics.json").read_text())["members"]
    assert sorted(members) == ["frozen_base", "truncation"]
    assert all(set(figures) == {"validation"} for figures in members.values())
    printed = capsys.readouterr().out
    assert "each network alone: frozen base " in printed and ", truncation " in printed


@pytest.mark.usefixtures("full_resolution")
def test_compares_averaged_pick_is_fits_model_joined_from_the_two_runs_it_trained(
    averaged_run, compared_networks, tmp_path
):
    """The averaged pick gets a run folder of its own: the two networks compare trained, joined as
    fit joins them and saved, with the figures of fit's averaged run on the same data and seed."""
    data, reference = averaged_run
    compared, _ = compared_networks
    pick = compared.runs[-1]
    assert (pick.recipe, pick.picked) == (AVERAGED, True)
    folder = pathlib.Path(pick.run_dir)
    assert folder == compared.run_dir / AVERAGED and averaging.read_partner(folder).backbone.cut
    info = json.loads((folder / "run.json").read_text())
    assert info["status"] == "finished" and info["joined_from"]["partner"] == compared.runs[1].run_dir
    ours, theirs = load_predictions(folder), load_predictions(reference.run_dir)
    assert ours.paths == theirs.paths
    np.testing.assert_allclose(ours.probabilities, theirs.probabilities, atol=1e-5)
    assert pick.accuracy == reference.metrics.accuracy
    assert pick.validation_accuracy == reference.validation_metrics.accuracy
    assert sorted(averaging.members_of(load_run(folder).model)) == ["truncation", "whole_network"]
    assert pick.seconds == sum(r.seconds for r in compared.runs[:-1])  # the two fits, as fit trains both
    assert f"The averaged pick's run folder (the model fit would give): {folder}" in compared.table()
    saved = json.loads((compared.run_dir / "comparison.json").read_text())
    assert saved["runs"][-1]["run_dir"] == str(folder)
    with pytest.raises(transferkit.TransferkitError, match="named 'averaged'"):
        transferkit.compare(str(data), recipes=(tmp_path / "averaged.toml",), out=tmp_path, verbose=0)


def test_the_passes_shared_by_both_networks_train_what_each_would_have_alone(averaged_run, compared_networks):
    """One set of augmented passes serves the whole network's warm-up and the partner's head: the
    same figures as when each network passes the images itself (compare's two fits of their own, on
    the same data and seed)."""
    _, shared = averaged_run
    compared, given = compared_networks
    computed = [not served for _, _, served in given]
    assert computed == [True, True]  # each network's first phase passed the images itself
    whole, truncation, averaged = compared.runs
    np.testing.assert_allclose(
        load_predictions(averaged.run_dir).probabilities,
        load_predictions(shared.run_dir).probabilities,
        atol=1e-5,
    )
    assert averaged.accuracy == shared.metrics.accuracy
    for alone, folder in ((whole, ""), (truncation, "partner")):  # each network's epochs: the same losses
        ours = read_history(pathlib.Path(alone.run_dir) / "history.csv")
        theirs = read_history(shared.run_dir / folder / "history.csv")
        losses = [float(row[key]) for row in ours for key in ("loss", "val_loss")]
        assert losses == pytest.approx(
            [float(row[key]) for row in theirs for key in ("loss", "val_loss")], abs=1e-5
        )


def _first_looks(monkeypatch, decisions: tuple[bool, bool]) -> tuple[list, list]:
    """Make the augmentation checks' first looks decide as told (the run's own network's, then the
    partner's; clear the second list returned before the next fit), and record each
    :class:`SharedProgress` an averaged fit makes (the first list)."""
    from transferkit.training import shared_passes as shared_module

    looks: list[AugmentCheck] = []

    def decided(check):
        if not any(seen is check for seen in looks):
            looks.append(check)
        return decisions[min(next(i for i, seen in enumerate(looks) if seen is check), 1)]

    progress = []

    class Recorded(shared_module.SharedProgress):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            progress.append(self)

    monkeypatch.setattr(shared_module, "SharedProgress", Recorded)
    monkeypatch.setattr(AugmentCheck, "clean_by_far", property(decided))
    return progress, looks


@pytest.mark.usefixtures("full_resolution")
def test_a_check_on_the_shared_passes_looks_at_the_first_alone_as_a_fit_of_its_own_would(
    averaged_run, tmp_path, monkeypatch
):
    """compare's averaged row averages two fits of their own, whose augmentation checks look at one
    pass first; fit's averaged run serves the partner's check from the passes both networks share,
    and it looks at the first of them alone all the same: the same record and the same model. (A
    whole network's warm-up does not check: it asks for every pass, through the shared graph.)"""
    data, _ = averaged_run
    progress, looks = _first_looks(monkeypatch, (True, True))
    shared = transferkit.fit(str(data), out=tmp_path, name="shared", report=False, **FIT)
    looks.clear()
    monkeypatch.setattr(session_module, "share_first_passes", lambda trainer, partner: None)
    alone = transferkit.fit(str(data), out=tmp_path, name="alone", report=False, **FIT)
    assert [p.cached for p in progress] == [2]  # FIT's two epochs: two augmented passes
    records = [TrainState.load(run.run_dir / "partner").augmentation for run in (shared, alone)]
    assert records[0] == records[1] and records[0]["augmented_passes"] == 1
    np.testing.assert_allclose(
        load_predictions(alone.run_dir).probabilities,
        load_predictions(shared.run_dir).probabilities,
        atol=1e-5,
    )


def test_an_averaged_fit_passes_its_images_once_for_both_first_phases(averaged_fit):
    _, _, given = averaged_fit
    # The shared graph's passes, then each network's first phase served from them.
    assert [name for name, _, _ in given][0] == "shared_features"
    assert [(index, served) for _, index, served in given[1:]] == [(0, True), (0, True)]


@pytest.mark.usefixtures("full_resolution")
def test_the_shared_passes_spilled_to_files_train_the_run_as_in_memory(averaged_run, tmp_path):
    """The shared passes' store, the partner's copy of its columns and the decoded images go to
    files over the budget; every phase of both networks trains as in memory, the whole-network
    phase on the same batches (its shuffle buffer does not depend on the budget)."""
    data, in_memory = averaged_run
    spilled = transferkit.fit(
        str(data), out=tmp_path, name="spilled", cache_memory="1KB", report=False, **FIT
    )
    for folder in ("partner", ""):
        ours, theirs = (read_history(run.run_dir / folder / "history.csv") for run in (spilled, in_memory))
        assert {row["phase"] for row in ours} == {row["phase"] for row in theirs}
        losses = [float(row[key]) for row in ours for key in ("loss", "val_loss")]
        reference = [float(row[key]) for row in theirs for key in ("loss", "val_loss")]
        assert losses and losses == pytest.approx(reference, abs=1e-5)
    assert spilled.metrics.accuracy == in_memory.metrics.accuracy
    assert not (spilled.run_dir / "cache").exists()  # the spill folder goes with the run


# ----------------------------------------------------------------------------------------------
# A truncation averaged with the frozen base
# ----------------------------------------------------------------------------------------------


def _scores(earlier: float, deepest: float):
    from transferkit.selection.rules import CutScore

    return [
        CutScore("block_3", logme=-0.1, probe_accuracy=earlier, feature_dim=8, probe_stderr=0.02),
        CutScore("out", logme=-0.2, probe_accuracy=deepest, feature_dim=8, probe_stderr=0.02),
    ]


def _select_with(monkeypatch, deepest: float, **given) -> Selection:
    """The selector on four classes of 30 images at 96 px, its probe scoring the earlier cut 0.80 and
    the deepest ``deepest``; ``given``: what the caller says (size, similar)."""
    from transferkit.selection import decision

    monkeypatch.setattr(decision, "score_cut_points", lambda *args, **kwargs: _scores(0.80, deepest))
    features, labels = {"block_3": None, "out": None}, np.repeat(np.arange(4), 30)
    return select(_card(30), features, labels, image_size=96, **given)


@pytest.mark.parametrize(("deepest", "averaged"), [(0.74, True), (0.80 - 0.12, True), (0.60, False)])
def test_a_truncation_averages_the_frozen_base_where_the_cut_leads_by_little(monkeypatch, deepest, averaged):
    selection = _select_with(monkeypatch, deepest)
    assert (selection.quadrant, selection.cut_point) == ("small_dissimilar", "block_3")
    assert selection.partner == ("small_similar" if averaged else None) and selection.partner_cut is None
    assert any("frozen base trains too" in reason for reason in selection.reasons) is averaged
    assert Selection.from_dict(selection.to_dict()) == selection


def test_the_frozen_base_partner_needs_measured_similarity(monkeypatch):
    """Told the data is dissimilar, fit trains the truncation asked for, alone."""
    selection = _select_with(monkeypatch, 0.78, similar=False)
    assert (selection.quadrant, selection.partner) == ("small_dissimilar", None)


def test_a_selection_written_before_frozen_base_partners_reads_its_truncation_partner():
    features, labels = _features()
    record = select(_card(98), features, labels, similar=False, image_size=224).to_dict()
    del record["partner"]
    assert Selection.from_dict(record).partner == "small_dissimilar"


@pytest.mark.parametrize(
    ("pick", "partner", "partner_cut"),
    [("small_dissimilar", "small_similar", None), ("small_similar", "small_dissimilar", "block_3")],
)
def test_compare_averages_a_truncation_and_the_frozen_base_either_way_round(
    tmp_path, pick, partner, partner_cut
):
    cut = _run_with(
        tmp_path,
        "small_dissimilar",
        "truncate",
        "block_3",
        [[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.45, 0.55]],
    )
    frozen = _run_with(
        tmp_path, "small_similar", "freeze", "none", [[0.4, 0.6], [0.1, 0.9], [0.2, 0.8], [0.3, 0.7]]
    )
    similar = pick == "small_similar"
    strategy, cut_point = ("freeze", None) if similar else ("truncate", "block_3")
    selection = Selection(
        "small", similar, pick, strategy, cut_point, 0.5, True, (), (), 0.1,
        partner=partner, partner_cut=partner_cut,
    )  # fmt: skip
    runs = with_averaged_pick((cut, frozen), selection)
    assert [(r.recipe, r.picked) for r in runs][-1] == (AVERAGED, True)
    assert (cut.accuracy, frozen.accuracy, runs[-1].accuracy) == (0.5, 0.5, 0.75)
    if partner_cut is not None:  # a truncation partner cut elsewhere is not the one compare trained
        elsewhere = dataclasses.replace(selection, partner_cut="block_9")
        assert with_averaged_pick((cut, frozen), elsewhere)[-1].recipe != AVERAGED


def _fit_truncation_beside_frozen_base(
    root: pathlib.Path, name: str, patch, share: bool = True, report: bool = True
):
    """A fit whose selector picks a truncation with the frozen base beside it: the tiny backbone
    (its probe on random features decides nothing, so the call is made for it) with weights from a
    file, as pretrained weights are loaded (a base built again is the same)."""
    from transferkit.backbones.registry import get_backbone
    from transferkit.backbones.weights import build_base
    from transferkit.selection import decision

    weights = root / "tiny.weights.h5"
    if not weights.exists():
        keras.utils.set_random_seed(0)
        base, _ = build_base(get_backbone("tiny"), 32, "random")
        base.save_weights(weights)
    real = decision.similarity_decision

    def dissimilar(scores):
        _, _, confidence, reasons = real(scores)
        return False, scores[-2].cut, confidence, reasons

    data = root / "data"
    if not data.exists():
        make_image_folder(data, classes=2, per_class=30, size=32)
    patch.setattr(decision, "similarity_decision", dissimilar)
    patch.setattr(decision, "averages_frozen_base", lambda scores: True)
    if not share:
        patch.setattr(session_module, "share_first_passes", lambda trainer, partner: None)
    options = dict(
        size="small", backbone="tiny", weights=str(weights), image_size=32, epochs=2, batch_size=16, verbose=0
    )
    return transferkit.fit(str(data), out=root / "runs", name=name, report=report, **options)


@pytest.fixture(scope="module")
def frozen_base_partner(tmp_path_factory):
    root = tmp_path_factory.mktemp("frozen_base")
    with pytest.MonkeyPatch.context() as patch:
        run = _fit_truncation_beside_frozen_base(root, "shared", patch)
        alone = _fit_truncation_beside_frozen_base(root, "alone", patch, share=False, report=False)
    return run, alone


def test_fit_trains_the_frozen_base_beside_a_close_truncation_and_saves_the_average(frozen_base_partner):
    run, _ = frozen_base_partner
    assert (run.recipe.strategy, run.selection.partner) == ("truncate", "small_similar")
    assert averaging.read_partner(run.run_dir).strategy == "freeze"
    recorded = json.loads((run.run_dir / "metrics.json").read_text())
    assert list(recorded["members"]) == ["truncation", "frozen_base"]
    assert (recorded["averaging"]["main"], recorded["averaging"]["rival"]) == ("truncation", "average")
    saved = load_run(run.run_dir).model
    members = averaging.members_of(saved)
    assert list(members) == (["truncation", "frozen_base"] if recorded["averaging"]["kept"] else [])
    assert (averaging.TRUNK_NAME in [layer.name for layer in saved.layers]) == recorded["averaging"]["kept"]
    predictions = load_predictions(run.run_dir)
    images, _ = load_images(list(predictions.paths), predictions.image_size, predictions.white_level)
    np.testing.assert_allclose(
        saved.predict(np.asarray(images, "float32"), verbose=0), predictions.probabilities, atol=1e-5
    )
    report = (run.run_dir / "report.html").read_text()
    assert "averaged with small_similar" in report and "frozen base" in report


def test_a_truncation_and_its_frozen_base_share_their_first_passes_as_if_each_passed_its_own(
    frozen_base_partner,
):
    shared, alone = frozen_base_partner
    assert "shared features" in json.loads((shared.run_dir / "timings.json").read_text())["totals"]
    assert "shared features" not in json.loads((alone.run_dir / "timings.json").read_text())["totals"]
    np.testing.assert_allclose(
        load_predictions(alone.run_dir).probabilities,
        load_predictions(shared.run_dir).probabilities,
        atol=1e-5,
    )
    for folder in ("", "partner"):  # each network's epochs: the same losses
        ours, theirs = (read_history(run.run_dir / folder / "history.csv") for run in (alone, shared))
        losses = [float(row[key]) for row in ours for key in ("loss", "val_loss")]
        assert losses == pytest.approx(
            [float(row[key]) for row in theirs for key in ("loss", "val_loss")], abs=1e-5
        )


@pytest.mark.parametrize(
    ("first_look", "shared_passes", "partner_passes"),
    [
        ((True, True), 1, 1),  # both checks drop the warps on the first pass: the other one never computed
        ((True, False), 1, 2),  # only the partner's asks for the other: it computes it itself
    ],
)
def test_shared_passes_are_computed_only_where_a_checks_first_look_asks_for_them(
    tmp_path, monkeypatch, first_look, shared_passes, partner_passes
):
    """The truncation's and the frozen base's heads each look at the first of the passes they share
    before asking for the others (FIT's two epochs: two passes); the same records and model as two
    networks that pass the images themselves."""
    progress, looks = _first_looks(monkeypatch, first_look)
    shared = _fit_truncation_beside_frozen_base(tmp_path, "shared", monkeypatch, report=False)
    looks.clear()
    alone = _fit_truncation_beside_frozen_base(tmp_path, "alone", monkeypatch, share=False, report=False)
    assert [p.cached for p in progress] == [shared_passes]
    for folder, passes in (("", 1), ("partner", partner_passes)):
        records = [TrainState.load(run.run_dir / folder).augmentation for run in (shared, alone)]
        assert records[0] == records[1] and records[0]["augmented_passes"] == passes
    np.testing.assert_allclose(
        load_predictions(alone.run_dir).probabilities,
        load_predictions(shared.run_dir).probabilities,
        atol=1e-5,
    )


def _ahead_and_behind() -> tuple[np.ndarray, np.ndarray]:
    """Two networks' class-0 votes on 100 images of class 0: the first right on 94, the second on 76;
    24 images only the first gets right, 6 only the second, and their mean gets all 100 right."""
    ahead = np.array([[0.9, 0.1]] * 94 + [[0.45, 0.55]] * 6)
    behind = np.array([[0.6, 0.4]] * 70 + [[0.45, 0.55]] * 24 + [[0.9, 0.1]] * 6)
    return ahead, behind


def test_a_frozen_base_partner_is_dropped_only_when_the_truncation_is_clearly_ahead_of_the_average():
    """Clearly ahead of the frozen base (24 images only it gets right, 6 the other way), not of their
    mean, which gets all 100 right: averaged. The same answers as a whole network and its truncation:
    the truncation dropped."""
    labels = np.zeros(100, int)
    truncation, frozen_base = _ahead_and_behind()
    check = averaging.check_partner({"truncation": truncation, "frozen_base": frozen_base}, labels)
    assert (check.rival, check.main_correct, check.partner_correct, check.average_correct) == (
        "average",
        94,
        76,
        100,
    )
    assert check.kept and "not clearly ahead of the average" in check.describe()
    whole = averaging.check_partner({"whole_network": truncation, "truncation": frozen_base}, labels)
    assert (whole.rival, whole.only_main, whole.only_rival, whole.kept) == ("partner", 24, 6, False)


# ----------------------------------------------------------------------------------------------
# The frozen base averaged with a truncation whose cut leads by less than the margin
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("deepest", "averaged"), [(0.79, True), (0.80 - 0.02, True), (0.80, False), (0.81, False)]
)
def test_similar_data_averages_the_frozen_base_with_a_cut_that_leads_within_the_margin(
    monkeypatch, deepest, averaged
):
    selection = _select_with(monkeypatch, deepest)
    assert (selection.quadrant, selection.cut_point, selection.similar) == ("small_similar", None, True)
    expected = ("small_dissimilar", "block_3") if averaged else (None, None)
    assert (selection.partner, selection.partner_cut) == expected
    assert any("a truncation there trains too" in reason for reason in selection.reasons) is averaged
    assert Selection.from_dict(selection.to_dict()) == selection


def test_the_leading_cut_partner_needs_measured_similarity_and_small_data(monkeypatch):
    """Told the data is similar, or large, fit trains the one network asked for."""
    told = _select_with(monkeypatch, 0.79, similar=True)
    large = _select_with(monkeypatch, 0.79, size="large")
    assert (told.quadrant, told.partner, large.quadrant, large.partner) == (
        "small_similar",
        None,
        "large_similar",
        None,
    )


def test_a_frozen_base_with_a_truncation_partner_is_checked_against_the_average():
    """The frozen base clearly ahead of its truncation (24 images only it gets right, 6 the other
    way) but not of their mean: averaged."""
    labels = np.zeros(100, int)
    frozen_base, truncation = _ahead_and_behind()
    check = averaging.check_partner({"frozen_base": frozen_base, "truncation": truncation}, labels)
    assert (check.main, check.partner, check.rival, check.average_correct) == (
        "frozen_base",
        "truncation",
        "average",
        100,
    )
    assert check.kept


def test_fit_trains_a_leading_cut_beside_the_frozen_base_and_saves_the_average(tmp_path, monkeypatch):
    """The frozen base in the run folder, the truncation in partner/, one pass of the images for both
    first phases, and the saved model the two networks' mean (or the frozen base alone)."""
    from transferkit.backbones.registry import get_backbone
    from transferkit.backbones.weights import build_base
    from transferkit.selection import decision

    keras.utils.set_random_seed(0)
    base, _ = build_base(get_backbone("tiny"), 32, "random")
    weights = tmp_path / "tiny.weights.h5"
    base.save_weights(weights)
    real = decision.similarity_decision

    def similar(scores):
        _, _, confidence, reasons = real(scores)
        return True, None, confidence, reasons

    monkeypatch.setattr(decision, "similarity_decision", similar)
    monkeypatch.setattr(decision, "averages_leading_cut", lambda scores: True)
    data = make_image_folder(tmp_path / "data", classes=2, per_class=30, size=32)
    run = transferkit.fit(
        str(data), size="small", backbone="tiny", weights=str(weights), image_size=32, epochs=2,
        batch_size=16, out=tmp_path / "runs", verbose=0, report=False,
    )  # fmt: skip
    assert (run.recipe.strategy, run.selection.partner) == ("freeze", "small_dissimilar")
    partner = averaging.read_partner(run.run_dir)
    assert partner.strategy == "truncate" and partner.backbone.cut == run.selection.partner_cut
    assert "shared features" in json.loads((run.run_dir / "timings.json").read_text())["totals"]
    recorded = json.loads((run.run_dir / "metrics.json").read_text())
    assert list(recorded["members"]) == ["frozen_base", "truncation"]
    assert (recorded["averaging"]["main"], recorded["averaging"]["rival"]) == ("frozen_base", "average")
    saved = load_run(run.run_dir).model
    members = averaging.members_of(saved)
    assert list(members) == (["frozen_base", "truncation"] if recorded["averaging"]["kept"] else [])
    assert (averaging.TRUNK_NAME in [layer.name for layer in saved.layers]) == recorded["averaging"]["kept"]
