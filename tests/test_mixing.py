"""MixUp / CutMix of whole-network training batches: mixed labels, determinism, and the phases they touch."""

import dataclasses
from functools import partial

import numpy as np
import pytest
import tensorflow as tf

from transferkit import recipes
from transferkit.backbones.registry import get_backbone
from transferkit.recipes import AugmentConfig, Phase
from transferkit.testing import assert_same_training, resume_after_interrupt, synthetic_batches, tiny_trainer
from transferkit.training.device import setup_device
from transferkit.training.mixing import mix_batches
from transferkit.training.model import build_classifier

SPEC = get_backbone("tiny")
CLASSES, SIZE = 4, 16
MIXUP, CUTMIX, BOTH = (
    AugmentConfig(mixup_alpha=0.4),
    AugmentConfig(cutmix_alpha=1.0),
    AugmentConfig(mixup_alpha=0.4, cutmix_alpha=1.0),
)


def _flat_batches(batch=8, count=32):
    """Image i is flat grey at 10 * (i + 1): which images a mixed pixel came from is readable."""
    shades = 10.0 * np.arange(1, count + 1, dtype="float32")
    images = np.broadcast_to(shades[:, None, None, None], (count, SIZE, SIZE, 3)).astype("float32")
    labels = (np.arange(count) % CLASSES).astype("int32")
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch), shades


def _take(data, count):
    return [(np.asarray(images), np.asarray(labels)) for images, labels in data.take(count)]


@pytest.mark.parametrize("config", [MIXUP, CUTMIX, BOTH], ids=["mixup", "cutmix", "both"])
def test_mixed_labels_are_soft_sum_to_one_and_keep_the_batch_shape(config):
    data, _ = _flat_batches()
    batches = _take(mix_batches(data, config, num_classes=CLASSES, seed=0), 4)
    labels = np.concatenate([labels for _, labels in batches])
    assert labels.shape == (32, CLASSES) and batches[0][0].shape == (8, SIZE, SIZE, 3)
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-5)
    assert labels.min() >= 0
    assert (labels.max(axis=1) < 0.99).sum() >= 8  # most images carry two classes, not one-hot


def test_mixup_blends_pixels_with_the_label_weights():
    # Eight images, each its own class: a mixed pixel must be the label-weighted sum of the shades.
    shades = 10.0 * np.arange(1, 9, dtype="float32")
    images = np.broadcast_to(shades[:, None, None, None], (8, SIZE, SIZE, 3)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((images, np.arange(8, dtype="int32"))).batch(8)
    ((mixed, labels),) = _take(mix_batches(data, MIXUP, num_classes=8, seed=1), 1)
    np.testing.assert_allclose(
        mixed, np.broadcast_to((labels @ shades)[:, None, None, None], mixed.shape), rtol=1e-5
    )
    assert not np.allclose(mixed[:, 0, 0, 0], shades)


def test_cutmix_pastes_pixels_instead_of_blending_them():
    data, shades = _flat_batches(count=8)
    ((images, labels),) = _take(mix_batches(data, CUTMIX, num_classes=CLASSES, seed=2), 1)
    assert np.isin(images, shades).all()  # every pixel is some image's own
    pasted = np.array([len(np.unique(image)) == 2 for image in images])
    assert pasted.any()
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-5)


def test_both_on_gives_each_batch_one_of_them():
    data, shades = _flat_batches(count=8)
    kinds = set()
    for images, _ in _take(mix_batches(data.repeat(), BOTH, num_classes=CLASSES, seed=3), 12):
        kinds.add("cutmix" if np.isin(images, shades).all() else "mixup")
    assert kinds == {"cutmix", "mixup"}


def test_a_batch_mix_depends_on_the_seed_and_its_number_only():
    data, _ = _flat_batches()
    stream = data.repeat()
    first = _take(mix_batches(stream, BOTH, num_classes=CLASSES, seed=5), 6)
    again = _take(mix_batches(stream, BOTH, num_classes=CLASSES, seed=5), 6)
    resumed = _take(mix_batches(stream.skip(4), BOTH, num_classes=CLASSES, seed=5, first_batch=4), 2)
    other_seed = _take(mix_batches(stream, BOTH, num_classes=CLASSES, seed=6), 6)
    for a, b in zip(first + first[4:], again + resumed, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(first[0][1], first[4][1])  # the same images, another batch number
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(first, other_seed, strict=True))


# ---------------------------------------------------------------------------------------------
# In the trainer: whole-network phases mix, head phases on cached features do not


def _recipe(phases, mixup_alpha=0.4, **augment):
    recipe = recipes.with_overrides(
        recipes.load_builtin("large_similar"), backbone="tiny", weights="random", batch_size=8, seed=3
    )
    config = AugmentConfig(cached_passes=0, mixup_alpha=mixup_alpha, **augment)
    return dataclasses.replace(
        recipe, head=dataclasses.replace(recipe.head, dropout=0.0), augment=config, phases=tuple(phases)
    )


def _trainer(recipe, run_dir):
    setup_device("float32", recipe.seed)
    classifier = build_classifier(SPEC, SPEC.build(32), 3, recipe.head)
    return tiny_trainer(classifier, recipe, run_dir, *synthetic_batches())


HEAD = Phase(name="warmup", train="head", epochs=2, learning_rate=1e-2)
ALL = Phase(name="retrain", train="all", epochs=3, learning_rate=3e-3, schedule="cosine", patience=3)


def test_a_whole_network_phase_trains_on_mixed_labels_and_reports_accuracy(tmp_path):
    recipe = _recipe([HEAD, ALL])
    trainer = _trainer(recipe, tmp_path)
    _, labels = next(iter(trainer.stream.batches(ALL, epoch=2)))
    assert labels.shape == (8, 3) and (np.asarray(labels).max(axis=1) < 0.99).any()
    before = [w.copy() for w in trainer.classifier.base.get_weights()]
    history = trainer.run()
    assert any(
        not np.array_equal(a, b) for a, b in zip(before, trainer.classifier.base.get_weights(), strict=True)
    )
    rows = [row for row in history if row["phase"] == "retrain"]
    assert len(rows) >= 1 and all(np.isfinite(float(row["loss"])) for row in rows)
    # Validation stays one image one class: its accuracy is a count of right images out of 24.
    for row in rows:
        assert float(row["val_accuracy"]) * 24 == pytest.approx(round(float(row["val_accuracy"]) * 24))
    assert trainer._training_model.loss.name == "categorical_crossentropy"


def test_a_head_phase_on_cached_features_ignores_mixup(tmp_path):
    weights = []
    for alpha, folder in ((0.0, "off"), (0.4, "on")):
        trainer = _trainer(_recipe([HEAD], mixup_alpha=alpha), tmp_path / folder)
        trainer.run()
        weights.append(trainer.classifier.model.get_weights())
    assert all(np.array_equal(a, b) for a, b in zip(*weights, strict=True))


def test_resume_with_mixup_continues_exactly_as_an_uninterrupted_run(tmp_path, monkeypatch):
    recipe = _recipe([HEAD, ALL], cutmix_alpha=1.0)
    reference = _trainer(recipe, tmp_path / "reference")
    reference.run()
    # interrupted inside the whole-network phase
    resumed = resume_after_interrupt(partial(_trainer, recipe), tmp_path / "resumed", 3, monkeypatch)
    assert_same_training(resumed, reference)


def test_the_range_test_of_a_mixing_phase_sweeps_on_mixed_batches(tmp_path):
    auto = dataclasses.replace(ALL, epochs=1, learning_rate="auto", patience=0)
    trainer = _trainer(_recipe([auto]), tmp_path)
    trainer.run()
    assert (tmp_path / "lr_find" / "phase0.json").exists()
    assert 0 < trainer.recipe.phases[0].learning_rate < 1  # the suggestion replaced "auto"
    assert trainer._training_model.loss.name == "categorical_crossentropy"
