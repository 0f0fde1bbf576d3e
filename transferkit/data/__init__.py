"""Images in: scan folders, decode files, split, describe (the dataset card), stream with ``tf.data``.

- :mod:`~transferkit.data.loading`: ``load_data`` (scan + split) and the split types.
- :mod:`~transferkit.data.scan`: walk a folder, keep the usable images, say why others were left out.
- :mod:`~transferkit.data.label_file`: labels from a ``labels.csv`` beside the images, not class folders.
- :mod:`~transferkit.data.decode`: one file -> RGB uint8 pixels, or a reason.
- :mod:`~transferkit.data.pipeline`: ``tf.data`` over a split: decode, cache, shuffle, batch.
- :mod:`~transferkit.data.cache_budget`: the caches' memory budget (``--cache-memory``) and spill folder.
- :mod:`~transferkit.data.tfds_source`: ``tfds:NAME[:split]`` through TensorFlow Datasets.
- :mod:`~transferkit.data.card`: the dataset card.
- :mod:`~transferkit.data.examples`: built-in real example datasets from installed packages.
"""
