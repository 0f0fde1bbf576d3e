"""The feature bank: the same features as each classifier's extractor, head-only trials on them that
train the same head as the Trainer, and the final fit reusing them (tiny backbone, synthetic data)."""

import dataclasses
import json

import keras
import numpy as np
import pytest

import transferkit
from transferkit import api
from transferkit import session as stages
from transferkit.backbones.registry import get_backbone
from transferkit.backbones.weights import build_base
from transferkit.recipes import load_builtin, with_overrides
from transferkit.reporting.metrics import evaluate_model, predict_dataset
from transferkit.selection.measure import probe_quadrant
from transferkit.selection.trials import scaled_recipe
from transferkit.testing import make_image_folder
from transferkit.training import head_phase
from transferkit.training.feature_bank import FeatureView
from transferkit.training.features import extract_features, feature_step
from transferkit.training.head_fit import fit_head, fits_on_features
from transferkit.training.timing import TIMINGS_FILE

TINY = dict(backbone="tiny", weights="random", image_size=16, batch_size=8, seed=7)
SPEC = get_backbone("tiny")


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    folder = make_image_folder(tmp_path_factory.mktemp("data") / "shapes", classes=3, per_class=12)
    return dataclasses.replace(transferkit.load_data(str(folder), seed=7), test=None)


def _recipes():
    freeze = with_overrides(load_builtin("small_similar"), **TINY)
    cut = with_overrides(load_builtin("small_dissimilar"), cut="block2_pool", **TINY)
    return freeze, cut


def _base():
    keras.utils.set_random_seed(7)
    return build_base(SPEC, 16, "random")[0]


def test_bank_features_are_each_classifier_extractors_features(splits):
    base = _base()
    recipes = _recipes()
    bank = stages.feature_bank(base, recipes[0], list(recipes), splits, verbose=0)
    assert set(bank.views) == {FeatureView(None, "avg"), FeatureView("block2_pool", "avg_dev")}
    for recipe in recipes:
        extractor = stages.assemble(recipe, SPEC, base, splits, None, "", 0).classifier.extractor
        _, val, ordered = stages.datasets_for(recipe, SPEC, splits)
        clean = bank.features_for(recipe, stages.bank_inputs(recipe, SPEC, splits))
        width = int(extractor.output.shape[-1])
        for (features, labels), data in ((clean.train, ordered), (clean.val, val)):
            expected, expected_labels = extract_features(
                feature_step(extractor), data, feature_dim=width, verbose=0
            )
            assert features.shape == expected.shape and np.allclose(features, expected, rtol=1e-5, atol=1e-6)
            assert np.array_equal(labels, expected_labels)


def test_bank_features_serve_only_the_same_images_size_batch_and_a_head_first_phase(splits):
    freeze, cut = _recipes()
    bank = stages.feature_bank(_base(), freeze, [freeze], splits, verbose=0)
    inputs = stages.bank_inputs(freeze, SPEC, splits)
    assert bank.features_for(freeze, inputs) is not None
    reordered = dataclasses.replace(splits, train=splits.train.subset(range(len(splits.train))[::-1]))
    assert bank.features_for(freeze, stages.bank_inputs(freeze, SPEC, reordered)) is None
    assert bank.features_for(freeze, dataclasses.replace(inputs, batch_size=4)) is None
    assert bank.features_for(freeze, dataclasses.replace(inputs, image_size=24)) is None
    assert bank.features_for(cut, inputs) is None  # a view the bank does not hold
    whole_first = dataclasses.replace(
        freeze, phases=tuple(dataclasses.replace(p, train="all") for p in freeze.phases)
    )
    assert bank.features_for(whole_first, inputs) is None


@pytest.mark.parametrize("init", ["random", "logistic"])
def test_a_head_only_trial_on_bank_features_trains_the_same_head_as_the_trainer(splits, tmp_path, init):
    _, cut = _recipes()
    recipe = scaled_recipe(cut, 0.06)  # 12 of 200 epochs, no augmentation: what a trial trains
    phases = (dataclasses.replace(recipe.phases[0], patience=3),)
    recipe = dataclasses.replace(recipe, phases=phases, head=dataclasses.replace(recipe.head, init=init))
    assert fits_on_features(recipe) and not fits_on_features(load_builtin("large_similar"))
    base = _base()
    session = stages.assemble(recipe, SPEC, base, splits, None, "", 0)
    head = session.classifier.head
    start = head.get_weights()
    trainer = stages.make_trainer(session, splits, tmp_path, verbose=0)  # the old path: the Trainer
    epochs = len(trainer.run())
    accuracy = evaluate_model(session.classifier.model, trainer.val_data, splits.class_names).accuracy
    trained = head.get_weights()

    bank = stages.feature_bank(base, recipe, [recipe], splits, verbose=0)
    head.set_weights(start)
    clean = bank.features_for(recipe, stages.bank_inputs(recipe, SPEC, splits))
    hits, bank_epochs = fit_head(head, recipe, clean, len(splits.class_names))
    assert hits.shape == (len(splits.val),) and hits.dtype == bool
    assert hits.mean() == pytest.approx(accuracy, abs=1e-6) and bank_epochs == epochs
    for got, expected in zip(head.get_weights(), trained, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_train_trial_trains_a_head_only_candidate_on_the_bank_without_a_base(splits, monkeypatch):
    freeze, _ = _recipes()
    recipe = scaled_recipe(freeze, 0.02)
    base = _base()
    bank = stages.feature_bank(base, recipe, [recipe], splits, verbose=0)

    def no_base(*args, **kwargs):
        raise AssertionError("a head-only trial built a base")

    monkeypatch.setattr(stages, "build_base", no_base)
    monkeypatch.setattr(stages, "make_trainer", no_base)
    accuracy, epochs, hits = stages.train_trial(recipe, splits, bank, base)
    assert 0 <= accuracy <= 1 and epochs == recipe.phases[0].epochs  # 4 epochs, patience 20
    assert accuracy == hits.mean() and len(hits) == len(splits.val)


# No figures or report.html: nothing here reads them (report=False writes every number but no picture).
FIT_OPTIONS = dict(backbone="tiny", weights="random", epochs=2, batch_size=8, seed=7, verbose=0, report=False)


def _count_feature_passes(monkeypatch) -> list:
    """A list that grows by one with every pass the fit's feature cache makes through the base."""
    passes = []
    extract = head_phase.extract_features
    monkeypatch.setattr(head_phase, "extract_features", lambda *a, **k: passes.append(1) or extract(*a, **k))
    return passes


def _force_close_call(monkeypatch):
    def forced(*args, **kwargs):
        measured, probe = probe_quadrant(*args, **kwargs)
        return dataclasses.replace(measured, close_call=True, confidence=0.3), probe

    monkeypatch.setattr(stages, "probe_quadrant", forced)


@pytest.fixture(scope="module")
def fit_folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("fit-data") / "shapes", classes=3, per_class=10)


class _Given:
    """What a watched fit did: the clean features its Trainers were handed, the fit's feature
    passes through the base, the feature banks it built itself."""

    def __init__(self, monkeypatch):
        self.given, self.built = [], []
        given = self.given

        class Spy(stages.Trainer):
            def __init__(self, *args, **kwargs):
                given.append(kwargs.get("clean_features"))
                super().__init__(*args, **kwargs)

        monkeypatch.setattr(stages, "Trainer", Spy)
        self.passes = _count_feature_passes(monkeypatch)
        original = stages.build_feature_bank
        monkeypatch.setattr(
            stages, "build_feature_bank", lambda *a, **k: self.built.append(1) or original(*a, **k)
        )


@pytest.fixture(scope="module")
def close_call_run(fit_folder, tmp_path_factory):
    """One fit of a forced close call, its trials' bank from the probe's pass, watched (_Given);
    shared by the tests that compare a differently made fit with it (they only read it)."""
    with pytest.MonkeyPatch.context() as patch:
        _force_close_call(patch)
        seen = _Given(patch)
        run = transferkit.fit(str(fit_folder), out=tmp_path_factory.mktemp("close-call"), **FIT_OPTIONS)
    return run, seen


def test_the_final_fit_reuses_the_bank_and_trains_the_same_model(
    fit_folder, close_call_run, tmp_path, monkeypatch
):
    reused, seen = close_call_run
    assert seen.given and seen.given[-1] is not None  # the final fit was handed the bank's features
    reused_passes = len(seen.passes)

    _force_close_call(monkeypatch)
    watched = _Given(monkeypatch)
    given, passes = watched.given, watched.passes
    prepare = api.prepare
    monkeypatch.setattr(
        api, "prepare", lambda *a, **k: dataclasses.replace(prepare(*a, **k), clean_features=None)
    )
    computed = transferkit.fit(str(fit_folder), out=tmp_path / "b", **FIT_OPTIONS)
    assert given[-1] is None and computed.recipe == reused.recipe
    assert len(passes) == reused_passes + 2  # the clean training and validation passes
    assert computed.validation_metrics.accuracy == pytest.approx(reused.validation_metrics.accuracy)
    for got, expected in zip(reused.model.get_weights(), computed.model.get_weights(), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_a_whole_network_trial_trains_its_head_phase_on_the_bank_and_ends_as_the_old_path(
    splits, monkeypatch
):
    whole = with_overrides(load_builtin("large_similar"), epochs=2, **TINY)
    recipe = scaled_recipe(whole, 0.1)  # 2 + 1 epochs
    base = _base()  # seeded as a trial seeds its base: the same random weights
    bank = stages.feature_bank(base, recipe, [recipe], splits, verbose=0)
    trainers = []

    class Spy(stages.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            trainers.append(self)

    passes = []  # the images the Trainer passes through the base itself, per trial
    extract = head_phase.extract_features
    monkeypatch.setattr(head_phase, "extract_features", lambda *a, **k: passes.append(1) or extract(*a, **k))
    monkeypatch.setattr(stages, "Trainer", Spy)
    on_bank = stages.train_trial(recipe, splits, bank, base)
    on_bank_passes = len(passes)
    computed = stages.train_trial(recipe, splits)
    assert [t.clean_features is not None for t in trainers] == [True, False]
    assert (on_bank_passes, len(passes) - on_bank_passes) == (0, 2)  # the warm-up's training and validation
    assert on_bank[1] == computed[1] == 3 and on_bank[0] == pytest.approx(computed[0], abs=1e-6)
    np.testing.assert_array_equal(on_bank[2], computed[2])  # the same images right
    weights = [t.classifier.model.get_weights() for t in trainers]
    for got, expected in zip(*weights, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("patience", [0, 1])
def test_a_whole_network_trial_scores_the_weights_it_ends_with_image_by_image(splits, monkeypatch, patience):
    recipe = with_overrides(load_builtin("large_similar"), epochs=3, **TINY)
    tune = dataclasses.replace(recipe.phases[1], patience=patience, learning_rate=0.05)  # restores the best
    recipe = dataclasses.replace(recipe, phases=(recipe.phases[0], tune))
    trainers = []

    class Spy(stages.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            trainers.append(self)

    monkeypatch.setattr(stages, "Trainer", Spy)
    accuracy, _, hits = stages.train_trial(recipe, splits)
    (trainer,) = trainers
    probabilities, labels = predict_dataset(trainer.classifier.model, trainer.val_data)  # the model itself
    np.testing.assert_array_equal(hits, np.argmax(probabilities, axis=-1) == labels)
    assert accuracy == hits.mean() and len(hits) == len(splits.val)
    rows = trainer.history[-trainer.state.phase_epochs[-1] :]  # the last phase's epochs
    kept = min(rows, key=lambda row: float(row["val_loss"])) if patience else rows[-1]
    assert accuracy == pytest.approx(float(kept["val_accuracy"]), abs=1e-6)  # as training measured them


def test_the_bank_takes_the_probes_features_where_it_passed_every_training_image(
    fit_folder, close_call_run, tmp_path, monkeypatch
):
    """On small data the selector's probe passes every training image at every cut, pooled as the
    candidates pool them: the trials' bank passes only the validation images, and the trials and
    the final fit come out as from a bank that passed them all itself."""
    from_probe, seen = close_call_run
    assert seen.built == [] and from_probe.selection.trials is not None

    _force_close_call(monkeypatch)
    built = _Given(monkeypatch).built
    forced = stages.probe_quadrant
    monkeypatch.setattr(stages, "probe_quadrant", lambda *a, **k: (forced(*a, **k)[0], None))
    own_pass = transferkit.fit(str(fit_folder), out=tmp_path / "b", **FIT_OPTIONS)
    assert built == [1]
    # What the fit took from the selection instead of passing the images itself, in timings.json.
    assert set(_reused(from_probe)) == {"selection", "trials"} and set(_reused(own_pass)) == {"trials"}
    assert min(_reused(from_probe).values()) > 0 and _reused(own_pass)["trials"] > 0
    scores = [
        [record["val_accuracy"] for record in run.selection.trials.to_dict()["records"]]
        for run in (from_probe, own_pass)
    ]
    assert scores[0] == pytest.approx(scores[1])
    assert own_pass.recipe == from_probe.recipe
    for got, expected in zip(from_probe.model.get_weights(), own_pass.model.get_weights(), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_a_fit_without_trials_takes_its_clean_features_from_the_probes_pass(tmp_path, monkeypatch, capsys):
    """No close call, so no trials and no bank of theirs: the selector's pass of every training image
    still gives the first phase its clean features (the augmentation check's), with one pass of the
    validation images through the probe's traced step (no second trace); the model comes out as
    from the fit's own passes."""
    folder = make_image_folder(tmp_path / "shapes", classes=3, per_class=10)
    probes = []
    measured = stages.probe_quadrant

    def clear_call(*args, **kwargs):
        selection, probe = measured(*args, **kwargs)
        probes.append(probe)
        return dataclasses.replace(selection, close_call=False), probe

    monkeypatch.setattr(stages, "probe_quadrant", clear_call)
    passes = _count_feature_passes(monkeypatch)
    options = FIT_OPTIONS
    reused = transferkit.fit(str(folder), out=tmp_path / "a", **{**options, "verbose": 1})
    assert probes[-1] is not None and reused.selection.trials is None
    assert "Clean features from the selection's pass (augmentation check)" in capsys.readouterr().out
    assert probes[-1].extract._forward.experimental_get_tracing_count() == 1
    reused_passes = len(passes)

    monkeypatch.setattr(stages, "probe_quadrant", lambda *a, **k: (clear_call(*a, **k)[0], None))
    computed = transferkit.fit(str(folder), out=tmp_path / "b", **{**options, "verbose": 1})
    assert "Caching clean features (augmentation check)" in capsys.readouterr().out
    assert computed.recipe == reused.recipe and computed.recipe.phases[0].train == "head"
    assert _reused(reused) == {"selection": pytest.approx(probes[0].seconds, abs=1e-3)}
    assert _reused(computed) == {}  # its selector's pass served nothing: all of it was selection's
    assert len(passes) - reused_passes == reused_passes + 2  # the clean training and validation passes
    assert computed.validation_metrics.accuracy == pytest.approx(reused.validation_metrics.accuracy)
    for got, expected in zip(reused.model.get_weights(), computed.model.get_weights(), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def _reused(run) -> dict:
    """The seconds of each stage's work that the fit reused (``timings.json``)."""
    return json.loads((run.run_dir / TIMINGS_FILE).read_text()).get("reused", {})
