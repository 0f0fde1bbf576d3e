"""Folder layouts, splits, the dataset card, the tf.data pipeline and the TFDS source."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import transferkit
from transferkit.data import decode, pipeline
from transferkit.data.loading import (
    DatasetCard,
    ImageSet,
    labelled_images,
    load_data,
    load_images,
    make_dataset,
)
from transferkit.data.splits import digest
from transferkit.errors import TransferkitError

COLOURS = {"ants": (200, 40, 40), "bees": (40, 200, 40), "cats": (40, 40, 200)}


def _folder(root: Path, per_class: dict[str, int], size=(20, 14)) -> Path:
    """root/<class>/<i>.png, each image a distinct shade of its class colour."""
    for name, count in per_class.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            colour = tuple(min(255, c + 3 * i) for c in COLOURS.get(name, (120, 120, 40)))
            Image.new("RGB", size, colour).save(root / name / f"{i:03d}.png")
    return root


def _batches(ds) -> tuple[np.ndarray, np.ndarray]:
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
    return np.concatenate(images), np.concatenate(labels)


def test_class_folders_are_split_stratified(tmp_path):
    splits = load_data(
        _folder(tmp_path, {"ants": 10, "bees": 5, "cats": 2}), validation_split=0.2, test_split=0.0
    )  # a Path works
    assert splits.class_names == ("ants", "bees", "cats")
    assert splits.card.counts == {
        "train": {"ants": 8, "bees": 4, "cats": 1},
        "val": {"ants": 2, "bees": 1, "cats": 1},
    }
    assert splits.test is None
    for images in (splits.train, splits.val):
        for path, label in zip(images.paths, images.labels, strict=True):
            assert Path(path).parent.name == splits.class_names[label]


def test_predefined_train_val_test_folders_are_used_as_given(tmp_path):
    _folder(tmp_path / "Train", {"ants": 4, "bees": 4})
    _folder(tmp_path / "validation", {"ants": 2, "bees": 1, "cats": 1})  # cats: not in train
    _folder(tmp_path / "test", {"ants": 1, "bees": 2})
    splits = load_data(str(tmp_path))
    assert splits.class_names == ("ants", "bees")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (8, 3, 3)
    assert (
        "no training images" in dict(splits.card.skipped)[str(tmp_path / "validation" / "cats" / "000.png")]
    )
    assert set(splits.card.counts) == {"train", "val", "test"}


@pytest.mark.parametrize("names", [("train", "valid", None), ("Training", None, "Testing")])
def test_split_folders_by_the_names_fastai_roboflow_and_kaggle_give_them(tmp_path, names):
    for name, counts in zip(
        names, ({"ants": 6, "bees": 6}, {"ants": 2, "bees": 2}, {"ants": 3, "bees": 3}), strict=True
    ):
        if name:
            _folder(tmp_path / name, counts)
    splits = load_data(str(tmp_path), validation_split=0.25, test_split=0.2)
    assert splits.class_names == ("ants", "bees")  # not ("train", "valid"): the split folders are no classes
    given = {"val": names[1] is not None, "test": names[2] is not None}
    assert all(path.startswith(str(tmp_path / names[0])) for path in splits.train.paths)
    assert len(splits.val) == 4 if given["val"] else len(splits.val) >= 2
    assert (splits.card.holdout.origin == "folder") == given["test"]


def test_a_class_folder_without_one_usable_image_is_named_on_the_card(tmp_path):
    root = _folder(tmp_path, {"ants": 6, "bees": 6, "cats": 3})
    for path in (root / "cats").iterdir():
        path.write_text("not an image")
    splits = load_data(str(root), validation_split=0.2, test_split=0)
    assert splits.class_names == ("ants", "bees")
    assert "class folder(s) left out, not one usable image in them: cats" in splits.card.summary()


def test_images_far_from_square_are_counted_on_the_card_as_distorted_by_the_squash(tmp_path):
    root = _folder(tmp_path, {"ants": 6, "bees": 6})
    Image.new("RGB", (200, 40), "red").save(root / "ants" / "strip.png")  # 5:1
    Image.new("RGB", (30, 120), "red").save(root / "bees" / "pole.png")  # 1:4, the limit: not counted
    card = load_data(str(root), validation_split=0.2, test_split=0).card
    assert card.elongated == (1, str(root / "ants" / "strip.png"))
    assert f"1 image(s) over 4:1 (e.g. {root / 'ants' / 'strip.png'}): each is squashed" in card.summary()
    assert card.to_dict()["elongated"] == [1, str(root / "ants" / "strip.png")]
    assert load_data(str(_folder(tmp_path / "square", {"a": 4, "b": 4})), test_split=0).card.elongated is None


def test_a_split_class_named_with_other_letter_case_says_so(tmp_path):
    _folder(tmp_path / "train", {"Cat": 4, "dog": 4})
    _folder(tmp_path / "val", {"cat": 2, "dog": 2})
    skipped = dict(load_data(str(tmp_path)).card.skipped)
    assert (
        "training has 'Cat': class names are case-sensitive"
        in skipped[str(tmp_path / "val" / "cat" / "000.png")]
    )


def test_test_split_is_held_out_first_disjoint_stratified_and_seeded(tmp_path):
    root = _folder(tmp_path, {"ants": 20, "bees": 20, "cats": 10})
    splits = load_data(root, seed=7)  # default: 15% test, then 20% of the whole for validation
    assert splits.card.counts["test"] == {"ants": 3, "bees": 3, "cats": 2}
    assert splits.card.counts["val"] == {"ants": 4, "bees": 4, "cats": 2}
    train, val, test = (set(images.paths) for images in (splits.train, splits.val, splits.test))
    assert not (train & test or val & test or train & val) and len(train | val | test) == 50
    holdout = splits.holdout
    assert (holdout.origin, holdout.fraction, holdout.seed, holdout.num_test) == ("held_out", 0.15, 7, 8)
    assert holdout.sha256 == digest(splits.test.paths, splits.test.labels, root=str(root))
    assert load_data(os.path.relpath(root), seed=7).holdout.sha256 == holdout.sha256  # however it is named
    assert splits.card.to_dict()["test_split"] == holdout.to_dict()
    assert "test split: 8 images held out (15% of each class, seed 7)" in splits.card.summary()
    assert load_data(root, seed=7).test == splits.test  # same seed, same test split
    assert load_data(root, seed=7, validation_split=0.3).test == splits.test  # carved before validation
    assert load_data(root, seed=8).test != splits.test
    assert load_data(root, seed=7, test_split=0.3).holdout.num_test == 15
    tiny_share = load_data(root, seed=7, test_split=0.01).holdout  # one image a class, not 1%
    assert (
        tiny_share.num_test == 3
        and "1% of each class asked; whole images, at least one a class, made it 6%" in tiny_share.note
    )


def test_a_test_folder_is_used_instead_of_holding_out(tmp_path):
    _folder(tmp_path / "train", {"ants": 10, "bees": 10})
    _folder(tmp_path / "test", {"ants": 2, "bees": 2})
    splits = load_data(tmp_path)
    assert all(Path(path).parts[-3] == "test" for path in splits.test.paths)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (16, 4, 4)
    assert splits.holdout.origin == "folder" and "test/ folder, 4 images" in splits.holdout.note


def test_tiny_classes_hold_out_no_test_split_and_say_why(tmp_path):
    splits = load_data(_folder(tmp_path, {"ants": 6, "bees": 2}))
    assert splits.test is None and len(splits.train) + len(splits.val) == 8
    assert splits.holdout.origin == "none" and splits.holdout.sha256 is None
    note = "test split: none, 1 of 2 classes has fewer than 3 images; accuracy below is validation accuracy"
    assert note in splits.card.summary()
    assert load_data(_folder(tmp_path / "three", {"ants": 3, "bees": 3})).holdout.num_test == 2


def test_a_long_tail_of_tiny_classes_leaves_the_others_their_test_images(tmp_path):
    counts = {"ants": 20, "bees": 14, "cats": 9, "dogs": 2, "eels": 1}
    splits = load_data(_folder(tmp_path / "tail", counts), seed=5)
    assert splits.card.counts["test"] == {"ants": 3, "bees": 2, "cats": 1, "dogs": 0, "eels": 0}
    assert len(splits.train) + len(splits.val) + len(splits.test) == 46
    assert splits.card.counts["train"]["dogs"] == splits.card.counts["train"]["eels"] == 1
    summary = splits.card.summary()
    assert (
        "test split: 6 images held out (15% of each class of 3 images or more; 2 smaller classes none"
        in summary
    )
    assert "test has no images of 2 of 5 classes (dogs, eels): the test figures do not cover them" in summary
    # Each class is drawn by its own seed: the tail does not move the other classes' test images.
    alone = load_data(_folder(tmp_path / "head", {k: counts[k] for k in ("ants", "bees", "cats")}), seed=5)
    assert [Path(p).name for p in splits.test.paths] == [Path(p).name for p in alone.test.paths]
    # Too few classes able to give test images: none held out, and the note says why.
    few = load_data(_folder(tmp_path / "few", {"ants": 9, "bees": 2, "cats": 2, "dogs": 9, "eels": 1}))
    assert few.test is None and "3 of 5 classes have fewer than 3 images" in few.holdout.note


@pytest.mark.parametrize("test_split, validation_split", [(-0.1, 0.2), (1.0, 0.2), (0.5, 0.5)])
def test_a_test_split_that_leaves_nothing_to_train_on_is_a_user_error(tmp_path, test_split, validation_split):
    with pytest.raises(TransferkitError, match=f"test_split={test_split}"):
        load_data(
            _folder(tmp_path, {"ants": 4, "bees": 4}),
            test_split=test_split,
            validation_split=validation_split,
        )


def test_a_val_or_test_folder_without_images_of_the_classes_is_carved_from_train_as_if_absent(tmp_path):
    _folder(tmp_path / "train", {"ants": 10, "bees": 10})
    _folder(tmp_path / "validation", {"cats": 2})  # only a class train lacks
    (tmp_path / "test").mkdir()  # empty
    splits = load_data(str(tmp_path), validation_split=0.2, test_split=0.2, seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (12, 4, 4)
    skipped = dict(splits.card.skipped)
    assert "carved from train/" in skipped[str(tmp_path / "validation")]
    assert "test carved from train/" in skipped[str(tmp_path / "test")]
    assert splits.card.holdout.origin == "held_out"


def test_train_and_test_only_carves_validation_from_train(tmp_path):
    _folder(tmp_path / "train", {"ants": 5, "bees": 5})
    _folder(tmp_path / "test", {"ants": 2, "bees": 2})
    splits = load_data(str(tmp_path), validation_split=0.4)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6, 4, 4)


def test_split_is_seeded_and_independent_of_listing_order(tmp_path):
    names = [f"{i:03d}.png" for i in range(30)]
    for root, order in ((tmp_path / "a", names), (tmp_path / "b", names[::-1])):  # creation order differs
        for cls in ("ants", "bees"):
            (root / cls).mkdir(parents=True)
            for name in order:  # each file its own bytes (copies of one file would split together)
                image = Image.new("RGB", (4, 4), COLOURS[cls])
                image.putpixel((0, 0), (int(name[:3]), 0, 0))
                image.save(root / cls / name)
    relative = lambda s: [os.path.relpath(p, Path(p).parents[1]) for p in s.val.paths]  # noqa: E731
    a, b = load_data(str(tmp_path / "a"), seed=7), load_data(str(tmp_path / "b"), seed=7)
    assert relative(a) == relative(b)
    assert relative(load_data(str(tmp_path / "a"), seed=8)) != relative(a)


def test_bad_arguments_are_user_errors(tmp_path):
    root = _folder(tmp_path, {"ants": 2, "bees": 2})
    with pytest.raises(TransferkitError, match="validation_split"):
        load_data(str(root), validation_split=1.0)
    images = load_data(str(root)).train
    for kwargs in ({"image_size": 0, "batch_size": 2}, {"image_size": 8, "batch_size": -1}):
        with pytest.raises(TransferkitError, match="positive integer"):
            make_dataset(images, **kwargs)


def test_card_figures_json_and_summary(tmp_path):
    splits = load_data(
        str(_folder(tmp_path, {"ants": 9, "bees": 3}, size=(30, 10))), validation_split=0, test_split=0
    )
    card = splits.card
    assert (card.num_classes, card.num_train, card.imbalance) == (2, 12, 3.0)
    assert card.images_per_class == {"min": 3, "median": 6}
    assert card.image_sizes["width"] == {"min": 30, "median": 30, "max": 30}
    data = json.loads(json.dumps(card.to_dict()))
    assert data["counts"]["train"] == {"ants": 9, "bees": 3} and data["skipped"] == []
    assert "2 classes" in card.summary() and "3.0x" in card.summary()
    assert DatasetCard("x", ("a", "b"), {"train": {"a": 1, "b": 0}}).to_dict()["imbalance"] is None


def test_make_dataset_yields_uint8_rgb_batches(tmp_path):
    splits = load_data(str(_folder(tmp_path, {"ants": 6, "bees": 5})), validation_split=0, test_split=0)
    ds = make_dataset(splits.train, 16, 4)
    assert ds.element_spec[0].dtype == tf.uint8 and ds.element_spec[1].dtype == tf.int32
    images, labels = _batches(ds)
    assert images.shape == (11, 16, 16, 3)
    assert labels.tolist() == list(splits.train.labels)  # no shuffle: split order
    assert abs(int(images[0, 8, 8, 0]) - COLOURS["ants"][0]) <= 2  # RGB order, 0-255
    assert "Prefetch" in type(ds._input_dataset).__name__  # prefetch last, under the options


def test_pipelines_run_without_the_autotuning_thread_that_stalls_deleting_an_iterator(tmp_path):
    splits = load_data(str(_folder(tmp_path, {"ants": 4, "bees": 4})), validation_split=0, test_split=0)
    ds = make_dataset(splits.train, 8, 4)
    # what the trainer builds on it inherits the option (Keras deletes its validation iterator
    # every epoch; with autotuning on, that waited up to the iterator's age, idle)
    assert ds.options().autotune.enabled is False
    assert ds.repeat().skip(1).map(lambda x, y: (x, y)).options().autotune.enabled is False
    assert len(_batches(ds)[1]) == 8


def test_shuffle_is_seeded_and_reshuffles_every_epoch(tmp_path):
    splits = load_data(str(_folder(tmp_path, {"ants": 12, "bees": 12})), validation_split=0, test_split=0)
    for cache in (True, False):
        first = make_dataset(splits.train, 8, 24, shuffle=True, seed=5, cache=cache).repeat(2)
        second = make_dataset(splits.train, 8, 24, shuffle=True, seed=5, cache=cache).repeat(2)
        epochs_a = [y.numpy().tolist() for _, y in first]
        epochs_b = [y.numpy().tolist() for _, y in second]
        assert epochs_a == epochs_b  # same seed, same order
        assert epochs_a[0] != epochs_a[1]  # a new order each epoch
        assert sorted(epochs_a[0]) == sorted(splits.train.labels)


def test_cache_modes_give_the_same_pixels(tmp_path, monkeypatch, caplog):
    splits = load_data(str(_folder(tmp_path / "d", {"ants": 5, "bees": 4})), validation_split=0, test_split=0)
    reference, _ = _batches(make_dataset(splits.train, 12, 3, cache=False))
    file_cache = tmp_path / "cache" / "train"
    for cache in (True, file_cache):
        ds = make_dataset(splits.train, 12, 3, cache=cache)
        for _ in range(2):  # the second pass reads the cache
            np.testing.assert_array_equal(_batches(ds)[0], reference)
    assert any(p.name.startswith("train") for p in file_cache.parent.iterdir())
    monkeypatch.setattr(pipeline, "MEMORY_CACHE_MAX_BYTES", 0)  # too big for memory: no cache
    with caplog.at_level("INFO", logger="transferkit.data.pipeline"):
        ds = make_dataset(splits.train, 12, 3, cache=True)
    assert "Not caching" in caplog.text
    np.testing.assert_array_equal(_batches(ds)[0], reference)


def test_training_pixels_equal_prediction_pixels(tmp_path):
    root = _folder(tmp_path, {"ants": 3, "bees": 3}, size=(57, 31))
    splits = load_data(str(root), validation_split=0, test_split=0)
    trained, _ = _batches(make_dataset(splits.train, 24, 6))
    predicted, skipped = load_images(list(splits.train.paths), 24)
    assert skipped == []
    np.testing.assert_array_equal(trained, predicted)


def test_empty_split_gives_an_empty_dataset(tmp_path):
    splits = load_data(str(_folder(tmp_path, {"ants": 3, "bees": 3})), validation_split=0, test_split=0)
    assert len(splits.val) == 0
    assert list(make_dataset(splits.val, 8, 2)) == []
    assert ImageSet((), ()).subset([]) == ImageSet((), ())


# --- TensorFlow Datasets, through tfds' own mocking ------------------------------------------------

tfds = pytest.importorskip("tensorflow_datasets")


def test_tfds_source_uses_builder_class_names_and_decodes_records():
    with tfds.testing.mock_data(num_examples=12):
        splits = load_data("tfds:beans", validation_split=0.25)
        assert splits.class_names == ("angular_leaf_spot", "bean_rust", "healthy")
        assert len(splits.train) + len(splits.val) + len(splits.test) == 12
        assert splits.holdout.origin == "held_out"  # beans' mock has no test split: held out from train
        assert not set(splits.test.tfds.indices) & {*splits.train.tfds.indices, *splits.val.tfds.indices}
        assert splits.card.image_sizes["width"]["median"] == 500
        images, labels = _batches(make_dataset(splits.train, 32, 4, shuffle=True))
    assert images.shape == (len(splits.train), 32, 32, 3) and images.dtype == np.uint8
    assert sorted(labels.tolist()) == sorted(splits.train.labels)
    assert splits.train.paths[0].startswith("tfds:beans/train#")


def test_augment_preview_of_a_tfds_source_captions_each_record_by_its_class(tmp_path, monkeypatch):
    from transferkit.reporting import preview

    drawn = []
    monkeypatch.setattr(preview, "plot_image_grid", lambda grid, out, **kw: drawn.append(kw))
    with tfds.testing.mock_data(num_examples=12):
        preview.augment_preview("tfds:beans", count=2, copies=1, image_size=24, out=tmp_path / "g.png")
    originals = drawn[0]["titles"][::2]
    classes = "angular_leaf_spot|bean_rust|healthy"
    assert len(originals) == 2 and all(re.fullmatch(rf"({classes})/train#\d+", t) for t in originals)


def test_tfds_records_decode_by_id_as_the_training_pipeline_decodes_them():
    from transferkit.data.tfds_source import decode_records

    with tfds.testing.mock_data(num_examples=12):
        train = load_data("tfds:beans", validation_split=0.25).train
        chosen = [5, 0, 3]  # not in split order
        found = decode_records([train.paths[i] for i in chosen] + ["beans/train#1"], 24)
        assert sorted(found) == sorted(train.paths[i] for i in chosen)  # an id of another form: absent
        for i in chosen:
            expected, _ = _batches(make_dataset(train.subset([i]), 24, 1))
            np.testing.assert_array_equal(found[train.paths[i]], expected[0])


def test_a_fit_on_tfds_draws_its_gallery_and_heat_maps_from_the_records(tmp_path):
    with tfds.testing.mock_data(num_examples=24):
        run = transferkit.fit(
            "tfds:beans",
            recipe="small_similar",
            backbone="tiny",
            weights="random",
            epochs=1,
            batch_size=8,
            image_size=32,
            out=tmp_path,
            verbose=0,
        )
    assert run.metrics.num_samples > 0 and run.metrics.scored.startswith("test")
    assert (run.run_dir / "top_losses.png").exists() and (run.run_dir / "grad_cam.png").exists()
    assert json.loads((run.run_dir / "interpretation.json").read_text())["notes"] == []


def _write_beans_metadata(data_dir: Path, lengths: dict[str, int]) -> None:
    """Real TFDS metadata (dataset_info.json, ...) with these splits, written by tfds itself."""
    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE):
        builder = tfds.builder("beans")
        split_infos = [
            tfds.core.SplitInfo(name=n, shard_lengths=[k], num_bytes=0) for n, k in lengths.items()
        ]
        builder.info.set_splits(tfds.core.SplitDict(split_infos))
        target = data_dir / "beans" / str(builder.version)
        target.mkdir(parents=True)
        builder.info.write_to_directory(target)


def test_tfds_predefined_splits_and_split_argument(tmp_path):
    _write_beans_metadata(tmp_path, {"train": 9, "validation": 9, "test": 9})
    with tfds.testing.mock_data(
        num_examples=9, policy=tfds.testing.MockPolicy.USE_FILES, data_dir=str(tmp_path)
    ):
        splits = load_data("tfds:beans")
        assert (len(splits.train), len(splits.val), len(splits.test)) == (9, 9, 9)
        assert splits.val.paths[0].startswith("tfds:beans/validation#")
        images, _ = _batches(make_dataset(splits.test, 8, 5))
        assert images.shape == (9, 8, 8, 3)
        assert splits.holdout.origin == "tfds" and splits.holdout.num_test == 9
        only = load_data("tfds:beans:test", validation_split=0.3, test_split=0)
        assert only.test is None and len(only.train) + len(only.val) == 9
        assert only.train.tfds.split == "test" and len(only.train.tfds.indices) == len(only.train)
        subset, _ = _batches(make_dataset(only.val, 8, 5))
        assert subset.shape[0] == len(only.val)


def test_labelled_images_take_a_test_split_else_all_of_it_in_the_models_class_order(tmp_path):
    _write_beans_metadata(tmp_path, {"train": 9, "validation": 9, "test": 9})
    model_classes = ("healthy", "bean_rust", "angular_leaf_spot", "other")
    with tfds.testing.mock_data(
        num_examples=9, policy=tfds.testing.MockPolicy.USE_FILES, data_dir=str(tmp_path)
    ):
        images, part = labelled_images("tfds:beans", model_classes)
        assert (len(images), part) == (9, "its test split") and images.paths[0].startswith("tfds:beans/test#")
        images, part = labelled_images("tfds:beans:train", model_classes)
        assert (len(images), part) == (9, "all of it")
    root = _folder(tmp_path / "folder", {"bees": 3, "ants": 2})
    images, part = labelled_images(str(root), ("cats", "ants", "bees"), white_level=4095)
    assert (len(images), part, images.white_level) == (5, "all of it", 4095)
    assert sorted(images.labels) == [1, 1, 2, 2, 2]  # indices into the model's classes
    (root / "bees").rename(root.parent / "bees_elsewhere")
    assert labelled_images(str(root), ("ants", "bees"))[0].labels == (0, 0)  # one class is enough
    with pytest.raises(TransferkitError, match="Class 'ants' in .* is not one the model knows"):
        labelled_images(str(root), ("bees", "wasps"))


def test_labelled_images_score_every_class_of_a_test_folder_even_one_its_train_folder_lacks(tmp_path):
    root = tmp_path / "split"
    _folder(root / "train", {"ants": 3})
    _folder(root / "test", {"ants": 2, "bees": 2})  # the model knows bees; this train/ has none
    images, part = labelled_images(str(root), ("bees", "ants"))
    assert part == "its test split" and sorted(images.labels) == [0, 0, 1, 1]
    assert all("/test/" in path for path in images.paths)  # only the part scored
    _folder(root / "test", {"wasps": 1})
    with pytest.raises(TransferkitError, match="Class 'wasps' in .*test is not one the model knows"):
        labelled_images(str(root), ("bees", "ants"))


def test_class_names_compare_in_composed_unicode_whichever_way_the_folder_spells_them(tmp_path):
    import unicodedata

    decomposed, composed = unicodedata.normalize("NFD", "Café"), unicodedata.normalize("NFC", "Café")
    assert decomposed != composed
    root = _folder(tmp_path / "macos", {decomposed: 3, "tea": 3})
    splits = load_data(root, validation_split=0.0, test_split=0.0)
    assert splits.class_names == (composed, "tea")
    images, _ = labelled_images(str(root), (decomposed, "tea"))  # a model saved with the NFD name
    assert sorted(images.labels) == [0, 0, 0, 1, 1, 1]
    _folder(root, {composed: 2})  # both spellings side by side: one class
    assert load_data(root, validation_split=0.0, test_split=0.0).card.counts["train"][composed] == 5


def test_tfds_unknown_name_is_a_user_error():
    with pytest.raises(TransferkitError, match="Unknown TFDS dataset 'no_such_dataset_xyz'"):
        load_data("tfds:no_such_dataset_xyz")


@pytest.mark.network_attempt_expected
def test_tfds_offline_fails_fast_with_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(tfds.core.constants, "DATA_DIR", str(tmp_path))  # an empty TFDS data dir
    start = time.perf_counter()
    with pytest.raises(TransferkitError, match=r"offline.*tfds build beans.*TFDS_DATA_DIR"):
        load_data("tfds:beans")
    assert time.perf_counter() - start < 15


# --- High-bit-depth grey: a 12-bit detector's values in 16-bit files ------------------------------


def _twelve_bit_folder(root: Path) -> Path:
    """Two classes of 16-bit grey PNGs holding 12-bit values: dim (~600) and bright (~3000) ramps."""
    for name, level in (("dim", 600), ("bright", 3000)):
        (root / name).mkdir(parents=True)
        for i in range(6):
            ramp = np.linspace(0, level + 40 * i, 16 * 16).reshape(16, 16).astype(np.uint16)
            ramp[0, 0] = 4095 if (name, i) == ("bright", 5) else ramp[0, 0]  # the set's peak
            Image.fromarray(ramp).save(root / name / f"{i}.png")
    return root


def test_twelve_bit_values_in_sixteen_bit_files_keep_their_grey_levels(tmp_path):
    splits = load_data(str(_twelve_bit_folder(tmp_path / "xray")), validation_split=0, test_split=0)
    assert splits.card.white_level == 4095 and splits.train.white_level == 4095
    assert "12-bit values, 0-4095 scaled to 0-255" in splits.card.summary()
    assert splits.card.to_dict()["white_level"] == 4095
    images, labels = _batches(make_dataset(splits.train, 16, 4))
    bright = images[labels == splits.class_names.index("bright")]
    # 0-4095 over 0-255: the bright ramps reach ~190-200 (divided by 257 they would reach 12)
    assert 180 <= bright[..., 0].max() <= 255 and len(np.unique(bright[..., 0])) > 100
    np.testing.assert_array_equal(  # prediction decodes a file as training did
        load_images(splits.train.paths, 16, splits.train.white_level)[0], images
    )
    # without a white level (an 8-bit set, or a run from before it was recorded): 0-65535 as before
    assert load_images(splits.train.paths[-1:], 16)[0].max() <= 16


def test_big_endian_and_32_bit_grey_tiffs_count_towards_the_white_level(tmp_path):
    import tifffile

    ramp = (np.arange(16 * 16).reshape(16, 16) * 13).astype(np.uint16)  # 0-3315: 12 bits
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        tifffile.imwrite(tmp_path / name / "be.tif", ramp, byteorder=">")  # Pillow: I;16B
        Image.fromarray(ramp.astype(np.int32)).save(tmp_path / name / "i32.tif")  # Pillow: I
    splits = load_data(str(tmp_path), validation_split=0, test_split=0)
    assert splits.card.white_level == 4095 and not splits.card.skipped
    images, _ = _batches(make_dataset(splits.train, 16, 4))
    np.testing.assert_array_equal(images[0, ..., 0], np.rint(ramp * (255 / 4095)).astype(np.uint8))


def test_sixteen_bit_colour_holding_twelve_bit_values_is_reported_in_the_card_without_opencv(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(decode, "_full_depth_colour", lambda source: None)  # as without the extra
    for name, value in (("dim", 4095), ("full", 65535)):  # 12-bit values read 0-15 through the high byte
        (tmp_path / name).mkdir()
        pixels = tf.fill([8, 8, 3], tf.constant(value, tf.uint16))
        (tmp_path / name / "rgb48.png").write_bytes(tf.io.encode_png(pixels).numpy())
    splits = load_data(str(tmp_path), validation_split=0, test_split=0)
    count, example = splits.card.dim_colour
    assert count == 1 and example.endswith("dim/rgb48.png") and splits.card.white_level is None
    assert "1 16-bit colour image(s) hold only 12-bit values" in splits.card.summary()
    assert 'pip install -e ".[deep-colour]"' in splits.card.summary()
    assert splits.card.to_dict()["dim_colour"] == [1, example]


def _twelve_bit_colour(tmp_path: Path) -> Path:
    """RGB PNG, RGBA PNG and RGB TIFF in 16 bits holding 12-bit values (the RGBA half transparent)."""
    import tifffile

    ramp = np.linspace(0, 4095, 8 * 8).reshape(8, 8).astype(np.uint16)
    rgb = np.stack([ramp, 4095 - ramp, np.full_like(ramp, 2048)], axis=-1)
    alpha = np.zeros((8, 8, 1), np.uint16)
    alpha[:, :4] = 65535  # left half opaque, right half transparent
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "rgb.png").write_bytes(tf.io.encode_png(rgb).numpy())
        (tmp_path / name / "rgba.png").write_bytes(tf.io.encode_png(np.concatenate([rgb, alpha], -1)).numpy())
        tifffile.imwrite(tmp_path / name / "rgb.tif", rgb, photometric="rgb")
    return tmp_path


def test_sixteen_bit_colour_is_read_at_full_depth_and_scaled_by_the_white_level(tmp_path):
    import cv2  # noqa: F401  (the deep-colour extra; the dev extra that make test installs has it)

    splits = load_data(str(_twelve_bit_colour(tmp_path)), validation_split=0, test_split=0)
    assert splits.card.white_level == 4095 and splits.card.dim_colour is None
    assert not splits.card.skipped and "12-bit values, 0-4095 scaled" in splits.card.summary()
    ramp = np.linspace(0, 4095, 8 * 8).reshape(8, 8)
    expected = np.rint(np.stack([ramp, 4095 - ramp, np.full_like(ramp, 2048)], -1) * (255 / 4095))
    for path in splits.train.paths:
        image = decode.decode_image(path, 8, splits.train.white_level).astype(int)
        if path.endswith("rgba.png"):  # composited on white: the transparent half is white
            np.testing.assert_allclose(image[:, :4], expected[:, :4], atol=1)
            assert (image[:, 4:] == 255).all()
        else:
            np.testing.assert_allclose(image, expected, atol=1)
    # without the data set's white level: 0-65535, as Pillow's high byte would give (0-16)
    assert decode.decode_image(splits.train.paths[0], 8).max() <= 16


def test_sixteen_bit_colour_at_full_depth_is_turned_upright_once(tmp_path):
    import cv2  # noqa: F401  (the deep-colour extra, in dev)
    import tifffile

    pixels = np.zeros((4, 8, 3), np.uint16)  # 8 wide, 4 tall: left half red, right half blue
    pixels[:, :4, 0], pixels[:, 4:, 2] = 65535, 65535
    path = tmp_path / "turned.tif"
    tifffile.imwrite(path, pixels, photometric="rgb", extratags=[(274, "H", 1, 6, True)])  # rotate 90 cw
    image = decode.decode_image(path, 8).astype(int)
    assert (image[:3, :, 0] > 200).all() and (image[:3, :, 2] < 50).all()  # the left half on top
    assert (image[-3:, :, 2] > 200).all() and (image[-3:, :, 0] < 50).all()


def test_eight_bit_data_sets_have_no_white_level(tmp_path):
    splits = load_data(str(_folder(tmp_path, {"ants": 3, "bees": 3})), validation_split=0, test_split=0)
    assert splits.card.white_level is None and splits.train.white_level is None
    assert splits.card.to_dict()["white_level"] is None and "high-bit" not in splits.card.summary()
    assert splits.card.dim_colour is None


def test_a_val_folder_without_some_classes_is_said(tmp_path):
    _folder(tmp_path / "train", {"ants": 10, "bees": 10, "cats": 10})
    _folder(tmp_path / "val", {"ants": 2})
    summary = load_data(tmp_path).card.summary()
    assert (
        "val has no images of 2 of 3 classes (bees, cats): validation accuracy and early stopping" in summary
    )
    assert "test has no images" not in summary  # held out from train/, every class
    assert (
        "has no images" not in load_data(_folder(tmp_path / "whole", {"ants": 10, "bees": 10})).card.summary()
    )
