"""The head's logistic-regression start: the fitted model itself, in the head, in a run, resumed."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import keras
import numpy as np
import pytest

from transferkit import recipes
from transferkit.backbones.registry import get_backbone
from transferkit.errors import TransferkitError
from transferkit.recipes import AugmentConfig, HeadConfig, Phase
from transferkit.testing import Interrupted, interrupt_at, synthetic_batches, tiny_trainer
from transferkit.training import head_phase
from transferkit.training.device import setup_device
from transferkit.training.head_init import (
    MISSING_CLASS_BIAS,
    _fit_path,
    fit_logistic,
    initialise_head,
    row_span,
    training_rows,
)
from transferkit.training.model import build_classifier, build_head
from transferkit.training.trainer import Trainer

SPEC = get_backbone("tiny")


def _blobs(num_classes: int, per_class: int, dim: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes), per_class)
    centres = 3.0 * rng.normal(size=(num_classes, dim))
    return (centres[labels] + rng.normal(size=(len(labels), dim))).astype("float32"), labels


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("dim", [6, 300], ids=["long", "wider-than-long"])
def test_the_fitted_weights_reproduce_sklearns_probabilities_multiclass_and_binary(dim, monkeypatch):
    from sklearn.linear_model import LogisticRegression

    widths, fit = [], LogisticRegression.fit

    def recording(self, x, y):
        widths.append(x.shape[1])
        return fit(self, x, y)

    for num_classes in (2, 4):
        x, y = _blobs(num_classes, 20, dim=dim)
        with monkeypatch.context() as patch:
            patch.setattr(LogisticRegression, "fit", recording)
            fitted = fit_logistic((x, y), (x, y), num_classes, grid=(0.5,))
        optimum = LogisticRegression(C=0.5, max_iter=5000, tol=1e-10)
        expected = optimum.fit(x, y).predict_proba(x)
        np.testing.assert_allclose(_softmax(x @ fitted.kernel + fitted.bias), expected, atol=1e-3)
    assert widths == ([6, 6] if dim == 6 else [40, 80])  # wide: solved in the span of the rows


def test_the_row_span_basis_is_orthonormal_and_keeps_every_row_even_when_rows_are_dependent():
    rows = np.random.default_rng(0).normal(size=(30, 200))
    rows[-1] = rows[0] - rows[1]  # dependent rows: rank 29
    rows -= rows.mean(axis=0)  # standardised features are centred: one rank fewer again
    basis = row_span(rows)
    assert basis.shape == (200, 30)
    np.testing.assert_allclose(basis.T @ basis, np.eye(30), atol=1e-12)
    np.testing.assert_allclose(rows @ basis @ basis.T, rows, atol=1e-10)  # nothing of a row is lost
    assert row_span(rows[:, :30]) is None  # as long as wide: solved as it is


def test_each_regression_of_the_warm_started_path_is_its_own_optimum():
    from sklearn.linear_model import LogisticRegression

    x, y = _blobs(4, 25, dim=12, seed=1)
    grid = (0.01, 0.1, 1.0, 10.0)
    for c, (kernel, bias) in zip(grid, _fit_path((x, y), 4, grid), strict=True):
        expected = LogisticRegression(C=c, max_iter=5000, tol=1e-10).fit(x, y).predict_proba(x)
        # The solver's default tolerance: a cold start is up to 8e-4 off at C=10, this path 1e-3.
        np.testing.assert_allclose(_softmax(x @ kernel + bias), expected, atol=2e-3)


def test_regularisation_is_chosen_on_validation_and_an_absent_class_gets_no_probability():
    x, y = _blobs(3, 20)
    # Class 2 is missing from training; validation labels are class 0 only.
    train, validation = (x[y < 2], y[y < 2]), (x[y == 0], y[y == 0])
    fitted = fit_logistic(train, validation, 3, grid=(1e-6, 1.0))
    assert fitted.c == 1.0  # C=1e-6 leaves every probability near 1/2: lower accuracy or higher loss
    assert fitted.val_accuracy == 1.0
    assert np.all(fitted.kernel[:, 2] == 0) and fitted.bias[2] == MISSING_CLASS_BIAS


def test_initialise_head_sets_the_dense_layer_so_the_head_predicts_like_the_regression():
    x, y = _blobs(3, 30)
    x = x * 50.0 + 7.0  # pooled activations are far from standardised: the head's own layers do it
    head = build_head(x.shape[1], 3, HeadConfig(dropout=0.5))
    head_phase.standardise_head(head, x)  # as the trainer sets it: from the training features
    fitted = initialise_head(head, np.stack([x, x]), y, (x, y))  # two cached passes
    assert fitted.val_accuracy == 1.0
    predicted = np.asarray(head(x, training=False)).argmax(axis=1)
    assert np.array_equal(predicted, y)


def test_past_the_row_limit_a_seeded_sample_of_a_memmapped_store_keeps_rows_and_labels_together(tmp_path):
    passes, count, dim = 3, 50, 4
    store = np.lib.format.open_memmap(
        tmp_path / "f.npy", mode="w+", dtype="float32", shape=(passes, count, dim)
    )
    labels = np.arange(count) % 5
    store[:] = labels[None, :, None] + 100 * np.arange(passes)[:, None, None]  # row = label + 100 x pass
    rows, row_labels = training_rows(store, labels, limit=40)
    assert rows.shape == (40, dim) and np.array_equal(rows[:, 0] % 100, row_labels)
    assert len(np.unique(rows[:, 0] // 100)) == passes  # drawn across every pass
    again, _ = training_rows(store, labels, limit=40)
    assert np.array_equal(rows, again)
    everything, all_labels = training_rows(store, labels, limit=passes * count)
    assert everything.shape == (passes * count, dim) and np.array_equal(all_labels, np.tile(labels, passes))


def test_an_unknown_head_init_is_an_error_that_lists_the_choices():
    text = re.sub(r'init = "\w+"', 'init = "zeros"', recipes.dumps(recipes.load_builtin("small_similar")))
    assert 'init = "zeros"' in text
    with pytest.raises(TransferkitError, match="logistic"):
        recipes.loads(text)


# ----------------------------------------------------------------------------------------------
# In a run: once at the phase's start, deterministic, and a resumed run continues exactly


class _WithCallbacks(Trainer):
    """A Trainer that adds ``extra`` callbacks to every phase, after its own."""

    extra: tuple = ()

    def _callbacks(self, index, phase):
        callbacks, writer = super()._callbacks(index, phase)
        return [*callbacks, *self.extra], writer


def _trainer(
    run_dir: Path, init: str = "logistic", callbacks=(), augment=None, learning_rate=1e-2, patience=0
) -> Trainer:
    recipe = recipes.with_overrides(
        recipes.load_builtin("small_similar"), backbone="tiny", weights="random", batch_size=8, seed=3
    )
    recipe = dataclasses.replace(
        recipe,
        head=dataclasses.replace(recipe.head, dropout=0.0, init=init),
        augment=augment or AugmentConfig(cached_passes=0),
        phases=(Phase(name="head", train="head", epochs=6, learning_rate=learning_rate, patience=patience),),
    )
    setup_device("float32", recipe.seed)
    classifier = build_classifier(SPEC, SPEC.build(32), 3, recipe.head)
    _, as_float, ordered = synthetic_batches()
    trainer = tiny_trainer(
        classifier, recipe, run_dir, as_float, as_float, ordered, trainer_class=_WithCallbacks
    )
    trainer.extra = tuple(callbacks)
    return trainer


def _head_start(tmp_path: Path, init: str) -> list[np.ndarray]:
    """The head's weights when the phase's first epoch begins."""
    seen = []

    class Capture(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 0:
                seen.append(self.model.get_weights())
                raise Interrupted

    with pytest.raises(Interrupted):
        _trainer(tmp_path, init, callbacks=[Capture()]).run()
    return seen[0]


@pytest.fixture(scope="module")
def logistic_start(tmp_path_factory) -> list[np.ndarray]:
    """The head's logistic start in `_trainer`'s run, shared by the tests that compare with it (they only
    read it)."""
    return _head_start(tmp_path_factory.mktemp("start"), "logistic")


def test_the_head_starts_from_the_regression_not_from_keras_initialiser(logistic_start, tmp_path):
    logistic = logistic_start
    again = _head_start(tmp_path / "again", "logistic")
    random = _head_start(tmp_path / "random", "random")
    assert all(np.array_equal(a, b) for a, b in zip(logistic, again, strict=True))  # deterministic
    assert not np.allclose(logistic[-2], random[-2])  # the predictions kernel differs


def test_a_resumed_run_with_a_logistic_start_ends_exactly_like_an_uninterrupted_one(tmp_path):
    reference = _trainer(tmp_path / "reference")
    reference.run()
    with pytest.raises(Interrupted):
        _trainer(tmp_path / "resumed", callbacks=[interrupt_at(3)]).run()
    resumed = _trainer(tmp_path / "resumed")  # a fresh model, as in a new process
    resumed.run()
    final, expected = resumed.classifier.model.get_weights(), reference.classifier.model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(final, expected, strict=True))


def test_the_augmentation_check_compares_heads_from_the_random_start_and_the_regression_comes_after(
    tmp_path, monkeypatch
):
    entered = []
    original = head_phase.check_augmentation

    def recording(model, compile_model, *args, **kwargs):
        if compile_model is not None:  # a run's first check (a second one, on every pass, follows it)
            entered.append(model.get_weights())
        return original(model, compile_model, *args, **kwargs)

    monkeypatch.setattr(head_phase, "check_augmentation", recording)
    # One augmented pass: one check per run (with more, a second one on every pass follows the first,
    # which is the one compared here; nothing else in the run starts a head before its first epoch).
    measured = AugmentConfig(cached_passes=1, measure=True, flip="none", rotation_degrees=0.0, zoom=0.1)
    start = []

    class Capture(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            start.append(self.model.get_weights())
            raise Interrupted

    with pytest.raises(Interrupted):
        _trainer(tmp_path / "logistic", callbacks=[Capture()], augment=measured).run()
    with pytest.raises(Interrupted):
        _trainer(tmp_path / "random", "random", callbacks=[Capture()], augment=measured).run()
    logistic_check, random_check = entered
    logistic_start, random_start = start
    # The check's heads start where a random-start run's do: the regression is not in the check.
    assert np.array_equal(logistic_check[-2], random_check[-2])
    # After the check, the logistic run's head starts from the regression.
    assert np.array_equal(random_start[-2], random_check[-2])
    assert not np.allclose(logistic_start[-2], logistic_check[-2])


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_the_starts_validation_loss_is_measured_as_fit_measures_an_epochs(tmp_path, monkeypatch):
    measured = []
    original = head_phase.start_loss
    monkeypatch.setattr(head_phase, "start_loss", lambda *a: measured.append(original(*a)) or measured[-1])
    trainer = _trainer(tmp_path, learning_rate=1e-12, patience=3)  # the weights barely move
    trainer.run()
    assert measured == [pytest.approx(trainer.history[0]["val_loss"], rel=1e-4)]


def test_a_fitted_start_that_no_epoch_beats_on_validation_is_the_head_the_phase_ends_with(
    logistic_start, tmp_path, monkeypatch, capsys
):
    start = logistic_start
    monkeypatch.setattr(head_phase, "start_loss", lambda *a: -1.0)  # no epoch can beat it
    trainer = _trainer(tmp_path / "run", patience=3)
    trainer.verbose = 2  # one line per epoch, and the trainer's own messages
    trainer.run()
    assert len(trainer.history) == 3  # patience ran out, counted from the start
    assert _same(trainer._head_graph().get_weights(), start)
    assert trainer.state.kept_epochs == [0]  # recorded for the curves: the start, no epoch
    assert "kept its fitted start: the lowest validation loss" in capsys.readouterr().out


def test_a_kept_start_survives_an_interruption(logistic_start, tmp_path, monkeypatch):
    start = logistic_start
    monkeypatch.setattr(head_phase, "start_loss", lambda *a: -1.0)
    with pytest.raises(Interrupted):
        _trainer(tmp_path / "run", patience=3, callbacks=[interrupt_at(2)]).run()
    resumed = _trainer(tmp_path / "run", patience=3)  # a fresh model, as in a new process
    resumed.run()
    assert _same(resumed._head_graph().get_weights(), start)
    assert resumed.state.kept_epochs == [0]


def test_an_epoch_that_beats_the_start_on_validation_is_kept_instead(logistic_start, tmp_path, monkeypatch):
    start = logistic_start
    monkeypatch.setattr(head_phase, "start_loss", lambda *a: 1e9)
    trainer = _trainer(tmp_path / "run", patience=3)
    trainer.run()
    assert not _same(trainer._head_graph().get_weights(), start)
    losses = [row["val_loss"] for row in trainer.history]
    best = int(np.argmin(losses)) + 1
    assert trainer.state.kept_epochs == [None if best == len(losses) else best]  # None: the last epoch


def test_after_the_check_drops_augmentation_the_head_trains_with_the_standardisation_it_was_fitted_with(
    tmp_path, monkeypatch
):
    """The check traces the head's steps under the augmented features' standardisation; dropping
    augmentation standardises again on the clean ones, and the phase must not keep the old steps
    (it did: the regression's start measured 1.26 instead of its own 1.02 on a typeface set, and the
    saved model scored 8 points under what early stopping kept)."""
    original_check, original_init = head_phase.check_augmentation, head_phase.initialise_head
    original_loss, fitted, measured = head_phase.start_loss, [], []

    def recorded(original, into):
        return lambda *args: into.append(original(*args)) or into[-1]

    def dropping(*args, **kwargs):  # the real check (it compiles and traces), its verdict reversed
        return dataclasses.replace(original_check(*args, **kwargs), augmented_val_accuracy=-1.0)

    monkeypatch.setattr(head_phase, "check_augmentation", dropping)
    monkeypatch.setattr(head_phase, "initialise_head", recorded(original_init, fitted))
    monkeypatch.setattr(head_phase, "start_loss", recorded(original_loss, measured))
    augment = AugmentConfig(cached_passes=2, measure=True, flip="none", rotation_degrees=0.0, zoom=0.3)
    trainer = _trainer(tmp_path, augment=augment, patience=2)
    trainer.run()
    assert trainer.augment is None  # dropped
    assert measured == [pytest.approx(fitted[0].val_loss, rel=1e-3)]
