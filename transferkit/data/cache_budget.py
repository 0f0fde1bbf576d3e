"""The memory budget of a run's caches (decoded images, cached features) and the folder they spill to.

``--cache-memory`` (recipe ``[data] cache_memory``) is how much a run may keep in memory for its
caches: ``"auto"`` (a quarter of the machine's memory, at most half of what is free now), or a
size such as ``"512MB"`` or ``"2GiB"``. Caches are claimed from one :class:`CacheBudget` in the
order they are made; one that no longer fits goes to a file in the run's ``cache/`` folder
instead: decoded images to a ``tf.data`` file cache, features to an ``np.memmap``. The folder is
removed when the run ends, whether it finished or failed (:func:`spill_folder`). Where the caches
live never changes what a run computes: the shuffle buffer after the image cache is sized by the
data alone (:data:`transferkit.data.pipeline.SHUFFLE_BUFFER_MAX_BYTES`, up to 256 MB, outside the
budget), so a seeded run trains on the same batches whatever the budget.

A memory-mapped array's pages count as the process's memory while they stay mapped, so writers
and readers of a large one call :func:`release_pages` every :data:`RELEASE_BYTES`: the pages go
back to the file and the kernel's page cache, which it can reclaim (resident anonymous memory it
cannot).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import mmap
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from transferkit.errors import TransferkitError, setting

logger = logging.getLogger(__name__)
AUTO = "auto"
AUTO_FRACTION = 0.25  # of the physical memory: the rest is the framework, the model, the OS
AUTO_FREE_FRACTION = 0.5  # of the memory free when the run starts, if that is less
FALLBACK_MEMORY = 1 << 30  # when the platform cannot say how much memory it has
CACHE_FOLDER = "cache"  # inside the run folder
RELEASE_BYTES = 64 << 20  # a memory-mapped cache gives its pages back after this much is touched
DISK_SHARE = 0.5  # of the free disk the spilled caches may take (decoded pixels outweigh JPEGs)
UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
UNITS |= {"KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*")


def parse_cache_memory(value: str | int) -> int:
    """Bytes of memory the caches may use: ``"auto"``, a size (``"512MB"``, ``"2GiB"``) or bytes.

    Args:
        value: ``"auto"``, a number with an optional unit (B, KB, MB, GB, TB, KiB, MiB, GiB,
            TiB; case-insensitive), or an integer number of bytes. ``0`` keeps nothing in memory.

    Raises:
        TransferkitError: the value is not a size.

    Example:
        >>> parse_cache_memory("512MB"), parse_cache_memory("1.5GiB"), parse_cache_memory(0)
        (512000000, 1610612736, 0)
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return auto_cache_memory()
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if match is None or match.group(2).upper() not in UNITS:
        raise TransferkitError(
            f"cache_memory={value!r} is not a memory size. Expected {AUTO!r} or a number with a "
            "unit, e.g. '512MB', '2GB' or '1.5GiB' (units: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB). "
            f"Fix {setting('cache_memory')} or [data] cache_memory in the recipe."
        )
    return int(float(match.group(1)) * UNITS[match.group(2).upper()])


def auto_cache_memory() -> int:
    """The default budget: a quarter of the machine's memory, at most half of what is free now."""
    total, free = _machine_memory()
    if total is None:
        return FALLBACK_MEMORY
    budget = int(total * AUTO_FRACTION)
    return min(budget, int(free * AUTO_FREE_FRACTION)) if free is not None else budget


def _machine_memory() -> tuple[int | None, int | None]:
    """(physical, available) bytes from ``os.sysconf``; ``None`` where the platform has no answer."""

    def pages(name: str) -> int | None:
        try:
            return os.sysconf(name) * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None

    return pages("SC_PHYS_PAGES"), pages("SC_AVPHYS_PAGES")


class CacheBudget:
    """The memory a run's caches may still claim, and the folder that takes what does not fit.

    Each cache asks once, when it is made (:meth:`claim`); what is claimed stays claimed for the
    run. Without a ``folder``, or when the spilled files would take more than ``DISK_SHARE`` of
    the free disk, nothing spills: a cache over the budget is then not kept at all (images are
    decoded again each epoch) or, for arrays, kept in memory regardless (with a warning).

    Args:
        memory_bytes: the budget, from :func:`parse_cache_memory`.
        folder: where spilled caches go (made when the first one does); ``None``: nowhere.

    Example:
        >>> budget = CacheBudget(1000, folder=None)
        >>> budget.claim(600), budget.claim(600), budget.remaining
        (True, False, 400)
    """

    def __init__(self, memory_bytes: int, folder: str | os.PathLike | None):
        self.memory_bytes = memory_bytes
        self.folder = Path(folder) if folder is not None else None
        self.remaining = memory_bytes
        self.spilled = 0  # bytes sent to the folder so far (written lazily: not yet on the disk)
        self._names = itertools.count()

    def claim(self, nbytes: int) -> bool:
        """Reserve ``nbytes`` of memory if the budget still has them."""
        if nbytes > self.remaining:
            return False
        self.remaining -= nbytes
        return True

    def spill_path(self, name: str, nbytes: int) -> Path | None:
        """A new file path in the spill folder (made now) for ``nbytes``; ``None``: no folder or no room."""
        if self.folder is None:
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.folder).free
        if self.spilled + nbytes > DISK_SHARE * free:
            logger.warning(
                "Not spilling %.1f GB of %s to %s: %.1f GB free on its disk. Free some space or "
                "raise --cache-memory.", nbytes / 1e9, name, self.folder, free / 1e9,
            )  # fmt: skip
            return None
        self.spilled += nbytes
        return self.folder / f"{name}-{next(self._names)}"

    def image_cache(self, nbytes: int) -> str | None:
        """Where a ``tf.data`` cache of ``nbytes`` goes: ``""`` (memory), a file prefix, or ``None``."""
        if self.claim(nbytes):
            return ""
        path = self.spill_path("images", nbytes)
        return None if path is None else os.fspath(path)

    def array(self, shape: tuple[int, ...], dtype: str = "float32", name: str = "features") -> np.ndarray:
        """A zeroed array: in memory while the budget has room, else an ``np.memmap`` in the folder.

        Args:
            shape: the array's shape.
            dtype: its type.
            name: the start of the file name if it spills.
        """
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        path = None if self.claim(nbytes) else self.spill_path(name, nbytes)
        if path is None:
            return np.zeros(shape, dtype)
        return np.memmap(path.with_suffix(".npy"), dtype=dtype, mode="w+", shape=shape)


def budget_for_run(cache_memory: str | int, run_dir: str | os.PathLike) -> CacheBudget:
    """The budget of one run: ``cache_memory`` as the recipe gives it, spilling to ``run_dir/cache``."""
    return CacheBudget(parse_cache_memory(cache_memory), Path(run_dir) / CACHE_FOLDER)


@contextlib.contextmanager
def spill_folder(run_dir: str | os.PathLike) -> Iterator[Path]:
    """Remove ``run_dir/cache`` on entry (left by a killed run) and on exit, even on an error."""
    folder = Path(run_dir) / CACHE_FOLDER
    shutil.rmtree(folder, ignore_errors=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def is_mapped(array: np.ndarray) -> bool:
    """True when ``array`` is (a view of) a memory-mapped file."""
    return _mapping(array) is not None


def release_pages(array: np.ndarray) -> None:
    """Write a memory-mapped array's pages back to its file and unmap them from this process.

    They stay in the kernel's page cache (reclaimable) and come back on the next access. A no-op
    for an in-memory array or where the platform has no ``madvise``.
    """
    mapping = _mapping(array)
    if mapping is None or not hasattr(mmap, "MADV_DONTNEED"):
        return
    mapping.flush()  # a shared file mapping keeps dirty pages across MADV_DONTNEED; flush anyway
    mapping.madvise(mmap.MADV_DONTNEED)


def _mapping(array: np.ndarray) -> mmap.mmap | None:
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    return base if isinstance(base, mmap.mmap) else None


def is_memory_size(value: str | int) -> bool:
    """True when :func:`parse_cache_memory` accepts ``value`` (checked without asking the machine)."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return True
    try:
        parse_cache_memory(value)
    except TransferkitError:
        return False
    return True
