"""Find the usable images of a dataset folder, and say why every other file was left out.

Layout: ``root/<class>/...`` (one pool, split later), or ``root/train/<class>/...`` next to
``val/`` (``valid/``, ``validation/``) and/or ``test/`` (also ``training/`` and ``testing/``; split
folder names are case-insensitive). A folder that holds a label file (``labels.csv``, or a
``metadata.csv`` or ``train.csv`` naming classes: :mod:`transferkit.data.label_file`) is read from
it instead of from class folders: the root (its rows then label the whole data set), or each split
folder.

Rules of the walk, chosen so a real-world folder never stops a run:

- Class folders are searched recursively (``cat/2019/img.jpg`` is a ``cat``), like
  ``keras.utils.image_dataset_from_directory``; symlinked folders and files are followed, and a
  folder reached twice (a symlink loop) is listed as skipped instead of walked again.
- Hidden files and folders (names starting with ``.``: ``.DS_Store``, macOS ``._x.jpg``
  resource forks, ``.ipynb_checkpoints``) are ignored silently.
- A folder transferkit wrote (a run folder: :data:`OUTPUT_MARKS`) is listed as skipped, not walked:
  ``fit --data .`` leaves ``runs/`` inside the data.
- Every other file is used only if it decodes (:func:`transferkit.data.decode.probe`, run in
  a thread pool); otherwise it is listed with a reason: wrong extension, empty, not a regular
  file (a FIFO would block ``open``), truncated, not an image, too large, unreadable.
- Paths are sorted, so results never depend on the order the file system lists them in.
- Each usable file's bytes are hashed (BLAKE2b), so byte-identical copies can be kept in one split
  (:func:`transferkit.data.splits.copy_groups`): a test image with a copy in training is not unseen.
- Class names are the folder names in Unicode's composed form (:func:`nfc`).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import unicodedata
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from transferkit.data.decode import (
    EMPTY_FILE,
    Probe,
    UnusableImage,
    has_image_extension,
    high_bit_depth,
    not_an_image_file,
    probe,
)
from transferkit.data.label_file import find_label_file, read_label_file
from transferkit.errors import TransferkitError

# fastai's and Roboflow's exports name the validation folder valid/; Kaggle sets often Training/
# and Testing/. Unknown to the scan, train/ beside valid/ read as two classes, "train" and "valid".
SPLIT_FOLDERS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
SCAN_WORKERS = min(16, (os.cpu_count() or 1) * 4)  # Pillow releases the GIL; 8 measured best on 2 cores
SCAN_CHUNK = 1024  # files probed per batch of the thread pool: bounds the futures held at once
# A file that transferkit writes into each folder it makes (fit, analyze, compare, lr-find): a
# folder holding one is an earlier run's output, its figures no training images (``fit --data .``
# puts runs/ inside the data, and the next fit read it as a class of plots).
OUTPUT_MARKS = ("run.json", "selection.json", "comparison.json", "lr_find.json")
RUN_FOLDER = "a transferkit run folder (its figures are no training images)"


@dataclass
class ScannedSplit:
    """The usable images of one split folder, per class, and what was left out.

    ``peak``: the largest sample of its high-bit-depth images (16-bit and the like), None when
    it has none; the data set's white level comes from it (:func:`transferkit.data.decode.white_level_for`).
    ``dim_colour``: its 16-bit colour images whose values fit in 12 bits, read without OpenCV (they
    read nearly black).
    ``digests``: each usable image's path -> the hex digest of its bytes (equal digests, copies).
    """

    images: dict[str, list[tuple[str, tuple[int, int]]]] = field(default_factory=dict)  # path, (w, h)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    peak: int | None = None
    dim_colour: list[str] = field(default_factory=list)
    digests: dict[str, str] = field(default_factory=dict)


def nfc(name: str) -> str:
    """``name`` in Unicode's composed form (NFC). Class names are compared in it: macOS file
    systems and the zips made on them spell "Café" decomposed (NFD), most others composed, and
    the two spellings look the same but differ as strings."""
    return unicodedata.normalize("NFC", name)


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def detect_layout(root: Path) -> dict[str, Path]:
    """Return the split folders of ``root``: ``{"train": ..., "val": ..., "test": ...}`` or ``{"all": root}``.

    Example:
        >>> detect_layout(Path("flowers"))  # doctest: +SKIP
        {'train': PosixPath('flowers/train'), 'val': PosixPath('flowers/validation')}
    """
    found: dict[str, Path] = {}
    if find_label_file(root) is not None:  # its rows label the whole data set, split folders too
        return {"all": root}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        split = SPLIT_FOLDERS.get(entry.name.lower())
        if split and not _is_hidden(entry.name) and entry.is_dir():
            if split in found:
                raise TransferkitError(
                    f"{root} has two folders for the {split!r} split ({found[split].name!r} and "
                    f"{entry.name!r}); expected one. Merge or rename one of them."
                )
            found[split] = Path(entry.path)
    if "train" in found and ("val" in found or "test" in found):
        return found
    return {"all": root}


def scan_split(folder: Path) -> ScannedSplit:
    """Probe every image under ``folder/<class>/`` (recursively) and sort them into classes; or,
    where ``folder`` holds a label file, every image it lists, into the classes it gives.

    Example:
        >>> scanned = scan_split(Path("flowers/train"))  # doctest: +SKIP
        >>> sorted(scanned.images), scanned.skipped[:1]  # doctest: +SKIP
        (['daisy', 'rose'], [('flowers/train/rose/x.jpg', 'empty file (0 bytes)')])
    """
    result = ScannedSplit()
    label_file = find_label_file(folder)
    candidates = _listed(label_file, result) if label_file else _in_class_folders(folder, result)
    for (class_name, path), outcome in zip(candidates, _probed(path for _, path in candidates), strict=True):
        if isinstance(outcome, str):
            result.skipped.append((path, outcome))
        else:
            found, result.digests[path] = outcome
            result.images[class_name].append((path, found.size))
            if found.peak is not None:
                result.peak = max(found.peak, result.peak or 0)
            if found.dim_colour:
                result.dim_colour.append(path)
    return result


def training_images(folder: Path) -> list[tuple[str | None, str]]:
    """``(class, path)`` of the image files under ``folder`` that a scan would sort into classes, by
    name alone: nothing is decoded (``augment-preview`` samples and captions them). The class is the
    label file's, where the folder has one (only the images it lists), else the class folder's
    name; an image at the top of a folder of class folders has none (None)."""
    label_file = find_label_file(folder)
    if label_file is None:
        return [(_class_folder_of(path, folder), path) for path in walk_images(folder, skipped=[])]
    return list(_labelled(label_file, skipped=[]))


def _class_folder_of(path: str, folder: Path) -> str | None:
    parts = Path(path).relative_to(folder).parts
    return nfc(parts[0]) if len(parts) > 1 else None


def _in_class_folders(folder: Path, result: ScannedSplit) -> list[tuple[str, str]]:
    """``(class, path)`` of each image-named file under ``folder/<class>/``; classes (an empty one
    too) go into ``result.images``, what is passed over into ``result.skipped``."""
    candidates: list[tuple[str, str]] = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if _is_hidden(entry.name):
            continue
        if entry.is_dir() and _is_ancestor(entry.path, folder):
            result.skipped.append((entry.path, "class folder links back to its parent (symlink loop)"))
        elif entry.is_dir():
            name = nfc(entry.name)  # two spellings of one name (a macOS copy) are one class
            before = len(result.skipped)
            paths = walk_images(Path(entry.path), result.skipped)
            if not paths and {reason for _, reason in result.skipped[before:]} == {RUN_FOLDER}:
                continue  # only transferkit's output (`fit --data .` leaves runs/ there): not a class
            result.images.setdefault(name, [])
            candidates += [(name, path) for path in paths]
        else:
            result.skipped.append((entry.path, "not inside a class folder; move it into one"))
    return candidates


def _listed(label_file: Path, result: ScannedSplit) -> list[tuple[str, str]]:
    """:func:`_labelled`, each class (an empty one too) in ``result.images``."""
    candidates = _labelled(label_file, result.skipped)
    for name, _ in candidates:
        result.images.setdefault(name, [])
    return candidates


def _labelled(label_file: Path, skipped: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``(class, path)`` of each image-named file under the label file's folder that it labels;
    what is left out (the label file itself aside) goes to ``skipped``."""
    walked: list[tuple[str, str]] = []
    images = walk_images(label_file.parent, walked)
    skipped += [(path, reason) for path, reason in walked if path != str(label_file)]
    return [(nfc(name), path) for name, path in read_label_file(label_file, images, skipped)]


def high_bit_peak(paths: list[str]) -> int | None:
    """The largest sample of the high-bit-depth images among ``paths`` (None: they have none),
    probed as :func:`scan_split` probes them: the white level of files that are not sorted into
    classes (``augment-preview``) comes from it, as a data set's comes from its scan's ``peak``.
    Only files whose header says more than 8 bits a sample are decoded."""
    deep = (path for path in paths if high_bit_depth(path))
    probes = (outcome[0] for outcome in _probed(deep) if not isinstance(outcome, str))
    return max((found.peak for found in probes if found.peak is not None), default=None)


def _probed(paths: Iterator[str]) -> Iterator[tuple[Probe, str] | str]:
    """:func:`_check` of every path, in order, from a thread pool with a bounded number in flight.

    ``Executor.map`` submits every path at once (a future per file held until the end); here at
    most ``SCAN_CHUNK`` are queued, so memory stays flat however many files a folder holds.
    """
    with ThreadPoolExecutor(max_workers=SCAN_WORKERS) as pool:
        while chunk := list(itertools.islice(paths, SCAN_CHUNK)):
            yield from pool.map(_check, chunk)


def _key(path: str | os.PathLike, info: os.stat_result | None = None) -> tuple[int, int]:
    info = info or os.stat(path)
    return info.st_dev, info.st_ino


def _is_ancestor(path: str, folder: Path) -> bool:
    """True when ``path`` is ``folder`` itself or one of its parents (after following links)."""
    real = Path(os.path.realpath(path))
    return real == Path(os.path.realpath(folder)) or real in Path(os.path.realpath(folder)).parents


def walk_images(top: Path, skipped: list[tuple[str, str]]) -> list[str]:
    """Image-extension files under ``top`` (sorted, recursive, symlinks followed, loops cut, hidden
    names such as ``.ipynb_checkpoints`` and ``._photo.jpg`` left out); what it passes over goes to
    ``skipped``. Training scans class folders with it, and ``predict`` the folders it is given."""
    found: list[str] = []
    # Folders above the class folder count as seen: a link back up (``cat/up -> ../..``) is a loop,
    # not a way to pull other classes (or the whole disk) into this class.
    seen = {_key(parent) for parent in Path(os.path.realpath(top)).parents}

    def on_error(err: OSError) -> None:
        skipped.append((str(err.filename), f"cannot list folder: {err.strerror or err}"))

    for dirpath, dirnames, filenames in os.walk(top, followlinks=True, onerror=on_error):
        try:
            info = os.stat(dirpath)
        except OSError as err:
            on_error(err)
            dirnames[:] = []
            continue
        if _key(dirpath, info) in seen:
            skipped.append((dirpath, "folder already scanned (symlink loop or duplicate link)"))
            dirnames[:] = []
            continue
        seen.add(_key(dirpath, info))
        if any(mark in filenames for mark in OUTPUT_MARKS):
            skipped.append((dirpath, RUN_FOLDER))
            dirnames[:] = []
            continue
        dirnames[:] = sorted(name for name in dirnames if not _is_hidden(name))
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if _is_hidden(name):
                continue
            if has_image_extension(name):
                found.append(path)
            else:
                skipped.append((path, not_an_image_file(name)))
    return found


def _check(path: str) -> tuple[Probe, str] | str:
    """The :class:`~transferkit.data.decode.Probe` of a usable image and the digest of its bytes, or
    the reason it cannot be used."""
    try:
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            return EMPTY_FILE
        found = probe(path)  # reads every byte first: the hash reads them from the page cache
        return found, content_digest(path)
    except UnusableImage as err:
        return str(err)
    except OSError as err:
        return f"cannot read file: {err.strerror or err}"


def content_digest(path: str | os.PathLike) -> str:
    """Hex BLAKE2b-128 digest of the file's bytes: equal digests, byte-identical files.

    Example:
        >>> content_digest("cat.jpg")  # doctest: +SKIP
        '3f2a9c...'
    """
    with open(path, "rb") as file:
        return hashlib.file_digest(file, lambda: hashlib.blake2b(digest_size=16)).hexdigest()
