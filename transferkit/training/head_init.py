"""The head's starting point: a logistic regression fitted on the cached features (LP-FT's linear probe).

The head is ``feature_scale -> feature_norm -> dropout -> Dense softmax``: on cached features it is
a multinomial logistic regression, trained by Adam from random weights. A convex solver reaches that model's
regularised optimum directly, so the head phase can start there, as LP-FT starts fine-tuning from a
fitted linear probe (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features"):
L-BFGS on the features as the head's own layers scale and standardise them, the inverse
regularisation ``C`` chosen on the validation features, its coefficients copied into the
``predictions`` layer. The head phase then continues from there as before.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import keras
import numpy as np

from transferkit.training.model import standardised

C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)  # inverse L2 strengths tried; sklearn's default is 1
MISSING_CLASS_BIAS = -10.0  # logit bias of a class absent from the training features
MAX_ROWS = 20_000
"""At most this many cached feature rows (a seeded sample over passes and images) fit the
regression: it bounds the float64 copy the solver works on (and the six L-BFGS fits) when the
cached features are far larger, or spilled to disk above the cache budget."""


@dataclass(frozen=True)
class LogisticInit:
    """The chosen regression: its weights in the head's layout and how it scored on validation."""

    kernel: np.ndarray  # [D, C]
    bias: np.ndarray  # [C]
    c: float
    val_accuracy: float
    val_loss: float

    def describe(self) -> str:
        return (
            f"Head starts from a logistic regression (C={self.c:g}): validation accuracy "
            f"{self.val_accuracy:.3f}, loss {self.val_loss:.3f}"
        )


def fit_logistic(
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    *,
    grid: tuple[float, ...] = C_GRID,
) -> LogisticInit:
    """Fit a multinomial logistic regression per ``C`` in ``grid``; keep the best on validation.

    Args:
        train: ``(standardised features [N, D], labels [N])``.
        validation: the same for the validation split; with no images the middle of ``grid`` is kept.
        num_classes: the head's width; classes missing from ``train`` get a very low bias.
        grid: the inverse regularisation strengths tried, best validation accuracy first, then
            lowest validation log loss.
    """
    features, labels = train
    basis = row_span(features)  # the same optimum, solved on N columns instead of D
    if basis is not None:
        features = features @ basis
    candidates = _fit_path((features, labels), num_classes, grid)
    if basis is not None:
        candidates = [(basis @ kernel, bias) for kernel, bias in candidates]
    scored = [_score(candidate, validation) for candidate in candidates]
    if not len(validation[1]):
        best = len(grid) // 2
    else:
        best = min(range(len(grid)), key=lambda i: (-scored[i][0], scored[i][1]))
    kernel, bias = candidates[best]
    accuracy, loss = scored[best]
    return LogisticInit(kernel, bias, float(grid[best]), accuracy, loss)


def row_span(features: np.ndarray) -> np.ndarray | None:
    """An orthonormal basis ``[D, N]`` of the span of ``features``' rows, when they are wider than long.

    An L2-penalised linear model's weights lie in that span (the representer theorem), so it can be
    fitted on ``features @ basis`` (N columns) and its weights mapped back with ``basis @ w``: the
    same optimum, a smaller problem. Pooled maps are often wider (1,280-2,560) than a small data
    set is long. None when ``features`` has no more columns than rows.

    The basis is the Q of a QR decomposition of ``features.T`` (Householder: orthonormal to the
    last bit, whatever the rank). An SVD gives a basis of the same span at 3-5x the cost (one BLAS
    thread, 1,280 columns: 548 rows 0.141 s against 0.047 s, 696 rows 0.261 against 0.070, 1,456
    rows 1.22 against 0.23); L-BFGS takes the same steps in any orthonormal basis of the span.
    """
    if features.shape[1] <= features.shape[0]:
        return None
    basis, _ = np.linalg.qr(features.T)
    return basis


@contextlib.contextmanager
def quiet_solver() -> Iterator[None]:
    """Where scikit-learn's L-BFGS regressions run (this head start, the selector's linear probe):
    BLAS on one thread and no warnings.

    The solver's products are thin (``[N, D] @ [D, classes]``): on two cores a second BLAS thread
    made a C=0.01 head fit slower, 3.2 s against 1.8 s (same iterations), and the probe's five
    folds on the typefaces' deepest cut (686 images x 1,280 features, 7 classes) took 19.2 s wall
    and 28.8 s CPU against 3.0 s and 3.0 s on one thread, the other core busy with a training
    run. The warnings are convergence chatter at weak regularisation and the folds' "least
    populated class".
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _fit_path(train: tuple[np.ndarray, np.ndarray], num_classes: int, grid: tuple[float, ...]):
    """One regression per ``C`` in ``grid`` (in the head's layout), each started from the one
    before, as scikit-learn fits its own regularisation path in ``LogisticRegressionCV``: the same
    optima to the solver's tolerance, in fewer iterations (:func:`quiet_solver`: one BLAS thread).
    Typefaces 100/class (1,820 rows x 1,280 features), the six default ``C``, quiet 2-core CPU:
    cold fits 994 L-BFGS iterations, 24.9 s; this path 623 iterations, 7.6-8.5 s.
    """
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=1000, warm_start=True)  # multinomial L-BFGS: deterministic
    candidates = []
    with quiet_solver():
        for c in grid:
            model.set_params(C=c)
            model.fit(*train)
            candidates.append(_head_weights(model, train[0].shape[1], num_classes))
    return candidates


def _head_weights(model, width: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A fitted regression's ``(kernel [width, num_classes], bias)``; absent classes get a very low bias."""
    coef, intercept = model.coef_, model.intercept_
    if len(model.classes_) == 2:  # sklearn's binary form: one logit; softmax of (-z/2, z/2) is the same
        coef, intercept = (
            np.concatenate([-coef / 2, coef / 2]),
            np.concatenate([-intercept / 2, intercept / 2]),
        )
    kernel = np.zeros((width, num_classes), "float32")
    bias = np.full(num_classes, MISSING_CLASS_BIAS, "float32")
    kernel[:, model.classes_] = coef.T
    bias[model.classes_] = intercept
    return kernel, bias


def _score(weights, validation: tuple[np.ndarray, np.ndarray]) -> tuple[float, float]:
    features, labels = validation
    if not len(labels):
        return 0.0, 0.0
    kernel, bias = weights
    logits = features @ kernel + bias
    logits -= logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    accuracy = float((log_probs.argmax(axis=1) == labels).mean())
    return accuracy, float(-log_probs[np.arange(len(labels)), labels].mean())


def initialise_head(
    head: keras.Model,
    features: np.ndarray,
    labels: np.ndarray,
    validation: tuple[np.ndarray, np.ndarray],
) -> LogisticInit:
    """Set the head's ``predictions`` layer to the logistic regression fitted on its own inputs.

    Args:
        head: the classifier's head (its standardisation already set from the training features).
        features: the pooled training features the head phase trains on, ``[N, D]`` or one set
            per cached pass, ``[passes, N, D]`` (fitted on all of them).
        labels: ``[N]`` labels of the training images.
        validation: the validation split's pooled ``(features, labels)``.
    """
    predictions = head.get_layer("predictions")

    def standardise(x: np.ndarray) -> np.ndarray:
        return standardised(head, x).astype("float64")

    rows, row_labels = training_rows(features, labels, MAX_ROWS)
    train = (standardise(rows), row_labels)
    fitted = fit_logistic(train, (standardise(validation[0]), validation[1]), predictions.units)
    predictions.set_weights([fitted.kernel, fitted.bias])
    return fitted


def training_rows(features: np.ndarray, labels: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """``[N, D]`` or ``[passes, N, D]`` features as rows with their labels: all, or ``limit`` of them.

    A sample is drawn with a fixed seed and read in file order, so a memory-mapped store is read
    row by row, never copied whole.
    """
    passes = features.reshape(-1, *features.shape[-2:])  # [passes, N, D]: a view, also of a memmap
    count = passes.shape[1]
    labels = np.asarray(labels)
    if len(passes) * count <= limit:
        return passes.reshape(-1, passes.shape[-1]), np.tile(labels, len(passes))
    chosen = np.sort(np.random.default_rng(0).choice(len(passes) * count, limit, replace=False))
    which, row = np.divmod(chosen, count)
    rows = np.concatenate([passes[index][row[which == index]] for index in range(len(passes))])
    return rows, labels[row]
