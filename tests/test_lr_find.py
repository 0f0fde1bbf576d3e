"""The learning-rate range test (training/lr_find.py), learning_rate = "auto", and `transferkit lr-find`."""

import dataclasses
import itertools
import json
import math
import re
import types

import numpy as np
import pytest
from click.testing import CliRunner

import transferkit
from transferkit import recipes
from transferkit.backbones.registry import get_backbone
from transferkit.cli import main
from transferkit.recipes import Phase
from transferkit.testing import make_image_folder, synthetic_batches, synthetic_image, tiny_trainer
from transferkit.training.device import setup_device
from transferkit.training.lr_find import BLOW_UP_RULE, VALLEY, _smooth, range_test, suggest, valley
from transferkit.training.model import build_classifier
from transferkit.training.optimizers import LayerwiseAdamW, classification_loss

SPEC = get_backbone("tiny")


def _batches(size=32, batch=8, seed=0):
    rng = np.random.default_rng(seed)
    while True:
        labels = rng.integers(0, 3, batch).astype("int32")
        yield np.stack([synthetic_image(int(label), size, rng) for label in labels]).astype("float32"), labels


def test_the_sweep_suggests_a_rate_inside_its_range_and_restores_the_weights():
    setup_device("float32", 0)
    classifier = build_classifier(SPEC, SPEC.build(32), 3, recipes.HeadConfig())
    model = classifier.model
    model.compile(optimizer=LayerwiseAdamW(1e-5), loss=classification_loss(3, 0.0))
    before = [w.copy() for w in model.get_weights()]
    result = range_test(model, _batches(), start=1e-5, end=10.0, steps=40)
    assert math.isfinite(result.suggestion) and 1e-5 <= result.suggestion <= 10.0
    assert len(result.learning_rates) == len(result.losses) <= 40
    assert all(a < b for a, b in zip(result.learning_rates, result.learning_rates[1:], strict=False))
    after = model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_the_suggestion_lies_in_the_upper_part_of_the_longest_descent():
    rates = list(np.logspace(-6, 0, 13))
    # A noisy start (a dip at 1e-6..3e-6), the long descent from index 2 to 10, then divergence.
    smoothed = [2.0, 1.8, 2.1, 1.99, 1.95, 1.9, 1.5, 1.2, 1.1, 1.05, 1.0, 3.0, 9.0]
    assert suggest(rates, smoothed) == rates[5]  # 2 + int(8 / 3) + int(8 / 6)


# The whole-network phase's sweep after large_similar's head warm-up: Animal-MNIST, 60 images a
# class, 96 px, seed 1337, 1e-7 to 1 in 100 steps (stopped at 65). Fine-tuning runs measured 2e-4
# best there; the valley rule suggested 8.1e-6 (the running average drifting through flat noise).
WARMED_UP_LOSSES = [
    0.907, 0.46, 0.418, 0.519, 0.618, 0.455, 0.31, 0.367, 0.75, 0.429, 0.41, 0.798, 0.677, 0.673, 0.265,
    0.371, 0.67, 0.637, 0.494, 0.381, 0.303, 0.461, 0.34, 0.691, 0.32, 0.205, 0.709, 0.33, 0.389, 0.416,
    0.368, 0.469, 0.527, 0.599, 0.318, 0.429, 0.214, 0.426, 0.125, 0.259, 0.515, 0.708, 0.625, 0.779,
    0.397, 0.605, 0.292, 1.114, 1.14, 0.732, 0.485, 0.354, 1.454, 1.454, 1.053, 1.686, 2.459, 2.808,
    2.933, 2.118, 1.829, 3.779, 6.164, 8.782, 22.397,
]  # fmt: skip
BEST_AFTER_WARM_UP = 2e-4


def _within(rate, target, factor=3.0):
    return target / factor <= rate <= target * factor


def test_the_recorded_warmed_up_sweep_is_suggested_close_to_the_best_measured_rate():
    rates = [1e-7 * 1e7 ** (i / 99) for i in range(len(WARMED_UP_LOSSES))]
    smoothed = _smooth(WARMED_UP_LOSSES)
    assert not _within(valley(rates, smoothed), BEST_AFTER_WARM_UP)  # the failure this rule fixes
    assert _within(suggest(rates, smoothed), BEST_AFTER_WARM_UP)


class _Curve:
    """Stands in for a compiled model in ``range_test``: each step's loss is a function of its rate."""

    def __init__(self, loss_at, seed):
        self.optimizer = types.SimpleNamespace(learning_rate=0.0)
        self.loss_at, self.rng = loss_at, np.random.default_rng(seed)

    def get_weights(self):
        return []

    def set_weights(self, weights):
        pass

    def train_on_batch(self, inputs, labels, class_weight=None, return_dict=False):
        return {"loss": self.loss_at(self.optimizer.learning_rate, self.rng)}


def _sweep(loss_at, seed):
    return range_test(_Curve(loss_at, seed), itertools.repeat((None, None)), start=1e-7, end=1.0, steps=100)


def _warmed_up(rate, rng):
    """Flat at a low loss with batch-to-batch noise, rising past 2.5e-4 as the real sweep does."""
    return 0.45 * math.exp(rng.normal(0, 0.35)) * (1 + (rate / 2.5e-4) ** 1.5)


def _fresh_head(rate, rng):
    """From ln(10) down to a few tenths over decades of rates, then blowing up past 0.1."""
    return (0.3 + 2.0 / (1 + rate / 1e-3)) * math.exp(rng.normal(0, 0.05)) * (1 + (rate / 0.1) ** 2)


def test_sweeps_that_start_low_are_suggested_within_3x_of_the_good_rate_for_any_noise():
    for seed in range(6):
        result = _sweep(_warmed_up, seed)
        assert result.rule == BLOW_UP_RULE
        assert _within(result.suggestion, BEST_AFTER_WARM_UP), (seed, result.suggestion)


def test_a_descending_sweep_keeps_the_valley_rule():
    result = _sweep(_fresh_head, 0)
    assert result.rule == VALLEY
    assert result.suggestion == valley(list(result.learning_rates), list(result.smoothed))
    assert 1e-5 < result.suggestion < 1e-1  # inside the descent, below the blow-up


def test_a_flat_sweep_that_never_blows_up_is_suggested_a_tenth_of_its_last_rate():
    result = range_test(
        _Curve(lambda rate, rng: 0.3 + rng.normal(0, 0.01), 0), itertools.repeat((None, None)), steps=30
    )
    assert result.rule == BLOW_UP_RULE and result.suggestion == result.learning_rates[-1] / 10


def test_a_sweep_near_zero_loss_is_not_stopped_by_batch_noise_before_its_average_settles():
    """After a warm-up on easy data the loss is near zero, and one batch holding a hard image
    weighs 100x the next (0.00045 then 0.084 on a real sweep): the sweep ran two steps and
    suggested a tenth of its start rate."""
    batches = itertools.count()

    def easy(rate, rng):
        return (0.1 if next(batches) % 2 else 1e-3) * (1 + (rate / 2.5e-4) ** 1.5)

    result = range_test(_Curve(easy, 0), itertools.repeat((None, None)), start=1e-7, end=1.0, steps=100)
    assert len(result.learning_rates) > 50  # on to where the rate, not the noise, raises the loss
    assert result.suggestion > 1e-6


def _tiny_trainer(recipe, run_dir):
    setup_device("float32", recipe.seed)
    classifier = build_classifier(SPEC, SPEC.build(32), 3, recipe.head)
    _, as_float, ordered = synthetic_batches()
    return tiny_trainer(classifier, recipe, run_dir, as_float, as_float, ordered)


def test_an_auto_learning_rate_is_found_and_recorded_as_a_number_in_the_run_folder(tmp_path):
    recipe = recipes.with_overrides(recipes.load_builtin("large_similar"), backbone="tiny", weights="random")
    phases = (Phase(name="head", epochs=2), Phase(name="tune", train="top", epochs=1, learning_rate="auto"))
    trainer = _tiny_trainer(dataclasses.replace(recipe, phases=phases), tmp_path)
    trainer.run()
    saved = recipes.load(tmp_path / "recipe.toml")
    rate = saved.phases[1].learning_rate
    assert isinstance(rate, float) and 1e-7 <= rate <= 1.0
    assert trainer.recipe == saved
    assert json.loads((tmp_path / "lr_find" / "phase1.json").read_text())["suggestion"] == rate


def test_lr_find_api_writes_the_curve_and_the_suggestion(tmp_path, capsys):
    data = make_image_folder(tmp_path / "data", classes=3, per_class=10)
    recipe = recipes.with_overrides(recipes.load_builtin("large_similar"), epochs=2)
    result = transferkit.lr_find(
        str(data), recipe=recipe, phase="fine_tune", backbone="tiny", weights="random",
        image_size=16, batch_size=8, steps=15, out=tmp_path / "out", precision="float32", verbose=2,
    )  # fmt: skip
    assert (
        f"phase 'fine_tune': {result.suggestion:.3g} ({tmp_path / 'out' / 'lr_find.png'})"
        in capsys.readouterr().out
    )
    assert 1e-7 <= result.suggestion <= 1.0
    saved = json.loads((tmp_path / "out" / "lr_find.json").read_text())
    assert saved["phase"] == "fine_tune" and saved["suggestion"] == result.suggestion
    assert (tmp_path / "out" / "lr_find.png").stat().st_size > 1000


def test_lr_find_cli_help():
    result = CliRunner().invoke(main, ["lr-find", "--help"])
    assert result.exit_code == 0, result.output
    assert "--phase" in result.output and "learning_rate" in result.output
    assert "Lowest rate tried" in result.output and "Highest rate tried" in result.output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"start": 0}, "lr_find: start and end must be numbers with 0 < start < end (got start=0, end=1.0)"),
        ({"end": 1e-8}, "lr_find: start and end must be numbers with 0 < start < end"),
        ({"start": "1e-7"}, "lr_find: start and end must be numbers with 0 < start < end"),
        ({"end": float("nan")}, "lr_find: start and end must be numbers with 0 < start < end"),
        ({"steps": 1}, "lr_find: steps must be an int >= 2 (rates tried) (got 1); e.g. steps=100."),
        ({"steps": 10.0}, "lr_find: steps must be an int >= 2 (rates tried) (got 10.0)"),
        ({"batch_size": 0}, "lr_find: batch_size must be None or an int >= 1 (got 0)"),
        ({"image_size": "64"}, "lr_find: image_size must be None or an int >= 8 (pixels) (got '64')"),
        ({"similar": "no"}, "lr_find: similar must be True, False or None (measured) (got 'no')"),
        ({"out": None}, "lr_find: out must be a folder (str or os.PathLike) (got None)"),
    ],
)
def test_lr_find_refuses_arguments_of_the_wrong_type_up_front_in_one_line(tmp_path, arguments, message):
    data = make_image_folder(tmp_path / "data", classes=2, per_class=4, size=16)
    out = tmp_path / "sweep"
    options = {"backbone": "tiny", "weights": "random", "out": out, **arguments}
    with pytest.raises(transferkit.TransferkitError, match=re.escape(message)) as error:
        transferkit.lr_find(str(data), **options)
    assert "\n" not in str(error.value)
    assert not out.exists()
