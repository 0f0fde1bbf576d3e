"""The claim that matters, on real photos with genuine ImageNet weights (offline): transfer works.

Labeled Faces in the Wild, faces vs. non-faces (200 real photos, from scikit-image): the
frozen pretrained MobileNetV2 separates them almost perfectly, the same recipe on a random
base stays at chance. Small images (96 px) keep this to ~30 s on 2 cores.
"""

import pytest

import transferkit


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return transferkit.export_dataset("lfw_faces", tmp_path_factory.mktemp("real") / "lfw_faces")


@pytest.mark.slow
def test_pretrained_features_transfer_and_random_ones_do_not(faces, tmp_path):
    options = dict(size="small", similar=True, image_size=96, out=tmp_path, verbose=0)
    pretrained = transferkit.fit(str(faces), **options)
    random = transferkit.fit(str(faces), weights="random", **options)
    assert "ImageNet" in pretrained.weights_source
    assert pretrained.metrics.accuracy >= 0.95
    assert random.metrics.accuracy <= 0.7  # 40 validation images, chance is 0.5
