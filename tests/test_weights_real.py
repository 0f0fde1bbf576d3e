"""The converted ImageNet weights are real: they classify real ImageNet validation photos.

foolbox ships 20 labelled ImageNet validation photos (``imagenet_{i}_{label}.jpg``). Correctly
converted MobileNets get 17-18 of 20 top-1 and all 20 top-5; random init gets about none.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferkit.backbones.registry import get_backbone
from transferkit.backbones.weights import build_base, cache

pytestmark = pytest.mark.slow


def _photos() -> tuple[np.ndarray, np.ndarray]:
    spec = importlib.util.find_spec("foolbox")
    if spec is None:
        pytest.skip("foolbox (its 20 ImageNet photos) is not installed (run `make setup`)")
    files = sorted(Path(next(iter(spec.submodule_search_locations)), "data").glob("imagenet_*.jpg"))
    labels = np.array([int(re.fullmatch(r"imagenet_\d+_(\d+)\.jpg", f.name).group(1)) for f in files])
    images = [np.asarray(Image.open(f).convert("RGB").resize((224, 224), Image.BILINEAR)) for f in files]
    return np.stack(images).astype(np.float32), labels


def _preprocess(pixels: np.ndarray, mode: str) -> np.ndarray:
    if mode == "torch":
        return (pixels / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    assert mode == "tf"
    return pixels / 127.5 - 1.0


@pytest.fixture(scope="module")
def photos():
    images, labels = _photos()
    assert len(labels) == 20
    return images, labels


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(cache.CACHE_ENV, str(tmp_path_factory.mktemp("cache")))
        yield


def _scores(backbone: str, weights: str, photos) -> tuple[int, int, str]:
    images, labels = photos
    spec = get_backbone(backbone)
    model, description = build_base(spec, weights=weights, include_top=True)
    probabilities = model.predict(_preprocess(images, spec.preprocessing).astype(np.float32), verbose=0)
    top5 = np.argsort(-probabilities, axis=1)[:, :5]
    return int((top5[:, 0] == labels).sum()), int((top5 == labels[:, None]).any(axis=1).sum()), description


@pytest.mark.parametrize("backbone", ["mobilenet_v2_torchvision", "mobilenet"])
def test_converted_imagenet_weights_classify_real_photos(backbone, photos):
    packaged = get_backbone(backbone).imagenet.packaged
    if packaged.locate() is None:
        pytest.skip(f"{packaged.distribution} is not installed (run `make setup`)")
    top1, top5, description = _scores(backbone, "imagenet", photos)
    assert description.startswith("ImageNet weights:"), description
    assert top1 >= 17 and top5 == 20, f"{backbone}: top-1 {top1}/20, top-5 {top5}/20"
    random_top1, random_top5, _ = _scores(backbone, "random", photos)
    assert random_top1 < 17 and random_top5 < 20, "the check must be able to fail"
    assert random_top1 <= 3, f"random init scored {random_top1}/20 top-1"
