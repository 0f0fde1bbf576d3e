"""benchmarks/fine_tune_step.py counts FLOPs right: by hand on three layers, and MobileNetV2's
published 300 million multiply-adds at 224 px (Sandler et al., 2018, table 4)."""

from __future__ import annotations

import sys
from pathlib import Path

import keras
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import fine_tune_step  # noqa: E402

from transferkit.backbones.registry import get_backbone  # noqa: E402
from transferkit.backbones.weights import build_base  # noqa: E402
from transferkit.training.model import Classifier  # noqa: E402


def test_flops_of_a_convolution_a_depthwise_convolution_and_a_dense_layer():
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(4, 3, padding="same", name="conv")
    depthwise = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", name="depthwise")
    dense = keras.layers.Dense(5, name="dense")
    pooled = keras.layers.GlobalAveragePooling2D()(depthwise(conv(inputs)))
    model = keras.Model(inputs, dense(pooled))
    assert fine_tune_step.forward_flops(conv) == 2 * 8 * 8 * 3 * 3 * 3 * 4
    assert fine_tune_step.forward_flops(depthwise) == 2 * 4 * 4 * 3 * 3 * 4
    assert fine_tune_step.forward_flops(dense) == 2 * 4 * 5
    assert fine_tune_step.forward_flops(model.layers[-2]) == 0  # pooling: not counted

    conv.trainable = False  # a train step: forward everywhere, backward from the depthwise layer up
    base = keras.Model(inputs, pooled)
    top_inputs = keras.Input((4,))
    top = keras.Model(top_inputs, dense(top_inputs))
    counted = fine_tune_step.train_step_flops(Classifier(model, base, top, base), batch=2)
    forward = 2 * 8 * 8 * 3 * 3 * 3 * 4 + 2 * 4 * 4 * 3 * 3 * 4 + 2 * 4 * 5
    trained = 2 * 4 * 4 * 3 * 3 * 4 + 2 * 4 * 5
    assert counted["first_trainable_layer"] == "depthwise"
    assert counted["train_gflop_per_step"] == pytest.approx(2 * (forward + 2 * trained) / 1e9)
    assert counted["trained_share_of_forward"] == pytest.approx(trained / forward)


def test_mobilenet_v2_has_the_published_300_million_multiply_adds_at_224_px():
    base = build_base(get_backbone("mobilenet_v2_torchvision"), 224, "random")[0]
    multiply_adds = sum(fine_tune_step.forward_flops(layer) for layer in fine_tune_step._layers(base)) / 2
    assert 295e6 <= multiply_adds <= 305e6  # the headless base; the 1,000-class top adds 1.3 million
