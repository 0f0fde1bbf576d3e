"""Byte-identical files in a folder data set: kept in one split, and counted for the dataset card.

Folders gathered from the web, merged from several sources or exported by hand often hold the
same file twice (Debian's Openclipart drawings: 1,221 extra copies among 4,800 PNGs). A random
split then puts one copy in training and the other in the test split, and the test figure counts
an image the model was trained on as unseen. The scan hashes every usable file
(:func:`transferkit.data.scan.content_digest`); here copies within a class become one group that
the splits (:mod:`transferkit.data.splits`) keep together, and what cannot be undone is said:
a file filed under two classes (its labels disagree), and images of a ``test/`` or ``val/`` folder
the data came with that are copies of training images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from transferkit.console import plural


def copy_groups(labels: Sequence[int], digests: Sequence[str | None]) -> np.ndarray | None:
    """Group id of each item: the position of the first item of its class with the same content
    digest (None: no digest, a group of its own); None when no two items share a group.

    Example:
        >>> copy_groups([0, 0, 0, 1], ["a", "b", "a", "a"]).tolist()
        [0, 1, 0, 3]
    """
    first: dict[tuple[int, str], int] = {}
    groups = [
        i if digest is None else first.setdefault((int(label), digest), i)
        for i, (label, digest) in enumerate(zip(labels, digests, strict=True))
    ]
    return np.asarray(groups, dtype=np.int64) if len(first) < sum(d is not None for d in digests) else None


@dataclass(frozen=True)
class Copies:
    """The byte-identical files of a folder data set, as its splits treated them.

    Attributes:
        within_class: files identical to another file of their class (each set kept in one split).
        across_classes: files identical to a file filed under another class: their labels disagree.
        example: two such paths, or None.
        in_training: a split folder the data came with (``"val"``, ``"test"``) -> how many of its
            images are identical to an image of ``train/``; such folders are used as given.
    """

    within_class: int = 0
    across_classes: int = 0
    example: tuple[str, str] | None = None
    in_training: dict[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.within_class or self.across_classes or any(self.in_training.values()))

    def lines(self) -> list[str]:
        """What a person reads on the dataset card (nothing when there are no copies).

        Example:
            >>> Copies(within_class=3).lines()
            ['copies: 3 files are byte-identical to another of their class; each set kept in one split']
        """
        lines = []
        if self.within_class:
            lines.append(
                f"copies: {plural(self.within_class, 'file')} {'is' if self.within_class == 1 else 'are'} "
                f"byte-identical to another of {'its' if self.within_class == 1 else 'their'} class; each "
                "set kept in one split"
            )
        if self.across_classes:
            pair = f" (e.g. {self.example[0]} = {self.example[1]})" if self.example else ""
            lines.append(
                f"copies: {plural(self.across_classes, 'file')} also filed under another class{pair}: "
                "their labels disagree (keep each in the one class it belongs to)"
            )
        for split, count in self.in_training.items():
            if count:
                lines.append(
                    f"copies: {count:,} of the {split}/ folder's images are byte-identical to images in "
                    f"train/: the {'test' if split == 'test' else 'validation'} figures count them as unseen"
                )
        return lines

    def to_dict(self) -> dict:
        """Plain JSON types."""
        data = asdict(self)
        data["example"] = None if self.example is None else list(self.example)
        return data


def find_copies(
    paths: Sequence[str],
    labels: Sequence[int],
    digest_of: Mapping[str, str],
    given: Mapping[str, Sequence[str]] | None = None,
) -> Copies:
    """Count the copies among the pool ``paths`` (with their ``labels``) and, for each split folder
    in ``given`` (split -> its paths), its images that are copies of pool images.

    Example:
        >>> find_copies(["a/1", "a/2", "b/3"], [0, 0, 1], {"a/1": "x", "a/2": "x", "b/3": "x"})
        Copies(within_class=1, across_classes=3, example=('a/1', 'b/3'), in_training={})
    """
    first: dict[tuple[int, str], str] = {}
    labels_of: dict[str, dict[int, str]] = {}  # digest -> label -> its first path
    within = 0
    for path, label in zip(paths, labels, strict=True):
        digest = digest_of.get(path)
        if digest is None:
            continue
        if (int(label), digest) in first:
            within += 1
        else:
            first[(int(label), digest)] = path
            labels_of.setdefault(digest, {})[int(label)] = path
    across, example = 0, None
    for path, label in zip(paths, labels, strict=True):
        others = labels_of.get(digest_of.get(path), {})
        other = next((first_path for other, first_path in others.items() if other != int(label)), None)
        if other is not None:
            across += 1
            example = example or (path, other)
    in_training = {
        split: sum(digest_of.get(path) in labels_of for path in split_paths)
        for split, split_paths in (given or {}).items()
    }
    return Copies(within, across, example, in_training)
