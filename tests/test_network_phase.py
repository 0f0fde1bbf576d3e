"""Whole-network phases: progressive resizing of their batches (sizes, resume, recipe checks)."""

import dataclasses
import re
from functools import partial

import numpy as np
import pytest

from transferkit import recipes
from transferkit.backbones.registry import get_backbone
from transferkit.errors import TransferkitError
from transferkit.recipes import AugmentConfig, Phase, low_res_epochs, low_res_size
from transferkit.testing import assert_same_training, resume_after_interrupt, synthetic_batches, tiny_trainer
from transferkit.training.device import setup_device
from transferkit.training.model import build_classifier
from transferkit.training.network_phase import TrainingStream

SPEC = get_backbone("tiny")
SIZE = 32
HEAD = Phase(name="warmup", train="head", epochs=2, learning_rate=1e-2)
ALL = Phase(name="retrain", train="all", epochs=4, learning_rate=3e-3, schedule="cosine",
            low_res_fraction=0.5, low_res_scale=0.5, low_res_min_side=8)  # fmt: skip


def _stream() -> TrainingStream:
    train, _, _ = synthetic_batches(size=SIZE)  # 24 images in 3 batches of 8
    return TrainingStream(train, 3, AugmentConfig(), 3, seed=0, image_size=SIZE)


def _sides(batches, count: int) -> list[int]:
    return [int(images.shape[1]) for images, _ in batches.take(count)]


def test_the_first_low_res_epochs_train_on_smaller_images_then_the_full_size():
    stream = _stream()
    assert (low_res_epochs(ALL, SIZE), low_res_size(ALL, SIZE)) == (2, 16)
    floored = dataclasses.replace(ALL, low_res_min_side=24)
    assert (low_res_epochs(floored, SIZE), low_res_size(floored, SIZE)) == (2, 24)
    assert low_res_epochs(floored, 24) == 0  # the floor is the size: nothing to shrink
    assert _sides(stream.batches(floored, epoch=2), 12) == [24] * 6 + [32] * 6
    assert _sides(stream.batches(ALL, epoch=2), 12) == [16] * 6 + [32] * 6
    unchanged = dataclasses.replace(ALL, low_res_fraction=0.0)
    assert _sides(stream.batches(unchanged, epoch=2), 6) == [32] * 6
    assert _sides(stream.batches(HEAD, epoch=0), 6) == [32] * 6  # multi-worker head phases: as they were


def test_a_resumed_phase_switches_size_at_the_same_batch_with_the_same_pixels():
    whole = list(_stream().batches(ALL, epoch=2).take(12))
    for trained in (1, 2, 3):  # a fresh stream, as in a new process
        resumed = list(_stream().batches(ALL, epoch=2, trained=trained).take(12 - 3 * trained))
        for (image, label), (expected, expected_label) in zip(resumed, whole[3 * trained :], strict=True):
            assert image.shape == expected.shape
            np.testing.assert_allclose(np.asarray(image), np.asarray(expected), rtol=1e-6)
            np.testing.assert_array_equal(np.asarray(label), np.asarray(expected_label))


def _trainer(recipe, run_dir):
    setup_device("float32", recipe.seed)
    classifier = build_classifier(SPEC, SPEC.build(SIZE), 3, recipe.head)
    return tiny_trainer(classifier, recipe, run_dir, *synthetic_batches(size=SIZE))


def _recipe():
    recipe = recipes.with_overrides(
        recipes.load_builtin("large_similar"), backbone="tiny", weights="random", batch_size=8, seed=3
    )
    return dataclasses.replace(recipe, augment=AugmentConfig(cached_passes=0), phases=(HEAD, ALL))


def test_progressive_resizing_trains_the_base_and_resumes_exactly(tmp_path, monkeypatch):
    recipe = _recipe()
    reference = _trainer(recipe, tmp_path / "reference")
    before = [w.copy() for w in reference.classifier.base.get_weights()]
    reference.run()
    after = reference.classifier.base.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    assert reference.classifier.model.input_shape[1:3] == (SIZE, SIZE)  # what is saved: full size
    # interrupted at the second low-res epoch of the phase
    resumed = resume_after_interrupt(partial(_trainer, recipe), tmp_path / "resumed", 3, monkeypatch)
    assert_same_training(resumed, reference)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"low_res_fraction": 1.0}, "low_res_fraction must be in [0, 1)"),
        ({"low_res_fraction": 0.5, "train": "head"}, "applies to phases that train the base"),
        ({"low_res_scale": 0.0}, "low_res_scale must be in (0, 1]"),
        ({"low_res_min_side": 4}, "low_res_min_side must be >= 8 pixels"),
    ],
)
def test_out_of_range_progressive_resizing_is_a_clear_recipe_error(changes, message):
    recipe = dataclasses.replace(_recipe(), phases=(HEAD, dataclasses.replace(ALL, **changes)))
    with pytest.raises(TransferkitError, match=re.escape(message)):
        recipes.validate(recipe)
