"""``tf.data`` pipelines over an :class:`~transferkit.data.loading.ImageSet`: decode, cache, shuffle, batch.

Order of the stages, and why:

- shuffle paths (cheap) *before* decoding when nothing is cached; shuffle decoded images *after*
  the cache when something is, so every epoch still gets a new order (a file cache, whose
  shuffle buffer holds only part of the split, is also filled in a seeded order of the paths);
- decode with :func:`transferkit.data.decode.decode_image` in parallel, ``deterministic=True``;
- leave out (and log once per dataset) any file that fails here although it passed the scan;
- cache decoded ``uint8`` pixels (4x smaller than float32), then batch, then prefetch, last;
- no autotuning model thread (:func:`without_autotune`): deleting an iterator waited for it.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from transferkit.data import tfds_source
from transferkit.data.cache_budget import CacheBudget
from transferkit.data.decode import decode_image
from transferkit.errors import TransferkitError

if TYPE_CHECKING:
    from transferkit.data.loading import ImageSet

logger = logging.getLogger(__name__)

# Decoded uint8 images are cached in memory when the split needs at most this much (1 GiB is
# ~7,100 images at 224 px, ~38,000 at 96 px); bigger splits are decoded every epoch (cheap:
# ~1,500 img/s per core), or cached to a file when ``cache`` is a path. A fit passes its run's
# CacheBudget instead (``--cache-memory``; :mod:`transferkit.data.cache_budget`).
MEMORY_CACHE_MAX_BYTES = 1 << 30
# The shuffle buffer after the cache (1,700 images at 224 px): a size of the data alone, never of the
# cache budget or the machine, so a seeded run's batches are the same whatever --cache-memory is
# (its "auto" depends on the memory free when the run starts). Not counted in the budget.
SHUFFLE_BUFFER_MAX_BYTES = 256 << 20
TFDS_SHUFFLE_BUFFER = 4096  # records (encoded bytes) shuffled before decoding a TFDS split


def make_dataset(
    images: ImageSet,
    image_size: int,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 1337,
    cache: bool | str | os.PathLike | CacheBudget = True,
) -> tf.data.Dataset:
    """Stream one split as ``(uint8 [B, image_size, image_size, 3], int32 [B])`` batches.

    Decoding runs in parallel with ``deterministic=True``, so a seeded run is reproducible. A
    file that fails to decode here (changed since the scan) is logged once and left out; the
    run goes on. Because of that the dataset's cardinality is unknown: use ``len(images)``.

    Args:
        images: the split, from :func:`load_data`.
        image_size: side of the square images, in pixels.
        batch_size: images per batch (the last batch may be smaller).
        shuffle: reshuffle every epoch (seeded).
        seed: the shuffle seed.
        cache: ``True`` caches decoded pixels in memory when they fit in
            ``MEMORY_CACHE_MAX_BYTES``; a path caches them in files with that prefix; a
            :class:`~transferkit.data.cache_budget.CacheBudget` caches them in memory while the
            budget has room, else in a file in its folder (else not at all); ``False`` decodes
            every epoch.

    Example:
        >>> ds = make_dataset(load_data("flowers/").train, 224, 32, shuffle=True)  # doctest: +SKIP
        >>> images, labels = next(iter(ds))  # doctest: +SKIP
    """
    for arg, value in (("image_size", image_size), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TransferkitError(f"{arg}={value!r}; expected a positive integer.")
    bytes_per_image = image_size * image_size * 3
    cache_to = _cache_target(cache, len(images) * bytes_per_image)
    if images.tfds is None:
        names = tf.constant([os.fsencode(p) for p in images.paths], dtype=tf.string, shape=[len(images)])
        items = tf.data.Dataset.from_tensor_slices(
            (names, names, tf.constant(images.labels, tf.int32, [len(images)]))
        )
    else:
        items = tfds_source.encoded_records(images.tfds)
    if shuffle:  # shuffle cheap paths/records, before decoding
        buffer = len(images) if images.tfds is None else TFDS_SHUFFLE_BUFFER
        # Into a cache the images go once, in this order: a seeded mix of the classes, since the
        # shuffle after it may hold only part of the split (the scan lists them class by class,
        # and a 1 MB budget gave batches of one or two classes out of four).
        again = cache_to is None
        items = items.shuffle(max(1, min(buffer, len(images))), seed=seed, reshuffle_each_iteration=again)
    decode = functools.partial(
        _decode,
        image_size=image_size,
        encoded=images.tfds is not None,
        white_level=images.white_level,
        failures=DecodeFailures(),
    )
    ds = items.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.filter(_is_ok).map(_without_ok)
    if cache_to is not None:
        ds = ds.cache(cache_to)
        if shuffle:  # after the cache, so every epoch gets a new order
            # The same buffer whether the cache is in memory or in a file and whatever the budget,
            # so a run's batches do not depend on the machine's memory; the seeded order above
            # mixes the classes before it.
            buffer = SHUFFLE_BUFFER_MAX_BYTES // bytes_per_image
            ds = ds.shuffle(max(1, min(buffer, len(images))), seed=seed, reshuffle_each_iteration=True)
    return without_autotune(ds.batch(batch_size).prefetch(tf.data.AUTOTUNE))  # prefetch last: overlaps


def without_autotune(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` without tf.data's autotuning, whose per-iterator thread stalls each iterator's deletion.

    That thread sleeps between optimisations for a period that doubles up to a minute, and deleting
    the iterator waits for the sleep to end: idle, up to the iterator's age. Keras' ``fit`` deletes
    its validation iterator every epoch and every ``for batch in dataset`` loop deletes one at its
    end, so epochs were padded to the next period: a whole-network epoch at 224 px on 2 cores
    (icon themes) took 20.4 s instead of 11 s on 8 of 15 epochs, 9 s of them with the CPU idle, and
    card ranks' 26 s epochs took 40.8 s on 9 of 15. (TensorFlow 2.21; a bare iterator over this
    pipeline, deleted 6 s after its batches were read, took 4.2 s to delete on 5 of 8 tries, 0 s
    without autotuning.) Without it, ``AUTOTUNE`` still means parallel calls on every core and a
    prefetch buffer that grows while the consumer waits; decoding 475 images was no slower.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def _cache_target(cache: bool | str | os.PathLike | CacheBudget, estimate: int) -> str | None:
    """``""`` (memory), a file prefix, or ``None`` (no cache)."""
    if cache is False:
        return None
    if isinstance(cache, CacheBudget):
        return cache.image_cache(estimate)
    if cache is True:
        if estimate <= MEMORY_CACHE_MAX_BYTES:
            return ""
        logger.info(
            "Not caching %.1f GB of decoded images in memory; pass cache=<path> for a file cache.",
            estimate / 1e9,
        )
        return None
    Path(cache).parent.mkdir(parents=True, exist_ok=True)
    return os.fspath(cache)


def _is_ok(image: tf.Tensor, label: tf.Tensor, ok: tf.Tensor) -> tf.Tensor:
    return ok


def _without_ok(image: tf.Tensor, label: tf.Tensor, ok: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    return image, label


class DecodeFailures:
    """The files one dataset has left out; each is logged once per dataset (no process-wide state)."""

    def __init__(self) -> None:
        self.left_out: set[str] = set()
        self._lock = threading.Lock()  # decoding runs on several tf.data threads

    def report(self, what: str, error: Exception) -> None:
        with self._lock:
            first = what not in self.left_out
            self.left_out.add(what)
        if first:
            logger.warning("Leaving out %s, which failed to decode after the scan: %s", what, error)


def _decode(
    name: tf.Tensor,
    payload: tf.Tensor,
    label: tf.Tensor,
    *,
    image_size: int,
    encoded: bool,
    white_level: int | None,
    failures: DecodeFailures,
):
    """Graph op: ``(image, label, ok)``; a failure gives a blank image and ``ok=False``, never an error."""

    def run(name_bytes: bytes, payload_bytes: bytes) -> tuple[np.ndarray, np.bool_]:
        try:
            source = payload_bytes if encoded else os.fsdecode(payload_bytes)
            return decode_image(source, image_size, white_level), np.bool_(True)
        except Exception as err:  # UnusableImage, or anything unforeseen: never end a training run
            failures.report(os.fsdecode(name_bytes), err)
            return np.zeros((image_size, image_size, 3), np.uint8), np.bool_(False)

    image, ok = tf.numpy_function(run, [name, payload], [tf.uint8, tf.bool], stateful=False)
    return tf.ensure_shape(image, (image_size, image_size, 3)), label, tf.ensure_shape(ok, ())
