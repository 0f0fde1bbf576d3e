import pytest

from transferkit.backbones.blocks import block_ends, stage_ends
from transferkit.backbones.inspection import block_table, describe_blocks
from transferkit.backbones.registry import BACKBONES, get_backbone
from transferkit.errors import TransferkitError


def test_unknown_backbone_lists_choices():
    with pytest.raises(TransferkitError, match="Unknown backbone 'resnet5'. Choose one of: .*resnet50"):
        get_backbone("resnet5")


def test_registry_has_the_promised_families():
    for name in [
        "vgg16",
        "vgg19",
        "resnet50",
        "resnet101",
        "resnet152",
        "resnet50_v2",
        "inception_v3",
        "inception_resnet_v2",
        "mobilenet",
        "mobilenet_v2",
        "efficientnet_b0",
        "tiny",
    ]:
        assert name in BACKBONES


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_stored_cut_points_and_params_match_the_built_graph(name):
    spec = get_backbone(name)
    base = spec.build(weights=None)
    assert tuple(stage_ends(base, spec)) == spec.cut_points
    assert base.count_params() == spec.params
    ends = block_ends(base, spec)
    assert ends[-1] == base.layers[-1].name
    assert set(spec.cut_points) <= set(ends)


def test_too_small_image_is_refused():
    with pytest.raises(TransferkitError, match="at least 75 px"):
        get_backbone("inception_v3").build(64)


def test_inspect_reports_textbook_receptive_fields():
    rows = describe_blocks(get_backbone("vgg16").build(), get_backbone("vgg16"))
    assert [r.receptive_field for r in rows] == [6, 16, 44, 100, 212]  # VGG16's well-known values
    assert [r.stride for r in rows] == [2, 4, 8, 16, 32]
    assert sum(r.params for r in rows) == get_backbone("vgg16").params
    assert "<- cut point" in block_table("tiny")
