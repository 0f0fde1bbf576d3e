"""BatchNorm folded into convolutions (backbones/folding.py): the same function, kept in step with
the network it copies, and what every frozen-base feature pass runs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from transferkit import recipes
from transferkit.backbones.folding import FoldedConvolution, FoldedCopy, fold_batchnorm, folded_view
from transferkit.backbones.registry import get_backbone
from transferkit.training.device import device_scope, setup_device
from transferkit.training.model import build_classifier

RNG = np.random.default_rng(0)


def _scramble_batchnorm(model: keras.Model) -> None:
    """Statistics and affine terms far from the identity, so that a wrong fold shows."""
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.moving_mean.shape
            layer.moving_mean.assign(RNG.normal(0, 0.5, shape).astype("float32"))
            layer.moving_variance.assign(RNG.uniform(0.2, 2.0, shape).astype("float32"))
            if layer.scale:
                layer.gamma.assign(RNG.uniform(0.5, 1.5, shape).astype("float32"))
            if layer.center:
                layer.beta.assign(RNG.normal(0, 0.3, shape).astype("float32"))


def _outputs(model: keras.Model, images: np.ndarray) -> np.ndarray:
    return np.asarray(model(images, training=False))


@pytest.mark.parametrize(
    ("name", "size", "batchnorms"), [("tiny", 16, 3), ("mobilenet_v2_torchvision", 32, 52)]
)
def test_the_folded_copy_computes_what_the_network_does(name, size, batchnorms):
    setup_device("float32", 0)
    base = get_backbone(name).build(size)
    _scramble_batchnorm(base)
    folded = FoldedCopy(base)
    assert folded.folded == batchnorms
    assert not any(
        isinstance(layer, keras.layers.BatchNormalization) for layer in folded.model._flatten_layers()
    )
    images = RNG.uniform(-1, 1, (4, size, size, 3)).astype("float32")
    expected = _outputs(base, images)
    np.testing.assert_allclose(_outputs(folded.model, images), expected, atol=1e-4 * np.abs(expected).max())


def test_sync_brings_the_copy_up_to_the_networks_current_weights():
    setup_device("float32", 0)
    classifier = build_classifier(
        get_backbone("tiny"), get_backbone("tiny").build(16), 3, recipes.HeadConfig()
    )
    folded = fold_batchnorm(classifier.extractor)  # preprocessing, the nested base, pooling
    assert folded is not None and folded.folded == 3
    images = RNG.uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    before = _outputs(classifier.extractor, images)
    _scramble_batchnorm(classifier.base)  # as fine-tuning or a resumed checkpoint would
    conv = classifier.base.get_layer("block2_conv")
    conv.kernel.assign(conv.kernel * 2.0)
    after = _outputs(classifier.extractor, images)
    assert not np.allclose(after, before)
    np.testing.assert_allclose(_outputs(folded.model, images), before, rtol=1e-4, atol=1e-5)  # stale
    folded.sync()
    np.testing.assert_allclose(_outputs(folded.model, images), after, rtol=1e-4, atol=1e-5)


def test_a_network_without_a_foldable_batchnorm_is_left_alone():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)  # the activation comes before the BatchNorm
    model = keras.Model(inputs, keras.layers.BatchNormalization()(x))
    assert fold_batchnorm(model) is None


def test_after_fine_tuning_the_feature_steps_serve_the_trained_weights(tmp_path):
    from test_train import SPEC, _recipe, _trainer  # the tiny run the training tests use

    recipe = _recipe("large_similar", epochs=2)  # a head warm-up, then the whole network
    setup_device("float32", recipe.seed)
    classifier = build_classifier(SPEC, SPEC.build(32), 3, recipe.head)
    trainer = _trainer(classifier, recipe, tmp_path)
    trainer.run()
    assert trainer.features._folded  # the warm-up's passes ran through the folded copy
    images = RNG.uniform(0, 255, (6, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(trainer.predictor()(images), _outputs(classifier.model, images), atol=1e-5)


def test_a_frozen_base_runs_every_pass_through_a_copy_synced_once(tmp_path, monkeypatch):
    """No phase trains the base: the copy holds its weights from the build on (no sync a pass)."""
    from test_train import SPEC, _recipe, _trainer

    syncs = []
    monkeypatch.setattr(FoldedCopy, "sync", lambda self, sync=FoldedCopy.sync: syncs.append(sync(self)))
    recipe = _recipe("small_similar", epochs=2)  # passes: augmented, validation, the check's clean one
    setup_device("float32", recipe.seed)
    classifier = build_classifier(SPEC, SPEC.build(32), 3, recipe.head)
    trainer = _trainer(classifier, recipe, tmp_path)
    trainer.run()
    assert trainer.features._folded and len(syncs) == 1  # the build's own
    images = RNG.uniform(0, 255, (6, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(trainer.predictor()(images), _outputs(classifier.model, images), atol=1e-5)


def test_a_convolution_that_is_also_an_output_keeps_its_batchnorm():
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(4, 3, use_bias=False)(inputs)
    model = keras.Model(inputs, [conv, keras.layers.BatchNormalization()(conv)])
    assert fold_batchnorm(model) is None  # folding would change the first output


def test_the_selectors_probe_pass_runs_folded_and_still_gives_each_cuts_features(monkeypatch):
    """extract_cut_features folds its multi-output extractor; a cut at a convolution keeps that
    convolution's own output (its BatchNorm is not folded into it)."""
    from transferkit.backbones import folding
    from transferkit.selection.transferability import _pooled_model, extract_cut_features

    made = []

    def spy(model):
        made.append(fold_batchnorm(model))
        return made[-1]

    monkeypatch.setattr(folding, "fold_batchnorm", spy)

    setup_device("float32", 0)
    base = get_backbone("tiny").build(16)
    _scramble_batchnorm(base)
    cuts = ["block1_conv", "block2_relu", "block3_pool"]
    images = RNG.uniform(-1, 1, (6, 16, 16, 3)).astype("float32")
    features = extract_cut_features(base, cuts, [images])
    expected = _pooled_model(base, dict.fromkeys(cuts, "avg"))(images, training=False)
    assert [copy.folded for copy in made] == [2]  # blocks 2 and 3; block 1's output is a cut
    for cut, want in zip(cuts, expected, strict=True):
        want = np.asarray(want)
        np.testing.assert_allclose(features[cut], want, atol=1e-4 * np.abs(want).max())


# --------------------------------------------------------------------------------------------
# The training view: the network's own variables, folded each step.


def _gradients(model: keras.Model, variables: list, images: np.ndarray, labels: np.ndarray) -> list:
    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(labels, model(images, training=False))
    return [np.asarray(g) for g in tape.gradient(loss, variables)]


@pytest.mark.parametrize(("name", "size"), [("tiny", 16), ("mobilenet_v2_torchvision", 32)])
def test_the_training_view_trains_the_networks_own_variables_with_the_same_gradients(name, size):
    setup_device("float32", 0)
    spec = get_backbone(name)
    classifier = build_classifier(spec, spec.build(size), 3, recipes.HeadConfig())
    _scramble_batchnorm(classifier.base)
    classifier.base.trainable = True  # kernels, and BatchNorm's scale and offset (inference mode)
    view = classifier.training_model()
    assert view is not classifier.model
    assert any(isinstance(layer, FoldedConvolution) for layer in view._flatten_layers())
    for listed in ("weights", "trainable_weights"):  # the same variables, in the same order
        assert [id(v) for v in getattr(view, listed)] == [id(v) for v in getattr(classifier.model, listed)]
    images = RNG.uniform(0, 255, (4, size, size, 3)).astype("float32")
    labels = np.array([0, 1, 2, 0])
    expected = _outputs(classifier.model, images)
    np.testing.assert_allclose(_outputs(view, images), expected, rtol=1e-5, atol=1e-6)
    variables = classifier.model.trainable_weights
    for got, want in zip(
        _gradients(view, variables, images, labels),
        _gradients(classifier.model, variables, images, labels),
        strict=True,
    ):
        np.testing.assert_allclose(got, want, atol=2e-3 * (np.abs(want).max() + 1e-12))
    conv = classifier.base.get_layer("block2_conv" if name == "tiny" else "Conv_1")
    conv.kernel.assign(conv.kernel * 0.5)  # a training step: the view sees it at once, no sync
    np.testing.assert_allclose(
        _outputs(view, images), _outputs(classifier.model, images), rtol=1e-5, atol=1e-6
    )


def test_the_training_view_folds_at_full_precision_under_mixed_precision():
    with device_scope("mixed_float16", 0, "none"):
        spec = get_backbone("tiny")
        classifier = build_classifier(spec, spec.build(16), 3, recipes.HeadConfig())
        _scramble_batchnorm(classifier.base)
        view = classifier.training_model()
        images = RNG.uniform(0, 255, (4, 16, 16, 3)).astype("float32")
        expected = _outputs(classifier.model, images)
        assert expected.dtype == np.float32  # the head's softmax
        np.testing.assert_allclose(_outputs(view, images), expected, atol=2e-3)


def test_batchnorm_that_trains_its_statistics_is_never_folded():
    setup_device("float32", 0)
    spec = get_backbone("tiny")
    classifier = build_classifier(spec, spec.build(16), 3, recipes.HeadConfig(), batchnorm_inference=False)
    assert classifier.training_model() is classifier.model  # batch statistics cannot be folded
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    assert folded_view(keras.Model(inputs, keras.layers.BatchNormalization()(x))) is None  # nothing folds


def test_the_training_view_lists_the_weights_in_the_networks_order_across_branches():
    """Side-by-side branches: Keras lists both convolutions before both BatchNorms. The view keeps
    that order, so a backup (weights and optimizer slots by position) fits either graph."""
    setup_device("float32", 0)
    inputs = keras.Input((8, 8, 3))
    branches = []
    for name in ("a", "b"):
        x = keras.layers.Conv2D(4, 3, use_bias=False, name=f"conv_{name}")(inputs)
        x = keras.layers.BatchNormalization(name=f"bn_{name}")(x)
        branches.append(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, keras.layers.Concatenate()(branches))
    _scramble_batchnorm(model)
    view = folded_view(model)
    assert sum(isinstance(layer, FoldedConvolution) for layer in view.layers) == 2
    for listed in ("weights", "trainable_weights", "non_trainable_weights"):
        assert [id(v) for v in getattr(view, listed)] == [id(v) for v in getattr(model, listed)]
    images = RNG.uniform(-1, 1, (2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(_outputs(view, images), _outputs(model, images), rtol=1e-5, atol=1e-6)
