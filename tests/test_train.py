"""Transfer mechanics on the tiny backbone: what must and must not change in each phase."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from transferkit import recipes
from transferkit.backbones.registry import get_backbone
from transferkit.recipes import HeadConfig, Phase
from transferkit.testing import synthetic_arrays, synthetic_batches, tiny_trainer
from transferkit.training.callbacks import EpochTensorBoard, Reseed, read_history
from transferkit.training.device import setup_device
from transferkit.training.head_phase import standardise_head
from transferkit.training.model import build_classifier, build_head, standardised
from transferkit.training.trainer import TrainState

SPEC = get_backbone("tiny")


def _recipe(name, phases=None, **overrides):
    recipe = recipes.with_overrides(
        recipes.load_builtin(name), backbone="tiny", weights="random", batch_size=8, **overrides
    )
    if phases is not None:
        recipe = dataclasses.replace(recipe, phases=tuple(phases))
    return recipe


def _trainer(classifier, recipe, run_dir):
    return tiny_trainer(classifier, recipe, run_dir, *synthetic_batches())


def _run(recipe, run_dir):
    setup_device("float32", recipe.seed)
    base = SPEC.build(32)
    train_bn = any(p.train_batchnorm for p in recipe.phases)
    classifier = build_classifier(SPEC, base, 3, recipe.head, batchnorm_inference=not train_bn)
    before = {v.path: v.numpy().copy() for v in classifier.model.weights}
    _trainer(classifier, recipe, run_dir).run()
    after = {v.path: v.numpy() for v in classifier.model.weights}
    changed = {path for path in before if not np.array_equal(before[path], after[path])}
    return classifier, changed


def test_head_phase_leaves_the_backbone_bit_identical(tmp_path):
    recipe = _recipe("small_similar", epochs=3)
    classifier, changed = _run(recipe, tmp_path)
    base_paths = {v.path for v in classifier.base.weights}
    head_paths = {v.path for v in classifier.head.weights}
    assert changed and changed <= head_paths
    assert not changed & base_paths
    history = read_history(tmp_path / "history.csv")
    losses = [float(row["loss"]) for row in history]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_unfreeze_from_changes_only_the_named_blocks_and_not_batchnorm(tmp_path):
    phases = [
        Phase(name="warmup", train="head", epochs=1),
        Phase(name="tune", train="top", epochs=2, unfreeze_from="block3_conv", learning_rate=1e-3),
    ]
    classifier, changed = _run(_recipe("large_similar", phases=phases), tmp_path)
    head_paths = {v.path for v in classifier.head.weights}
    changed_layers = {path.split("/")[-2] for path in changed - head_paths}
    assert changed_layers == {"block3_conv"}  # block1/2 untouched, BatchNorm (incl. moving stats) untouched
    history = read_history(tmp_path / "history.csv")
    assert [int(r["epoch"]) for r in history] == [1, 2, 3]  # epochs continue across phases
    assert [r["phase"] for r in history] == ["warmup", "tune", "tune"]
    assert TrainState.load(tmp_path).completed_phases == 2


def test_unfreeze_from_inside_a_block_starts_at_the_block_boundary(tmp_path):
    phases = [Phase(name="tune", train="top", epochs=1, unfreeze_from="block2_relu")]
    _, changed = _run(_recipe("large_similar", phases=phases), tmp_path)
    layers = {path.split("/")[-2] for path in changed}
    assert "block2_conv" in layers and "block1_conv" not in layers


def test_retrain_trains_batchnorm_when_the_phase_opts_in(tmp_path):
    phases = [Phase(name="all", train="all", epochs=1, train_batchnorm=True)]
    _, changed = _run(_recipe("large_dissimilar", phases=phases), tmp_path)
    assert any("block1_bn" in path and "moving_mean" in path for path in changed)
    assert any("block1_conv" in path for path in changed)


def test_nan_loss_stops_with_a_learning_rate_hint(tmp_path):
    from transferkit.errors import TransferkitError

    phases = [Phase(name="all", train="all", epochs=2, learning_rate=0.99)]
    recipe = _recipe("large_dissimilar", phases=phases)
    recipe = dataclasses.replace(recipe, head=dataclasses.replace(recipe.head, dropout=0.0))
    setup_device("float32", recipe.seed)
    classifier = build_classifier(SPEC, SPEC.build(32), 3, recipe.head)
    big = classifier.head.get_layer("predictions")
    kernel, bias = big.get_weights()  # as a run that has diverged: inf logits -> NaN loss on the first batch
    big.set_weights([np.full_like(kernel, np.inf), bias])
    with pytest.raises(TransferkitError, match="learning rate"):
        _trainer(classifier, recipe, tmp_path).run()


def test_out_of_memory_names_the_batch_size_to_try(tmp_path, monkeypatch):
    from transferkit.errors import TransferkitError

    recipe = _recipe("small_similar", epochs=1)
    setup_device("float32", recipe.seed)
    classifier = build_classifier(SPEC, SPEC.build(32), 3, recipe.head)

    def exhausted(*args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")

    monkeypatch.setattr(keras.Model, "fit", exhausted)  # the head is fitted inside a wrapper model
    trainer = _trainer(classifier, recipe, tmp_path)
    with pytest.raises(TransferkitError, match="batch size 8. Try batch_size=4"):
        trainer.run()


def test_head_standardises_features_from_the_training_set(tmp_path):
    classifier, changed = _run(_recipe("small_similar", epochs=1), tmp_path)
    scale, norm = classifier.head.get_layer("feature_scale"), classifier.head.get_layer("feature_norm")
    images, _ = synthetic_arrays()
    features = classifier.extractor.predict(images.astype("float32"), verbose=0)
    gain = float(np.sqrt(np.ravel(scale.variance)[0]))
    assert gain == 2.0 ** round(np.log2(gain))  # a power of two: scales exactly
    # adapted on augmented copies of the same images: close to, not equal to, the clean statistics
    np.testing.assert_allclose(np.ravel(norm.mean) / gain, features.mean(axis=0), rtol=0.5, atol=0.05)
    assert {v.path for v in norm.weights if "mean" in v.path} <= changed
    z = standardised(classifier.head, features)  # the layers compute with the statistics, not just store them
    assert abs(z.mean()) < 0.5 and 0.3 < z.std() < 3


@pytest.mark.parametrize("factor", [2.0**-40, 2.0**10, 1e-12])
def test_the_head_standardises_features_of_any_scale_alike(factor):
    """A random MobileNetV2's pooled features are ~1e-12 (Keras' init and torchvision's alike): below
    Normalization's 1e-7 floor on the standard deviation they came out near zero, and the head
    trained on them barely moved from chance (training loss 2.23 after 200 epochs, chance 2.30)."""
    features = np.random.default_rng(0).gamma(2.0, size=(2, 40, 8)).astype("float32")  # [passes, N, D]
    expected, tiny = build_head(8, 3, HeadConfig()), build_head(8, 3, HeadConfig())
    standardise_head(expected, features)
    standardise_head(tiny, features * np.float32(factor))
    z = standardised(expected, features[0])
    assert abs(z.mean()) < 0.1 and 0.9 < z.std() < 1.1
    scaled = standardised(tiny, features[0] * np.float32(factor))
    if factor == 2.0 ** round(np.log2(factor)):
        np.testing.assert_array_equal(scaled, z)  # exact: the gain is a power of two, so is the factor
    else:
        np.testing.assert_allclose(scaled, z, rtol=1e-4, atol=1e-5)


def _scalars(log_dir) -> dict:
    """``{(folder, tag, step): value}`` of every scalar summary under ``log_dir``."""
    found = {}
    for path in sorted(log_dir.rglob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                found[(path.parent.name, value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
    return found


def test_epoch_tensorboard_writes_what_keras_tensorboard_writes_at_epoch_granularity(tmp_path):
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(40, 5)).astype("float32"), np.arange(40) % 2

    def logged(callback, folder) -> dict:
        keras.utils.set_random_seed(0)
        inputs = keras.Input((5,))
        model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"], steps_per_execution=2)  # fmt: skip
        validation = (x[:10], y[:10])
        model.fit(x, y, batch_size=8, epochs=3, validation_data=validation, callbacks=[callback], verbose=0)
        return _scalars(folder)

    ours = logged(EpochTensorBoard(str(tmp_path / "ours")), tmp_path / "ours")
    keras_board = keras.callbacks.TensorBoard(str(tmp_path / "keras"), write_graph=False)
    theirs = logged(keras_board, tmp_path / "keras")
    names = {(folder, tag) for folder, tag, _ in ours}
    expected = {("train", "epoch_learning_rate"), ("train", "epoch_loss"), ("validation", "epoch_accuracy")}
    assert expected <= names
    assert ours.keys() == theirs.keys()
    np.testing.assert_allclose([ours[key] for key in theirs], list(theirs.values()), rtol=1e-6)


def test_reseed_draws_the_same_masks_whatever_non_random_layers_the_model_gains():
    def masks(layers, epoch):
        inputs = keras.Input((64,))
        x = inputs
        for layer in layers:
            x = layer(x)
        model = keras.Model(inputs, x)
        reseed = Reseed(seed=5)
        reseed.set_model(model)
        reseed.on_epoch_begin(epoch)
        out, ones = [], np.ones((4, 64), "float32")
        for layer in model.layers:
            if isinstance(layer, keras.layers.Dropout):
                out.append(keras.ops.convert_to_numpy(layer(ones, training=True)))
        return out

    def dropout():
        return keras.layers.Dropout(0.5)

    plain = masks([dropout(), dropout()], epoch=2)
    gained = masks([keras.layers.Identity(), dropout(), keras.layers.Identity(), dropout()], epoch=2)
    assert all(np.array_equal(a, b) for a, b in zip(plain, gained, strict=True))
    assert not np.array_equal(plain[0], plain[1])  # each layer draws its own stream
    assert not np.array_equal(plain[0], masks([dropout()], epoch=3)[0])  # and each epoch
