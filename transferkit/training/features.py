"""Cached backbone features for phases whose base is frozen.

A frozen base computes the same activations every epoch. Running it once per *augmented copy*
of the training set (``cached_passes``, default 4) and training the head on the cached pooled
features was measured 3.4-3.7x faster than plain Keras with augmentation (20-24x without),
with the same model: the head sees a different augmented copy each epoch, cycling through the
cached ones. The head trained here is the very head inside the saved classifier.
"""

from __future__ import annotations

import functools
import itertools
import math
import weakref
from collections.abc import Callable, Iterator

import keras
import numpy as np
import tensorflow as tf

from transferkit.data.cache_budget import RELEASE_BYTES, is_mapped, release_pages
from transferkit.data.pipeline import without_autotune
from transferkit.training.progress import progress_bar

MOMENT_CHUNK_ROWS = 4096


def feature_step(extractor: keras.Model, augment: keras.layers.Layer | None = None):
    """A compiled float32 ``images -> features`` function; make it once and reuse it for every pass.

    The signature leaves the batch size open, so the last, smaller batch reuses the same graph
    instead of tracing a second one (~2 s each on CPU).
    """
    signature = [tf.TensorSpec([None, *extractor.input_shape[1:]], tf.float32)]

    @tf.function(input_signature=signature)
    def step(images):
        if augment is not None:
            images = augment(images, training=True)
        return extractor(images, training=False)

    return step


def feature_steps(extractor: keras.Model, *augments: keras.layers.Layer | None) -> tuple[Callable, ...]:
    """The clean feature step, then one through each of ``augments`` (None for a None), all from one
    traced graph.

    A frozen-base run needs several: the augmented passes, then clean ones (validation, the
    augmentation check, the final evaluation), and passes with pixel noise alone where the check
    drops the warps. Each traced step traces the base again (~0.9 s of CPU for MobileNetV2 at 128
    px; 0.25 s of a 9-s fit at 96 px), so they share one graph and an index picks the branch.
    """
    if all(layer is None for layer in augments):
        return (feature_step(extractor), *(None for _ in augments))
    signature = [tf.TensorSpec([None, *extractor.input_shape[1:]], tf.float32), tf.TensorSpec([], tf.int32)]
    branches = (None, *augments)  # branch 0: the clean step

    @tf.function(input_signature=signature)
    def step(images, index):
        def through(layer):
            return lambda: tf.identity(images) if layer is None else layer(images, training=True)

        return extractor(tf.switch_case(index, [through(layer) for layer in branches]), training=False)

    return tuple(
        None if number and layer is None else functools.partial(step, index=number)
        for number, layer in enumerate(branches)
    )


def extract_features(
    step,
    dataset: tf.data.Dataset,
    *,
    feature_dim: int,
    verbose: int = 1,
    out: np.ndarray | None = None,
    steps: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One pass of ``dataset`` (batches of uint8 images, int labels) through ``step``.

    Args:
        step: from :func:`feature_step`.
        dataset: batched ``(images, labels)``; iterated exactly once.
        feature_dim: width of the features (for an empty dataset).
        verbose: 1 = a bar that goes away when done (the phase's bar follows it); else silent.
        out: ``[capacity, D]`` to write the features into, batch by batch (an ``np.memmap`` from
            :meth:`~transferkit.data.cache_budget.CacheBudget.array` over the memory budget);
            ``capacity`` must hold every image. Without it the features are gathered in memory.
        steps: the batches in a pass, for the bar's total where ``dataset`` does not know them.

    Returns:
        ``(features [N, D] float32, labels [N] int32)``; with ``out``, the features are ``out[:N]``.

    Example:
        >>> store = CacheBudget(0, "cache").array((len(images), 1280))  # doctest: +SKIP
        >>> features, labels = extract_features(step, dataset, feature_dim=1280, out=store)  # doctest: +SKIP
    """
    if out is None:
        return _gathered(step, dataset, feature_dim, verbose, steps)
    labels, filled, since_release = [], 0, 0
    with caching_bar(dataset, verbose, steps=steps) as progress:
        for images, batch_labels in dataset:
            batch = step(tf.cast(images, tf.float32)).numpy()
            if filled + len(batch) > len(out):
                raise ValueError(f"extract_features: out holds {len(out)} rows; the dataset has more.")
            out[filled : filled + len(batch)] = batch
            labels.append(batch_labels.numpy().astype("int32"))
            filled, since_release = filled + len(batch), since_release + batch.nbytes
            if since_release >= RELEASE_BYTES:  # a memory-mapped store: give the written pages back
                release_pages(out)
                since_release = 0
            progress.update(1)
    release_pages(out)
    return out[:filled], np.concatenate(labels) if labels else np.zeros((0,), "int32")


def _gathered(
    step, dataset: tf.data.Dataset, feature_dim: int, verbose: int, steps: int | None
) -> tuple[np.ndarray, np.ndarray]:
    features, labels = [], []
    with caching_bar(dataset, verbose, steps=steps) as progress:
        for images, batch_labels in dataset:
            features.append(step(tf.cast(images, tf.float32)).numpy().astype("float32"))
            labels.append(batch_labels.numpy().astype("int32"))
            progress.update(1)
    if not features:
        return np.zeros((0, feature_dim), "float32"), np.zeros((0,), "int32")
    return np.concatenate(features), np.concatenate(labels)


def caching_bar(
    dataset: tf.data.Dataset, verbose: int, desc: str = "caching features", steps: int | None = None
):
    """A bar over one pass of ``dataset``'s batches that goes away when done; shown when ``verbose == 1``.

    ``steps``: the batches a pass holds where ``dataset`` does not know (an image pipeline drops an
    unreadable file as it goes, so its cardinality is unknown): the bar's total, for its rate and ETA.
    """
    known = int(dataset.cardinality())
    return progress_bar(
        total=known if known > 0 else steps,
        desc=desc,
        unit="batch",
        leave=False,
        disable=verbose != 1,
    )


def feature_moments(features: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-feature mean and variance over every row of ``[..., N, D]`` features, and the row count.

    Computed chunk by chunk in float64 (Chan et al.'s pairwise update), so a memory-mapped
    ``[passes, N, D]`` store is read once and never copied whole into memory.
    """
    dim = features.shape[-1]
    if features.flags.c_contiguous:
        blocks = [features.reshape(-1, dim)]  # a view
    else:  # e.g. store[:, :n]: one block per pass
        blocks = [features[index] for index in np.ndindex(features.shape[:-2])]
    count, mean, squares = 0, np.zeros(dim), np.zeros(dim)
    for block in blocks:
        for start in range(0, len(block), MOMENT_CHUNK_ROWS):
            chunk = np.asarray(block[start : start + MOMENT_CHUNK_ROWS], dtype="float64")
            chunk_mean, merged = chunk.mean(0), count + len(chunk)
            delta = chunk_mean - mean
            squares += ((chunk - chunk_mean) ** 2).sum(0) + delta**2 * count * len(chunk) / merged
            mean, count = mean + delta * len(chunk) / merged, merged
        release_pages(block)
    return mean.astype("float32"), (squares / max(count, 1)).astype("float32"), count


class CachedFeatures(keras.utils.PyDataset):
    """Epoch ``e`` serves augmented copy ``e % passes``, shuffled with seed ``seed + e``.

    The epoch is set from outside (by :class:`EpochSetter`) rather than counted, so a run
    resumed at epoch 7 sees exactly the batches an uninterrupted run would. :func:`fit_inputs`
    serves the very same batches through ``tf.data`` where the features fit in memory.
    """

    def __init__(self, features: np.ndarray, labels: np.ndarray, batch_size: int, seed: int):
        super().__init__()
        self.features = features  # [passes, N, D]: in memory, or an np.memmap (cache_budget)
        self._read = 0  # bytes read from a memory-mapped store since its pages were last released
        self.labels = labels
        self.batch_size = batch_size
        self.seed = seed
        self._order, self._order_epoch = None, None  # the last epoch's order, computed once per epoch
        self.set_epoch(0)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The order epoch ``epoch`` serves the rows in."""
        return np.random.default_rng(self.seed + int(epoch)).permutation(len(self.labels))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, index: int):
        return self.batch(self.epoch, index)

    def batch(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch ``index`` of epoch ``epoch``: ``(features, labels)``."""
        if epoch != self._order_epoch:
            self._order, self._order_epoch = self.epoch_order(epoch), epoch
        rows = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        features = self.features[epoch % len(self.features)]
        if not is_mapped(features):
            return features[rows], self.labels[rows]
        # On disk: read the rows in file order, then put them back in the epoch's order.
        ascending = np.argsort(rows)
        batch = np.empty((len(rows), *features.shape[1:]), features.dtype)
        batch[ascending] = features[rows[ascending]]
        self._read += batch.nbytes
        if self._read >= RELEASE_BYTES:  # the pages read go back to the page cache
            release_pages(features)
            self._read = 0
        return batch, self.labels[rows]

    def cycle(self) -> Iterator:
        """The batches epoch after epoch, as ``fit`` would serve them (moves the epoch along)."""
        for epoch in itertools.count():
            self.set_epoch(epoch)
            yield from (self[index] for index in range(len(self)))

    def as_dataset(self, first_epoch: int = 0) -> tf.data.Dataset:
        """The batches of epoch ``first_epoch`` and of every later one, endlessly, as a ``tf.data`` pipeline.

        The same batches as indexing epoch by epoch; ``fit`` takes it with ``steps_per_epoch=len(self)``.
        Holds a copy of the features as a tensor: for stores in memory (see :func:`fit_inputs`).
        """
        features, labels = tf.constant(self.features), tf.constant(self.labels)
        passes, count = len(self.features), len(self.labels)

        def epoch_batches(epoch):
            order = tf.numpy_function(lambda e: self.epoch_order(e).astype(np.int64), [epoch], tf.int64)
            copy = tf.gather(features, epoch % passes)
            rows = tf.data.Dataset.from_tensor_slices(tf.ensure_shape(order, [count])).batch(self.batch_size)
            return rows.map(lambda batch: (tf.gather(copy, batch), tf.gather(labels, batch)))

        return without_autotune(tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch_batches).prefetch(2))

    def streamed(self, first_epoch: int = 0) -> tf.data.Dataset:
        """The batches :meth:`as_dataset` serves, each read from the store as it is needed
        (:meth:`batch` in a ``tf.numpy_function``): no copy of the store, for one on disk or too big
        to copy.

        One pipeline for the whole fit, as :meth:`as_dataset`: ``fit`` given the PyDataset itself
        made a ``tf.data`` iterator for every epoch and every validation pass (23 ms each on 2 CPU
        cores), and with the augmentation check's two fits of at least 50 epochs a small spilled
        head phase spent 30 s of a 34-s phase there (36 images, tiny backbone; 1.1 s streamed).
        """
        steps, shape = len(self), (None, *self.features.shape[2:])
        types = (tf.as_dtype(self.features.dtype), tf.as_dtype(self.labels.dtype))

        def read(epoch, index):
            features, labels = tf.numpy_function(
                lambda e, i: self.batch(int(e), int(i)), [epoch, index], types
            )
            return tf.ensure_shape(features, shape), tf.ensure_shape(labels, [None])

        def epoch_batches(epoch):
            return tf.data.Dataset.range(steps).map(lambda index: read(epoch, index))

        return without_autotune(tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch_batches).prefetch(2))


DATASET_MAX_BYTES = 256 * 2**20  # cached features served through tf.data up to this size (it copies them)


def fit_inputs(
    train: CachedFeatures, validation: tuple[np.ndarray, np.ndarray], first_epoch: int = 0
) -> tuple[dict, list[keras.callbacks.Callback]]:
    """``model.fit`` keyword arguments and callbacks that train on ``train`` from ``first_epoch`` on.

    The training batches go in as an endless ``tf.data`` pipeline with fixed steps per epoch (18 ms
    an epoch where the PyDataset and arrays took 75-90 ms: 204 rows of 1,280 features, batch 32,
    CPU) and ``validation`` through :class:`ValidationPass`, which adds up over the up to 200 epochs
    of a head phase and the augmentation check's two extra fits: in memory a copy of the store as a
    tensor (:meth:`CachedFeatures.as_dataset`), a memory-mapped (or very large) store read batch by
    batch (:meth:`CachedFeatures.streamed`). Without validation images the store goes in as the
    PyDataset it is, told its epoch by :class:`EpochSetter`. Compile the head
    with ``steps_per_execution=len(train)``: a whole epoch per call of the train function, the same
    steps and the same weights; a whole LFW fit on random features (a 200-epoch head phase and the
    augmentation check's 2 x 200 epochs) took 47 s of user CPU where it took 53-57 s with one batch
    per call (2-core CPU).

    Args:
        train: the cached training features.
        validation: ``(features, labels)``.
        first_epoch: the epoch ``fit`` starts at (after a resume, the one its backup holds).

    Returns:
        ``(fit keyword arguments, callbacks)``: pass both to ``model.fit``, with ``epochs``.
    """
    size = train.batch_size
    if not len(validation[1]):
        return dict(x=train, validation_data=validation, validation_batch_size=size), [EpochSetter(train)]
    in_memory = not is_mapped(train.features) and train.features.nbytes <= DATASET_MAX_BYTES
    dataset = train.as_dataset(first_epoch) if in_memory else train.streamed(first_epoch)
    arguments = dict(x=dataset, steps_per_epoch=len(train))
    if tf.distribute.get_strategy().num_replicas_in_sync > 1:  # Keras splits the batches over replicas
        val = without_autotune(tf.data.Dataset.from_tensor_slices(validation).batch(size).cache().repeat())
        steps = math.ceil(len(validation[1]) / size)
        return dict(arguments, validation_data=val, validation_steps=steps), []
    return arguments, [ValidationPass(*validation, batch_size=size)]


class ValidationPass(keras.callbacks.Callback):
    """``fit``'s ``val_*`` logs at each epoch end, from validation features held in memory.

    The same batches through the model's own test step (``model.test_step``) as
    ``fit(validation_data=...)``, and so the same figures, in one call of a traced function per
    epoch: it resets the metrics, runs the step over every batch (a graph loop) and reads the
    results. Keras' evaluate loop set itself up every epoch (callbacks, an iterator made and torn
    down: ~60 ms of a ~90 ms head epoch, 1,280 features, 130 rows x 4 passes, 40 validation rows,
    2-core CPU); calling the test function batch by batch still took ~26 ms of eager metric resets,
    calls and reads an epoch (Animal-MNIST, 60 validation rows, cProfile). Put it before every
    callback that reads ``val_*`` from the logs (early stopping, history): Keras passes them one
    ``logs`` dict, in order.

    The traced function belongs to the model as compiled (:func:`_validation_function`), not to
    the callback: the augmentation check's two fits and the head phase after them, one compile,
    trace it once (each trace ~80 ms on 2 CPU cores).
    """

    def __init__(self, features: np.ndarray, labels: np.ndarray, batch_size: int):
        super().__init__()
        self.features, self.labels = tf.constant(features), tf.constant(labels)
        self.batch_size = batch_size

    def on_epoch_end(self, epoch, logs=None):
        validate = _validation_function(self.model)
        results = {
            name: float(value)
            for name, value in validate(self.features, self.labels, self.batch_size).items()
        }
        if logs is not None:
            logs.update({f"val_{name}": value for name, value in results.items()})


_VALIDATION_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""model -> (the metrics it was compiled with, its traced validation loop): see ValidationPass."""


def _validation_function(model: keras.Model):
    """``model``'s traced ``(features, labels, batch_size) -> metrics`` loop for its current compile.

    A compile makes new metric objects, so the loop is traced again after one (the old trace would
    update the old compile's metrics); the model is held weakly, so nothing here keeps it alive.
    """
    metrics = tuple(model.metrics)
    held = _VALIDATION_FUNCTIONS.get(model)
    same = held is not None and len(held[0]) == len(metrics)
    if not same or any(a is not b for a, b in zip(held[0], metrics, strict=True)):
        function = tf.function(functools.partial(_validation_graph, weakref.ref(model)), autograph=False)
        held = _VALIDATION_FUNCTIONS[model] = (metrics, function)
    return held[1]


def _validation_graph(model_ref, features, labels, size: int) -> dict:
    model = model_ref()
    for metric in model.metrics:
        metric.reset_state()
    count = tf.shape(labels)[0]

    def step(start):
        batch = (features[start : start + size], labels[start : start + size])
        with tf.control_dependencies(tf.nest.flatten(model.test_step(batch))):
            return start + size

    tf.while_loop(lambda start: start < count, step, [tf.constant(0)])
    return model.get_metrics_result()


class EpochSetter(keras.callbacks.Callback):
    """Tell a :class:`CachedFeatures` which epoch is starting."""

    def __init__(self, data: CachedFeatures):
        super().__init__()
        self.data = data

    def on_epoch_begin(self, epoch, logs=None):
        self.data.set_epoch(epoch)
