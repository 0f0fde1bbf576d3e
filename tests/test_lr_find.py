"""The learning-rate range test (training/lr_find.py), learning_rate = "auto", and `transferkit lr-find`."""

import dataclasses
import json
import math

import numpy as np
from click.testing import CliRunner

import transferkit
from transferkit import recipes
from transferkit.backbones.registry import get_backbone
from transferkit.cli import main
from transferkit.recipes import Phase
from transferkit.testing import make_image_folder, synthetic_image
from transferkit.training.device import setup_device
from transferkit.training.lr_find import range_test, suggest
from transferkit.training.model import build_classifier
from transferkit.training.optimizers import LayerwiseAdamW, classification_loss
from transferkit.training.trainer import Trainer

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


def _tiny_trainer(recipe, run_dir):
    setup_device("float32", recipe.seed)
    classifier = build_classifier(SPEC, SPEC.build(32), 3, recipe.head)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 8).astype("int32")
    images = np.stack([synthetic_image(int(label), 32, rng) for label in labels])
    ordered = __import__("tensorflow").data.Dataset.from_tensor_slices((images, labels)).batch(8)
    as_float = ordered.map(lambda x, y: (__import__("tensorflow").cast(x, "float32"), y))
    return Trainer(
        classifier, SPEC, recipe, as_float, as_float, ordered, run_dir,
        num_classes=3, steps_per_epoch=3, validation_steps=3, verbose=0,
    )  # fmt: skip


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


def test_lr_find_api_writes_the_curve_and_the_suggestion(tmp_path):
    data = make_image_folder(tmp_path / "data", classes=3, per_class=10)
    recipe = recipes.with_overrides(recipes.load_builtin("large_similar"), epochs=2)
    result = transferkit.lr_find(
        str(data), recipe=recipe, phase="fine_tune", backbone="tiny", weights="random",
        image_size=16, batch_size=8, steps=15, out=tmp_path / "out", precision="float32", verbose=0,
    )  # fmt: skip
    assert 1e-7 <= result.suggestion <= 1.0
    saved = json.loads((tmp_path / "out" / "lr_find.json").read_text())
    assert saved["phase"] == "fine_tune" and saved["suggestion"] == result.suggestion
    assert (tmp_path / "out" / "lr_find.png").stat().st_size > 1000


def test_lr_find_cli_help():
    result = CliRunner().invoke(main, ["lr-find", "--help"])
    assert result.exit_code == 0, result.output
    assert "--phase" in result.output and "learning_rate" in result.output
