"""Atomic file writes: a kill at any moment leaves either the old file or the new one.

Temporary files and folders are created private (``mkstemp``: 0600, ``mkdtemp``: 0700); what
takes a final name gets the mode an ordinary write would give it, from the process's umask (a
model served by another user must be readable), or the mode of the file it replaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from transferkit.errors import TransferkitError, setting

_UMASK_LOCK = threading.Lock()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only if the block succeeds.

    The temporary file keeps ``path``'s suffixes (Keras picks the format from it), is fsynced and
    then renamed, which is atomic on POSIX file systems. On any error the temporary file is
    removed and ``path`` is left untouched.

    Example:
        >>> with atomic_path("runs/x/model.keras") as tmp:  # doctest: +SKIP
        ...     model.save(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) if suffix is None else suffix  # keeps ".weights.h5" whole
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    except OSError as error:  # an error names the file asked for, not the hidden temporary one
        raise OSError(error.errno, error.strerror, str(path)) from error
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, _mode_of(path, 0o666))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def staging_dir(final: Path) -> Path:
    """A new hidden folder next to ``final``, to fill and then rename into place: created private
    like every ``mkdtemp`` folder, then given the mode ``os.mkdir`` would give ``final``."""
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    os.chmod(staging, _mode_of(final, 0o777))
    return staging


def _mode_of(path: Path, default: int) -> int:
    """The permission bits ``path`` has, or ``default`` less the process's umask if it is new."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        with _UMASK_LOCK:  # reading the umask sets it: restore it at once
            umask = os.umask(0o022)
            os.umask(umask)
        return default & ~umask


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, data: object) -> None:
    """Atomically write ``data`` as indented JSON, UTF-8: class names and paths as written, not escaped."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str, ensure_ascii=False) + "\n")


def require_writable_folder(folder: str | os.PathLike, what: str | None = None) -> None:
    """Refuse, before any work, a folder that cannot be created or written; ``what`` names it in the
    message (default: the ``out`` setting).

    Raises:
        TransferkitError: a part of the path is a file, or its nearest existing folder is on a
            read-only file system or not writable by this user.
    """
    what = setting("out") if what is None else what
    probe = Path(folder).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise TransferkitError(f"{what} {folder}: {probe} is a file, not a folder. Choose another folder.")
    if not os.access(probe, os.W_OK | os.X_OK):
        read_only = bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
        why = "is on a read-only file system" if read_only else "is not writable by this user"
        raise TransferkitError(f"{what} {folder}: {probe} {why}. Choose a folder you can write to.")
    _try_creating(Path(folder).absolute(), probe, what)


def _try_creating(folder: Path, existing: Path, what: str) -> None:
    """Create (and remove again) a folder of this process's own in ``existing``, the nearest
    existing folder above ``folder``: a writable parent can still refuse new folders (``/proc``:
    ENOENT for root), which the permission bits do not show. The probe is never ``folder``
    itself: another process creating its run folder under ``folder`` at the same moment (the
    workers of a multi-worker job, two fits started together) must not see it vanish."""
    if folder == existing:
        return
    probe = existing / f".transferkit-probe-{os.getpid()}-{threading.get_ident()}"
    try:
        probe.mkdir()
    except FileExistsError:  # left by a killed process of the same id: it was creatable
        pass
    except OSError as error:
        raise TransferkitError(
            f"{what} {folder}: cannot create it under {existing} ({error.strerror}). Choose another folder."
        ) from None
    with contextlib.suppress(OSError):
        probe.rmdir()
