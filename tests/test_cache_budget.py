"""Out-of-core data: the cache budget, spilled features and images, their cleanup, the option, the scan."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

import transferkit
from transferkit.backbones.registry import get_backbone
from transferkit.backbones.weights import build_base
from transferkit.cli import main
from transferkit.data import cache_budget, scan
from transferkit.data.cache_budget import CacheBudget, is_mapped, parse_cache_memory, spill_folder
from transferkit.data.loading import load_data, make_dataset
from transferkit.errors import TransferkitError
from transferkit.recipes import load_builtin, with_overrides
from transferkit.testing import make_image_folder
from transferkit.training.features import (
    CachedFeatures,
    EpochSetter,
    ValidationPass,
    _validation_function,
    extract_features,
    feature_moments,
    feature_step,
    fit_inputs,
)
from transferkit.training.model import build_classifier
from transferkit.training.optimizers import compile_classifier


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data") / "shapes", classes=3, per_class=12, size=16)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("512MB", 512 * 10**6), ("2GB", 2 * 10**9), ("1.5GiB", 3 << 29), (" 64 kib ", 64 << 10), (0, 0)],
)
def test_sizes_parse_in_decimal_and_binary_units(text, expected):
    assert parse_cache_memory(text) == expected


def test_auto_is_a_share_of_the_machine_memory(monkeypatch):
    monkeypatch.setattr(cache_budget, "_machine_memory", lambda: (16 << 30, 2 << 30))
    assert parse_cache_memory("auto") == parse_cache_memory("AUTO") == 1 << 30  # half of the 2 GiB free
    monkeypatch.setattr(cache_budget, "_machine_memory", lambda: (16 << 30, 12 << 30))
    assert parse_cache_memory("auto") == 4 << 30  # a quarter of the 16 GiB
    monkeypatch.setattr(cache_budget, "_machine_memory", lambda: (None, None))
    assert parse_cache_memory("auto") == cache_budget.FALLBACK_MEMORY


@pytest.mark.parametrize("bad", ["2XB", "lots", "", "-1GB", "1e9", "GB", -5, True, 1.5])
def test_a_bad_size_says_what_to_write(bad):
    with pytest.raises(TransferkitError, match=r"not a memory size.*'512MB', '2GB'.*Fix cache_memory=\.\.\."):
        parse_cache_memory(bad)


def test_the_recipe_key_and_override_are_checked():
    recipe = with_overrides(load_builtin("small_similar"), cache_memory="256MB")
    assert recipe.data.cache_memory == "256MB" and load_builtin("small_similar").data.cache_memory == "auto"
    with pytest.raises(TransferkitError, match="data.cache_memory"):
        with_overrides(recipe, cache_memory="half")


def test_an_array_is_in_memory_under_the_budget_and_memory_mapped_over_it(tmp_path):
    budget = CacheBudget(1000, tmp_path / "cache")
    small = budget.array((10, 20))  # 800 bytes: fits
    large = budget.array((2, 10, 20))  # 1,600 more: spills
    assert not is_mapped(small) and not isinstance(small, np.memmap)
    assert isinstance(large, np.memmap) and is_mapped(large[1]) and budget.remaining == 200
    values = np.random.default_rng(0).normal(size=(2, 10, 20)).astype("float32")
    small[:], large[:] = values[0], values
    cache_budget.release_pages(large)  # written back to the file; reads come from there
    assert np.array_equal(large, values) and np.array_equal(small, values[0])
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".npy"]


def test_without_a_folder_nothing_spills(tmp_path):
    budget = CacheBudget(0, folder=None)
    assert not is_mapped(budget.array((4, 4))) and budget.image_cache(10) is None


def test_nothing_spills_beyond_half_the_free_disk(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=1000, used=900, free=100))
    budget = CacheBudget(0, tmp_path / "cache")
    assert is_mapped(budget.array((10,), "int8"))  # 10 of the 50 bytes allowed
    assert budget.image_cache(41) is None and not is_mapped(budget.array((41,), "int8"))
    assert "Not spilling" in caplog.text and budget.image_cache(40) is not None


def test_extract_features_over_the_budget_writes_a_memmap_equal_to_the_in_memory_pass(folder, tmp_path):
    spec = get_backbone("tiny")
    base, _ = build_base(spec, 16, "random")
    step = feature_step(build_classifier(spec, base, 3, load_builtin("small_similar").head).extractor)
    dataset = make_dataset(load_data(str(folder), test_split=0).train, 16, 5, cache=False)
    expected, labels = extract_features(step, dataset, feature_dim=64, verbose=0)
    store = CacheBudget(0, tmp_path / "cache").array((len(labels) + 7, expected.shape[1]))  # room to spare
    features, same_labels = extract_features(step, dataset, feature_dim=64, verbose=0, out=store)
    assert is_mapped(features) and features.shape == expected.shape
    np.testing.assert_allclose(features, expected, rtol=1e-6)
    assert np.array_equal(same_labels, labels)
    with pytest.raises(ValueError, match="holds 3 rows"):
        extract_features(step, dataset, feature_dim=64, verbose=0, out=np.zeros((3, 64), "float32"))


def test_cached_features_serve_the_same_batches_from_a_memmap(tmp_path, monkeypatch):
    values = np.random.default_rng(1).normal(size=(2, 37, 6)).astype("float32")
    labels = np.arange(37, dtype="int32") % 3
    store = CacheBudget(0, tmp_path).array(values.shape)
    store[:] = values
    monkeypatch.setattr("transferkit.training.features.RELEASE_BYTES", 100)  # release pages often
    on_disk, in_memory = CachedFeatures(store, labels, 8, 3), CachedFeatures(values, labels, 8, 3)
    for epoch in range(3):
        on_disk.set_epoch(epoch), in_memory.set_epoch(epoch)
        for index in range(len(in_memory)):
            (x, y), (x_ref, y_ref) = on_disk[index], in_memory[index]
            assert not is_mapped(x) and np.array_equal(x, x_ref) and np.array_equal(y, y_ref)


def test_cached_features_as_a_dataset_serve_the_same_batches_from_any_epoch_on():
    values = np.random.default_rng(2).normal(size=(3, 37, 6)).astype("float32")
    labels = np.arange(37, dtype="int32") % 4
    reference = CachedFeatures(values, labels, 8, seed=5)
    dataset = CachedFeatures(values, labels, 8, seed=5).as_dataset(first_epoch=2)
    assert dataset.options().autotune.enabled is False  # see pipeline.without_autotune
    batches = iter(dataset)
    for epoch in range(2, 7):  # past the passes, so copies repeat in a new order
        reference.set_epoch(epoch)
        for index in range(len(reference)):
            x, y = next(batches)
            x_ref, y_ref = reference[index]
            assert np.array_equal(x.numpy(), x_ref) and np.array_equal(y.numpy(), y_ref)


def test_fit_inputs_stream_a_memmap_batch_by_batch_as_the_copy_in_memory_serves_it(tmp_path):
    values = np.random.default_rng(2).normal(size=(2, 20, 4)).astype("float32")
    labels = np.arange(20, dtype="int32") % 2
    validation = (values[0, :5], labels[:5])
    in_memory = CachedFeatures(values, labels, 8, 0)
    arguments, callbacks = fit_inputs(in_memory, validation, first_epoch=3)
    assert arguments["steps_per_epoch"] == 3 and "validation_data" not in arguments
    assert isinstance(arguments["x"], tf.data.Dataset) and [type(c) for c in callbacks] == [ValidationPass]
    store = CacheBudget(0, tmp_path).array(values.shape)
    store[:] = values
    on_disk = CachedFeatures(store, labels, 8, 0)
    streamed, callbacks = fit_inputs(on_disk, validation, first_epoch=3)
    assert streamed["steps_per_epoch"] == 3 and [type(c) for c in callbacks] == [ValidationPass]
    assert isinstance(streamed["x"], tf.data.Dataset) and on_disk.epoch == 0  # no copy, no epoch to set
    served = [batch for batch in streamed["x"].take(7)]  # epochs 3 and 4, and the first batch of 5
    copied = [batch for batch in arguments["x"].take(7)]
    indexed = [on_disk.batch(epoch, index) for epoch in (3, 4) for index in range(3)] + [on_disk.batch(5, 0)]
    for (x, y), (x_copy, y_copy), (x_index, y_index) in zip(served, copied, indexed, strict=True):
        np.testing.assert_array_equal(x, x_copy)
        np.testing.assert_array_equal(x, x_index)
        np.testing.assert_array_equal(y, y_copy)
        np.testing.assert_array_equal(y, y_index)
    assert len(served[2][1]) == 4  # the epoch's last, short batch
    without_validation, callbacks = fit_inputs(on_disk, (values[0, :0], labels[:0]))
    assert without_validation["x"] is on_disk and [type(c) for c in callbacks] == [EpochSetter]


def test_the_validation_pass_logs_what_fit_with_validation_data_logs():
    """Same batches through the same compiled test step: the same val_ figures, epoch by epoch."""
    rng = np.random.default_rng(4)
    values, labels = rng.normal(size=(2, 45, 6)).astype("float32"), np.arange(45, dtype="int32") % 3
    validation = (rng.normal(size=(21, 6)).astype("float32"), np.arange(21, dtype="int32") % 3)

    def history(use_callback: bool) -> dict:
        keras.utils.set_random_seed(0)
        inputs = keras.Input((6,))
        model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
        compile_classifier(model, keras.optimizers.Adam(0.05), 3, label_smoothing=0.1)
        train = CachedFeatures(values, labels, 8, seed=1)
        if use_callback:
            arguments, callbacks = fit_inputs(train, validation)
        else:
            val = tf.data.Dataset.from_tensor_slices(validation).batch(8)
            arguments, callbacks = (
                dict(x=train.as_dataset(), steps_per_epoch=len(train), validation_data=val),
                [],
            )
        return model.fit(epochs=4, callbacks=callbacks, verbose=0, **arguments).history

    passed, fitted = history(True), history(False)
    assert sorted(passed) == sorted(fitted) and "val_loss" in passed and "val_accuracy" in passed
    for key in passed:
        np.testing.assert_allclose(passed[key], fitted[key], rtol=1e-6, err_msg=key)


def test_the_validation_pass_traces_once_per_compile_and_follows_a_recompile():
    """The augmentation check's two fits and the phase after them share one compile: one trace.
    A compile makes new metrics, and the figures come from them (not from a trace of the old ones)."""
    rng = np.random.default_rng(5)
    values, labels = rng.normal(size=(2, 40, 6)).astype("float32"), np.arange(40, dtype="int32") % 3
    validation = (rng.normal(size=(19, 6)).astype("float32"), np.arange(19, dtype="int32") % 3)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    train = CachedFeatures(values, labels, 8, seed=1)

    def fit() -> dict:
        arguments, callbacks = fit_inputs(train, validation)
        logged = model.fit(epochs=2, callbacks=callbacks, verbose=0, **arguments).history
        evaluated = model.evaluate(*validation, batch_size=8, verbose=0, return_dict=True)
        np.testing.assert_allclose(logged["val_loss"][-1], evaluated["loss"], rtol=1e-6)
        np.testing.assert_allclose(logged["val_accuracy"][-1], evaluated["accuracy"], rtol=1e-6)
        return logged

    compile_classifier(model, keras.optimizers.Adam(0.05), 3, label_smoothing=0.2)
    fit(), fit()
    first = _validation_function(model)
    assert first.experimental_get_tracing_count() == 1
    compile_classifier(model, keras.optimizers.Adam(0.05), 3, label_smoothing=0.0)  # another loss
    fit()
    assert _validation_function(model) is not first
    assert _validation_function(model).experimental_get_tracing_count() == 1


def test_feature_moments_read_a_strided_store_in_chunks(monkeypatch):
    monkeypatch.setattr("transferkit.training.features.MOMENT_CHUNK_ROWS", 7)
    values = np.random.default_rng(2).normal(5, 3, size=(3, 50, 4))
    mean, variance, count = feature_moments(values[:, :41])  # not contiguous: one block per pass
    rows = values[:, :41].reshape(-1, 4)
    assert count == 123
    np.testing.assert_allclose(mean, rows.mean(0), rtol=1e-5)
    np.testing.assert_allclose(variance, rows.var(0), rtol=1e-5)


def test_images_over_the_budget_go_to_a_file_cache_with_the_same_pixels(folder, tmp_path):
    train = load_data(str(folder), test_split=0).train
    budget = CacheBudget(16 * 16 * 3 * len(train) - 1, tmp_path / "cache")  # one byte short
    expected = np.concatenate([x for x, _ in make_dataset(train, 16, 4, cache=False)])
    for _ in range(2):  # the first pass writes the file cache, the second reads it
        spilled = np.concatenate([x for x, _ in make_dataset(train, 16, 4, cache=budget)])
        assert np.array_equal(spilled, expected)
    assert any(p.name.startswith("images-") for p in (tmp_path / "cache").iterdir())
    assert budget.image_cache(16 * 16 * 3 * len(train) - 2) == ""  # what fits stays in memory


def test_a_shuffled_split_in_a_file_cache_mixes_the_classes_in_every_batch(folder, tmp_path):
    train = load_data(str(folder), test_split=0).train  # scanned class by class
    budget = CacheBudget(16 * 16 * 3 * len(train) - 1, tmp_path / "cache")  # a file; buffer a quarter
    epochs = []
    for _ in range(2):
        dataset = make_dataset(train, 16, 6, shuffle=True, seed=3, cache=budget)
        epochs.append([np.concatenate([y for _, y in dataset]) for _ in range(2)])
    for labels in epochs[0]:
        assert sorted(labels) == sorted(train.labels)  # every image once an epoch
        assert min(len(set(labels[i : i + 6])) for i in range(0, len(labels), 6)) >= 2  # no one-class batch
    assert not np.array_equal(*epochs[0])  # a new order every epoch
    for first, second in zip(*epochs, strict=True):
        np.testing.assert_array_equal(first, second)  # seeded: the same orders again


def test_a_shuffled_split_gives_the_same_batches_in_memory_and_spilled_whatever_the_budget(
    folder, tmp_path, monkeypatch
):
    from transferkit.data import pipeline

    train = load_data(str(folder), test_split=0).train
    split_bytes = 16 * 16 * 3 * len(train)
    monkeypatch.setattr(pipeline, "SHUFFLE_BUFFER_MAX_BYTES", 16 * 16 * 3 * 6)  # 6 images: part of the split
    orders = []
    budgets = [CacheBudget(2 * split_bytes, None), CacheBudget(split_bytes - 1, tmp_path / "cache")]
    budgets.append(CacheBudget(1000, tmp_path / "tiny"))  # under one image: the buffer stays as it is
    for budget in budgets:
        dataset = make_dataset(train, 16, 6, shuffle=True, seed=3, cache=budget)
        orders.append([np.concatenate([x for x, _ in dataset]) for _ in range(2)])
    assert any(p.name.startswith("images-") for p in (tmp_path / "cache").iterdir())  # the second spilled
    for in_memory, *spilled in zip(*orders, strict=True):
        for other in spilled:
            np.testing.assert_array_equal(in_memory, other)


def test_spill_folder_is_removed_on_exit_and_on_an_error(tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "stale.npy").write_bytes(b"left by a killed run")
    with pytest.raises(RuntimeError), spill_folder(tmp_path) as spilled:
        assert not spilled.exists()  # the stale one went on entry
        spilled.mkdir()
        raise RuntimeError("boom")
    assert not (tmp_path / "cache").exists()


def _fit(folder, out, **options):
    return transferkit.fit(
        str(folder), recipe="small_similar", backbone="tiny", weights="random", epochs=2, batch_size=8,
        cache_memory="1KB", out=out, verbose=0, report=False, **options,
    )  # fmt: skip


def test_fit_spills_over_a_small_budget_and_removes_the_files(folder, tmp_path):
    seen = []

    def listener(event):  # during training: the spilled caches exist
        spilled = tmp_path / "r" / "cache"
        if type(event).__name__ == "EpochEnded" and spilled.exists():
            seen.extend(p.name for p in spilled.iterdir())

    run = _fit(folder, tmp_path, name="r", progress=listener)
    assert any(name.startswith("train-") for name in seen) and any(n.startswith("images-") for n in seen)
    assert not (run.run_dir / "cache").exists() and run.recipe.data.cache_memory == "1KB"
    assert 'cache_memory = "1KB"' in (run.run_dir / "recipe.toml").read_text()


def test_fit_removes_the_spilled_files_after_an_error(folder, tmp_path):
    def failing(event):
        if type(event).__name__ == "EpochEnded":
            assert any((tmp_path / "r" / "cache").iterdir())
            raise RuntimeError("stopped on purpose")

    with pytest.raises(RuntimeError, match="on purpose"):
        _fit(folder, tmp_path, name="r", progress=failing)
    assert (tmp_path / "r" / "run.json").exists() and not (tmp_path / "r" / "cache").exists()


def test_cli_cache_memory_reaches_the_recipe_and_a_bad_value_exits_2(folder, tmp_path):
    common = ["fit", "--data", str(folder), "--recipe", "small_similar", "--backbone", "tiny",
              "--weights", "random", "--out", str(tmp_path), "--dry-run", "-q"]  # fmt: skip
    result = CliRunner().invoke(main, [*common, "--cache-memory", "512MB"])
    assert result.exit_code == 0, result.output
    assert 'cache_memory = "512MB"' in result.output
    result = CliRunner().invoke(main, [*common, "--cache-memory", "lots"])
    assert result.exit_code == 2 and "Invalid value for '--cache-memory'" in result.output
    assert "'lots' is not a memory size" in result.output and "recipe" not in result.output


def test_scan_of_thousands_of_files_streams_in_chunks_and_skips_bad_ones(tmp_path, monkeypatch):
    tiny = make_image_folder(tmp_path / "seed", classes=1, per_class=1, size=4) / "class_0" / "img_0.png"
    for label in range(3):
        (tmp_path / "data" / f"c{label}").mkdir(parents=True)
        for index in range(1000):
            shutil.copyfile(tiny, tmp_path / "data" / f"c{label}" / f"{index:04d}.png")
    (tmp_path / "data" / "c1" / "0500.png").write_bytes(b"")
    (tmp_path / "data" / "c2" / "0007.png").write_bytes(b"not a png")
    monkeypatch.setattr(scan, "SCAN_CHUNK", 64)  # many chunks, and a partial last one
    scanned = scan.scan_split(tmp_path / "data")
    assert [len(scanned.images[c]) for c in ("c0", "c1", "c2")] == [1000, 999, 999]
    assert scanned.images["c1"][499][0].endswith("0499.png") and scanned.images["c1"][500][0].endswith(
        "0501.png"
    )
    reasons = dict(scanned.skipped)
    assert reasons[str(tmp_path / "data" / "c1" / "0500.png")] == "empty file (0 bytes)"
    assert "0007.png" in " ".join(reasons) and all(size == (4, 4) for _, size in scanned.images["c0"])
