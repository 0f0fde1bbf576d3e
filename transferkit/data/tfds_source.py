"""TensorFlow Datasets as a source: ``tfds:NAME[:SPLIT]`` through the real ``tfds.builder`` API.

- ``tfds:beans`` uses the builder's ``train`` split, its ``validation`` split when it has one
  (otherwise a stratified part of ``train``), and its ``test`` split when it has one.
- ``tfds:beans:train[:50%]`` uses that split (any TFDS split expression) as the pool, and
  carves validation from it. ``NAME`` may carry a config and version: ``tfds:cifar10:3.0.2``.
- Data already in ``TFDS_DATA_DIR`` (default ``~/tensorflow_datasets``) is used as is; missing
  data is downloaded when the machine is online, and offline the call fails at once with a
  :class:`TransferkitError` that says how to get the data there.
- Images are never decoded by TFDS here: records are read with ``SkipDecoding`` and go through
  :func:`transferkit.data.decode.decode_image` like files do, so both paths give identical pixels.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from transferkit.errors import TransferkitError

_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
REACHABILITY_HOST = ("storage.googleapis.com", 443)  # where TFDS fetches metadata and most data


@dataclass(frozen=True)
class TfdsRef:
    """Which records of which TFDS split an :class:`~transferkit.data.loading.ImageSet` holds."""

    name: str
    split: str
    image_key: str
    label_key: str
    indices: tuple[int, ...] | None = None  # positions in the split; None = every record, in order


@dataclass(frozen=True)
class TfdsInfo:
    """What :func:`describe` finds out about a dataset before any image is read."""

    name: str
    image_key: str
    label_key: str
    class_names: tuple[str, ...]
    image_shape: tuple[int | None, ...]
    splits: tuple[str, ...]  # empty when the builder does not know (e.g. under tfds mocking)


def parse_source(source: str) -> tuple[str, str | None]:
    """``"tfds:NAME[:VERSION][:SPLIT]"`` -> ``(name, split or None)``.

    Example:
        >>> parse_source("tfds:beans:train[:80%]")
        ('beans', 'train[:80%]')
    """
    parts = source.split(":", 1)[1].split(":")
    name, rest = parts[0], parts[1:]
    if rest and _VERSION.match(rest[0]):
        name, rest = f"{name}:{rest[0]}", rest[1:]
    if not name:
        raise TransferkitError(f"Received source {source!r}; expected 'tfds:NAME' or 'tfds:NAME:SPLIT'.")
    return name, (":".join(rest) or None)


def _tfds():
    import tensorflow_datasets as tfds  # imported on use: it costs ~2 s

    return tfds


def builder(name: str):
    """The TFDS builder for ``name``, with a clear error for an unknown name."""
    tfds = _tfds()
    try:
        return tfds.builder(name)
    except tfds.core.registered.DatasetNotFoundError as err:
        hint = str(err).splitlines()[0]
        raise TransferkitError(
            f"Unknown TFDS dataset {name!r} ({hint}). Use a name from "
            "https://www.tensorflow.org/datasets/catalog, e.g. tfds:beans."
        ) from None


def describe(name: str) -> TfdsInfo:
    """Read the builder's metadata: supervised keys, class names, image shape, split names."""
    info = builder(name).info
    tfds = _tfds()
    image_key, label_key = info.supervised_keys or (None, None)
    features = info.features
    if image_key not in features or not isinstance(features[image_key], tfds.features.Image):
        image_key = _only_key(features, tfds.features.Image, name, "image")
    if label_key not in features or not isinstance(features[label_key], tfds.features.ClassLabel):
        label_key = _only_key(features, tfds.features.ClassLabel, name, "class label")
    return TfdsInfo(
        name=name,
        image_key=image_key,
        label_key=label_key,
        class_names=tuple(features[label_key].names),
        image_shape=tuple(features[image_key].shape),
        splits=tuple(info.splits.keys()),
    )


def _only_key(features, kind: type, name: str, what: str) -> str:
    keys = [key for key, feature in features.items() if isinstance(feature, kind)]
    if len(keys) != 1:
        raise TransferkitError(
            f"TFDS dataset {name!r} has {len(keys)} top-level {what} features ({keys}); expected exactly "
            "one. transferkit reads single-label image classification datasets."
        )
    return keys[0]


def read_labels(info: TfdsInfo, split: str) -> np.ndarray:
    """All labels of a split, in record order, without decoding images; downloads if needed."""
    tfds = _tfds()
    data = builder(info.name)
    try:
        # The same reading as encoded_records(): images are passed through undecoded, never parsed.
        ds = data.as_dataset(
            split=split, decoders={info.image_key: tfds.decode.SkipDecoding()}, shuffle_files=False
        )
    except AssertionError:  # TFDS' "could not find data": not downloaded yet
        _download(data)
        return read_labels(info, split)
    except ValueError as err:
        raise TransferkitError(f"TFDS dataset {info.name!r} has no split {split!r} ({err}).") from None
    labels = ds.map(lambda example: example[info.label_key]).batch(4096)
    return np.concatenate([np.zeros(0, np.int64), *labels.as_numpy_iterator()]).astype(np.int64)


def _download(data) -> None:
    name = data.info.full_name
    fix = (
        f"On a machine with internet run `tfds build {data.name}`, then copy the data to {data.data_dir} "
        "(or point TFDS_DATA_DIR at the folder that holds it)."
    )
    try:
        socket.create_connection(REACHABILITY_HOST, timeout=3).close()
    except OSError:
        raise TransferkitError(
            f"TFDS dataset {name!r} is not downloaded and this machine is offline. {fix}"
        ) from None
    try:
        data.download_and_prepare()
    except Exception as err:  # network, disk, missing optional TFDS deps: all user-fixable here
        raise TransferkitError(
            f"Could not download TFDS dataset {name!r} ({type(err).__name__}: {err}). {fix}"
        ) from None


def encoded_records(ref: TfdsRef) -> tf.data.Dataset:
    """``(id, encoded image bytes, int32 label)`` for the records ``ref`` selects, in split order."""
    tfds = _tfds()
    ds = builder(ref.name).as_dataset(
        split=ref.split, decoders={ref.image_key: tfds.decode.SkipDecoding()}, shuffle_files=False
    )
    ds = ds.enumerate()
    if ref.indices is not None and not ref.indices:
        ds = ds.take(0)
    elif ref.indices is not None:
        keep = np.zeros(max(ref.indices, default=-1) + 1, dtype=bool)
        keep[list(ref.indices)] = True
        keep_t, last = tf.constant(keep), len(keep) - 1
        ds = ds.filter(lambda i, _: (i <= last) & tf.gather(keep_t, tf.minimum(i, last)))
    prefix = f"tfds:{ref.name}/{ref.split}#"
    return ds.map(
        lambda i, ex: (
            tf.strings.join([prefix, tf.strings.as_string(i)]),
            ex[ref.image_key],
            tf.cast(ex[ref.label_key], tf.int32),
        )
    )


_RECORD_ID = re.compile(r"tfds:(?P<name>.+)/(?P<split>[^/]+)#(?P<index>\d+)")


def decode_records(
    ids: Sequence[str], image_size: int, white_level: int | None = None
) -> dict[str, np.ndarray]:
    """The records named by ``ids`` (``tfds:NAME/SPLIT#INDEX``, as ``load_data`` names them) decoded
    as training decodes them, by id: one pass over each split they come from. A record that does not
    decode is absent from the result, as is an id of another form.

    Example:
        >>> decode_records(["tfds:beans/test#3"], 224)["tfds:beans/test#3"].shape  # doctest: +SKIP
        (224, 224, 3)
    """
    from transferkit.data.decode import UnusableImage, decode_image

    wanted: dict[tuple[str, str], set[int]] = {}
    for record in ids:
        match = _RECORD_ID.fullmatch(record)
        if match:
            wanted.setdefault((match["name"], match["split"]), set()).add(int(match["index"]))
    decoded = {}
    for (name, split), indices in wanted.items():
        info = describe(name)
        ref = TfdsRef(name, split, info.image_key, info.label_key, tuple(sorted(indices)))
        for record, payload, _ in encoded_records(ref).as_numpy_iterator():
            try:
                decoded[record.decode()] = decode_image(payload, image_size, white_level)
            except UnusableImage:
                pass
    return decoded
