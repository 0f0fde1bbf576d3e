"""Transferability estimates: how well a set of features predicts the labels, cheaply.

- :func:`logme`: LogME (You et al., ICML 2021), the log marginal evidence of a Bayesian linear
  model on the features, per sample and averaged over one-vs-rest targets;
- :func:`linear_probe`: cross-validated accuracy of a standardised logistic regression
  (:func:`linear_probes`: of several feature sets at once, in parallel);
- :func:`extract_cut_features`: pooled features at every cut point in ONE forward pass.

These are the measurements; :mod:`transferkit.selection.rules` turns them into a decision.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from transferkit.errors import TransferkitError, choices_error
from transferkit.training.timing import BatchClock

if TYPE_CHECKING:  # keras is imported lazily: the scoring math needs only numpy/scipy/sklearn
    import keras

_RANK_TOLERANCE = 1e-10  # eigenvalues of the Gram matrix below this x the largest count as zero
_BOUND = 1e150  # keeps alpha/beta finite when the evidence peaks at a boundary (N <= D)

# ----------------------------------------------------------------------------------------------
# LogME
# ----------------------------------------------------------------------------------------------


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME: the maximised log evidence of a Bayesian linear model on the features, per sample.

    You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer Learning"
    (ICML 2021). For each class the one-hot column ``y`` is modelled as ``y = F w + noise`` with
    prior ``w ~ N(0, 1/alpha)`` and noise ``N(0, 1/beta)``; alpha and beta are found by MacKay's
    fixed-point iteration, computed in the eigenbasis of ``F`` (the SVD trick: one decomposition
    of the smaller Gram matrix, then O(rank) per iteration). The log evidence is divided by N
    and averaged over classes. Higher is better; the value is invariant to feature scaling.

    Args:
        features: (N, D) array of features (not standardised, as in the paper).
        labels: (N,) class labels of any hashable dtype.

    Returns:
        The mean per-sample log evidence (a float, usually in about [-3, 3]).

    Example:
        >>> import numpy as np
        >>> labels = np.repeat([0, 1], 20)
        >>> noise = np.random.default_rng(0).normal(size=(40, 4))
        >>> logme(noise + 5.0 * labels[:, None], labels) > logme(noise, labels)
        True
    """
    f = _as_matrix(features)
    codes, num_classes = _label_codes(labels, len(f))
    targets = np.eye(num_classes)[codes]
    sigma, z, residual = _spectral_projection(f, targets)
    evidences = [_class_evidence(sigma, z[:, c], residual[c], len(f)) for c in range(num_classes)]
    return float(np.mean(evidences))


def _spectral_projection(f: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, ...]:
    """Eigenvalues sigma_i = s_i**2 of F^T F (non-zero ones only), z = U^T y and ||y||^2 - ||z||^2."""
    n, d = f.shape
    gram = f @ f.T if n <= d else f.T @ f  # decompose the smaller side
    sigma, vectors = np.linalg.eigh(gram)
    keep = sigma > max(sigma.max(initial=0.0), 0.0) * _RANK_TOLERANCE
    sigma, vectors = sigma[keep], vectors[:, keep]
    if n <= d:
        z = vectors.T @ targets  # vectors are U
    else:  # vectors are V; U = F V / s
        z = (vectors.T @ (f.T @ targets)) / np.sqrt(sigma)[:, None]
    residual = np.maximum((targets**2).sum(axis=0) - (z**2).sum(axis=0), 0.0)
    return sigma, z, residual


def _class_evidence(sigma: np.ndarray, z: np.ndarray, residual: float, n: int) -> float:
    """Fixed-point maximisation of the evidence for one target column; returns evidence / n."""
    alpha, beta, previous = 1.0, 1.0, -np.inf
    z2 = z**2
    for _ in range(100):
        t = alpha / beta
        gamma = float((sigma / (sigma + t)).sum())  # effective number of parameters
        m2 = float((sigma * z2 / (sigma + t) ** 2).sum())  # ||m||^2, m the posterior mean
        res2 = float((z2 * (t / (sigma + t)) ** 2).sum()) + residual  # ||F m - y||^2
        alpha = min(max(gamma / max(m2, 1e-300), 1 / _BOUND), _BOUND) if len(sigma) else 1.0
        beta = min(max((n - gamma) / max(res2, 1e-300), 1 / _BOUND), _BOUND) if n > gamma else _BOUND
        evidence = _evidence(sigma, z2, residual, n, alpha, beta)
        if abs(alpha / beta - t) <= 1e-6 * t or abs(evidence - previous) <= 1e-10:
            break
        previous = evidence
    return evidence


def _evidence(sigma: np.ndarray, z2: np.ndarray, residual: float, n: int, alpha: float, beta: float) -> float:
    """Log evidence / n at (alpha, beta); the paper's eq. with the D - rank zero eigenvalues folded in.

    D/2 log a - 1/2 log|a I + b F^T F| = r/2 log a - 1/2 sum_i log(a + b sigma_i), r = rank.
    """
    t = alpha / beta
    m2 = (sigma * z2 / (sigma + t) ** 2).sum()
    res2 = (z2 * (t / (sigma + t)) ** 2).sum() + residual
    total = (
        len(sigma) / 2 * math.log(alpha)
        + n / 2 * math.log(beta)
        - 0.5 * np.log(alpha + beta * sigma).sum()
        - beta / 2 * res2
        - alpha / 2 * m2
        - n / 2 * math.log(2 * math.pi)
    )
    return float(total / n)


# ----------------------------------------------------------------------------------------------
# Linear probe
# ----------------------------------------------------------------------------------------------


def linear_probe(features: np.ndarray, labels: np.ndarray, *, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated accuracy of a standardised multinomial logistic regression on the features.

    This is what a frozen base with a new linear head would score, estimated without training the
    head on its own test images. Folds shrink to the smallest class's size (at least 2); a class
    with a single image is always a miss (it can never be both trained on and tested).

    Args:
        features: (N, D) features.
        labels: (N,) labels; at least two classes and one class with two or more images.
        folds: number of stratified folds (upper bound).
        seed: shuffling seed for the folds.

    Returns:
        Out-of-fold accuracy in [0, 1].

    Example:
        >>> import numpy as np
        >>> labels = np.repeat([0, 1], 20)
        >>> features = np.random.default_rng(0).normal(size=(40, 3)) + 4.0 * labels[:, None]
        >>> linear_probe(features, labels)
        1.0
    """
    return linear_probes({"features": features}, labels, folds=folds, seed=seed)["features"]


def linear_probes(
    features_by_cut: Mapping[str, Any], labels: np.ndarray, *, folds: int = 5, seed: int = 0
) -> dict[str, float]:
    """:func:`linear_probe` of each feature set (the same labels, the same folds), all at once.

    Every fold of every set is one independent regression; they run on a thread pool, one per
    usable CPU (each on one BLAS thread, :func:`~transferkit.training.head_init.quiet_solver`), the
    widest sets first. The scores are those of one-by-one probes, exactly: MobileNetV2's five cuts
    on card ranks at 96 px (871 images, 13 classes), 2 CPU cores, 1.58 s -> 1.10 s.

    Example:
        >>> import numpy as np
        >>> labels = np.repeat([0, 1], 20)
        >>> noise = np.random.default_rng(0).normal(size=(40, 3))
        >>> linear_probes({"noise": noise, "signal": noise + 4.0 * labels[:, None]}, labels)["signal"]
        1.0
    """
    from sklearn.model_selection import StratifiedKFold

    from transferkit.training.head_init import quiet_solver

    matrices = {name: _as_matrix(features) for name, features in features_by_cut.items()}
    if not matrices:
        return {}
    n = len(next(iter(matrices.values())))
    codes, num_classes = _label_codes(labels, n)
    counts = np.bincount(codes, minlength=num_classes)
    if num_classes < 2 or counts.max() < 2:
        raise TransferkitError(
            f"A linear probe needs at least two classes and one class with two or more images; "
            f"got {num_classes} class(es) with counts {counts.tolist()}. Add images or skip scoring "
            "by giving --similar/--dissimilar."
        )
    for name, x in matrices.items():
        if len(x) != n:
            raise TransferkitError(f"Features {name!r} have {len(x)} rows; the labels have {n}.")
    n_splits = max(2, min(int(folds), int(counts.min())))
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)

    def hits(job) -> tuple[str, int]:
        name, (train, test) = job
        x = matrices[name]
        return name, int((_fit_predict(x[train], codes[train], x[test]) == codes[test]).sum())

    # One BLAS thread (quiet_solver): `analyze` on the ten example sets, seeds 0-1, 96 px, took
    # 197 s of selection in all against 246 s with the default threads (typefaces 21-22 -> 13-14
    # s), the same 20 picks, cuts, confidences and close calls.
    correct = dict.fromkeys(matrices, 0)
    with quiet_solver():
        splits = list(splitter.split(np.zeros(n), codes))
        jobs = sorted(
            ((name, fold) for name in matrices for fold in splits), key=lambda job: -matrices[job[0]].shape[1]
        )
        with ThreadPoolExecutor(max_workers=min(len(jobs), usable_cpus())) as pool:
            for name, count in pool.map(hits, jobs):
                correct[name] += count
    return {name: count / n for name, count in correct.items()}


def _fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from transferkit.training.head_init import row_span

    classes = np.unique(y_train)
    if len(classes) == 1:  # only possible when every other class is a singleton in the test fold
        return np.full(len(x_test), classes[0])
    scaler = StandardScaler().fit(x_train)
    x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    basis = row_span(x_train)  # the same optimum, solved on N columns instead of D
    if basis is not None:
        x_train, x_test = x_train @ basis, x_test @ basis
    model = LogisticRegression(C=1.0, max_iter=1000)
    return model.fit(x_train, y_train).predict(x_test)


# ----------------------------------------------------------------------------------------------
# Features at the cut points
# ----------------------------------------------------------------------------------------------


def extract_cut_features(
    base: keras.Model,
    cut_points: Sequence[str],
    images: Iterable[Any],
    preprocess: keras.layers.Layer | Callable[[Any], Any] | None = None,
    pooling: str | Mapping[str, str] = "avg",
) -> dict[str, np.ndarray]:
    """Pooled features at every cut point, in ONE forward pass over the images.

    A multi-output model ``base.input -> [pool(cut output) for each cut]`` is built once, its
    BatchNorm folded into the convolutions before it (:mod:`transferkit.backbones.folding`), and
    called batch by batch with ``training=False`` (BatchNorm in inference mode). The pooling is
    :func:`transferkit.training.pooling.pool`, the very function the classifier's head is built
    with, so a probe scores the features a head on that cut will get.

    Args:
        base: a headless functional backbone (e.g. ``get_backbone("tiny").build(32)``).
        cut_points: layer names, shallow to deep (a spec's ``cut_points``).
        images: batches of raw 0-255 images, each (B, H, W, 3), uint8 or float (e.g. a tf.data
            dataset of images, or a list of arrays); a single 4-D array is split into batches of 32.
        preprocess: the backbone's pixel normalisation (a Keras layer or any callable), or None.
        pooling: one of :data:`transferkit.recipes.POOLINGS` for every cut, or ``{cut: pooling}``
            (cuts it leaves out are average-pooled).

    Returns:
        ``{cut: (N, pooled_dim) float32 array}`` in the order of ``cut_points``.

    Example:
        >>> import numpy as np
        >>> from transferkit.backbones.registry import get_backbone
        >>> base = get_backbone("tiny").build(32)
        >>> batches = [np.zeros((4, 32, 32, 3), "uint8")]
        >>> feats = extract_cut_features(base, ["block1_pool", "block3_pool"], batches)
        >>> {k: v.shape for k, v in feats.items()}
        {'block1_pool': (4, 16), 'block3_pool': (4, 64)}
    """
    return CutFeatures(base, cut_points, preprocess, pooling)(images)


class CutFeatures:
    """:func:`extract_cut_features` as an object: the model built and folded, and its pass traced,
    once for every call (the selector's probe, then the trials' feature bank on more images).

    Args:
        base, cut_points, preprocess, pooling: as for :func:`extract_cut_features`.
    """

    def __init__(
        self,
        base: keras.Model,
        cut_points: Sequence[str],
        preprocess: keras.layers.Layer | Callable[[Any], Any] | None = None,
        pooling: str | Mapping[str, str] = "avg",
    ):
        import tensorflow as tf

        from transferkit.backbones.folding import fold_batchnorm

        self.cuts = list(dict.fromkeys(cut_points))
        self.poolings = {
            cut: pooling if isinstance(pooling, str) else pooling.get(cut, "avg") for cut in self.cuts
        }
        extractor = _pooled_model(base, self.poolings)
        folded = fold_batchnorm(extractor)  # the same function with BatchNorm folded away: a faster pass
        extractor = folded.model if folded is not None else extractor

        @tf.function(reduce_retracing=True)  # one traced graph instead of eager op-by-op calls per batch
        def forward(batch):
            x = tf.cast(batch, tf.float32)
            x = preprocess(x) if preprocess is not None else x
            return extractor(x, training=False)

        self._forward = forward
        self._width = None  # the first batch's size: a shorter batch is padded to it, every call
        self.steady_seconds = 0.0  # the last call's, as :func:`transferkit.training.timing.steady_seconds`

    def __call__(self, images: Iterable[Any]) -> dict[str, np.ndarray]:
        """``{cut: (N, pooled_dim) float32 array}`` of ``images`` (batches, as for
        :func:`extract_cut_features`)."""
        import keras
        import tensorflow as tf

        if isinstance(images, np.ndarray) and images.ndim == 4:
            images = [images[i : i + 32] for i in range(0, len(images), 32)]
        chunks: list[list[np.ndarray]] = [[] for _ in self.cuts]
        clock = BatchClock(images)  # each batch's seconds, its loading included
        for batch in clock:
            if isinstance(batch, tuple | list) or len(getattr(batch, "shape", ())) != 4:
                raise TransferkitError(
                    "extract_cut_features expects batches of images shaped (B, H, W, 3); got "
                    f"{type(batch).__name__}. Pass images only (e.g. dataset.map(lambda x, y: x)) and "
                    "keep the labels separately."
                )
            count = int(batch.shape[0])
            self._width = self._width or count
            if count < self._width:
                # A second batch shape would trace the pass again (MobileNetV2, 96 px, five cuts:
                # 0.8-0.9 s, against 0.06 s for the padded batch). BatchNorm is in inference mode,
                # so the padding rows change nothing in the others.
                padding = tf.zeros((self._width - count, *batch.shape[1:]), batch.dtype)
                batch = tf.concat([batch, padding], axis=0)
            outputs = self._forward(batch)
            for chunk, output in zip(chunks, _as_list(outputs), strict=True):
                chunk.append(np.asarray(keras.ops.convert_to_numpy(output), dtype=np.float32)[:count])
        self.steady_seconds = clock.steady_seconds()
        if not chunks[0]:
            raise TransferkitError("extract_cut_features received no images; the image iterable was empty.")
        return {cut: np.concatenate(chunk) for cut, chunk in zip(self.cuts, chunks, strict=True)}


def _pooled_model(base: keras.Model, poolings: Mapping[str, str]) -> keras.Model:
    import keras

    from transferkit.training.pooling import pool

    names = [layer.name for layer in base.layers]
    if not poolings:
        raise TransferkitError(f"No cut points given. Choose layers of {base.name!r}, e.g. {names[-1]!r}.")
    pooled = []
    for index, (cut, pooling) in enumerate(poolings.items()):
        if cut not in names:
            raise choices_error(f"cut point of {base.name!r}", cut, names)
        pooled.append(pool(base.get_layer(cut).output, pooling, name=f"cut{index}_pool"))
    return keras.Model(base.inputs, pooled, name=f"{base.name}_cut_features")


def _as_list(outputs: Any) -> list[Any]:
    return list(outputs) if isinstance(outputs, list | tuple) else [outputs]


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS says; else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _as_matrix(features: Any) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise TransferkitError(f"Features must be a non-empty (N, D) array; got shape {x.shape}.")
    if not np.isfinite(x).all():
        raise TransferkitError("Features contain NaN or infinity; check the backbone's input pixel range.")
    return x


def _label_codes(labels: Any, n: int) -> tuple[np.ndarray, int]:
    y = np.asarray(labels).reshape(-1)
    if len(y) != n:
        raise TransferkitError(f"Got {len(y)} labels for {n} feature rows; they must match one to one.")
    classes, codes = np.unique(y, return_inverse=True)
    return codes.reshape(-1), len(classes)
