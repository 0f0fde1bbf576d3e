"""The augmentation check: the same head trained on augmented and on clean cached features."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import keras
import numpy as np
import pytest
from test_train import _recipe, _run

from transferkit.recipes import load_builtin
from transferkit.training import augment_check, head_phase
from transferkit.training import trainer as trainer_module
from transferkit.training.augment import build_augmentation, noise_only
from transferkit.training.augment_check import (
    FIRST_PASS_IMAGES,
    FIRST_PASS_MARGIN,
    MIN_DELTA,
    MIN_EPOCHS,
    AugmentCheck,
    check_augmentation,
)
from transferkit.training.callbacks import Reseed
from transferkit.training.features import CachedFeatures, EpochSetter, feature_step, feature_steps
from transferkit.training.trainer import TrainState

# The check's verdict is what this module tests: its heads train the product's floor of epochs
# (tests that look only around the check ask for short_check).
pytestmark = pytest.mark.full_check


def _separable(n=60, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n // 3).astype("int32")
    return (rng.normal(size=(n, dim)) + 3.0 * np.eye(3, dim)[labels]).astype("float32"), labels


def _head(dim=6):
    inputs = keras.Input((dim,))
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))


def _compile(model):
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )


def _check(augmented_features, clean_features, labels, validation, model=None, epochs=30, patience=5):
    model = model or _head()
    before = [w.copy() for w in model.get_weights()]
    check = check_augmentation(
        model,
        _compile,
        CachedFeatures(augmented_features[None], labels, 16, seed=1),
        CachedFeatures(clean_features[None], labels, 16, seed=1),
        validation,
        epochs=epochs,
        patience=patience,
        seed=1,
    )
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)  # the head starts the real phase where it was
    return check


def test_augmentation_that_destroys_the_label_is_dropped_and_one_that_keeps_it_is_kept():
    features, labels = _separable()
    validation = _separable(seed=1)
    noise = np.random.default_rng(2).normal(size=features.shape).astype("float32")
    destroyed = _check(noise, features, labels, validation)
    assert not destroyed.use_augmentation and destroyed.clean_val_accuracy > destroyed.augmented_val_accuracy
    kept = _check(features, noise, labels, validation)
    assert kept.use_augmentation
    tie = _check(features, features, labels, validation)
    assert tie.use_augmentation  # ties keep the default: augment
    assert AugmentCheck.from_dict(json.loads(json.dumps(tie.to_dict()))) == tie


def test_a_run_of_one_epoch_still_decides_on_trained_heads():
    features, labels = _separable()
    validation = _separable(seed=1)
    noise = np.random.default_rng(2).normal(size=features.shape).astype("float32")
    model = _head()
    # `fit --epochs 1`: four steps of a random head would decide nothing
    check = _check(noise, features, labels, validation, model, epochs=1, patience=MIN_EPOCHS)
    assert check.clean_val_accuracy >= 0.9 and not check.use_augmentation
    one_epoch = _head()
    one_epoch.set_weights(model.get_weights())
    _compile(one_epoch)
    history = one_epoch.fit(*_separable(), epochs=1, batch_size=16, validation_data=validation, verbose=0)
    assert history.history["val_accuracy"][-1] < check.clean_val_accuracy  # what one epoch would give


def test_the_check_is_recorded_and_a_resumed_run_follows_it_without_measuring(
    short_check, tmp_path, monkeypatch
):
    recipe = _recipe("small_similar", epochs=3)
    assert recipe.augment.measure
    _run(recipe, tmp_path / "first")
    record = TrainState.load(tmp_path / "first").augmentation
    assert set(record) >= {"augmented_val_accuracy", "clean_val_accuracy", "use_augmentation"}

    resumed = tmp_path / "resumed"  # killed after the check, before the phase finished
    resumed.mkdir()
    TrainState(augmentation={**record, "use_augmentation": False}).save(resumed)

    def measured_again(*args, **kwargs):
        raise AssertionError("the check ran again")

    monkeypatch.setattr(head_phase, "check_augmentation", measured_again)
    _run(recipe, resumed)
    assert TrainState.load(resumed).augmentation["use_augmentation"] is False


def test_the_check_compiles_once_and_measures_as_two_freshly_compiled_fits_would(monkeypatch):
    # 12 epochs a head, not 50: one compiled step reused against fresh compiles differs from the first
    # epoch on (the optimizer state, the traced metrics), and patience 8 still ends a fit early.
    monkeypatch.setattr(augment_check, "MIN_EPOCHS", 12)
    features, labels = _separable()
    validation = _separable(seed=1)
    noise = np.random.default_rng(2).normal(size=features.shape).astype("float32")
    compiled = []
    model = _head()
    start = model.get_weights()
    check = check_augmentation(
        model,
        lambda m: compiled.append(_compile(m)),
        CachedFeatures(noise[None], labels, 16, seed=1),
        CachedFeatures(features[None], labels, 16, seed=1),
        validation,
        epochs=8,
        patience=8,
        seed=1,
    )
    assert len(compiled) == 1  # one compile: Keras traces the train and test steps once
    assert int(model.optimizer.iterations) == 0  # left fresh: the phase trains on without compiling
    assert all(np.array_equal(a, b) for a, b in zip(start, model.get_weights(), strict=True))
    expected = []
    for data in (noise, features):  # each set on its own freshly compiled copy of the same head
        twin = _head()
        twin.set_weights(start)
        _compile(twin)
        cached = CachedFeatures(data[None], labels, 16, seed=1)
        stop = keras.callbacks.EarlyStopping("val_loss", patience=8, min_delta=MIN_DELTA)
        history = twin.fit(cached, epochs=augment_check.MIN_EPOCHS, validation_data=validation,
                           shuffle=False, verbose=0,
                           callbacks=[EpochSetter(cached), Reseed(1), stop]).history  # fmt: skip
        expected.append(min(history["val_loss"]))
    assert (check.augmented_val_loss, check.clean_val_loss) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("kept", [True, False], ids=["augmentation-kept", "noise-only-passes"])
def test_a_run_traces_the_base_once_for_all_its_feature_passes(noisy_run, kept):
    """Augmented, clean and (where the check drops the warps) noise-only passes: one traced graph."""
    run = noisy_run(kept)  # made with any feature step of its own failing the run
    assert TrainState.load(run.run_dir).augmentation is not None  # the check ran: it cached clean features
    ((clean, augmented, noisy),) = run.made
    assert clean.func is augmented.func is noisy.func and clean.func.experimental_get_tracing_count() == 1


def test_the_shared_feature_steps_compute_what_separate_steps_do():
    extractor = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3), keras.layers.Flatten()])
    augment = build_augmentation(load_builtin("small_similar").augment, seed=3)
    noise = noise_only(load_builtin("small_dissimilar").augment, seed=4)
    images = np.random.default_rng(0).uniform(0, 255, (4, 8, 8, 3)).astype("float32")
    clean, augmented, noisy = feature_steps(extractor, augment, noise)
    np.testing.assert_array_equal(clean(images).numpy(), feature_step(extractor)(images).numpy())
    for layer, step in ((augment, augmented), (noise, noisy)):
        layer.reseed(7)
        shared = step(images).numpy()
        layer.reseed(7)
        np.testing.assert_array_equal(shared, feature_step(extractor, layer)(images).numpy())
        assert not np.allclose(shared, clean(images).numpy())
    assert feature_steps(extractor, augment, None)[2] is None  # no noise: no third step


@pytest.mark.parametrize("kept", [True, False], ids=["augmentation-kept", "augmentation-dropped"])
def test_the_head_phase_trains_on_from_the_checks_compile_either_way(
    short_check, tmp_path, monkeypatch, kept
):
    compiled = []
    original = trainer_module.Trainer._compile

    def counted(self, model, *args, **kwargs):
        compiled.append(model.name)
        return original(self, model, *args, **kwargs)

    monkeypatch.setattr(trainer_module.Trainer, "_compile", counted)
    monkeypatch.setattr(AugmentCheck, "use_augmentation", property(lambda self: kept))
    classifier, changed = _run(_recipe("small_similar", epochs=2), tmp_path)
    assert TrainState.load(tmp_path).augmentation["use_augmentation"] is kept
    # The check's compile only, the head traced once: where the check dropped augmentation the head
    # was standardised again on the clean features, and the traced steps read the new statistics.
    assert compiled == ["head_training_graph"]
    head_layers = ("predictions", "feature_norm", "feature_scale")
    assert changed and all(any(name in path for name in head_layers) for path in changed)


def test_a_traced_head_step_standardises_with_the_statistics_set_after_it_was_traced():
    from transferkit.recipes import HeadConfig
    from transferkit.training.head_phase import head_graph, standardise_head
    from transferkit.training.model import build_head

    rng = np.random.default_rng(0)
    first, second = rng.normal(5.0, 3.0, (40, 6)), rng.normal(-2.0, 0.5, (40, 6))
    head = build_head(6, 3, HeadConfig(dropout=0.0))
    graph = head_graph(head)
    graph.compile(loss="sparse_categorical_crossentropy")
    standardise_head(head, first)
    graph.predict(second, verbose=0)  # traces the predict step with the first statistics
    standardise_head(head, second)
    fresh = keras.models.clone_model(graph)  # a new graph: traced from scratch
    fresh.set_weights(graph.get_weights())
    for layer in ("feature_scale", "feature_norm"):
        fresh.get_layer("head").get_layer(layer).finalize_state()
    np.testing.assert_allclose(graph.predict(second, verbose=0), fresh.predict(second, verbose=0), rtol=1e-6)


def _recorded_passes(monkeypatch) -> list:
    """The augmentation layer of every set of cached training passes a run makes, in order."""
    passes = []
    original = head_phase.FeatureCache.for_phase

    def recorded(self, index, augment, count, seed, pretrained, **options):
        passes.append(augment)
        return original(self, index, augment, count, seed, pretrained, **options)

    monkeypatch.setattr(head_phase.FeatureCache, "for_phase", recorded)
    return passes


def _observed_run(run_dir, kept: bool) -> SimpleNamespace:
    """small_similar with small_dissimilar's augmentation (its pixel noise on the tiny backbone), the
    check's verdict forced to ``kept``, watched for everything the tests below look at: the feature
    steps made (any feature step of its own fails the run), the sets of training passes cached, and
    the passes over the validation images."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(augment_check, "MIN_EPOCHS", 5)  # as short_check: the verdict is forced anyway
        made, passes, validation_passes = [], _recorded_passes(patch), []
        extract = head_phase.FeatureCache.extract

        def counted_steps(extractor, *augments):
            made.append(steps := feature_steps(extractor, *augments))
            return steps

        def counted_extract(self, step, data, out=None):
            validation_passes.extend([data] if data is self.val_data else [])
            return extract(self, step, data, out)

        patch.setattr(head_phase, "feature_steps", counted_steps)
        patch.setattr(head_phase, "feature_step", lambda *args: pytest.fail("a feature step of its own"))
        patch.setattr(head_phase.FeatureCache, "extract", counted_extract)
        patch.setattr(AugmentCheck, "use_augmentation", property(lambda self: kept))
        recipe = _recipe("small_similar", epochs=2)
        recipe = dataclasses.replace(recipe, augment=load_builtin("small_dissimilar").augment)
        _run(recipe, run_dir)
    return SimpleNamespace(
        recipe=recipe, run_dir=run_dir, made=made, passes=passes, validation_passes=validation_passes
    )


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory):
    """``noisy_run(kept)``: the :func:`_observed_run` of that verdict, made once for all the tests
    that check different aspects of it (none of them changes its run folder)."""
    runs = {}

    def run(kept: bool) -> SimpleNamespace:
        if kept not in runs:
            runs[kept] = _observed_run(tmp_path_factory.mktemp("kept" if kept else "dropped"), kept)
        return runs[kept]

    return run


def test_a_run_that_drops_augmentation_keeps_the_recipes_pixel_noise(noisy_run, tmp_path, monkeypatch):
    """The head then trains on passes with the noise alone (a head fitted to clean features only
    leaned on exact pixel values), and so does every later phase and a resumed run."""
    run = noisy_run(False)
    recipe, passes = run.recipe, run.passes
    assert recipe.augment.noise > 0 and recipe.augment.rotation_degrees > 0
    assert len(run.validation_passes) == 1  # both sets of passes share the validation features
    full, noise = passes  # the check's augmented passes, then the noise-only ones the head trains on
    assert full.rotation_degrees == recipe.augment.rotation_degrees
    assert full.noise == 0.0  # the check measures the warps alone: noise would move its verdict
    warps = (noise.flip, noise.rotation_degrees, noise.zoom, noise.translation, noise.contrast)
    assert warps == ("none", 0.0, 0.0, 0.0, 0.0) and noise.noise == recipe.augment.noise
    assert full.warps and not noise.warps  # what the progress lines call "augmented" / "pixel noise only"
    assert TrainState.load(run.run_dir).augmentation["use_augmentation"] is False

    resumed = tmp_path / "resumed"  # stopped after the check: the decision is read, not measured
    resumed.mkdir()
    TrainState(augmentation=TrainState.load(run.run_dir).augmentation).save(resumed)
    passes = _recorded_passes(monkeypatch)
    monkeypatch.setattr(AugmentCheck, "use_augmentation", property(lambda self: False))
    _run(recipe, resumed)
    ((again,),) = [passes]
    assert (again.noise, again.rotation_degrees) == (recipe.augment.noise, 0.0)


def test_without_pixel_noise_a_dropped_augmentation_leaves_clean_features():
    config = load_builtin("small_dissimilar").augment
    assert noise_only(load_builtin("small_similar").augment) is None  # the freeze recipe has none
    layer = noise_only(config, seed=3)
    images = np.full((2, 16, 16, 3), 128.0, "float32")
    out = np.asarray(layer(images, training=True))
    assert 0 < np.abs(out - 128.0).max() < 20  # noise, no warp: the flat image stays flat but for it
    assert np.array_equal(np.asarray(layer(images, training=False)), images)


@pytest.mark.parametrize("measure", [True, False], ids=["checked", "always-augmented"])
def test_pixel_noise_joins_the_warps_only_where_no_check_measures_them(
    noisy_run, tmp_path, monkeypatch, measure
):
    noisy = dataclasses.replace(load_builtin("small_dissimilar").augment, measure=measure)
    if measure:  # the noisy run the check keeps augmentation in: this same recipe
        run = noisy_run(True)
        assert run.recipe == dataclasses.replace(_recipe("small_similar", epochs=2), augment=noisy)
        passes, run_dir = run.passes, run.run_dir
    else:
        passes, run_dir = _recorded_passes(monkeypatch), tmp_path
        monkeypatch.setattr(AugmentCheck, "use_augmentation", property(lambda self: True))
        recipe = dataclasses.replace(_recipe("small_similar", epochs=2), augment=noisy)
        _run(recipe, run_dir)
    ((trained,),) = [passes]  # kept by the check, or never checked: the passes the head trains on
    assert trained.warps and trained.noise == (0.0 if measure else noisy.noise)
    assert (TrainState.load(run_dir).augmentation is not None) is measure


def _train_passes(monkeypatch) -> list:
    """Which step each pass over the training images went through: "clean" or "augmented"."""
    made, extract = [], head_phase.FeatureCache.extract

    def counted(self, step, data, out=None):
        if data is self.ordered_train_data:
            made.append("clean" if step is self._feature_steps()[0] else "augmented")
        return extract(self, step, data, out)

    monkeypatch.setattr(head_phase.FeatureCache, "extract", counted)
    return made


def test_a_first_pass_that_loses_by_far_drops_the_warps_before_the_other_passes_are_cached(
    short_check, tmp_path, monkeypatch
):
    made = _train_passes(monkeypatch)
    monkeypatch.setattr(AugmentCheck, "clean_by_far", property(lambda self: True))
    monkeypatch.setattr(AugmentCheck, "use_augmentation", property(lambda self: False))  # as it follows
    recipe = _recipe("small_similar", epochs=6)
    assert recipe.augment.cached_passes == 4 and recipe.augment.noise == 0
    _run(recipe, tmp_path)
    assert made == ["augmented", "clean"]  # one augmented pass of four, then the check's clean one
    record = TrainState.load(tmp_path).augmentation
    assert record["augmented_passes"] == 1 and record["use_augmentation"] is False


def test_a_check_the_first_pass_does_not_settle_measures_and_trains_as_an_unstaged_one(
    short_check, tmp_path, monkeypatch
):
    """Every pass cached after all, the head standardised on them, both heads trained again: the same
    figures, decision and model as a check that never looked at one pass alone."""
    made, said = _train_passes(monkeypatch), []
    monkeypatch.setattr(AugmentCheck, "clean_by_far", property(lambda self: False))
    monkeypatch.setattr(trainer_module.Trainer, "_say", lambda self, line: said.append(line))
    recipe = _recipe("small_similar", epochs=6)
    staged, _ = _run(recipe, tmp_path / "staged")
    assert made == ["augmented", "clean", "augmented", "augmented", "augmented"]
    assert any(line.endswith("no clear loser: caching the other 3 passes") for line in said)
    made.clear()
    for_phase = head_phase.FeatureCache.for_phase
    monkeypatch.setattr(  # every pass at once, as before the check was staged
        head_phase.FeatureCache, "for_phase", lambda *args, first=None: for_phase(*args)
    )
    unstaged, _ = _run(recipe, tmp_path / "unstaged")
    assert made == ["augmented"] * 4 + ["clean"]
    records = [TrainState.load(tmp_path / run).augmentation for run in ("staged", "unstaged")]
    assert records[0] == records[1] and records[0]["augmented_passes"] == 4
    for a, b in zip(staged.model.get_weights(), unstaged.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_first_pass_decides_only_by_the_margin_and_two_images():
    def check(augmented, clean, images=300):
        return AugmentCheck(0.5, 0.5, augmented, clean, augmented_passes=1, validation_images=images)

    assert FIRST_PASS_IMAGES == 2
    assert check(0.80, 0.80 + FIRST_PASS_MARGIN).clean_by_far
    assert not check(0.80, 0.80 + FIRST_PASS_MARGIN - 0.01).clean_by_far
    assert not check(0.90, 0.80).clean_by_far and check(0.90, 0.80).use_augmentation
    assert not check(0.70, 0.80, images=10).clean_by_far  # one image of 10: 10 points, yet one image
    assert check(0.70, 0.90, images=10).clean_by_far  # two
    older = {key: value for key, value in check(0.7, 0.8).to_dict().items() if key != "augmented_passes"}
    assert AugmentCheck.from_dict(older).augmented_passes == 0  # a state.json from before the staging
    assert "augmented (1 pass) vs 0.800 clean" in check(0.7, 0.8).describe()
