"""The robustness figure: held-out accuracy under invisible pixel noise, seeded, and its warning."""

from __future__ import annotations

import dataclasses
import json

import keras
import numpy as np
import tensorflow as tf

from transferkit.reporting.html import write_html_report
from transferkit.reporting.metrics import compute_metrics
from transferkit.reporting.robustness import (
    FRAGILE_DROP,
    Robustness,
    add_noise,
    as_jpeg,
    measure_robustness,
)


def _batches(images, labels, batch=4):
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch)


def test_noise_is_seeded_per_batch_clipped_and_of_the_asked_size():
    images = np.full((8, 16, 16, 3), 128.0, "float32")
    labels = np.zeros(8, "int64")

    def noisy(seed):
        return np.concatenate([x.numpy() for x, _ in add_noise(_batches(images, labels), 2.0, seed)])

    first, again, other = noisy(5), noisy(5), noisy(6)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert abs((first - 128).std() - 2.0) < 0.1 and not np.array_equal(first[:4], first[4:])  # per batch
    edges = np.concatenate([x.numpy() for x, _ in add_noise(_batches(np.zeros_like(images), labels), 2.0, 0)])
    assert edges.min() == 0.0


def _threshold_model(read):
    """Two classes told apart by whether ``read(images)`` lies below grey level 100.5."""
    inputs = keras.Input((8, 8, 3))
    value = keras.layers.Lambda(read)(inputs)
    second = keras.layers.Activation("sigmoid")(keras.layers.Rescaling(-4.0, offset=402.0)(value))
    return keras.Model(inputs, keras.layers.Concatenate()([1 - second, second]))


def test_a_model_reading_exact_pixel_values_is_fragile_and_a_smooth_one_is_not():
    labels = np.random.default_rng(0).integers(0, 2, 32)
    # The classes differ by one grey level (class 1 is 100, class 0 is 101) everywhere in the image.
    images = np.ones((32, 8, 8, 3), "float32") * np.where(labels, 100.0, 101.0)[:, None, None, None]
    held_out = _batches(images.astype("float32"), labels)
    mean = _threshold_model(lambda x: keras.ops.mean(x, axis=(1, 2, 3))[:, None])
    pixel = _threshold_model(lambda x: x[:, 0, 0, :1])  # decides on one value of one pixel
    for model in (mean, pixel):  # both are right on the images as they are
        assert np.mean(np.argmax(model.predict(images, verbose=0), axis=1) == labels) == 1.0
    averaged = measure_robustness(mean, held_out, 1.0, "test", seed=0)
    # 192 values averaged: the noise on their mean is 2 / 192 ** 0.5, about 0.14 of a grey level.
    assert averaged.accuracy > 0.95 and not averaged.fragile and averaged.warning() == ""
    exact = measure_robustness(pixel, held_out, 1.0, "test", seed=0)
    assert exact.accuracy < 1 - FRAGILE_DROP and exact.fragile and exact.num_samples == 32
    assert "relies on exact pixel values" in exact.warning()
    record = exact.to_dict()
    assert record["fragile"] is True and record["drop"] == round(1.0 - exact.accuracy, 4)


def test_the_report_shows_the_figure_and_the_warning(tmp_path):
    (tmp_path / "run.json").write_text("{}")
    test = compute_metrics(np.eye(2)[[0, 1, 1, 1]], np.array([0, 1, 0, 1]), ["a", "b"]).to_dict()

    def page_with(robustness):
        record = {"headline": "test", "test": test, "robustness": robustness.to_dict()}
        (tmp_path / "metrics.json").write_text(json.dumps(record))
        return write_html_report(tmp_path).read_text()

    assert "relies on exact pixel values" in page_with(Robustness("test", 2.0, 0.75, 0.25, 4))
    page = page_with(Robustness("test", 2.0, 0.75, 0.75, 4))  # a run from before JPEG was measured
    assert "Under invisible pixel noise" in page and "75.0% (75.0% without)" in page
    assert "relies on exact pixel values" not in page and "JPEG" not in page
    page = page_with(Robustness("test", 2.0, 0.75, 0.75, 4, 75, 0.5))
    assert "Saved as JPEG (quality 75) test accuracy falls 0.750 -&gt; 0.500" in page
    page = page_with(Robustness("test", 2.0, 0.75, 0.75, 4, 75, 0.75))
    assert "saved as JPEG (quality 75) 75.0% (75.0% without)" in page
    # The advice builds on the noise the model's networks trained with (metrics.json records it).
    fragile = Robustness("test", 2.0, 0.75, 0.25, 4, 75, 0.75)
    assert "`[augment] noise = 1.5`" in fragile.warning()
    trained = dataclasses.replace(fragile, trained_noise={"truncation": 1.5, "frozen_base": 0.0})
    assert (
        "more pixel noise than it did (the truncation at 1.5; the frozen base without)" in trained.warning()
    )
    assert Robustness.from_dict(trained.to_dict()) == trained
    assert "the truncation at 1.5; the frozen base without" in page_with(trained)


def test_jpeg_copies_are_deterministic_close_and_decoded_back_to_float():
    rng = np.random.default_rng(0)
    smooth = np.repeat(np.repeat(rng.uniform(0, 255, (4, 4, 4, 3)), 4, axis=1), 4, axis=2).astype("float32")
    labels = np.arange(4)
    first = [(x.numpy(), y.numpy()) for x, y in as_jpeg(_batches(smooth, labels, batch=2), 75)]
    again = np.concatenate([x.numpy() for x, _ in as_jpeg(_batches(smooth, labels, batch=2), 75)])
    copies = np.concatenate([x for x, _ in first])
    assert copies.dtype == np.float32 and copies.shape == smooth.shape
    np.testing.assert_array_equal(copies, again)
    np.testing.assert_array_equal(np.concatenate([y for _, y in first]), labels)
    assert 0 < np.abs(copies - smooth).mean() < 20  # changed, as a lossy file is, but close


def test_a_model_that_jpeg_copies_fool_is_fragile_with_its_own_warning():
    labels = np.random.default_rng(1).integers(0, 2, 16)
    # Class 1 is a checkerboard of 100 and 101 (JPEG smooths such fine detail), class 0 flat 100.5.
    board = np.indices((8, 8)).sum(axis=0) % 2
    images = np.where(labels[:, None, None, None], 100.0 + board[None, :, :, None], 100.5)
    images = np.broadcast_to(images, (16, 8, 8, 3)).astype("float32")
    contrast = _threshold_model(lambda x: 100.5 - keras.ops.std(x, axis=(1, 2, 3))[:, None] * 20)
    assert np.mean(np.argmax(contrast.predict(images, verbose=0), axis=1) == labels) == 1.0
    result = measure_robustness(contrast, _batches(images, labels), 1.0, "test", seed=0)
    assert result.jpeg_quality == 75 and result.jpeg_accuracy is not None
    record = result.to_dict()
    assert record["jpeg_drop"] == round(1.0 - result.jpeg_accuracy, 4)
    assert Robustness.from_dict(record) == result
    assert result.jpeg_drop >= FRAGILE_DROP and result.fragile  # the checkerboard is smoothed away
    assert "saved as JPEG (quality 75) test accuracy falls 1.000 -> " in result.warning()


def test_fit_decodes_each_test_image_once_for_its_evaluation_and_robustness_passes(tmp_path, monkeypatch):
    """The test split is read three times at the end of a fit (evaluation, noise, JPEG): its decoded
    pixels are cached after the first read, so a slow file (a huge PNG) is decoded once."""
    import collections

    import transferkit
    from transferkit.data import pipeline
    from transferkit.testing import make_image_folder

    folder = make_image_folder(tmp_path / "shapes", classes=3, per_class=10)
    decoded = collections.Counter()
    decode = pipeline.decode_image

    def counting(source, *args, **kwargs):
        decoded[str(source)] += 1
        return decode(source, *args, **kwargs)

    monkeypatch.setattr(pipeline, "decode_image", counting)
    options = dict(recipe="small_similar", backbone="tiny", weights="random", epochs=1, verbose=0)
    run = transferkit.fit(str(folder), out=tmp_path, **options)
    test_paths = transferkit.load_data(str(folder), seed=run.recipe.seed).test.paths
    assert run.robustness is not None and len(test_paths) == 6
    assert [decoded[str(p)] for p in test_paths] == [1] * 6
