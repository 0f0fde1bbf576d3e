"""How one pool of images is divided: the held-out test split first, then validation, per class, seeded.

The test split is carved before the validation split, from the whole pool, with only the seed and
its own fraction: it does not move when ``validation_split`` changes, so every recipe that
shares a seed is tested on the same images, and nothing that trains or selects (early stopping,
the selector's sample, trials) ever sees it.

Byte-identical copies of a file within a class (:func:`transferkit.data.copies.copy_groups`;
folders gathered from the web or merged from several sources hold many) go to one split together:
a test image whose copy was trained on is not unseen. Without copies the splits are exactly those
of a plain per-class shuffle.

Example:
    >>> rest, test, why_none = hold_out_test([0, 0, 0, 0, 1, 1, 1, 1], 0.25, seed=3)
    >>> len(test), why_none
    (2, None)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

MIN_IMAGES_FOR_TEST = 3  # one each for test, validation and training
HOLDOUT_ORIGINS = ("held_out", "folder", "tfds", "none")  # where DataSplits.test came from
SHARE_SLACK = 0.02  # the test split's note says its actual share when rounding moved it further
VALIDATION_NOTE = "accuracy below is validation accuracy, which early stopping saw"


@dataclass(frozen=True)
class Holdout:
    """Where the test split came from, recorded in the dataset card and the run folder.

    Attributes:
        origin: one of :data:`HOLDOUT_ORIGINS`: carved here (``held_out``), the data's own
            ``test/`` folder (``folder``) or TFDS ``test`` split (``tfds``), or ``none``.
        fraction: the fraction of each class held out (``held_out`` only).
        seed: the seed of that hold-out (``held_out`` only).
        num_test: images in the test split.
        sha256: digest of the sorted ``path<TAB>label`` lines of the test split: equal digests,
            equal test splits.
        note: the one line a person reads: what was held out, or why nothing was.
    """

    origin: str
    fraction: float | None
    seed: int | None
    num_test: int
    sha256: str | None
    note: str

    def to_dict(self) -> dict[str, object]:
        """Plain JSON types."""
        return asdict(self)


def stratified_split(
    labels: Sequence[int], validation_split: float, seed: int, groups: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Split positions into ``(train, val)`` per class, seeded; both sorted ascending.

    Each class sends ``round(n * validation_split)`` images to validation, at least one when it
    has two or more and ``validation_split > 0``, and always keeps one for training. Each class
    is shuffled with its own seed ``[seed, label]``, so other classes never change its split.
    With ``groups``, a group goes to one side whole: validation takes groups in the shuffled
    order of their first member, passing over any too large for the count still to fill.

    Args:
        labels: label index of each item, in a fixed (sorted) order.
        validation_split: fraction of each class to hold out, in ``[0, 1)``.
        seed: split seed.
        groups: group id of each item (:func:`transferkit.data.copies.copy_groups`), or None: each
            item alone.

    Example:
        >>> train, val = stratified_split([0, 0, 0, 1, 1], 0.2, seed=1)
        >>> len(train), len(val)
        (3, 2)
    """
    labels = np.asarray(labels, dtype=np.int64)
    val_parts = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        n_val = int(round(len(members) * validation_split))
        if validation_split > 0 and len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        rng = np.random.default_rng([seed, int(label)])  # per class: other classes never shift it
        order, n_val = rng.permutation(members), min(n_val, len(members) - 1)
        val_parts.append(order[:n_val] if groups is None else _whole_groups(order, groups, n_val))
    val = np.sort(np.concatenate([np.zeros(0, np.int64), *val_parts]))
    return np.setdiff1d(np.arange(len(labels)), val), val


def _whole_groups(order: np.ndarray, groups: Sequence[int], count: int) -> np.ndarray:
    """Up to ``count`` items of ``order``, whole groups only, each group where its first member comes
    (items each in a group of their own: ``order[:count]``)."""
    by_group: dict[int, list[int]] = {}
    for item in order:
        by_group.setdefault(int(groups[item]), []).append(int(item))
    picked: list[int] = []
    for members in by_group.values():
        if len(picked) >= count:
            break
        if len(picked) + len(members) <= count:
            picked += members
    return np.asarray(picked, dtype=np.int64)


def hold_out_test(
    labels: Sequence[int], test_split: float, seed: int, groups: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray, str | None]:
    """Positions ``(rest, test, why_none)``: a stratified, seeded test split, or none and why.

    A class of fewer than :data:`MIN_IMAGES_FOR_TEST` images (it could not give test, validation
    and training one image each) gives the test split none: a long tail of rare classes leaves the
    others their test images, and the dataset card names the classes the test figures miss.
    Nothing is held out when ``test_split`` is 0, or when fewer than two classes, or fewer than half
    of them, could give test images (the figures would speak for too few of the classes);
    ``why_none`` then says so in words. Each class's draw is seeded by its label alone, so the
    small classes do not move the others' test images.

    Args:
        labels: label index of each item of the pool, in a fixed (sorted) order.
        test_split: fraction of each class to hold out for testing, in ``[0, 1)``.
        seed: split seed.
        groups: as for :func:`stratified_split`: copies are held out together or not at all.

    Example:
        >>> hold_out_test([0, 0, 1, 1, 1], 0.2, seed=1)[2]
        '1 of 2 classes has fewer than 3 images'
        >>> rest, test, _ = hold_out_test([0, 0, 0, 1, 1, 1, 2, 2], 0.2, seed=1)
        >>> sorted(set(np.asarray([0, 0, 0, 1, 1, 1, 2, 2])[test].tolist()))  # class 2 gives none
        [0, 1]
    """
    labels = np.asarray(labels, dtype=np.int64)
    everything = np.arange(len(labels))
    if test_split <= 0:
        return everything, np.zeros(0, np.int64), "test_split is 0"
    classes, counts = np.unique(labels, return_counts=True)
    able = classes[counts >= MIN_IMAGES_FOR_TEST]
    if len(able) < 2 or 2 * len(able) < len(classes):
        small = len(classes) - len(able)
        verb = "has" if small == 1 else "have"
        return (
            everything,
            np.zeros(0, np.int64),
            (f"{small} of {len(classes)} classes {verb} fewer than {MIN_IMAGES_FOR_TEST} images"),
        )
    within = np.flatnonzero(np.isin(labels, able))
    sub_groups = None if groups is None else np.asarray(groups)[within]
    _, test = stratified_split(labels[within], test_split, seed, sub_groups)
    test = within[test]
    return np.setdiff1d(everything, test), test, None


def too_small_for_test(labels: Sequence[int]) -> int:
    """How many classes of ``labels`` have too few images to give the test split one."""
    _, counts = np.unique(np.asarray(labels, dtype=np.int64), return_counts=True)
    return int((counts < MIN_IMAGES_FOR_TEST).sum())


def remaining_fraction(validation_split: float, held_out: float) -> float:
    """The validation fraction of what the test split left, so validation stays that share of the
    whole pool (``0.2`` of the pool is ``0.2 / 0.85`` of the 85% left after a 15% test split).

    Example:
        >>> round(remaining_fraction(0.2, 0.15), 4)
        0.2353
    """
    return validation_split / (1 - held_out) if held_out else validation_split


def digest(paths: Sequence[str], labels: Sequence[int], root: str | None = None) -> str:
    """sha256 of the sorted ``path<TAB>label`` lines: equal digests, equal sets of images.

    With ``root``, paths are taken relative to it, so the same folder read through a relative or
    an absolute path (``fit`` from one directory, ``resume`` from another) gives the same digest.

    Example:
        >>> digest(["b.png", "a.png"], [1, 0]) == digest(["a.png", "b.png"], [0, 1])
        True
    """
    if root is not None:
        paths = [os.path.relpath(path, root) for path in paths]
    lines = sorted(f"{path}\t{label}" for path, label in zip(paths, labels, strict=True))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def holdout_record(
    origin: str,
    paths: Sequence[str],
    labels: Sequence[int],
    *,
    fraction=None,
    seed=None,
    why_none=None,
    root=None,
    pool_size=None,
    too_small=0,
) -> Holdout:
    """The :class:`Holdout` for a test split of ``paths`` (empty when there is none); ``root`` as
    for :func:`digest`; ``pool_size``: the images the split was carved from (those of the classes
    able to give test images), so the note can say when whole images per class made the share
    differ from ``fraction``; ``too_small``: the classes too small to give any."""
    n = len(paths)
    if origin == "none" or not n:
        reason = why_none or "the data has no test images"
        return Holdout("none", fraction, seed, 0, None, f"test split: none, {reason}; {VALIDATION_NOTE}")
    if origin == "held_out":
        share = f"{fraction:.0%} of each class"
        share += f" of {MIN_IMAGES_FOR_TEST} images or more" if too_small else ""
        if pool_size and abs(n / pool_size - fraction) > SHARE_SLACK:
            share += f" asked; whole images, at least one a class, made it {n / pool_size:.0%}"
        if too_small:
            share += f"; {'1 smaller class' if too_small == 1 else f'{too_small} smaller classes'} none"
        where = f"{n:,} images held out ({share}, seed {seed}), seen by no training step"
    else:
        where = {"folder": "the data's test/ folder", "tfds": "the dataset's own test split"}[origin]
        where += f", {n:,} images"
    return Holdout(origin, fraction, seed, n, digest(paths, labels, root), f"test split: {where}")
