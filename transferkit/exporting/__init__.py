"""Shipping a run's model: SavedModel, TFLite and ONNX files, each checked against ``model.keras``.

``formats`` (the vocabulary), ``converters`` (writing), ``runtimes`` (running an exported file),
``parity`` (the comparison on held-out images), ``export`` (the orchestration behind
``transferkit export``). Converters and runtimes are optional: ``pip install -e ".[export]"``.
"""
