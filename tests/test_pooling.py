"""Head pooling: documented widths, safe-mode loading, and the probe scoring exactly what the head gets."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from transferkit.backbones.registry import get_backbone
from transferkit.errors import TransferkitError
from transferkit.recipes import POOLINGS, HeadConfig, load_builtin, loads
from transferkit.selection.measure import probe_poolings
from transferkit.selection.quadrants import PROVISIONAL, quadrant_for
from transferkit.selection.transferability import extract_cut_features
from transferkit.training.model import build_classifier, preprocessing_layer, truncate
from transferkit.training.pooling import pool, pooled_dim

SPEC = get_backbone("tiny")
SIZE = 16
CUT = "block2_pool"  # a 4x4x32 map at 16 px
EXPECTED_WIDTH = {"avg": 32, "avg_max": 64, "avg_dev": 64, "pyramid": 160}


def _images(n: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3)).astype("uint8")


def _truncated(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return truncate(SPEC.build(SIZE), CUT)


def test_every_pooling_mode_has_its_documented_width():
    assert set(EXPECTED_WIDTH) == set(POOLINGS)
    for pooling, width in EXPECTED_WIDTH.items():
        classifier = build_classifier(SPEC, _truncated(), 3, HeadConfig(pooling=pooling))
        assert classifier.extractor.output_shape == (None, width), pooling
        assert classifier.head.input_shape == (None, width), pooling
        assert pooled_dim(32, pooling) == width
        assert classifier.model.predict(_images(), verbose=0).shape == (6, 3)


def test_pooling_parts_are_what_they_say():
    maps = np.random.default_rng(1).normal(size=(2, 4, 4, 3)).astype("float32")
    inputs = keras.Input((4, 4, 3))
    for pooling in POOLINGS:
        features = keras.Model(inputs, pool(inputs, pooling))(maps).numpy()
        np.testing.assert_allclose(features[:, :3], maps.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
        if pooling == "avg_max":
            np.testing.assert_allclose(features[:, 3:], maps.max(axis=(1, 2)), rtol=1e-6)
        if pooling == "avg_dev":
            deviation = np.abs(maps - maps.mean(axis=(1, 2), keepdims=True)).mean(axis=(1, 2))
            np.testing.assert_allclose(features[:, 3:], deviation, rtol=1e-5, atol=1e-6)
        if pooling == "pyramid":  # the top-left cell of the 2x2 grid: rows 0-1, columns 0-1
            np.testing.assert_allclose(
                features[:, 3:6], maps[:, :2, :2].mean(axis=(1, 2)), rtol=1e-5, atol=1e-6
            )


def test_unknown_pooling_is_an_error_that_lists_the_choices():
    with pytest.raises(TransferkitError, match="avg_max"):
        pool(keras.Input((4, 4, 3)), "median")
    recipe = (
        'name = "x"\nstrategy = "freeze"\n[head]\npooling = "median"\n'
        '[[phases]]\nname = "head"\ntrain = "head"\n'
    )
    with pytest.raises(TransferkitError, match=r"head\.pooling.*'median'.*avg_max"):
        loads(recipe)


@pytest.mark.parametrize("pooling", ["avg_max", "avg_dev", "pyramid"])
def test_a_model_with_rich_pooling_loads_in_safe_mode_and_predicts_the_same(tmp_path, pooling):
    model = build_classifier(SPEC, _truncated(), 3, HeadConfig(pooling=pooling)).model
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras", safe_mode=True, compile=False)
    images = _images().astype("float32")
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), rtol=1e-5)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_the_probe_scores_the_very_features_the_head_is_trained_on(pooling):
    base = _truncated(seed=3)
    classifier = build_classifier(SPEC, base, 3, HeadConfig(pooling=pooling))
    images = _images(10, seed=2)
    head_features = classifier.extractor.predict(images.astype("float32"), verbose=0)
    probe_features = extract_cut_features(
        base, [CUT], [images[:4], images[4:]], preprocessing_layer(SPEC.preprocessing), pooling=pooling
    )[CUT]
    assert probe_features.shape == head_features.shape == (10, EXPECTED_WIDTH[pooling])
    np.testing.assert_allclose(probe_features, head_features, rtol=1e-4, atol=1e-5)


def test_each_cut_is_probed_with_the_pooling_of_the_recipe_that_would_train_there():
    truncating = load_builtin(quadrant_for("small", similar=False))
    whole = load_builtin(PROVISIONAL)
    assert truncating.head.pooling != "avg" and whole.head.pooling == "avg"
    cuts = ("block1_pool", "block2_pool", "block3_pool")
    expected = {
        "block1_pool": truncating.head.pooling,
        "block2_pool": truncating.head.pooling,
        "block3_pool": "avg",
    }
    assert probe_poolings(cuts, whole) == expected
    assert probe_poolings(cuts, truncating) == expected
    features = extract_cut_features(SPEC.build(SIZE), cuts, [_images()], pooling=expected)
    assert {cut: f.shape[1] for cut, f in features.items()} == {
        "block1_pool": pooled_dim(16, truncating.head.pooling),
        "block2_pool": pooled_dim(32, truncating.head.pooling),
        "block3_pool": 64,
    }
