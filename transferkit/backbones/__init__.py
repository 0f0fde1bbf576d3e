"""Pretrained backbones: one spec per backbone (builder, preprocessing, sizes, cut points, weight
sources), the graphs that match torchvision's exactly, layer inspection, and ``weights/`` (resolve,
convert, cache ImageNet weights).

- :mod:`~transferkit.backbones.registry`: :data:`BACKBONES`, :class:`BackboneSpec`, ``get_backbone``.
- :mod:`~transferkit.backbones.torchvision_graphs`: Keras graphs with torchvision's padding/epsilon.
- :mod:`~transferkit.backbones.inspection`: ``transferkit inspect``: blocks, shapes, receptive fields.
- :mod:`~transferkit.backbones.weights`: ``build_base`` and where weights come from.
"""
