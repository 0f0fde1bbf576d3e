"""Property tests: decoding arbitrary bytes only ever succeeds or skips cleanly, and the
stratified split is a disjoint, complete, per-class, seeded partition."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from transferkit.data.decode import UnusableImage, decode_image
from transferkit.data.loading import ImageSet, make_dataset, stratified_split


def _encoded(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (12, 10, 3), np.uint8)).save(buf, fmt)
    return buf.getvalue()


REAL = {fmt: _encoded(fmt) for fmt in ("JPEG", "PNG", "GIF", "BMP", "WEBP")}


def _decodes_or_skips(data: bytes) -> None:
    try:
        image = decode_image(data, 6)
    except UnusableImage as err:
        assert str(err)  # a reason, never an empty message
    else:
        assert image.shape == (6, 6, 3) and image.dtype == np.uint8


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_decode_or_skip(data):
    _decodes_or_skips(data)


@settings(max_examples=400, deadline=None)
@given(
    fmt=st.sampled_from(sorted(REAL)),
    cut=st.integers(min_value=0, max_value=4096),
    flips=st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), max_size=8),
    tail=st.binary(max_size=64),
)
def test_damaged_real_images_decode_or_skip(fmt, cut, flips, tail):
    data = bytearray(REAL[fmt][: max(cut, 16)])  # keep the real header, truncate the rest
    for position, value in flips:
        if position < len(data):
            data[position] = value
    _decodes_or_skips(bytes(data) + tail)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=4))
def test_pipeline_survives_garbage_files(tmp_path, blobs):
    paths = []
    for i, blob in enumerate(blobs):
        path = tmp_path / f"{len(list(tmp_path.iterdir()))}-{i}.png"
        path.write_bytes(blob)
        paths.append(str(path))
    ds = make_dataset(ImageSet(tuple(paths), (0,) * len(paths)), 8, 2, cache=False)
    assert sum(int(y.shape[0]) for _, y in ds) <= len(paths)


labels_strategy = st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=300)
fraction = st.floats(min_value=0.0, max_value=0.9)


@settings(max_examples=300, deadline=None)
@given(labels=labels_strategy, validation_split=fraction, seed=st.integers(0, 2**32 - 1))
def test_split_is_a_stratified_partition(labels, validation_split, seed):
    train, val = stratified_split(labels, validation_split, seed)
    assert not set(train) & set(val)  # disjoint
    assert sorted([*train, *val]) == list(range(len(labels)))  # complete
    assert list(train) == sorted(train) and list(val) == sorted(val)
    per_class = Counter(labels)
    train_counts = Counter(labels[i] for i in train)
    val_counts = Counter(labels[i] for i in val)
    for label, n in per_class.items():
        assert train_counts[label] >= 1  # every class keeps training data
        if validation_split > 0 and n >= 2:
            assert val_counts[label] >= 1  # and is represented in validation
        assert abs(val_counts[label] - n * validation_split) <= 1 or val_counts[label] in (1, n - 1)


@settings(max_examples=100, deadline=None)
@given(labels=labels_strategy, validation_split=fraction, seed=st.integers(0, 2**32 - 1))
def test_split_is_deterministic_under_seed(labels, validation_split, seed):
    first = stratified_split(labels, validation_split, seed)
    second = stratified_split(list(labels), validation_split, seed)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


@settings(max_examples=100, deadline=None)
@given(labels=labels_strategy, seed=st.integers(0, 2**32 - 1), extra=st.integers(0, 6))
def test_other_classes_do_not_move_a_class_split(labels, seed, extra):
    """Adding images of one class leaves every other class's validation images unchanged."""
    before = stratified_split(labels, 0.3, seed)[1]
    after = stratified_split([*labels, extra, extra], 0.3, seed)[1]
    kept = lambda idx: {int(i) for i in idx if i < len(labels) and labels[i] != extra}  # noqa: E731
    assert kept(before) == kept(after)


def test_split_with_a_single_image_per_class_keeps_it_for_training():
    train, val = stratified_split([0, 1, 2], 0.5, seed=0)
    assert list(train) == [0, 1, 2] and len(val) == 0


@pytest.mark.parametrize("seed", [0, 1])
def test_different_seeds_usually_differ(seed):
    labels = [0] * 50 + [1] * 50
    assert not np.array_equal(
        stratified_split(labels, 0.2, seed)[1], stratified_split(labels, 0.2, seed + 10)[1]
    )
