"""Which layers train in each phase: block-aware freezing and unfreezing, and the phase plan.

Rules baked in (the famous transfer-learning bugs):
- unfreezing is block-aware: it starts at a block boundary, never inside a residual or
  inception block;
- BatchNorm layers stay frozen (and so, in Keras 3, in inference mode) unless a phase sets
  ``train_batchnorm = true``;
- the caller re-compiles after every change of ``trainable`` (Keras ignores it otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from transferkit.backbones.blocks import block_ends
from transferkit.backbones.registry import BackboneSpec
from transferkit.console import plural
from transferkit.errors import TransferkitError
from transferkit.recipes import Phase
from transferkit.training.model import Classifier


def unfreeze_start(base: keras.Model, spec: BackboneSpec, phase: Phase) -> int:
    """Index into ``base.layers`` of the first layer that trains in a ``train = "top"`` phase."""
    names = [layer.name for layer in base.layers]
    ends = [names.index(name) for name in block_ends(base, spec)]
    if phase.unfreeze_from:
        if phase.unfreeze_from not in names:
            raise TransferkitError(
                f"unfreeze_from = {phase.unfreeze_from!r} is not a layer of {base.name}. "
                f"Block ends: {', '.join(block_ends(base, spec))}."
            )
        position = names.index(phase.unfreeze_from)
        earlier = [end for end in ends if end < position]
        return earlier[-1] + 1 if earlier else 0
    if phase.top_blocks >= len(ends):
        return 0
    return ends[-phase.top_blocks - 1] + 1


def slow_blocks_end(base: keras.Model, spec: BackboneSpec, phase: Phase) -> int:
    """Index of the first layer above the blocks too slow to train under ``min_block_lr_factor``.

    With discriminative rates a block ``d`` blocks below the head learns at
    ``lr_decay_per_block ** d`` of the head's rate. The bottom blocks of a steep decay barely move,
    yet their backward pass is the costliest of a step (the largest maps): below
    ``min_block_lr_factor`` they stay frozen instead (0 when none do).
    """
    if phase.min_block_lr_factor <= 0 or phase.lr_decay_per_block >= 1:
        return 0
    names = [layer.name for layer in base.layers]
    ends = [names.index(name) for name in block_ends(base, spec)]
    slow = [
        i for i in range(len(ends)) if phase.lr_decay_per_block ** (len(ends) - i) < phase.min_block_lr_factor
    ]
    return ends[slow[-1]] + 1 if slow else 0


def stem_blocks_end(base: keras.Model, spec: BackboneSpec, phase: Phase) -> int:
    """Index of the first layer above the blocks ``frozen_input_stride`` keeps frozen (0: none).

    A block stays frozen when its input is the image or a map at most ``frozen_input_stride`` times
    smaller a side: the stem, whose backward pass over the largest maps costs the most per weight
    and whose edge and colour filters carry over to any images. On MobileNetV2 at 224 px, stride 2
    keeps ``Conv1`` to ``block_1`` frozen (7,552 of 2.2 million weights; a whole-network fit of the
    icon themes took 161 s instead of 226 s, the same test accuracy), stride 4 (the built-in
    recipes') ``Conv1`` to ``block_3`` (25,120; the step 13% shorter again).

    The base's last block always trains: in a shallow base (the tiny test backbone, or a base cut
    low for truncation) every block can take maps within the stride, and a phase that asks to train
    the base would then train only the head.
    """
    stride = phase.frozen_input_stride
    image_side = base.inputs[0].shape[1]
    if stride <= 0 or not image_side:
        return 0
    names = [layer.name for layer in base.layers]
    ends = block_ends(base, spec)
    inputs = [image_side, *(base.get_layer(name).output.shape[1] for name in ends[:-1])]
    frozen = [i for i, side in enumerate(inputs[:-1]) if side and side * stride >= image_side]
    return names.index(ends[frozen[-1]]) + 1 if frozen else 0


def set_trainable(classifier: Classifier, spec: BackboneSpec, phase: Phase) -> None:
    """Set ``trainable`` on the base and head for ``phase``; re-compile afterwards."""
    base = classifier.base
    classifier.head.trainable = True
    if phase.train == "head":
        base.trainable = False
        return
    base.trainable = True
    start = 0 if phase.train == "all" else unfreeze_start(base, spec, phase)
    start = max(start, slow_blocks_end(base, spec, phase), stem_blocks_end(base, spec, phase))
    for index, layer in enumerate(base.layers):
        trains = index >= start
        if isinstance(layer, keras.layers.BatchNormalization):
            trains = trains and phase.train_batchnorm
        layer.trainable = trains


def block_lr_multipliers(classifier: Classifier, spec: BackboneSpec, phase: Phase) -> dict[str, float]:
    """``variable.path -> learning-rate factor`` for discriminative rates (empty when all are 1).

    The head learns at the phase's rate; the base's top block at ``lr_decay_per_block`` times it,
    the block below at that factor squared, and so on down (block boundaries as in unfreezing).
    """
    decay = phase.lr_decay_per_block
    if decay == 1.0 or phase.train == "head":
        return {}
    base = classifier.base
    names = [layer.name for layer in base.layers]
    ends = [names.index(name) for name in block_ends(base, spec)]
    multipliers = {}
    for index, layer in enumerate(base.layers):
        depth = len(ends) - next(i for i, end in enumerate(ends) if end >= index)  # top block: 1
        for variable in layer.trainable_weights:
            multipliers[variable.path] = decay**depth
    return multipliers


def count_params(weights: list) -> int:
    return int(sum(np.prod(w.shape) for w in weights))


@dataclass(frozen=True)
class PhasePlan:
    """What trains in one phase, for ``--dry-run`` and the run record."""

    name: str
    train: str
    epochs: int
    learning_rate: float | str  # "auto" until the phase runs its learning-rate range test
    first_trainable_layer: str | None
    trainable_layers: int
    trainable_params: int
    frozen_params: int

    def describe(self) -> str:
        where = (
            "head only" if self.first_trainable_layer is None else f"from {self.first_trainable_layer} + head"
        )
        rate = self.learning_rate if isinstance(self.learning_rate, str) else f"{self.learning_rate:g}"
        return (
            f"{self.name}: train {self.train} ({where}), {plural(self.epochs, 'epoch')} at lr {rate}; "
            f"{self.trainable_params:,} trainable / {self.frozen_params:,} frozen params"
        )


def plan_phase(classifier: Classifier, spec: BackboneSpec, phase: Phase) -> PhasePlan:
    """Apply ``phase``'s trainable settings and report what trains."""
    set_trainable(classifier, spec, phase)
    model = classifier.model
    trainable = [layer for layer in classifier.base.layers if layer.trainable and layer.weights]
    first = None
    if phase.train != "head" and classifier.base.trainable:
        first = next(
            (layer.name for layer in classifier.base.layers if layer.trainable and layer.weights), None
        )
    return PhasePlan(
        name=phase.name,
        train=phase.train,
        epochs=phase.epochs,
        learning_rate=phase.learning_rate,
        first_trainable_layer=first,
        trainable_layers=len(trainable) if classifier.base.trainable else 0,
        trainable_params=count_params(model.trainable_weights),
        frozen_params=count_params(model.non_trainable_weights),
    )
