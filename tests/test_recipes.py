import dataclasses
import re

import pytest

import transferkit
from transferkit import recipes
from transferkit.errors import TransferkitError
from transferkit.testing import make_image_folder


@pytest.mark.parametrize("name", ["small_similar", "small_dissimilar", "large_similar", "large_dissimilar"])
def test_builtin_recipes_round_trip(name):
    recipe = recipes.load_builtin(name)
    assert recipes.loads(recipes.dumps(recipe)) == recipe


def test_quadrant_recipes_use_the_classic_strategies():
    strategies = {name: recipes.load_builtin(name).strategy for name in recipes.builtin_names()}
    assert strategies == {
        "small_similar": "freeze",
        "small_dissimilar": "truncate",
        "large_similar": "fine_tune",
        "large_dissimilar": "retrain",
    }
    for image_size in (96, 224):
        builtin = recipes.load_builtin("large_similar")
        fine_tune = recipes.with_overrides(builtin, image_size=image_size).phases
        assert [p.train for p in fine_tune] == ["head", "all"]
        assert fine_tune[1].learning_rate < fine_tune[0].learning_rate
        # The whole network, the lower blocks at ever smaller rates, BatchNorm left in inference mode.
        assert 0 < fine_tune[1].lr_decay_per_block < 1 and not fine_tune[1].train_batchnorm


def test_large_similar_trains_every_block_above_the_stem_at_large_dissimilars_rates_at_every_size():
    retrain = recipes.load_builtin("large_dissimilar").phases[1]
    builtin = recipes.load_builtin("large_similar")
    for image_size in (96, 160, 224):
        fine_tune = recipes.with_overrides(builtin, image_size=image_size).phases[1]
        assert fine_tune.min_block_lr_factor == 0 and fine_tune.train == "all"
        assert fine_tune.frozen_input_stride == 4
        assert dataclasses.replace(fine_tune, name=retrain.name) == retrain


def _split_at_160():
    """A recipe whose whole-network phase differs on each side of 160 px (what large_similar had)."""
    builtin = recipes.load_builtin("large_similar")
    warmup, tune = builtin.phases
    small = dataclasses.replace(tune, below_image_size=160, learning_rate=2e-4, lr_decay_per_block=0.8)
    full = dataclasses.replace(tune, from_image_size=160)
    return dataclasses.replace(builtin, phases=(warmup, small, full))


def test_phases_bounded_by_image_size_resolve_to_those_of_the_run():
    split = recipes.validate(_split_at_160())
    small, full = (recipes.with_overrides(split, image_size=size).phases[1] for size in (159, 160))
    assert (small.learning_rate, full.learning_rate) == (2e-4, 3e-4)
    # The backbone's default size (224 for MobileNetV2) counts as full resolution.
    assert recipes.with_overrides(split).phases[1] == full


def test_a_run_records_only_the_phases_of_its_size():
    recipe = recipes.with_overrides(_split_at_160(), image_size=96)
    assert [p.name for p in recipe.phases] == ["warmup", "fine_tune"]
    assert all(p.from_image_size == p.below_image_size == 0 for p in recipe.phases)
    # What the run folder's recipe.toml holds trains the same at any size.
    again = recipes.with_overrides(recipes.loads(recipes.dumps(recipe)), image_size=224)
    assert again.phases == recipe.phases


@pytest.mark.parametrize(
    ("bounds", "message"),
    [
        ({"from_image_size": -1}, r"from_image_size and below_image_size must be >= 0 pixels"),
        ({"from_image_size": 160, "below_image_size": 96}, r"below_image_size must be above from_image_size"),
        ({"from_image_size": 100, "below_image_size": 100}, r"no image size would run the phase"),
    ],
)
def test_bad_size_bounds_are_one_line_errors(bounds, message):
    builtin = recipes.load_builtin("small_similar")
    bad = dataclasses.replace(builtin, phases=(dataclasses.replace(builtin.phases[0], **bounds),))
    with pytest.raises(TransferkitError, match=message):
        recipes.validate(bad)


def test_phases_of_one_name_may_share_it_only_at_different_sizes():
    builtin = _split_at_160()
    low, high = builtin.phases[1:]
    assert (low.name, low.below_image_size) == (high.name, high.from_image_size)  # one name, split at a size
    overlapping = dataclasses.replace(builtin, phases=(low, dataclasses.replace(high, from_image_size=128)))
    with pytest.raises(TransferkitError, match=r"phases\[1\].name 'fine_tune' repeats phases\[0\]'s"):
        recipes.validate(overlapping)


def test_a_size_no_phase_covers_is_a_clear_error():
    builtin = _split_at_160()
    only_large = dataclasses.replace(builtin, phases=builtin.phases[2:])
    message = r"no phase for 96-px images \(its phases: 'fine_tune' \(from 160 px\)\)"
    with pytest.raises(TransferkitError, match=message):
        recipes.with_overrides(only_large, image_size=96)


def test_unknown_key_lists_valid_keys():
    text = recipes.dumps(recipes.load_builtin("small_similar")).replace("[head]", "[head]\ndropuot = 0.1")
    with pytest.raises(TransferkitError, match="unknown key 'dropuot'. Valid keys: dropout"):
        recipes.loads(text)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('fill_mode = "reflect"', 'fill_mode = "wrapp"', "Choose one of: constant, nearest, reflect"),
        ('train = "head"', 'train = "everything"', "Choose one of: all, head, top"),
        ("epochs = 200", "epochs = 0", "epochs must be >= 1"),
        ("epochs = 200", 'epochs = "200"', "expected int"),
        ("batch_size = 32", "batch_size = 3.5", "expected int"),
        ("[[phases]]", "[phases]", "expected a list of tables"),
        (
            "mixup_alpha = 0.0",
            "mixup_alpha = 1.5",
            r"augment.mixup_alpha must be in \[0, 1\], 0 = off \(got 1.5\)",
        ),
        ("cutmix_alpha = 0.0", "cutmix_alpha = -0.1", r"augment.cutmix_alpha must be in \[0, 1\]"),
        ("mixup_alpha = 0.0", 'mixup_alpha = "on"', "expected float"),
        (
            "label_smoothing = 0.0",
            "label_smoothing = 2.0",
            r"head.label_smoothing must be in \[0, 1\) \(got 2.0\)",
        ),
        ("patience = 20", "patience = -3", r"phases\[0\].patience must be >= 0, 0 = off \(got -3\)"),
        ("rotation_degrees = 15.0", "rotation_degrees = -400.0", r"rotation_degrees must be in \[0, 180\]"),
        ("rotation_degrees = 15.0", "rotation_degrees = 181.0", r"rotation_degrees must be in \[0, 180\]"),
        ("zoom = 0.1", "zoom = 5.0", r"augment.zoom must be in \[0, 1\), 0 = off \(got 5.0\)"),
        ("zoom = 0.1", "zoom = 1.0", r"augment.zoom must be in \[0, 1\)"),
        ("translation = 0.1", "translation = -0.1", r"augment.translation must be in \[0, 1\)"),
        ("contrast = 0.1", "contrast = 1.5", r"augment.contrast must be in \[0, 1\]"),
        ("noise = 0.0", "noise = -2.0", r"augment.noise must be in \[0, 64\], 0 = off \(got -2.0\)"),
        ("cached_passes = 4", "cached_passes = -1", r"augment.cached_passes must be >= 0"),
        ("seed = 1337", "seed = -1", r"seed must be in \[0, 2\*\*32\) \(got -1\)"),
        ("image_size = 0", "image_size = 4", "backbone.image_size must be 0 .* or >= 8 pixels"),
        (
            "test_split = 0.15",
            "test_split = 1.0",
            r"data.test_split must be in \[0, 1\), 0 = none \(got 1.0\)",
        ),
        ('cut = "none"', 'cut = "block_5_add"', 'backbone.cut applies only to strategy "truncate"'),
    ],
)
def test_bad_values_are_one_line_errors(old, new, message):
    text = recipes.dumps(recipes.load_builtin("small_similar")).replace(old, new, 1)
    assert text != recipes.dumps(recipes.load_builtin("small_similar"))
    with pytest.raises(TransferkitError, match=message):
        recipes.loads(text)


def test_two_phases_of_one_name_are_an_error():
    builtin = recipes.load_builtin("large_similar")
    first, second = (phase.name for phase in builtin.phases[:2])
    text = recipes.dumps(builtin).replace(f'name = "{second}"', f'name = "{first}"', 1)
    with pytest.raises(TransferkitError, match=rf"phases\[1\].name '{first}' repeats phases\[0\]'s"):
        recipes.loads(text)


@pytest.mark.parametrize("name", recipes.builtin_names())
def test_builtin_recipes_leave_mixup_and_cutmix_off(name):
    augment = recipes.load_builtin(name).augment
    assert (augment.mixup_alpha, augment.cutmix_alpha) == (0.0, 0.0)


def test_invalid_toml_is_a_clear_error():
    with pytest.raises(TransferkitError, match="not valid TOML"):
        recipes.loads("name = ")


def test_overrides_apply_on_top():
    recipe = recipes.with_overrides(
        recipes.load_builtin("large_similar"),
        backbone="tiny",
        epochs=2,
        batch_size=4,
        weights="random",
        image_size=48,
        seed=7,
    )
    assert (
        recipe.backbone.name == "tiny"
        and recipe.backbone.weights == "random"
        and recipe.backbone.image_size == 48
    )
    assert [p.epochs for p in recipe.phases] == [2, 2]
    assert recipe.data.batch_size == 4 and recipe.seed == 7
    assert recipes.with_overrides(recipe, epochs=None) == recipe


def test_a_validation_and_test_split_that_leave_nothing_to_train_on_name_both_keys():
    text = recipes.dumps(recipes.load_builtin("small_similar")).replace(
        "validation_split = 0.2", "validation_split = 0.95"
    )
    with pytest.raises(TransferkitError) as error:
        recipes.loads(text)
    assert "data.validation_split + data.test_split must be under 1" in str(error.value)
    assert "(got 0.95 + 0.15)" in str(error.value)


@pytest.mark.parametrize("name", recipes.builtin_names())
def test_a_cut_stays_allowed_where_the_selector_sets_it(name):
    recipe = recipes.load_builtin(name)
    if recipe.strategy == "truncate":  # the selector's cut point, the averaged partner's cut
        assert recipes.with_overrides(recipe, cut="block_5_add").backbone.cut == "block_5_add"
    else:
        with pytest.raises(TransferkitError, match="applies only to strategy"):
            recipes.with_overrides(recipe, cut="block_5_add")


def test_truncate_needs_a_cut():
    recipe = recipes.load_builtin("small_dissimilar")
    with pytest.raises(TransferkitError, match="needs backbone.cut"):
        recipes.validate(
            dataclasses.replace(recipe, backbone=dataclasses.replace(recipe.backbone, cut="none"))
        )


def test_load_missing_file_names_builtins(tmp_path):
    with pytest.raises(TransferkitError, match="small_similar"):
        recipes.load(tmp_path / "nope.toml")
    with pytest.raises(
        TransferkitError, match=r"^No recipe 'nonsense': neither a built-in one nor a file\. "
    ):
        recipes.load("nonsense")  # a mistyped built-in name, not a file that should have been there
    assert recipes.load("small_similar") == recipes.load_builtin("small_similar")


def test_a_recipe_files_errors_name_the_file_not_the_name_it_was_copied_with(tmp_path):
    text = recipes.dumps(recipes.load_builtin("small_similar"))
    path = tmp_path / "my.toml"
    path.write_text(text.replace("dropout = 0.2", "dropout = 1.5"), encoding="utf-8")
    with pytest.raises(TransferkitError) as error:
        recipes.load(path)
    assert str(error.value) == f"Invalid recipe {path}: head.dropout must be in [0, 1) (got 1.5)."
    path.write_text(text.replace('class_weight = "none"', 'class_weight = "balance"'), encoding="utf-8")
    with pytest.raises(TransferkitError) as error:
        recipes.load(path)
    assert str(error.value).startswith(f"Invalid recipe {path}: data.class_weight: Unknown value 'balance'.")
    # Overrides on top of a file name the file too; a recipe without a file is named by its name.
    with pytest.raises(TransferkitError, match=f"^Invalid recipe {re.escape(str(path))}: data.batch_size"):
        recipes.with_overrides(recipes.load_builtin("small_similar"), source=str(path), batch_size=0)
    with pytest.raises(TransferkitError, match="^Invalid recipe 'small_similar': data.batch_size"):
        recipes.with_overrides(recipes.load_builtin("small_similar"), batch_size=0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"epochs": 2.5},
            "Invalid recipe 'small_similar' (a Recipe object): phases[0].epochs: expected int, got 2.5",
        ),
        ({"epochs": True}, "phases[0].epochs: expected int, got True"),
        ({"learning_rate": "1e-3"}, 'phases[0].learning_rate must be a number or "auto"'),
        ({"learning_rate": None}, "Invalid recipe 'small_similar' (a Recipe object): "),
        ({"epochs": 0}, "phases[0].epochs must be >= 1 (got 0)"),
    ],
)
def test_a_recipe_built_in_python_is_checked_as_a_file_is(tmp_path, change, message):
    builtin = recipes.load_builtin("small_similar")
    assert recipes.checked(builtin) == builtin
    bad = dataclasses.replace(builtin, phases=(dataclasses.replace(builtin.phases[0], **change),))
    with pytest.raises(TransferkitError, match=re.escape(message)):
        recipes.checked(bad)
    data = make_image_folder(tmp_path / "data", classes=2, per_class=4, size=16)
    with pytest.raises(TransferkitError, match=re.escape(message)):  # before anything is written
        transferkit.fit(str(data), recipe=bad, backbone="tiny", weights="random", out=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()
