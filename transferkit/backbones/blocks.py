"""Where a built backbone may be cut or unfrozen: its block ends, and the stage ends among them.

A block is the unit the network was designed in (a residual or inception block, a VGG stage);
its last layer is a *block end*, the only place where truncation may cut or unfreezing may
start, so a block is never split. Stage ends are the block ends after which the spatial
resolution changes: the candidate cut points the selector scores (stored on each spec in
:mod:`transferkit.backbones.registry`; a test checks them against :func:`stage_ends`).
"""

from __future__ import annotations

import re

import keras

from transferkit.backbones.registry import BackboneSpec


def block_ends(base: keras.Model, spec: BackboneSpec) -> list[str]:
    """Names of the layers that end each block, shallow to deep; the base's last layer is always one."""
    pattern = re.compile(spec.block_pattern)
    last_of: dict[str, str] = {}
    for layer in base.layers:
        match = pattern.search(layer.name)
        if match:
            last_of[match.group("id")] = layer.name  # dicts keep first-insertion order
    ends = list(last_of.values())
    if not ends or ends[-1] != base.layers[-1].name:
        ends.append(base.layers[-1].name)
    return ends


def stage_ends(base: keras.Model, spec: BackboneSpec) -> list[str]:
    """Block ends after which the spatial resolution changes (or the network ends)."""
    ends = block_ends(base, spec)
    sizes = [tuple(base.get_layer(name).output.shape[1:3]) for name in ends]
    return [name for i, name in enumerate(ends) if i == len(ends) - 1 or sizes[i + 1] != sizes[i]]
