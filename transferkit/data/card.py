"""The dataset card: what a person wants to know about the data before and after training."""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from transferkit.data.copies import Copies
from transferkit.data.splits import Holdout
from transferkit.errors import extra_install

EMPTY_CLASS_REASON = "class folder has no usable images"  # a skip reason: the class is left out


# An image this many times longer one way than the other is squashed out of shape by the resize to
# a square (a 2000 x 50 strip to 224 x 224): said on the card. Photos (4:3, 16:9), playing cards
# (1.4:1) and glyphs stay under it.
ELONGATED_RATIO = 4


def is_elongated(width: int, height: int) -> bool:
    """Whether a ``width`` x ``height`` image is over :data:`ELONGATED_RATIO` to 1 either way."""
    return max(width, height) > ELONGATED_RATIO * min(width, height)


def combined_classes(class_names: Iterable[str]) -> list[str]:
    """The class names that read as lists of labels (``clear primary``, ``rust|scab``): a label
    column of a multi-label data set, where each combination would become a class of its own.

    A name of several words (split at spaces, ``|``, ``;`` or ``,``) is one of a list where at
    least 3 such names are combinations of no more words than there are names (a tag vocabulary:
    Planet's 17 tags make hundreds of names), or where names are made only of words that are
    classes on their own: one joined by ``|``, ``;`` or ``,`` (``rust|scab`` beside ``rust`` and
    ``scab``), or two joined by spaces. Names of several words that each name one thing ("golden
    retriever", "apple pie") use more words than they make names.

    Example:
        >>> combined_classes(["healthy", "rust", "scab", "rust|scab"])
        ['rust|scab']
        >>> combined_classes(["clear primary", "haze primary", "clear road", "haze road", "cloudy"])
        ['clear primary', 'clear road', 'haze primary', 'haze road']
        >>> combined_classes(["golden retriever", "labrador retriever", "border collie", "pug"])
        []
    """
    words = {name: [w for w in re.split(r"[\s|;,]+", name.strip()) if w] for name in class_names}
    lists = {name: parts for name, parts in words.items() if len(parts) >= 2}
    alone = {parts[0] for parts in words.values() if len(parts) == 1}
    vocabulary = {word for parts in lists.values() for word in parts}
    of_classes = [name for name, parts in lists.items() if all(word in alone for word in parts)]
    if (
        (len(lists) >= 3 and len(lists) >= len(vocabulary))
        or any(re.search(r"[|;,]", name) for name in of_classes)
        or len(of_classes) >= 2
    ):
        return sorted(lists)
    return []


def size_stats(sizes: Iterable[tuple[int, int]]) -> dict[str, dict[str, int]]:
    """``[(width, height), ...]`` -> ``{"width": {"min", "median", "max"}, "height": {...}}``.

    Example:
        >>> size_stats([(10, 20), (30, 40), (50, 60)])["width"]
        {'min': 10, 'median': 30, 'max': 50}
    """
    sizes = list(sizes)
    if not sizes:
        return {}
    stats = {}
    for axis, values in (("width", [w for w, _ in sizes]), ("height", [h for _, h in sizes])):
        stats[axis] = {"min": min(values), "median": int(statistics.median(values)), "max": max(values)}
    return stats


@dataclass(frozen=True)
class DatasetCard:
    """Counts, class balance, image sizes and every file left out, for one data source.

    Attributes:
        source: the folder or ``tfds:NAME`` the data came from.
        class_names: label index -> class name.
        counts: split (``train``, ``val``, ``test``) -> class name -> number of images.
        skipped: ``(path, reason)`` for each file or folder that was left out.
        image_sizes: ``{"width": {"min", "median", "max"}, "height": {...}}`` of the original
            images (before resizing); empty when unknown (TFDS images of varying size).
        holdout: where the test split came from (or why there is none); None when not recorded.
        white_level: the sample value that becomes white in its high-bit-depth images (16-bit
            X-ray, CT, microscopy: 4095 for a 12-bit detector's), from the largest the scan saw;
            None when it has none (see :mod:`transferkit.data.decode`).
        dim_colour: 16-bit colour images whose values fit in 12 bits, which Pillow reads through
            their high byte (0-15, nearly black) where OpenCV (the ``deep-colour`` extra) is not
            installed to read them at full depth: ``(count, one of them)``, or None.
        copies: its byte-identical files (:class:`~transferkit.data.copies.Copies`); None when
            not looked for (TFDS).
        elongated: images over :data:`ELONGATED_RATIO` times longer one way than the other, which
            the squash to a square input distorts: ``(count, one of them)``, or None.

    Example:
        >>> card = DatasetCard("pets", ("cat", "dog"), {"train": {"cat": 8, "dog": 4}})
        >>> card.num_train, card.imbalance
        (12, 2.0)
    """

    source: str
    class_names: tuple[str, ...]
    counts: dict[str, dict[str, int]]
    skipped: tuple[tuple[str, str], ...] = ()
    image_sizes: dict[str, dict[str, int]] = field(default_factory=dict)
    holdout: Holdout | None = None
    white_level: int | None = None
    dim_colour: tuple[int, str] | None = None
    copies: Copies | None = None
    elongated: tuple[int, str] | None = None

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def num_train(self) -> int:
        """Number of training images."""
        return sum(self.counts.get("train", {}).values())

    @property
    def images_per_class(self) -> dict[str, int]:
        """``{"min": ..., "median": ...}`` training images per class."""
        values = [self.counts.get("train", {}).get(name, 0) for name in self.class_names]
        if not values:
            return {"min": 0, "median": 0}
        return {"min": min(values), "median": int(statistics.median(values))}

    @property
    def combined_classes(self) -> list[str]:
        """Class names that read as lists of labels (:func:`combined_classes`)."""
        return combined_classes(self.class_names)

    @property
    def imbalance(self) -> float:
        """Largest / smallest training class (1.0 = balanced; ``inf`` if a class has none)."""
        values = [self.counts.get("train", {}).get(name, 0) for name in self.class_names]
        if not values or max(values) == 0:
            return 1.0
        return max(values) / min(values) if min(values) else float("inf")

    def to_dict(self) -> dict:
        """A JSON-able dict: the fields plus the derived figures.

        Example:
            >>> DatasetCard("d", ("a", "b"), {"train": {"a": 1, "b": 1}}).to_dict()["num_train"]
            2
        """
        imbalance = self.imbalance
        return {
            "source": self.source,
            "class_names": list(self.class_names),
            "num_classes": self.num_classes,
            "num_train": self.num_train,
            "counts": {split: dict(per_class) for split, per_class in self.counts.items()},
            "images_per_class": self.images_per_class,
            "imbalance": None if imbalance == float("inf") else round(imbalance, 3),
            "image_sizes": self.image_sizes,
            "skipped": [{"path": path, "reason": reason} for path, reason in self.skipped],
            "test_split": None if self.holdout is None else self.holdout.to_dict(),
            "white_level": self.white_level,
            "dim_colour": None if self.dim_colour is None else list(self.dim_colour),
            "copies": None if self.copies is None else self.copies.to_dict(),
            "elongated": None if self.elongated is None else list(self.elongated),
            "combined_classes": self.combined_classes,
        }

    def summary(self) -> str:
        """A few lines for a terminal or the report.

        Example:
            >>> print(DatasetCard("pets", ("cat", "dog"), {"train": {"cat": 8, "dog": 4}}).summary())
            pets: 2 classes, 12 train images
            per class (train): min 4, median 6, imbalance 2.0x
        """
        split_text = ", ".join(f"{sum(c.values()):,} {split}" for split, c in self.counts.items())
        lines = [f"{self.source}: {self.num_classes} classes, {split_text} images"]
        per_class = self.images_per_class
        lines.append(
            f"per class (train): min {per_class['min']}, median {per_class['median']}, "
            f"imbalance {self.imbalance:.1f}x"
        )
        if self.image_sizes:
            w, h = self.image_sizes["width"], self.image_sizes["height"]
            lines.append(
                f"image sizes: median {w['median']}x{h['median']} "
                f"(min {w['min']}x{h['min']}, max {w['max']}x{h['max']})"
            )
        if self.white_level is not None:
            white = self.white_level
            lines.append(f"high-bit-depth images: {white.bit_length()}-bit values, 0-{white} scaled to 0-255")
        if self.dim_colour is not None:
            count, example = self.dim_colour
            lines.append(
                f"{count} 16-bit colour image(s) hold only 12-bit values or fewer (e.g. {example}): read "
                "through their high byte they are nearly black; "
                f"{extra_install('deep-colour')} to read them at full depth, or convert them to 8 bits per "
                "channel"
            )
        if self.elongated is not None:
            count, example = self.elongated
            lines.append(
                f"{count} image(s) over {ELONGATED_RATIO}:1 (e.g. {example}): each is squashed to a square "
                "input, which distorts what it shows; crop or pad them nearer to square if that matters"
            )
        combined = self.combined_classes
        if combined:
            lines.append(
                f"{_class_names_read(len(combined))} (e.g. {combined[0]!r}): where an image "
                "has several labels, each combination is trained as a class of its own; a model here gives "
                "each image one class"
            )
        if self.skipped:
            kinds = Counter(_kind(reason) for _, reason in self.skipped)
            text = ", ".join(f"{n} {kind}" for kind, n in kinds.most_common(4))
            text += f", {len(kinds) - 4} more kind(s)" if len(kinds) > 4 else ""
            lines.append(
                f"skipped {len(self.skipped)}: {text} (dataset_card.json lists each, with its reason)"
            )
            lines.extend(self._classes_left_out())
        if self.copies is not None:
            lines.extend(self.copies.lines())
        lines.extend(self._classes_missing_from_splits())
        if self.holdout is not None:
            lines.append(self.holdout.note)
        return "\n".join(lines)

    def _classes_left_out(self) -> list[str]:
        """A line naming the class folders left out for want of a usable image: one vanished class
        changes what the model can answer, and a count among the skipped files is easy to miss."""
        empty = [Path(path).name for path, reason in self.skipped if reason.startswith(EMPTY_CLASS_REASON)]
        if not empty:
            return []
        named = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        return [
            f"class folder(s) left out, not one usable image in them: {named} (--strict makes this an error)"
        ]

    def _classes_missing_from_splits(self) -> list[str]:
        """A line for each evaluation split that has images but none of some class."""
        effects = {
            "val": "validation accuracy and early stopping do not see them",
            "test": "the test figures do not cover them",
        }
        lines = []
        for split, effect in effects.items():
            counts = self.counts.get(split, {})
            missing = [name for name in self.class_names if not counts.get(name)]
            if sum(counts.values()) and missing:
                named = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
                share = f"{len(missing)} of {self.num_classes} classes"
                lines.append(f"{split} has no images of {share} ({named}): {effect}")
        return lines


def _class_names_read(count: int) -> str:
    return (
        "1 class name reads as a list of labels"
        if count == 1
        else f"{count} class names read as lists of labels"
    )


def _kind(reason: str) -> str:
    """The short category of a skip reason: its text before the first '(' or ':' or ';'."""
    for mark in ("(", ":", ";"):
        reason = reason.split(mark, 1)[0]
    return reason.strip()
