"""benchmarks/frozen_base.py compares like with like: transferkit trains on every image plain Keras does."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import frozen_base  # noqa: E402

from transferkit.data.loading import load_data  # noqa: E402
from transferkit.testing import make_image_folder  # noqa: E402


def test_fit_holds_no_test_split_out_of_the_benchmarks_train_folder(tmp_path):
    recipe = frozen_base.training_recipe(frozen_base.parse_args([]))
    folder = make_image_folder(tmp_path / "split", classes=3, per_class=10, splits=("train", "val"))
    splits = load_data(
        str(folder), validation_split=recipe.data.validation_split, test_split=recipe.data.test_split
    )
    train_images = sum(1 for _ in (folder / "train").rglob("*.png"))
    assert splits.card.num_train == train_images  # plain Keras fits all of train/ too
    assert splits.test is None or not splits.test.labels
