"""``transferkit inspect``: a backbone's blocks the way CNN textbooks draw them.

For every block: its output shape, the parameters it holds, and the receptive field of one
output unit in input pixels (``r_out = r_in + (k - 1) * dilation * j_in``, ``j_out = j_in * stride``,
taking the largest over the inputs of merge layers), plus which block ends are cut points.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from transferkit.backbones.blocks import block_ends
from transferkit.backbones.registry import get_backbone


@dataclass(frozen=True)
class BlockInfo:
    name: str
    output_shape: tuple
    params: int
    receptive_field: int
    stride: int
    cut_point: bool


def _window(layer: keras.layers.Layer) -> tuple[int, int]:
    """Effective kernel size and stride of a layer along one axis (1, 1 for pointwise layers)."""
    size = getattr(layer, "kernel_size", None) or getattr(layer, "pool_size", None)
    if size is None:
        return 1, 1
    dilation = (getattr(layer, "dilation_rate", None) or (1,))[0]
    strides = getattr(layer, "strides", None) or size
    return (size[0] - 1) * dilation + 1, strides[0]


def receptive_fields(base: keras.Model) -> dict[str, tuple[int, int]]:
    """Receptive field and cumulative stride (jump) of every layer's output."""
    fields: dict[str, tuple[int, int]] = {}
    inbound_names = _inbound_names(base)
    for layer in base.layers:
        inbound = [fields[n] for n in inbound_names.get(layer.name, []) if n in fields] or [(1, 1)]
        field_in = max(f for f, _ in inbound)
        jump_in = max(j for _, j in inbound)
        kernel, stride = _window(layer)
        fields[layer.name] = (field_in + (kernel - 1) * jump_in, jump_in * stride)
    return fields


def _inbound_names(base: keras.Model) -> dict[str, list[str]]:
    """Each layer's input layers, read from the functional model's public config."""
    return {layer["name"]: _history_names(layer["inbound_nodes"]) for layer in base.get_config()["layers"]}


def _history_names(value: object) -> list[str]:
    """Layer names in the ``keras_history`` entries of a serialized call (tensors name their maker)."""
    if isinstance(value, dict):
        if "keras_history" in value:
            return [value["keras_history"][0]]
        return [name for item in value.values() for name in _history_names(item)]
    if isinstance(value, (list, tuple)):
        return [name for item in value for name in _history_names(item)]
    return []


def describe_blocks(base: keras.Model, spec) -> list[BlockInfo]:
    """One row per block of ``base``."""
    fields = receptive_fields(base)
    ends = set(block_ends(base, spec))
    rows, params = [], 0
    for layer in base.layers:
        params += layer.count_params()
        if layer.name in ends:
            field, jump = fields[layer.name]
            rows.append(
                BlockInfo(
                    layer.name,
                    tuple(layer.output.shape[1:]),
                    params,
                    field,
                    jump,
                    layer.name in spec.cut_points,
                )
            )
            params = 0
    return rows


def block_table(backbone: str, image_size: int | None = None) -> str:
    """The printable table for ``transferkit inspect``."""
    spec = get_backbone(backbone)
    base = spec.build(image_size)
    rows = describe_blocks(base, spec)
    size = image_size or spec.default_size
    lines = [
        f"{spec.name}: {spec.description}",
        f"input {size}x{size}x3, preprocessing {spec.preprocessing!r}, {base.count_params():,} params "
        f"(headless), {len(rows)} blocks",
        "",
        f"{'block end':<28}{'output shape':<18}{'params':>12}{'receptive field':>17}{'stride':>8}  cut",
    ]
    for row in rows:
        shape = "x".join(str(d) for d in row.output_shape)
        lines.append(
            f"{row.name:<28}{shape:<18}{row.params:>12,}{row.receptive_field:>14} px{row.stride:>8}  "
            f"{'<- cut point' if row.cut_point else ''}"
        )
    lines += [
        "",
        "Cut points end a resolution stage; truncation (--recipe small_dissimilar) and block-aware "
        "unfreezing happen only at block ends.",
    ]
    return "\n".join(lines)
