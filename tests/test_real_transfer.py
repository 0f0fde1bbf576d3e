"""The claim that matters, on real images with genuine ImageNet weights (offline): transfer works.

Frozen pretrained MobileNetV2 (torchvision weights, converted offline) + a new head, against the
same recipe on a randomly initialised base, at 96 px (each fit 1-3 min on 2 cores):

- LFW faces vs. non-faces (200 real photos, scikit-image): pretrained ~1.00; random features
  with a standardised linear head still reach ~0.88 (random convolutional features are a known,
  non-trivial baseline, and this task is easy), so the check is a clear gap, not chance.
- Animal-MNIST silhouettes, 30 per class (10 classes): pretrained 0.875, random 0.350 (chance
  0.10; random measured ~0.22 in an earlier version, 0.350 at 35b5d38: the bound keeps a margin).
"""

import pytest

import transferkit

OPTIONS = dict(size="small", similar=True, image_size=96, verbose=0)


def _both(folder, out):
    pretrained = transferkit.fit(str(folder), out=out, **OPTIONS)
    random = transferkit.fit(str(folder), weights="random", out=out, **OPTIONS)
    assert "ImageNet" in pretrained.weights_source and "Random" in random.weights_source
    return pretrained.metrics.accuracy, random.metrics.accuracy


@pytest.mark.slow
def test_faces_transfer(tmp_path):
    faces = transferkit.export_dataset("lfw_faces", tmp_path / "lfw_faces")
    pretrained, random = _both(faces, tmp_path / "runs")
    assert pretrained >= 0.95
    assert pretrained - random >= 0.05  # 40 validation images: 2 images


@pytest.mark.slow
def test_silhouettes_transfer_and_random_features_do_not(tmp_path):
    animals = transferkit.export_dataset("animal_mnist", tmp_path / "animals", per_class=30)
    pretrained, random = _both(animals, tmp_path / "runs")
    assert pretrained >= 0.7
    assert random <= 0.5 and pretrained - random >= 0.3  # 40 test images: 12 of them
