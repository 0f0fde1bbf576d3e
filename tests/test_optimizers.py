"""The phase optimizer, schedules, loss and class weights (training/optimizers.py, class_weights.py)."""

import dataclasses
import tomllib

import keras
import numpy as np
import pytest
import tomli_w

from transferkit import recipes
from transferkit.backbones.registry import get_backbone
from transferkit.errors import TransferkitError
from transferkit.recipes import Phase
from transferkit.training.class_weights import class_weights
from transferkit.training.device import device_scope, setup_device
from transferkit.training.model import build_classifier
from transferkit.training.optimizers import (
    LayerwiseAdamW,
    classification_loss,
    compile_classifier,
    learning_rate_schedule,
)
from transferkit.training.trainable import block_lr_multipliers, set_trainable, stem_blocks_end

SPEC = get_backbone("tiny")


def _step(optimizer, variables, gradients):
    optimizer.apply_gradients(
        zip([keras.ops.convert_to_tensor(g) for g in gradients], variables, strict=True)
    )


def test_layerwise_rates_scale_adams_step_not_just_the_gradient():
    slow, fast = (
        keras.Variable(np.zeros((2, 2), "float32"), name="slow"),
        keras.Variable(np.zeros((2, 2), "float32")),
    )
    optimizer = LayerwiseAdamW(0.1, multipliers={slow.path: 0.01})
    gradient = np.ones((2, 2), "float32")
    _step(optimizer, [slow, fast], [gradient, gradient])
    # Adam's first step is about the learning rate whatever the gradient's size: only a
    # per-variable rate can make one variable move 100x less.
    np.testing.assert_allclose(fast.numpy(), -0.1, rtol=1e-3)
    np.testing.assert_allclose(slow.numpy(), -0.001, rtol=1e-3)


def test_weight_decay_shrinks_kernels_at_their_own_rate_and_leaves_biases():
    kernel, bias = keras.Variable(np.ones((2, 2), "float32")), keras.Variable(np.ones(2, "float32"))
    optimizer = LayerwiseAdamW(0.1, decay=0.5, multipliers={kernel.path: 0.2})
    _step(optimizer, [kernel, bias], [np.zeros((2, 2), "float32"), np.zeros(2, "float32")])
    np.testing.assert_allclose(kernel.numpy(), 1 - 0.5 * 0.1 * 0.2, rtol=1e-6)
    np.testing.assert_array_equal(bias.numpy(), 1.0)


def test_without_multipliers_or_decay_it_is_adam():
    a, b = keras.Variable(np.ones(3, "float32")), keras.Variable(np.ones(3, "float32"))
    ours, adam = LayerwiseAdamW(0.01), keras.optimizers.Adam(0.01)
    for gradient in (np.array([1.0, -2.0, 0.5], "float32"), np.array([0.3, 0.1, -4.0], "float32")):
        _step(ours, [a], [gradient])
        _step(adam, [b], [gradient])
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_block_multipliers_fall_by_the_factor_per_block_and_leave_the_head_at_one():
    setup_device("float32", 0)
    classifier = build_classifier(SPEC, SPEC.build(32), 3, recipes.HeadConfig())
    phase = Phase(name="all", train="all", lr_decay_per_block=0.5)
    set_trainable(classifier, SPEC, phase)
    multipliers = block_lr_multipliers(classifier, SPEC, phase)
    by_layer = {path.split("/")[-2]: value for path, value in multipliers.items()}
    assert by_layer == {"block3_conv": 0.5, "block2_conv": 0.25, "block1_conv": 0.125}
    assert not {v.path for v in classifier.head.weights} & set(multipliers)
    assert block_lr_multipliers(classifier, SPEC, dataclasses.replace(phase, lr_decay_per_block=1.0)) == {}


def test_blocks_whose_factor_falls_below_the_floor_stay_frozen():
    setup_device("float32", 0)
    classifier = build_classifier(SPEC, SPEC.build(32), 3, recipes.HeadConfig())
    phase = Phase(name="all", train="all", lr_decay_per_block=0.5, min_block_lr_factor=0.2)
    set_trainable(classifier, SPEC, phase)
    frozen = {layer.name for layer in classifier.base.layers if layer.weights and not layer.trainable}
    assert "block1_conv" in frozen and not {"block2_conv", "block3_conv"} & frozen
    by_layer = {
        path.split("/")[-2]: value for path, value in block_lr_multipliers(classifier, SPEC, phase).items()
    }
    assert by_layer == {"block3_conv": 0.5, "block2_conv": 0.25}
    # No decay, no floor: one rate everywhere, so nothing is too slow to train.
    set_trainable(classifier, SPEC, dataclasses.replace(phase, lr_decay_per_block=1.0))
    assert all(
        layer.trainable for layer in classifier.base.layers if layer.weights and "bn" not in layer.name
    )


@pytest.mark.parametrize(
    ("image_size", "stride", "frozen"), [(32, 2, 2), (64, 2, 2), (32, 1, 1), (32, 4, 2), (32, 0, 0)]
)
def test_the_stem_stays_frozen_by_the_resolution_its_blocks_take(image_size, stride, frozen):
    # tiny's blocks take the image (block1), then maps at 1/2 (block2) and 1/4 (block3) of its side;
    # the last block trains whatever the stride (at 4 all three take maps within it).
    setup_device("float32", 0)
    classifier = build_classifier(SPEC, SPEC.build(image_size), 3, recipes.HeadConfig())
    phase = Phase(name="all", train="all", lr_decay_per_block=0.5, frozen_input_stride=stride)
    set_trainable(classifier, SPEC, phase)
    layers = classifier.base.layers
    trains = [classifier.base.get_layer(f"block{i}_conv").trainable for i in (1, 2, 3)]
    assert trains == [i >= frozen for i in range(3)]
    assert stem_blocks_end(classifier.base, SPEC, phase) == (
        [layer.name for layer in layers].index(f"block{frozen}_pool") + 1 if frozen else 0
    )
    # The blocks above keep their layer-wise rates (the top block 0.5, the next 0.25).
    rates = {
        path.split("/")[-2]: value for path, value in block_lr_multipliers(classifier, SPEC, phase).items()
    }
    assert rates == {
        name: 0.5 ** (3 - i)
        for i, name in enumerate(("block1_conv", "block2_conv", "block3_conv"))
        if i >= frozen
    }


@pytest.mark.parametrize(
    ("schedule", "first", "peak_step"),
    [("warmup_cosine", 0.0, 10), ("one_cycle", 0.1 / 25, 25), ("cosine", 0.1, 0), ("constant", 0.1, 0)],
)
def test_schedules_start_peak_and_end_where_documented(schedule, first, peak_step):
    phase = Phase(name="p", train="all", epochs=10, schedule=schedule, warmup_epochs=1.0)
    rate = learning_rate_schedule(phase, 0.1, steps_per_epoch=10)
    at = (lambda step: float(rate(step))) if callable(rate) else (lambda step: rate)
    values = [at(step) for step in range(101)]
    assert values[0] == pytest.approx(first, abs=1e-7)
    assert int(np.argmax(values)) == peak_step and max(values) == pytest.approx(0.1)
    assert values[-1] < 1e-3 or schedule == "constant"


def test_label_smoothing_raises_the_loss_of_confident_right_predictions():
    labels = np.array([0, 1, 2, 1])
    predictions = np.full((4, 3), 0.01, "float32")
    predictions[np.arange(4), labels] = 0.98
    plain = float(classification_loss(3, 0.0)(labels, predictions))
    smoothed = float(classification_loss(3, 0.2)(labels, predictions))
    assert smoothed > plain + 0.1
    expected = -np.mean(np.sum((np.eye(3)[labels] * 0.8 + 0.2 / 3) * np.log(predictions), axis=1))
    assert smoothed == pytest.approx(expected, rel=1e-4)


class CountingModel(keras.Model):
    """Counts the runs of its train step's Python: each is a trace (a traced step runs as a graph)."""

    traces = 0

    def train_step(self, data):
        type(self).traces += 1
        return super().train_step(data)


@pytest.mark.parametrize(
    ("optimizer", "precision"),
    [(keras.optimizers.Adam, "float32"), (LayerwiseAdamW, "float32"), (LayerwiseAdamW, "mixed_float16")],
)
def test_a_compiled_graph_traces_its_train_step_once(optimizer, precision):
    # Slots created inside fit's first trace would make TensorFlow trace the step a second time;
    # under mixed_float16 the loss scale of Keras' LossScaleOptimizer too.
    with device_scope(precision, 0, "none"):
        inputs = keras.Input((4,))
        model = CountingModel(inputs, keras.layers.Dense(3, activation="softmax", dtype="float32")(inputs))
        compile_classifier(model, optimizer(), 3, 0.0)
        assert model.optimizer.built
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (precision != "float32")
        rng = np.random.default_rng(0)
        CountingModel.traces = 0
        model.fit(rng.normal(size=(64, 4)).astype("float32"), rng.integers(0, 3, 64), epochs=2, verbose=0)
    assert CountingModel.traces == 1


def test_one_hot_labels_give_the_same_loss_and_accuracies_as_integer_labels():
    # What a mixing phase compiles with (training.mixing): one-hot validation labels must report
    # the smoothed loss, accuracy and top-5 accuracy that integer labels report.
    rng = np.random.default_rng(0)
    inputs, labels = rng.normal(size=(64, 4)).astype("float32"), rng.integers(0, 7, 64)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(7, activation="softmax")])
    results = {}
    for one_hot in (False, True):
        compile_classifier(model, keras.optimizers.SGD(), 7, 0.1, one_hot=one_hot)
        targets = np.eye(7, dtype="float32")[labels] if one_hot else labels
        results[one_hot] = model.evaluate(inputs, targets, batch_size=16, verbose=0, return_dict=True)
    assert results[True] == pytest.approx(results[False], rel=1e-5)
    assert set(results[True]) == {"loss", "accuracy", "top5_accuracy"} and 0 < results[True]["accuracy"] < 1


def test_class_weights_balance_only_when_asked_or_imbalanced():
    balanced_counts = [0] * 10 + [1] * 8 + [2] * 6
    assert class_weights(balanced_counts, 3, "none") is None
    assert class_weights(balanced_counts, 3, "auto") is None  # 10/6 < 3: not imbalanced
    weights = class_weights(balanced_counts, 3, "balanced")
    assert weights == pytest.approx({0: 24 / 30, 1: 24 / 24, 2: 24 / 18})
    skewed = [0] * 30 + [1] * 5 + [2] * 5
    assert class_weights(skewed, 4, "auto") == pytest.approx({0: 40 / 90, 1: 40 / 15, 2: 40 / 15, 3: 1.0})


def test_recipe_keys_are_validated():
    recipe = recipes.load_builtin("large_similar")
    auto = dataclasses.replace(recipe.phases[1], learning_rate="auto")
    text = recipes.dumps(dataclasses.replace(recipe, phases=(recipe.phases[0], auto)))
    assert recipes.loads(text).phases[1].learning_rate == "auto"
    for table, key, value, message in [
        ("phases", "learning_rate", "fast", 'number or "auto"'),
        ("phases", "schedule", "linear", "warmup_cosine"),
        ("phases", "weight_decay", -0.1, "weight_decay"),
        ("phases", "lr_decay_per_block", 0.0, "lr_decay_per_block"),
        ("data", "class_weight", "equal", "balanced"),
    ]:
        data = tomllib.loads(text)
        (data["phases"][1] if table == "phases" else data[table])[key] = value
        with pytest.raises(TransferkitError, match=message):
            recipes.loads(tomli_w.dumps(data))


def _trainer(recipe, run_dir, train_labels=None):
    import tensorflow as tf

    from transferkit.testing import synthetic_image
    from transferkit.training.trainer import Trainer

    setup_device("float32", recipe.seed)
    classifier = build_classifier(SPEC, SPEC.build(32), 3, recipe.head)
    rng = np.random.default_rng(0)
    labels = np.array([0] * 12 + [1] * 3 + [2] * 3, "int32")
    images = np.stack([synthetic_image(int(label), 32, rng) for label in labels])
    ordered = tf.data.Dataset.from_tensor_slices((images, labels)).batch(6)
    as_float = ordered.map(lambda x, y: (tf.cast(x, tf.float32), y))
    return Trainer(
        classifier, SPEC, recipe, as_float, as_float, ordered, run_dir,
        num_classes=3, steps_per_epoch=3, validation_steps=3, train_labels=train_labels, verbose=0,
    )  # fmt: skip


def _tiny_recipe(**data):
    recipe = recipes.with_overrides(recipes.load_builtin("large_similar"), backbone="tiny", weights="random")
    phases = (Phase(name="head", epochs=1), Phase(name="tune", train="all", epochs=1))
    return dataclasses.replace(recipe, phases=phases, data=dataclasses.replace(recipe.data, **data))


@pytest.mark.parametrize("given_labels", [True, False], ids=["labels-given", "labels-read-from-data"])
def test_balanced_class_weights_reach_both_the_cached_head_phase_and_the_full_fit(
    tmp_path, monkeypatch, given_labels
):
    seen = []

    def fit(self, model, data, index, phase, initial_epoch, extra_callbacks=(), **kwargs):
        seen.append(kwargs["class_weight"])
        return phase.epochs

    monkeypatch.setattr("transferkit.training.trainer.Trainer._fit", fit)
    labels = [0] * 12 + [1] * 3 + [2] * 3 if given_labels else None
    _trainer(_tiny_recipe(class_weight="balanced"), tmp_path, labels).run()
    assert seen == [pytest.approx({0: 0.5, 1: 2.0, 2: 2.0})] * 2


def test_a_recipes_label_smoothing_changes_the_loss_on_the_same_weights(tmp_path):
    features = np.random.default_rng(0).normal(size=(18, 64)).astype("float32")
    labels = np.array([0] * 6 + [1] * 6 + [2] * 6, "int32")
    losses = []
    for smoothing in (0.0, 0.2):
        recipe = _tiny_recipe()
        recipe = dataclasses.replace(recipe, head=dataclasses.replace(recipe.head, label_smoothing=smoothing))
        trainer = _trainer(recipe, tmp_path / str(smoothing))
        head = trainer.classifier.head
        kernel = np.random.default_rng(1).normal(0, 3, (64, 3)).astype("float32")  # confident predictions
        head.get_layer("predictions").set_weights([kernel, np.zeros(3, "float32")])  # the same both times
        trainer._compile(head, recipe.phases[0], 3)
        losses.append(head.evaluate(features, labels, verbose=0, return_dict=True)["loss"])
    assert losses[1] != pytest.approx(losses[0], rel=1e-3)


def test_the_saved_model_names_no_transferkit_class_so_plain_keras_loads_it(tmp_path):
    import zipfile

    recipe = _tiny_recipe()
    recipe = dataclasses.replace(recipe, head=dataclasses.replace(recipe.head, label_smoothing=0.1))
    trainer = _trainer(recipe, tmp_path)
    trainer.run()
    trainer.classifier.model.save(tmp_path / "model.keras")
    with zipfile.ZipFile(tmp_path / "model.keras") as archive:
        assert b"transferkit" not in archive.read("config.json")


def test_agreed_loss_scaling_with_one_replica_is_keras_loss_scaling_step_for_step():
    """One replica has nothing to agree with: the same scale, skipped steps and weights as Keras'."""
    from transferkit.training.optimizers import AgreedLossScaleOptimizer

    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        results = []
        for wrap in (keras.optimizers.LossScaleOptimizer, AgreedLossScaleOptimizer):
            keras.utils.set_random_seed(0)
            inputs = keras.Input((4,))
            model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
            model.compile(optimizer=wrap(keras.optimizers.Adam(1e-2)), loss="sparse_categorical_crossentropy")
            x = np.random.default_rng(0).normal(size=(32, 4)) * 1e3  # overflows float16 at scale 2**15
            y = np.arange(32) % 3
            model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
            results.append((float(model.optimizer.dynamic_scale), model.get_weights()))
        (scale_keras, keras_weights), (scale_ours, our_weights) = results
        assert scale_ours == scale_keras < 2**15  # some steps overflowed and were skipped
        for a, b in zip(keras_weights, our_weights, strict=True):
            np.testing.assert_array_equal(a, b)
    finally:
        keras.mixed_precision.set_global_policy(policy)
