"""Images in, ``tf.data`` out: load a folder or a TFDS dataset, split it, describe it, stream it.

When the source has no test split of its own, a seeded, stratified test split is held out first
(see :mod:`transferkit.data.splits`), then validation; ``DataSplits.holdout`` says which.
Byte-identical copies of a file within a class go to one split (:mod:`transferkit.data.copies`).

``load_data`` scans and splits (nothing is decoded for training yet); ``make_dataset`` turns one
split into batches of ``uint8`` RGB pixels. How files are decoded is in
:mod:`transferkit.data.decode`, how folders are walked in :mod:`transferkit.data.scan`, TFDS specifics in
:mod:`transferkit.data.tfds_source`, the card in :mod:`transferkit.data.card`.

Example:
    >>> splits = load_data("flowers/")  # doctest: +SKIP
    >>> print(splits.card.summary())  # doctest: +SKIP
    >>> train = make_dataset(splits.train, 224, 32, shuffle=True)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transferkit.data import tfds_source
from transferkit.data.card import EMPTY_CLASS_REASON, DatasetCard, is_elongated, size_stats
from transferkit.data.copies import copy_groups, find_copies
from transferkit.data.decode import IMAGE_EXTENSIONS, load_images, white_level_for
from transferkit.data.pipeline import make_dataset
from transferkit.data.scan import ScannedSplit, detect_layout, nfc, scan_split
from transferkit.data.splits import (
    Holdout,
    hold_out_test,
    holdout_record,
    remaining_fraction,
    stratified_split,
    too_small_for_test,
)
from transferkit.errors import TransferkitError

__all__ = [
    "DataSplits",
    "DatasetCard",
    "Holdout",
    "ImageSet",
    "load_data",
    "load_images",
    "make_dataset",
    "stratified_split",
]


@dataclass(frozen=True)
class ImageSet:
    """One split: image files and their label indices, or records of a TFDS split.

    For TFDS, ``tfds`` says which records, and ``paths`` holds ids like ``tfds:beans/train#17``.
    ``white_level``: what its high-bit-depth images are scaled from (the data set's, see
    :class:`DatasetCard`); decoding follows it.

    Example:
        >>> ImageSet(("a/cat/1.jpg", "a/dog/2.jpg"), (0, 1)).__len__()
        2
    """

    paths: tuple[str, ...]
    labels: tuple[int, ...]
    tfds: tfds_source.TfdsRef | None = None
    white_level: int | None = None

    def __post_init__(self) -> None:
        if len(self.paths) != len(self.labels):
            raise ValueError(f"ImageSet got {len(self.paths)} paths but {len(self.labels)} labels.")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Sequence[int]) -> ImageSet:
        """The items at ``indices`` (positions in this set), in that order."""
        ref = self.tfds
        if ref is not None:
            base = ref.indices if ref.indices is not None else range(len(self))
            ref = dataclasses.replace(ref, indices=tuple(int(base[i]) for i in indices))
        paths, labels = tuple(self.paths[i] for i in indices), tuple(self.labels[i] for i in indices)
        return ImageSet(paths, labels, ref, self.white_level)


@dataclass(frozen=True)
class DataSplits:
    """Everything ``load_data`` found: class names, the splits, and the dataset card.

    ``test`` is None when nothing could be held out; ``card.holdout`` says where it came from.
    """

    class_names: tuple[str, ...]
    train: ImageSet
    val: ImageSet
    test: ImageSet | None
    card: DatasetCard

    @property
    def holdout(self) -> Holdout:
        """Where the test split came from, its size and digest, or why there is none."""
        return self.card.holdout


def load_data(
    source: str | os.PathLike,
    *,
    validation_split: float = 0.2,
    test_split: float = 0.15,
    seed: int = 1337,
    strict: bool = False,
    min_classes: int = 2,
    classes: Sequence[str] | None = None,
) -> DataSplits:
    """Find, check and split the images of ``source``.

    Args:
        source: a folder of class subfolders (``data/cat/*.jpg``); or a folder holding ``train/``
            plus ``val/`` or ``validation/`` and/or ``test/`` (each of class subfolders); or
            ``tfds:NAME[:SPLIT]`` for TensorFlow Datasets.
        validation_split: fraction of each class held out for validation when the source has no
            validation split of its own (a fraction of the whole pool, test part included).
        test_split: fraction of each class held out for testing when the source has no test split
            of its own; carved first, so the same seed gives the same test split whatever
            ``validation_split`` is. A class of fewer than 3 images gives it none (the card
            names the classes it misses); none is held out where fewer than two classes, or fewer
            than half of them, have 3 images (``card.holdout.note`` says so); 0 holds out nothing.
        seed: seed of those splits; same seed, same splits, whatever the file system order.
        strict: raise when a class folder has no usable image, instead of leaving it out.
        min_classes: fewer classes with usable images is an error (training needs two; images
            to evaluate a model on may all be of one class).
        classes: label a folder's images by these class names (a trained model's, in its order)
            instead of by the classes its training folder holds; a class folder in any split
            that is not among them is an error. Folders only (TFDS labels are the data set's).

    Returns:
        :class:`DataSplits`; files that could not be used are listed in ``card.skipped``.

    Raises:
        TransferkitError: missing folder, no usable images, fewer than two classes, a bad
            ``validation_split`` or ``test_split``, and (with ``strict``) an empty class.

    Example:
        >>> splits = load_data("flowers/", validation_split=0.2)  # doctest: +SKIP
        >>> splits.class_names, len(splits.train), len(splits.val)  # doctest: +SKIP
        (('daisy', 'rose'), 80, 20)
    """
    if not 0 <= validation_split < 1:
        raise TransferkitError(
            f"validation_split={validation_split!r}; expected a number in [0, 1), e.g. 0.2."
        )
    if not 0 <= test_split < 1 or validation_split + test_split >= 1:
        raise TransferkitError(
            f"test_split={test_split!r} with validation_split={validation_split!r}; expected a "
            "test_split in [0, 1) that leaves images to train on, e.g. 0.15 with 0.2."
        )
    source = source_path(source)
    fractions = (validation_split, test_split, seed)
    if source.startswith("tfds:"):
        return _load_tfds(source, *fractions)
    return _load_folder(source, *fractions, strict, min_classes, classes)


def source_path(source: str | os.PathLike) -> str:
    """``source`` as the run records it: a folder as an absolute path with ``~`` expanded (a fit
    resumes, and the commands it suggests run, from any working directory); ``tfds:`` as given."""
    source = os.fspath(source)
    return source if source.startswith("tfds:") else str(Path(source).expanduser().resolve())


def labelled_images(
    source: str, class_names: Sequence[str], white_level: int | None = None
) -> tuple[ImageSet, str]:
    """The labelled images of ``source`` to measure a model of ``class_names`` on, and which they are.

    Its test split when it has one; else all of it (a TFDS source with a validation split but no
    test split: that validation split, as two TFDS splits cannot be read as one). It may hold any
    of the model's classes, one alone too; labels are indices into ``class_names``, and the
    images decode as the model's training images did (``white_level``: the run's).

    Returns:
        ``(images, part)``: ``part`` is "its test split", "its validation split" or "all of it".

    Raises:
        TransferkitError: a class the model does not know, or what :func:`load_data` raises.
    """
    source = source_path(source)
    if not source.startswith("tfds:"):
        return _labelled_folder(source, class_names, white_level)
    splits = load_data(source, validation_split=0.0, test_split=0.0, seed=0, min_classes=1)  # no carving
    unknown = [name for name in splits.class_names if name not in class_names]
    if unknown:
        raise TransferkitError(_not_known(unknown, source, class_names))
    if splits.test is not None and len(splits.test):
        images, part = splits.test, "its test split"
    elif len(splits.val):  # a TFDS validation split but no test split (two splits cannot be read as one)
        images, part = splits.val, "its validation split"
    else:
        images, part = splits.train, "all of it"
    remap = [list(class_names).index(name) for name in splits.class_names]
    labels = tuple(remap[label] for label in images.labels)
    return dataclasses.replace(images, labels=labels, white_level=white_level), part


def _labelled_folder(
    source: str, class_names: Sequence[str], white_level: int | None
) -> tuple[ImageSet, str]:
    """:func:`labelled_images` of a folder: only the part measured is scanned (``test/`` when there
    is one), and each class folder in it is labelled by the model's own class of that name, so a
    class that only the test split holds is scored too."""
    root = Path(source)
    layout = detect_layout(root) if root.is_dir() else {}
    folder, part = (layout["test"], "its test split") if "test" in layout else (root, "all of it")
    splits = load_data(folder, validation_split=0.0, test_split=0.0, min_classes=1, classes=class_names)
    parts = (splits.train, splits.val)  # val: a val/ folder beside train/ (nothing is carved)
    paths = tuple(path for images in parts for path in images.paths)
    images = ImageSet(paths, tuple(label for images in parts for label in images.labels))
    return dataclasses.replace(images, white_level=white_level), part


def _not_known(unknown: Sequence[str], source: str, class_names: Sequence[str]) -> str:
    return f"Class {unknown[0]!r} in {source} is not one the model knows ({', '.join(class_names)})."


def _carve(
    sets: dict[str, ImageSet],
    validation_split: float,
    test_split: float,
    seed: int,
    root: str | None,
    digest_of: Mapping[str, str] | None = None,
) -> Holdout:
    """Fill in the splits ``sets`` lacks from ``sets["train"]``: test first, then validation.

    ``root``: the folder the paths are under (None for TFDS), so the test split's digest does not
    depend on how the folder was named. ``digest_of``: each file's content digest (the scan's), so
    that copies of one file within a class go to one split (:mod:`transferkit.data.copies`)."""
    pool = sets["train"]
    groups = None if digest_of is None else copy_groups(pool.labels, [digest_of.get(p) for p in pool.paths])
    if "test" in sets:
        origin = "tfds" if pool.tfds is not None else "folder"
        holdout = holdout_record(origin, sets["test"].paths, sets["test"].labels, root=root)
    else:
        rest, test, why_none = hold_out_test(pool.labels, test_split, seed, groups)
        too_small = too_small_for_test(pool.labels) if len(test) else 0
        if len(test):
            sets["train"], sets["test"] = pool.subset(rest), pool.subset(test)
            groups = None if groups is None else groups[rest]
        able = np.isin(pool.labels, np.unique(pool.subset(test).labels))  # the classes that gave some
        holdout = holdout_record(
            "held_out" if len(test) else "none",
            pool.subset(test).paths,
            pool.subset(test).labels,
            fraction=test_split,
            seed=seed,
            why_none=why_none,
            root=root,
            pool_size=int(able.sum()),
            too_small=too_small,
        )
    if "val" not in sets:
        held_out = test_split if holdout.origin == "held_out" else 0.0
        fraction = remaining_fraction(validation_split, held_out)
        train_idx, val_idx = stratified_split(sets["train"].labels, fraction, seed, groups)
        sets["train"], sets["val"] = sets["train"].subset(train_idx), sets["train"].subset(val_idx)
    return holdout


def _archive_hint(path: Path) -> str:
    """How to unpack ``path`` when it is an archive ("" otherwise): data sets often come as one."""
    if not path.is_file():
        return ""
    name = path.name.lower()
    if name.endswith(".zip"):
        folder = path.with_suffix("")
        return f"It is a zip archive: unpack it (python -m zipfile -e {path} {folder}) and pass that folder."
    if name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        return (
            f"It is a tar archive: unpack it (tar -xf {path} -C {path.parent}) and pass the folder it holds."
        )
    return ""


def _load_folder(
    source: str,
    validation_split: float,
    test_split: float,
    seed: int,
    strict: bool,
    min_classes: int = 2,
    classes: Sequence[str] | None = None,
) -> DataSplits:
    root = Path(source).expanduser()
    if not root.is_dir():
        problem = "is not a folder" if root.exists() else "does not exist"
        raise TransferkitError(
            f"Data source {source!r} {problem}; expected a folder of class subfolders "
            f"(<folder>/<class>/*.jpg), of images with a labels.csv, or 'tfds:NAME'. "
            f"{_archive_hint(root) or 'Check the path.'}"
        )
    layout = detect_layout(root)
    scans = {split: scan_split(folder) for split, folder in layout.items()}
    pool = scans.pop("all", None) or scans["train"]
    class_names = _class_names(pool, source, strict, min_classes)
    if classes is not None:  # a model's: every split's class folders are labelled by them
        known = {nfc(name) for name in classes}
        unknown = sorted({name for scan in (pool, *scans.values()) for name, found in scan.images.items()
                          if found and name not in known})  # fmt: skip
        if unknown:
            raise TransferkitError(_not_known(unknown, source, classes))
        class_names = tuple(classes)
    skipped = [(str(root / name), f"{EMPTY_CLASS_REASON}; class left out")
               for name, found in pool.images.items() if not found]  # fmt: skip
    sets = {"train": _image_set(pool, class_names, skipped)}
    sets.update(
        {split: _image_set(scans[split], class_names, skipped) for split in ("val", "test") if split in scans}
    )
    for split in ("val", "test"):  # a given split without images of the classes is carved as if absent
        if split in sets and not sets[split].labels:
            del sets[split]
            folder = Path(layout[split])
            reason = (
                f"{folder.name}/ holds no usable images of the training classes; {split} carved from train/"
            )
            skipped.append((str(folder), reason))
    everything = [pool, *scans.values()]
    digest_of = {path: digest for scan in everything for path, digest in scan.digests.items()}
    given = {split: images.paths for split, images in sets.items() if split != "train"}
    copies = find_copies(sets["train"].paths, sets["train"].labels, digest_of, given)
    holdout = _carve(sets, validation_split, test_split, seed, str(root), digest_of)
    # From every split, as a file format's bit depth is a property of the source, not of its labels.
    peaks = [scan.peak for scan in everything if scan.peak is not None]
    white_level = white_level_for(max(peaks)) if peaks else None
    sets = {split: dataclasses.replace(images, white_level=white_level) for split, images in sets.items()}
    dim = [path for scan in everything for path in scan.dim_colour]
    elongated = sorted(
        path
        for scan in everything
        for found in scan.images.values()
        for path, size in found
        if is_elongated(*size)
    )
    card = DatasetCard(
        source=str(source),
        class_names=class_names,
        counts={split: _counts(images, class_names) for split, images in sets.items()},
        skipped=tuple(sorted(skipped + [item for scan in everything for item in scan.skipped])),
        image_sizes=size_stats(
            size for scan in everything for found in scan.images.values() for _, size in found
        ),
        holdout=holdout,
        white_level=white_level,
        dim_colour=(len(dim), dim[0]) if dim else None,
        copies=copies,
        elongated=(len(elongated), elongated[0]) if elongated else None,
    )
    return DataSplits(class_names, sets["train"], sets["val"], sets.get("test"), card)


def _class_names(pool: ScannedSplit, source: str, strict: bool, min_classes: int = 2) -> tuple[str, ...]:
    usable = tuple(sorted(name for name, found in pool.images.items() if found))
    empty = sorted(name for name, found in pool.images.items() if not found)
    if not usable:
        reasons = (
            "; ".join(f"{p}: {r}" for p, r in pool.skipped[:3]) or "no class subfolders with image files"
        )
        raise TransferkitError(
            f"No usable images in {source!r} ({reasons}). Expected <folder>/<class>/*.jpg "
            f"({', '.join(e.lstrip('.') for e in IMAGE_EXTENSIONS)}), at least two class folders, or the "
            "images with a labels.csv naming each one's class (file_name,label)."
        )
    if strict and empty:
        raise TransferkitError(
            f"Class folder(s) with no usable images in {source!r}: {', '.join(empty)} (--strict). "
            "Add images to them or remove them, or run without --strict (strict=False) to leave them out."
        )
    if len(usable) < min_classes:
        raise TransferkitError(
            f"Only one class ({usable[0]!r}) with usable images in {source!r}; a classifier needs at "
            f"least two. {_one_level_down(pool, usable[0]) or 'Add a second class folder next to it.'}"
        )
    return usable


def _one_level_down(pool: ScannedSplit, name: str) -> str:
    """A hint when class ``name`` holds folders of images: the data is one level further down (as
    when an archive unpacks into one folder of class folders); "" otherwise."""
    paths = [Path(path) for path, _ in pool.images[name]]
    folder = next((parent for parent in paths[0].parents if parent.name == name), None)
    if folder is None:
        return ""
    inner = sorted({path.relative_to(folder).parts[0] for path in paths if path.parent != folder})
    if len(inner) < 2:
        return ""
    shown = ", ".join(inner[:4]) + (", ..." if len(inner) > 4 else "")
    return f"It holds folders of images itself ({shown}): if those are the classes, pass {str(folder)!r}."


def _image_set(scan: ScannedSplit, class_names: tuple[str, ...], skipped: list[tuple[str, str]]) -> ImageSet:
    """Paths grouped by class index, sorted within a class; unknown classes go to ``skipped``.

    Names match in Unicode's composed form (NFC), as the scan gives them, so a class name saved
    decomposed (a macOS file system's NFD) finds its folder."""
    index = {nfc(name): i for i, name in enumerate(class_names)}
    folded = {name.casefold(): name for name in index}
    paths, labels = [], []
    for name in sorted(scan.images, key=lambda n: index.get(n, -1)):
        for path, _ in scan.images[name]:
            if name in index:
                paths.append(path)
                labels.append(index[name])
            else:
                near = folded.get(name.casefold())
                hint = f" (training has {near!r}: class names are case-sensitive)" if near else ""
                skipped.append((path, f"class {name!r} has no training images{hint}; left out"))
    return ImageSet(tuple(paths), tuple(labels))


def _counts(images: ImageSet, class_names: tuple[str, ...]) -> dict[str, int]:
    per_label = np.bincount(np.asarray(images.labels, dtype=np.int64), minlength=len(class_names))
    return {name: int(per_label[i]) for i, name in enumerate(class_names)}


def _load_tfds(source: str, validation_split: float, test_split: float, seed: int) -> DataSplits:
    name, split = tfds_source.parse_source(source)
    info = tfds_source.describe(name)
    if split is None and info.splits and "train" not in info.splits:
        raise TransferkitError(
            f"TFDS dataset {name!r} has no 'train' split (it has {', '.join(info.splits)}); "
            f"name the one to train on, e.g. 'tfds:{name}:{info.splits[0]}'."
        )
    val_split = next((s for s in ("validation", "val") if split is None and s in info.splits), None)
    sets = {"train": _tfds_set(info, split or "train")}
    if val_split:
        sets["val"] = _tfds_set(info, val_split)
    if split is None and "test" in info.splits:
        sets["test"] = _tfds_set(info, "test")
    holdout = _carve(sets, validation_split, test_split, seed, None)
    if not len(sets["train"]):
        raise TransferkitError(
            f"TFDS source {source!r} has no training records; expected at least one per class."
        )
    height, width = (info.image_shape + (None, None))[:2]
    card = DatasetCard(
        source=source,
        class_names=info.class_names,
        counts={key: _counts(images, info.class_names) for key, images in sets.items()},
        image_sizes=size_stats([(width, height)]) if width and height else {},
        holdout=holdout,
    )
    return DataSplits(info.class_names, sets["train"], sets["val"], sets.get("test"), card)


def _tfds_set(info: tfds_source.TfdsInfo, split: str) -> ImageSet:
    labels = tfds_source.read_labels(info, split)
    ref = tfds_source.TfdsRef(info.name, split, info.image_key, info.label_key)
    return ImageSet(
        tuple(f"tfds:{info.name}/{split}#{i}" for i in range(len(labels))), tuple(labels.tolist()), ref
    )
