"""Training: the classifier (backbone + head, raw pixels in), which parts train in each phase,
augmentation, cached features for frozen phases, callbacks, the phase-by-phase trainer, and the
device/precision/determinism set-up.

- :mod:`~transferkit.training.model`: ``build_classifier``, ``truncate``, the in-graph preprocessing.
- :mod:`~transferkit.training.pooling`: ``pool``, the pooling the head and the selector's probe share.
- :mod:`~transferkit.training.trainable`: freeze / unfreeze by block, the phase plan.
- :mod:`~transferkit.training.augment`: flips, rotation, zoom, translation as one affine warp.
- :mod:`~transferkit.training.features`: cached backbone features for frozen-base phases.
- :mod:`~transferkit.training.callbacks`: history, atomic backup, resumable early stopping, reseeding.
- :mod:`~transferkit.training.trainer`: runs a recipe's phases with resumable checkpoints.
- :mod:`~transferkit.training.head_phase`: a head phase on cached features (augmentation check, head start).
- :mod:`~transferkit.training.network_phase`: a phase that fits the whole graph on image batches.
- :mod:`~transferkit.training.device`: precision, determinism and distribution, set up explicitly.
"""
