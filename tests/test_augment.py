import numpy as np
import pytest

from transferkit.recipes import AugmentConfig
from transferkit.training.augment import RandomAffine, build_augmentation, is_identity, preview


def _ramp(size=16):
    x = np.arange(size * size * 3, dtype="float32").reshape(1, size, size, 3) % 255
    return np.repeat(x, 4, axis=0)


def test_inference_is_the_identity():
    layer = build_augmentation(AugmentConfig(), seed=0)
    images = _ramp()
    np.testing.assert_array_equal(np.asarray(layer(images, training=False)), images)


def test_horizontal_flip_alone_is_an_exact_mirror_or_identity():
    layer = RandomAffine(flip="horizontal", rotation_degrees=0, zoom=0, translation=0, contrast=0, seed=3)
    images = _ramp()
    seen = set()
    for _ in range(8):
        out = np.asarray(layer(images, training=True))
        for original, result in zip(images, out, strict=True):
            if np.allclose(result, original[:, ::-1], atol=1e-3):
                seen.add("flipped")
            else:
                np.testing.assert_allclose(result, original, atol=1e-3)
                seen.add("kept")
    assert seen == {"flipped", "kept"}


@pytest.mark.parametrize("fill_mode", ["constant", "reflect", "nearest"])
def test_fill_modes(fill_mode):
    layer = RandomAffine(
        flip="none", rotation_degrees=45, zoom=0.0, translation=0.0, contrast=0.0, fill_mode=fill_mode, seed=1
    )
    images = np.full((8, 32, 32, 3), 200.0, "float32")
    out = np.asarray(layer(images, training=True))
    corners = out[:, [0, 0, -1, -1], [0, -1, 0, -1], :]
    if fill_mode == "constant":  # zero padding shows in the corners of rotated images
        assert (corners < 100).any()
    else:  # reflection / edge replication keep the constant image constant
        np.testing.assert_allclose(out, 200.0, atol=1e-3)


def test_translation_moves_content_and_zoom_rescales():
    image = np.zeros((1, 32, 32, 3), "float32")
    image[:, 12:20, 12:20] = 255
    shift = RandomAffine(
        flip="none", rotation_degrees=0, zoom=0, translation=0.25, contrast=0, fill_mode="constant", seed=5
    )
    outs = [np.asarray(shift(image, training=True))[0, ..., 0] for _ in range(6)]
    centres = [np.argwhere(o > 127).mean(axis=0) for o in outs]
    assert max(np.abs(np.array(centres) - 15.5).max(axis=1)) > 1.0  # moved by at least a pixel sometimes
    assert all(abs((o > 127).sum() - 64) <= 16 for o in outs)  # translation keeps the area


def test_same_seed_same_augmentation_and_output_in_range():
    images = np.random.default_rng(0).integers(0, 256, (4, 24, 24, 3)).astype("float32")
    a = np.asarray(build_augmentation(AugmentConfig(), seed=7)(images, training=True))
    b = np.asarray(build_augmentation(AugmentConfig(), seed=7)(images, training=True))
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 0 and a.max() <= 255


def test_pixel_noise_draws_a_standard_deviation_per_image_and_stays_in_range():
    quiet = dict(flip="none", rotation_degrees=0, zoom=0, translation=0, contrast=0, seed=2)
    images = np.full((64, 16, 16, 3), 128.0, "float32")
    np.testing.assert_array_equal(np.asarray(RandomAffine(**quiet)(images, training=True)), images)
    out = np.asarray(RandomAffine(**quiet, noise=8.0)(images, training=True))
    spread = (out - 128.0).std(axis=(1, 2, 3))  # each image's own noise level, drawn from [0, 8]
    assert 0 <= spread.min() < 2.0 and 6.0 < spread.max() <= 8.3
    assert abs(spread.mean() - 4.0) < 1.0 and abs((out - 128.0).mean()) < 0.2
    edges = np.asarray(RandomAffine(**quiet, noise=8.0)(np.zeros_like(images), training=True))
    assert edges.min() == 0.0 and edges.max() <= 255.0  # clipped to the pixel range
    inference = RandomAffine(**quiet, noise=8.0)(images, training=False)
    np.testing.assert_array_equal(np.asarray(inference), images)


def test_identity_config_and_preview_grid():
    assert is_identity(AugmentConfig(flip="none", rotation_degrees=0, zoom=0, translation=0, contrast=0))
    assert not is_identity(
        AugmentConfig(flip="none", rotation_degrees=0, zoom=0, translation=0, contrast=0, noise=4.0)
    )
    assert is_identity(AugmentConfig(cached_passes=0))
    assert not is_identity(AugmentConfig())
    grid = preview(np.zeros((2, 16, 16, 3), "uint8"), AugmentConfig(), copies=3)
    assert grid.shape == (8, 16, 16, 3) and grid.dtype == np.uint8
