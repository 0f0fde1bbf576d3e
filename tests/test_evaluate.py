"""Metrics on hand-computable cases, and evaluate_model against compute_metrics."""

from __future__ import annotations

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from transferkit.errors import TransferkitError
from transferkit.reporting.metrics import Metrics, accuracy_interval, compute_metrics, evaluate_model


def rows_predicting(predicted: list[int], labels: list[int], num_classes: int) -> np.ndarray:
    """Probability rows: 0.6 on the predicted class, the rest shared equally."""
    other = 0.4 / (num_classes - 1)
    probs = np.full((len(predicted), num_classes), other)
    probs[np.arange(len(predicted)), predicted] = 0.6
    return probs


LABELS = [0, 0, 0, 1, 1, 2, 2, 2]
PREDICTED = [0, 0, 1, 1, 0, 2, 2, 1]


def test_three_class_case_matches_hand_computation():
    probs = rows_predicting(PREDICTED, LABELS, 3)  # 0.6 on the prediction, 0.2 elsewhere
    m = compute_metrics(probs, np.array(LABELS), ["cat", "dog", "fox"])
    # Confusion by hand: true cat -> cat, cat, dog; true dog -> dog, cat; true fox -> fox, fox, dog.
    assert m.confusion == ((2, 1, 0), (1, 1, 0), (0, 1, 2))
    assert m.accuracy == pytest.approx(5 / 8)
    assert m.top5_accuracy is None
    assert m.num_samples == 8
    # precision = TP / predicted count; recall = TP / true count.
    expected = {
        "cat": (2 / 3, 2 / 3, 2 / 3, 3),
        "dog": (1 / 3, 1 / 2, 2 / 5, 2),
        "fox": (1.0, 2 / 3, 4 / 5, 3),
    }
    for name, (precision, recall, f1, support) in expected.items():
        got = m.per_class[name]
        assert got["precision"] == pytest.approx(precision)
        assert got["recall"] == pytest.approx(recall)
        assert got["f1"] == pytest.approx(f1)
        assert got["support"] == support
    assert m.macro_f1 == pytest.approx((2 / 3 + 2 / 5 + 4 / 5) / 3)
    # 5 correct rows give p_true = 0.6, 3 wrong rows give p_true = 0.2.
    assert m.loss == pytest.approx(-(5 * math.log(0.6) + 3 * math.log(0.2)) / 8, rel=1e-5)


def test_loss_is_mean_negative_log_of_true_class_probability():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=50)
    labels = rng.integers(0, 4, size=50)
    m = compute_metrics(probs, labels, list("abcd"))
    assert m.loss == pytest.approx(-np.mean(np.log(probs[np.arange(50), labels])), rel=1e-5)


def test_top5_with_seven_classes_counts_a_true_class_ranked_third():
    scores = np.array([0.30, 0.25, 0.20, 0.10, 0.08, 0.05, 0.02])
    # Same scores for both samples: class 2 is ranked 3rd (inside the top 5), class 5 is 6th.
    m = compute_metrics(np.stack([scores, scores]), np.array([2, 5]), list("abcdefg"))
    assert m.accuracy == 0.0
    assert m.top5_accuracy == pytest.approx(0.5)
    assert compute_metrics(scores[None], np.array([2]), list("abcdefg")).top5_accuracy == 1.0


def test_top5_is_none_for_five_classes_or_fewer():
    probs = np.full((2, 5), 0.2)
    assert compute_metrics(probs, np.array([0, 4]), list("abcde")).top5_accuracy is None


def test_absent_class_still_gets_a_row_and_does_not_drag_macro_f1():
    m = compute_metrics(rows_predicting([0, 1], [0, 1], 3), np.array([0, 1]), ["a", "b", "never"])
    assert m.confusion == ((1, 0, 0), (0, 1, 0), (0, 0, 0))
    assert m.per_class["never"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0.0}
    assert m.macro_f1 == 1.0


def test_a_table_shows_a_dash_for_a_figure_that_is_undefined_not_a_zero():
    """Precision of a class nothing was predicted as, recall and F1 of a class with no images here."""
    p = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.1, 0.9, 0.0]])
    shown = compute_metrics(p, np.array([0, 1, 1]), ["cat", "dog", "fox"]).per_class_shown()
    assert shown == {"cat": (0.5, 1.0, 2 / 3, 1), "dog": (1.0, 0.5, 2 / 3, 2), "fox": ("-", "-", "-", 0)}
    p = np.array([[0.9, 0.1], [0.8, 0.2]])  # dog never predicted, with images here: its recall is 0
    assert compute_metrics(p, np.array([0, 1]), ["cat", "dog"]).per_class_shown()["dog"] == ("-", 0.0, 0.0, 1)


def test_to_dict_is_json_and_round_trips():
    m = compute_metrics(rows_predicting(PREDICTED, LABELS, 3), np.array(LABELS), ["<b>", "dog", "fox"])
    data = json.loads(json.dumps(m.to_dict()))
    assert Metrics.from_dict(data) == m
    assert Metrics.from_dict({**data, "extra": 1}) == m
    with pytest.raises(TransferkitError, match="lacks accuracy"):
        Metrics.from_dict({k: v for k, v in data.items() if k != "accuracy"})


@pytest.mark.parametrize(
    ("correct", "total", "expected"),
    [  # Wilson score intervals, from the closed form (Newcombe 1998, method 3)
        (108, 120, (0.8333, 0.9419)),
        (0, 10, (0.0, 0.2775)),
        (10, 10, (0.7225, 1.0)),
        (5, 8, (0.3057, 0.8632)),
    ],
)
def test_accuracy_interval_is_the_wilson_score_interval(correct, total, expected):
    assert accuracy_interval(correct, total) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("total", [1, 7, 30, 90, 133, 1000])
def test_accuracy_interval_contains_the_accuracy_even_at_0_and_100_percent(total):
    for correct in (0, total // 3, total):
        low, high = accuracy_interval(correct, total)
        assert 0.0 <= low <= correct / total <= high <= 1.0


def test_metrics_carry_an_interval_that_contains_the_accuracy_and_narrows_with_more_images():
    few = compute_metrics(rows_predicting(PREDICTED, LABELS, 3), np.array(LABELS), ["cat", "dog", "fox"])
    many = compute_metrics(
        rows_predicting(PREDICTED * 10, LABELS * 10, 3), np.array(LABELS * 10), ["cat", "dog", "fox"]
    )
    assert few.accuracy == many.accuracy == pytest.approx(5 / 8)
    assert few.accuracy_interval == pytest.approx(accuracy_interval(5, 8))
    for m in (few, many):
        assert m.accuracy_interval[0] < m.accuracy < m.accuracy_interval[1]
    assert np.ptp(many.accuracy_interval) < np.ptp(few.accuracy_interval) / 2
    older = {k: v for k, v in few.to_dict().items() if k != "accuracy_interval"}  # a pre-interval file
    assert Metrics.from_dict(older) == few


@pytest.mark.parametrize(
    ("probs", "labels", "names", "message"),
    [
        (np.array([[2.0, -1.0], [0.5, 0.5]]), [0, 1], ["a", "b"], "apply a softmax"),
        (np.full((2, 2), 0.5), [0, 2], ["a", "b"], r"integers in \[0, 2\)"),
        (np.full((2, 3), 1 / 3), [0, 1], ["a", "b"], "shape"),
        (np.full((2, 2), 0.5), [0, 1], ["a", "a"], "unique"),
        (np.zeros((0, 2)), [], ["a", "b"], "num_samples > 0"),
    ],
)
def test_bad_inputs_raise_a_fixable_error(probs, labels, names, message):
    with pytest.raises(TransferkitError, match=message):
        compute_metrics(probs, np.array(labels, dtype=np.int64), names)


def tiny_classifier(num_classes: int) -> keras.Model:
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            keras.layers.Rescaling(1 / 127.5, offset=-1),
            keras.layers.Flatten(),
            keras.layers.Dense(num_classes, activation="softmax"),
        ]
    )


def test_evaluate_model_matches_compute_metrics_on_a_shuffled_dataset():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(40, 6, 6, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, size=40)
    model = tiny_classifier(4)
    passes = []

    def generate():
        passes.append(1)
        yield from zip(images, labels, strict=True)

    signature = (tf.TensorSpec((6, 6, 3), tf.uint8), tf.TensorSpec((), tf.int64))
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    dataset = dataset.shuffle(40, seed=7).batch(16)

    got = evaluate_model(model, dataset, ["w", "x", "y", "z"])
    expected = compute_metrics(model.predict(images, verbose=0), labels, ["w", "x", "y", "z"])
    assert len(passes) == 1
    assert 0 < got.accuracy < 1  # a mix of right and wrong, so the pairing matters
    assert got.loss == pytest.approx(expected.loss, rel=1e-5)
    assert got.confusion == expected.confusion
    for name in expected.class_names:
        assert got.per_class[name] == pytest.approx(expected.per_class[name])
    assert (got.accuracy, got.macro_f1, got.num_samples) == pytest.approx(
        (expected.accuracy, expected.macro_f1, expected.num_samples)
    )


def test_evaluate_model_rejects_an_empty_or_unlabelled_dataset():
    model = tiny_classifier(2)
    empty = tf.data.Dataset.from_tensor_slices((np.zeros((0, 6, 6, 3), np.uint8), np.zeros(0, np.int64)))
    with pytest.raises(TransferkitError, match="empty"):
        evaluate_model(model, empty.batch(4), ["a", "b"])
    images_only = tf.data.Dataset.from_tensor_slices(np.zeros((4, 6, 6, 3), np.uint8)).batch(2)
    with pytest.raises(TransferkitError, match=r"\(images, labels\)"):
        evaluate_model(model, images_only, ["a", "b"])


class CountsTraces(keras.layers.Layer):
    """Counts how often its Python ``call`` runs: once per trace of a compiled function."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.traces = 0

    def call(self, inputs):
        self.traces += 1
        return inputs


def test_evaluating_splits_with_smaller_last_batches_traces_the_model_once():
    counter = CountsTraces()
    model = keras.Sequential([keras.Input((6, 6, 3)), counter, *tiny_classifier(3).layers])
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (30, 6, 6, 3)).astype("float32"), np.arange(30) % 3
    counter.traces = 0
    test = evaluate_model(model, tf.data.Dataset.from_tensor_slices((images, labels)).batch(8), "abc")
    evaluate_model(model, tf.data.Dataset.from_tensor_slices((images[:11], labels[:11])).batch(8), "abc")
    assert counter.traces == 1  # batches of 8, 8, 8, 6, then 8, 3: the smaller ones padded to 8
    expected = compute_metrics(model.predict(images, verbose=0), labels, list("abc"))
    assert test.loss == pytest.approx(expected.loss, rel=1e-5) and test.num_samples == 30
