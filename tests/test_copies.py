"""Byte-identical copies: kept in one split, counted on the dataset card, never a silent leak."""

from __future__ import annotations

import shutil
from collections import defaultdict

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from transferkit.data.copies import copy_groups, find_copies
from transferkit.data.loading import load_data, stratified_split
from transferkit.data.splits import hold_out_test
from transferkit.testing import make_image_folder


def _copy(folder, name, times):
    """``times`` copies of ``folder/name`` beside it; their paths."""
    source = folder / name
    copies = [folder / f"copy_{i}_{name}" for i in range(times)]
    for path in copies:
        shutil.copyfile(source, path)
    return copies


def test_copies_of_a_file_go_to_one_split_and_the_card_counts_them(tmp_path):
    root = make_image_folder(tmp_path / "data", classes=2, per_class=20)
    for label in range(2):
        for index in range(4):  # four files of each class, each copied three times: 24 copies
            _copy(root / f"class_{label}", f"img_{index}.png", 3)
    splits = load_data(root, validation_split=0.2, test_split=0.2, seed=0)
    where = {}
    for split, images in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
        for path in images.paths:
            where[path] = split
    for label in range(2):
        for index in range(4):
            name = f"img_{index}.png"
            family = [
                root / f"class_{label}" / name,
                *(root / f"class_{label}" / f"copy_{i}_{name}" for i in range(3)),
            ]
            assert len({where[str(path)] for path in family}) == 1, family  # all four in one split
    assert len(where) == 2 * 32  # nothing dropped: copies stay, together
    card = splits.card
    assert card.copies.within_class == 24 and card.copies.across_classes == 0
    assert (
        "copies: 24 files are byte-identical to another of their class; each set kept in one split"
        in card.summary()
    )
    assert card.to_dict()["copies"]["within_class"] == 24


def test_without_copies_the_splits_are_the_plain_ones(tmp_path):
    """Grouping changes nothing where every file is unique: the same test and validation images."""
    root = make_image_folder(tmp_path / "data", classes=3, per_class=15)
    splits = load_data(root, validation_split=0.2, test_split=0.15, seed=5)
    paths = sorted(map(str, root.rglob("*.png")))
    labels = [int(path.rsplit("class_", 1)[1][0]) for path in paths]
    _, test, _ = hold_out_test(labels, 0.15, 5)
    assert sorted(splits.test.paths) == [paths[i] for i in test] and not splits.card.copies
    assert "copies:" not in splits.card.summary()


def test_a_file_under_two_classes_and_a_test_folder_copy_are_reported(tmp_path):
    root = make_image_folder(tmp_path / "data", classes=2, per_class=6, splits=("train", "test"))
    shutil.copyfile(root / "train/class_0/img_0.png", root / "train/class_1/stray.png")  # labels disagree
    shutil.copyfile(root / "train/class_1/img_2.png", root / "test/class_1/again.png")  # test sees training
    card = load_data(root, validation_split=0.2, seed=0).card
    assert card.copies.across_classes == 2 and card.copies.in_training == {"test": 1}
    summary = card.summary()
    assert "copies: 2 files also filed under another class (e.g." in summary
    assert "copies: 1 of the test/ folder's images are byte-identical to images in train/" in summary


def test_copy_groups_are_per_class_and_none_without_copies():
    assert copy_groups([0, 1, 2], ["a", "a", "a"]) is None  # same bytes, other classes: not grouped
    assert copy_groups([0, 0], ["a", None]) is None
    assert copy_groups([0, 0, 1, 0], ["a", "b", "a", "a"]).tolist() == [0, 1, 2, 0]
    assert find_copies(["x"], [0], {}) == find_copies(["x"], [0], {"x": "d"})  # nothing to count


@settings(max_examples=200, deadline=None)
@given(
    labels=st.lists(st.integers(0, 3), min_size=1, max_size=120),
    contents=st.data(),
    validation_split=st.floats(0.0, 0.9),
    seed=st.integers(0, 2**32 - 1),
)
def test_grouped_split_keeps_groups_whole_and_is_the_plain_split_for_singletons(
    labels, contents, validation_split, seed
):
    digests = contents.draw(st.lists(st.sampled_from("abcdefgh"), min_size=len(labels), max_size=len(labels)))
    groups = copy_groups(labels, digests)
    train, val = stratified_split(labels, validation_split, seed, groups)
    assert sorted([*train, *val]) == list(range(len(labels)))
    side = {int(i): "train" for i in train} | {int(i): "val" for i in val}
    members = defaultdict(set)
    for i, group in enumerate(range(len(labels)) if groups is None else groups):
        members[int(group)].add(side[i])
    assert all(len(sides) == 1 for sides in members.values())  # no group straddles the split
    plain_train, plain_val = stratified_split(labels, validation_split, seed)
    for label in set(labels):  # never more validation images than the plain split, and train keeps one
        assert sum(labels[i] == label for i in val) <= sum(labels[i] == label for i in plain_val)
        assert any(labels[i] == label for i in train)
    singletons = np.arange(len(labels))
    assert all(
        np.array_equal(a, b)
        for a, b in zip(
            stratified_split(labels, validation_split, seed, singletons),
            (plain_train, plain_val),
            strict=True,
        )
    )
