"""Each fact defined once (quadrants, backbone weight sources), public names, no global state left behind."""

from __future__ import annotations

import ast
import importlib
import json
import logging
import pkgutil
import types
from pathlib import Path

import keras
import numpy as np
import pytest

import transferkit
from transferkit.backbones.registry import BACKBONES
from transferkit.backbones.weights.converters import CONVERTERS
from transferkit.selection.quadrants import QUADRANTS
from transferkit.testing import make_image_folder

PACKAGE = Path(transferkit.__file__).parent
REPO = PACKAGE.parent


def _modules() -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text(encoding="utf-8")) for path in PACKAGE.rglob("*.py")}


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the string constants that are docstrings."""
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            if isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                found.add(id(body[0].value))
    return found


def test_each_quadrant_name_is_written_only_in_the_quadrant_table():
    elsewhere = []
    for path, tree in _modules().items():
        if path == PACKAGE / "selection" / "quadrants.py":
            continue
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in QUADRANTS and id(node) not in docstrings:
                elsewhere.append(f"{path.relative_to(REPO)}:{node.lineno} {node.value!r}")
    assert not elsewhere, elsewhere


def test_every_backbone_weight_source_is_complete_and_lives_in_its_spec():
    packaged = {
        name: s.imagenet.packaged for name, s in BACKBONES.items() if s.imagenet and s.imagenet.packaged
    }
    assert set(packaged) == {"mobilenet_v2_torchvision", "mobilenet"}
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    for name, source in packaged.items():
        assert source.distribution and source.version and source.relative_path, name
        assert source.converter in CONVERTERS, f"{name}: unknown converter {source.converter!r}"
        assert source.sha256 is None or len(source.sha256) == 64, name
        assert f"{source.distribution}=={source.version}" in makefile, "make setup must install it"
    for name, spec in BACKBONES.items():
        if spec.imagenet is not None and spec.imagenet.kind == "keras":
            assert spec.imagenet.keras.url.startswith("https://"), name
    assert BACKBONES["tiny"].imagenet is None


def test_no_other_module_keeps_a_table_keyed_by_backbone_names():
    names = set(BACKBONES) - {"tiny"}  # "tiny" is also a plain word in messages and tests
    tables = []
    for path, tree in _modules().items():
        if path == PACKAGE / "backbones" / "registry.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict):
                keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
                if keys & names:
                    tables.append(f"{path.relative_to(REPO)}:{node.lineno} {sorted(keys & names)}")
            elif isinstance(node, ast.Compare) and isinstance(node.left, ast.Attribute):
                # an if-chain on a backbone's name: `spec.name == "mobilenet"`
                if node.left.attr == "name" and any(
                    isinstance(c, ast.Constant) and c.value in names for c in node.comparators
                ):
                    tables.append(f"{path.relative_to(REPO)}:{node.lineno} a test of the name")
    assert not tables, tables


def test_public_names_stay_functions_after_every_submodule_is_imported():
    for module in pkgutil.walk_packages(transferkit.__path__, "transferkit."):
        importlib.import_module(module.name)
    modules = [
        name for name in transferkit.__all__ if isinstance(getattr(transferkit, name), types.ModuleType)
    ]
    assert not modules, modules
    assert callable(transferkit.evaluate) and callable(transferkit.fit)


def test_decode_failures_are_logged_once_per_dataset_not_once_per_process(tmp_path, caplog):
    from transferkit.data.loading import load_data
    from transferkit.data.pipeline import make_dataset

    folder = make_image_folder(tmp_path / "data", classes=2, per_class=4)
    split = load_data(str(folder), validation_split=0.25, test_split=0.0, seed=0).train
    broken = Path(split.paths[0])
    broken.write_bytes(b"not an image any more")  # changed after the scan
    with caplog.at_level(logging.WARNING, logger="transferkit.data.pipeline"):
        for _ in range(2):  # a second dataset over the same files warns again
            dataset = make_dataset(split, 16, 4, cache=False)
            for _ in range(2):  # a second epoch does not
                list(dataset)
    warned = [r for r in caplog.records if "failed to decode after the scan" in r.getMessage()]
    assert len(warned) == 2 and str(broken) in warned[0].getMessage()


def test_auto_precision_is_float32_for_a_random_base_whose_features_float16_cannot_hold():
    from transferkit.backbones.registry import get_backbone
    from transferkit.backbones.weights import build_base
    from transferkit.training.device import precision_for

    assert precision_for("auto", "random") == "float32"
    assert precision_for("auto", "imagenet") == "auto"  # mixed_float16 where a GPU is
    assert precision_for("mixed_float16", "random") == "mixed_float16"  # asked for: kept
    keras.utils.set_random_seed(0)
    base, _ = build_base(get_backbone("mobilenet_v2_torchvision"), 64, "random")
    images = np.random.default_rng(0).normal(size=(4, 64, 64, 3)).astype("float32")
    features = keras.ops.convert_to_numpy(base(images, training=False))
    assert 0 < np.abs(features).max() < 6e-8  # below float16's smallest number: all of them 0 there
    assert not np.float16(features).any()


def test_fit_leaves_the_global_precision_policy_as_it_found_it(tmp_path):
    folder = make_image_folder(tmp_path / "data", classes=2, per_class=6)
    before = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        run = transferkit.fit(
            str(folder),
            size="small",
            similar=True,
            backbone="tiny",
            weights="random",
            image_size=16,
            epochs=1,
            batch_size=4,
            precision="float32",
            out=tmp_path / "runs",
            verbose=0,
        )
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    finally:
        keras.mixed_precision.set_global_policy(before)
    device = json.loads((run.run_dir / "run.json").read_text(encoding="utf-8"))["device"]
    assert "float32 precision" in device, device


@pytest.mark.parametrize(
    "path", ["transferkit/backbones/weights/keras_files.py", "transferkit/data/decode.py"]
)
def test_no_patching_socket_timeouts_or_import_time_warning_filters(path):
    source = (REPO / path).read_text(encoding="utf-8")
    for banned in ("mock", "setdefaulttimeout", "filterwarnings("):
        assert banned not in source, f"{path} uses {banned}"
