"""The registry of built-in example datasets: real images that ship inside PyPI or Debian packages.

Each one is written out as an ordinary image folder (``out_dir/<class>/<i>.png``), so examples,
notebooks and tests exercise exactly the path a user's own folder takes.

Example:
    >>> from transferkit.data.examples import export_dataset
    >>> from transferkit.data.loading import load_data
    >>> splits = load_data(str(export_dataset("lfw_faces", "/tmp/lfw_faces")))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from transferkit.data import examples_debian as debian
from transferkit.data import examples_pypi as pypi
from transferkit.errors import TransferkitError, choices_error
from transferkit.fileio import staging_dir

MARKER = ".transferkit-export.json"  # hidden: the data scan never sees it


@dataclass(frozen=True)
class Needs:
    """What a built-in set is made from, checked without loading it (``transferkit datasets``).

    Attributes:
        modules: Python packages, located (not imported).
        files: the Debian files or folders, read when checked (so a test can point them elsewhere);
            one that ``make datasets`` unpacks counts where it unpacks it too.
        commands: programs on ``PATH``.
    """

    modules: tuple[str, ...] = ()
    files: Callable[[], list[Path]] = field(default=list, compare=False)
    commands: tuple[str, ...] = ()

    def missing(self) -> list[str]:
        """What is not on this machine (module, path or command names); [] when the set can load."""
        gone = [module for module in self.modules if importlib.util.find_spec(module) is None]
        gone += [str(path) for path in self.files() if not debian.installed_or_unpacked(path).exists()]
        return gone + [command for command in self.commands if shutil.which(command) is None]

    def install(self, missing: list[str] | None = None) -> str:
        """How to get what :meth:`missing` names (``missing``: its answer, where already asked):
        ``make datasets`` for Debian files and programs, pip for Python packages (transferkit's own
        dependencies need nothing)."""
        missing = self.missing() if missing is None else missing
        hints = [PIP_HINTS.get(name, "") if name in self.modules else "make datasets" for name in missing]
        return "; ".join(dict.fromkeys(hint for hint in hints if hint))


PIP_HINTS = {"skimage": pypi.SKIMAGE_HINT, "animal_mnist": pypi.ANIMAL_MNIST_HINT}


@dataclass(frozen=True)
class ExampleDataset:
    """One built-in dataset: real, labelled images bundled with an installed package."""

    name: str
    description: str
    classes: tuple[str, ...]
    size: int  # number of images
    image_size: tuple[int, int]  # (width, height)
    source_package: str  # where the images ship, and how to install it
    loader: Callable[[], tuple[np.ndarray, np.ndarray]] = field(repr=False, compare=False)
    licence: str = ""
    kind: str = "photo"  # photo | drawing | typography | illustration | scientific
    needs: Needs = field(default_factory=Needs, repr=False)

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """``(uint8 images [N, H, W] or [N, H, W, 3], int64 labels [N])``, in the source's order."""
        images, labels = self.loader()
        return np.asarray(images, dtype=np.uint8), np.asarray(labels, dtype=np.int64)


def _entry(
    name, description, classes, size, image_size, source, licence, kind, loader, needs
) -> ExampleDataset:
    return ExampleDataset(
        name, description, tuple(classes), size, image_size, source, loader, licence, kind, needs
    )


EXAMPLE_DATASETS: dict[str, ExampleDataset] = {
    entry.name: entry
    for entry in (
        _entry(
            "lfw_faces",
            "Labeled Faces in the Wild crops vs. other crops of the same photos (scikit-image lfw_subset)",
            ("face", "non_face"), 200, (25, 25), "scikit-image",
            "LFW: free for research, no explicit licence; scikit-image BSD-3", "photo", pypi.lfw_faces,
            needs=Needs(modules=("skimage",)),
        ),
        _entry(
            "animal_mnist",
            "Animal silhouettes in the MNIST format; label order as listed in the package README "
            "(checked by eye)",
            ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"),
            10_000, (28, 28), "animal-mnist==0.4 (pip --no-deps)", "MIT", "drawing", pypi.animal_mnist,
            needs=Needs(modules=("animal_mnist",)),
        ),
        _entry(
            "digits",
            "UCI handwritten digits, 8x8, 17 grey levels (scikit-learn load_digits)",
            [str(d) for d in range(10)], 1_797, (8, 8), "scikit-learn", "CC BY 4.0 (UCI)", "drawing",
            pypi.digits,
            needs=Needs(modules=("sklearn",)),
        ),
        _entry(
            "textures",
            "64x64 tiles of three texture photos: brick, grass, gravel (scikit-image, as in its "
            "texture classification example); tiles of one photo are correlated",
            ("brick", "grass", "gravel"), 192, (64, 64), "scikit-image", "CC0", "photo", pypi.textures,
            needs=Needs(modules=("skimage",)),
        ),
        _entry(
            "font_families_mpl",
            "Which of 4 typefaces bundled with matplotlib drew a glyph: A-Z, a-z, 0-9 in 4 styles each, "
            "black on white on a fixed baseline",
            pypi.MPL_FAMILIES, 992, (64, 64), "matplotlib",
            "DejaVu (Bitstream Vera licence), STIX (SIL OFL 1.1)", "typography", pypi.font_families_mpl,
            needs=Needs(modules=("matplotlib",)),
        ),
        _entry(
            "science_tiles",
            "64x64 grey tiles of five scientific images bundled in scikit-image (Hubble deep field, IHC "
            "histology, retina fundus, moon, phase-contrast cell); tiles of one image are correlated",
            pypi.SCIENCE_SOURCES, 320, (64, 64), "scikit-image",
            "CC0 / NASA public domain / no known restrictions (moon: none stated)", "scientific",
            pypi.science_tiles,
            needs=Needs(modules=("skimage",)),
        ),
        _entry(
            "font_families",
            "Which of 7 URW base-35 typefaces drew a glyph: A-Z, a-z, 0-9 in regular, bold, italic and "
            "bold italic, black on white on a fixed baseline",
            debian.URW_FAMILIES, 1_736, (64, 64), "fonts-urw-base35 (Debian; make datasets)",
            "AGPL-3 with font exception", "typography", debian.font_families,
            needs=Needs(files=lambda: [debian.URW_DIR]),
        ),
        _entry(
            "playing_cards",
            "Suit of a playing card, ace to king, from 26 GNOME Aisleriot card decks (French suits, "
            "incl. two 4-colour decks), rasterised with rsvg-convert on mid grey",
            debian.SUITS, 1_352, (debian.CARD_W, debian.CARD_H),
            "gnome-cards-data + librsvg2-bin (Debian; make datasets)", "GPL-3+", "illustration",
            debian.playing_cards,
            needs=Needs(files=lambda: [debian.CARDS_DIR], commands=("rsvg-convert",)),
        ),
        _entry(
            "card_ranks",
            "Rank of a playing card, ace to king, whatever its suit, from the same 26 GNOME Aisleriot "
            "decks as playing_cards (the corner index and the pips or court figure tell it)",
            debian.RANKS, 1_352, (debian.CARD_W, debian.CARD_H),
            "gnome-cards-data + librsvg2-bin (Debian; make datasets)", "GPL-3+", "illustration",
            debian.card_ranks,
            needs=Needs(files=lambda: [debian.CARDS_DIR], commands=("rsvg-convert",)),
        ),
        _entry(
            "emoji_groups",
            "Unicode emoji group (emoji-test.txt) of Noto Color Emoji glyphs, fully-qualified, no "
            "skin-tone variants, at most 220 per group, on white",
            [g.lower().replace(" & ", "_").replace(" ", "_") for g in debian.EMOJI_GROUPS], 1_634,
            (64, 64), "fonts-noto-color-emoji + unicode-data (Debian; make datasets)",
            "font SIL OFL 1.1, artwork Apache-2.0, groups Unicode licence", "illustration",
            debian.emoji_groups,
            needs=Needs(files=lambda: [debian.EMOJI_FONT, debian.EMOJI_TEST]),
        ),
        _entry(
            "icon_themes",
            "Which desktop icon theme drew a 32 px full-colour icon: Tango, GNOME 3.12, Oxygen (KDE), "
            "LXDE nuoveXT2; icons drawn identically in two themes removed; on white",
            debian.ICON_THEMES, 854, (32, 32),
            "tango/gnome/oxygen/lxde-icon-theme (Debian; make datasets)",
            "public domain (Tango), GPL-2+ (GNOME), LGPL-3+ (Oxygen, LXDE)", "illustration",
            debian.icon_themes,
            needs=Needs(files=lambda: [Path(folder) for folder, _ in debian.ICON_THEMES.values()]),
        ),
        _entry(
            "icon_contexts",
            "Which freedesktop context a 48 px full-colour icon is filed under (actions, apps, devices, "
            "mimetypes, places, status), from the Faenza and elementary-xfce themes; on white",
            debian.ICON_CONTEXTS, 1160, (debian.ICON_CONTEXT_SIDE, debian.ICON_CONTEXT_SIDE),
            "faenza-icon-theme, elementary-xfce-icon-theme (Debian; make datasets)",
            "GPL-3+ (Faenza), GPL-2+ (elementary-xfce)", "illustration",
            debian.icon_contexts,
            needs=Needs(files=lambda: [Path(theme) for theme in debian.ICON_CONTEXT_THEMES]),
        ),
        _entry(
            "stamp_categories",
            "Category of a Tux Paint stamp (photo cut-outs and drawings of everyday things): animals, "
            "food, household, plants, town, vehicles; scaled into a 128 px square on white",
            debian.STAMP_CATEGORIES, 403, (debian.STAMP_SIDE, debian.STAMP_SIDE),
            "tuxpaint-stamps-default (Debian; make datasets)", "GPL-2", "photo",
            debian.stamp_categories,
            needs=Needs(files=lambda: [debian.STAMPS_DIR]),
        ),
        _entry(
            "clipart_categories",
            "Category of an Openclipart drawing: animals, buildings, food, plants, tools, "
            "transportation (road signs included, as filed); scaled into a 128 px square on white",
            debian.CLIPART_CATEGORIES, 1147, (debian.CLIPART_SIDE, debian.CLIPART_SIDE),
            "openclipart-png (Debian; make datasets)", "CC0 / public domain", "drawing",
            debian.clipart_categories,
            needs=Needs(files=lambda: [debian.CLIPART_DIR]),
        ),
        _entry(
            "mahjong_suits",
            "Suit of a mahjong tile (bamboo, characters, dots, winds, dragons, flowers and seasons), from "
            "eight tile sets of KDE's, GNOME's and xmahjongg's games; scaled into a 96 px square on white",
            debian.MAHJONG_SUITS, 320, (debian.MAHJONG_SIDE, debian.MAHJONG_SIDE),
            "kdegames-mahjongg-data-kf5; gnome-mahjongg, xmahjongg (Debian, unpacked; make datasets)",
            "GPL-2+", "illustration", debian.mahjong_suits,
            needs=Needs(
                files=lambda: [debian.KMAHJONGG_DIR, debian.GNOME_MAHJONGG_DIR, debian.XMAHJONGG_DIR],
                commands=("rsvg-convert",),
            ),
        ),
        _entry(
            "chess_pieces",
            "Type of a chess piece (king, queen, rook, bishop, knight, pawn), white and black, from 16 SVG "
            "piece sets and 18 chess fonts of pychess and xboard's own set; on a 96 px square on white",
            debian.CHESS_PIECES, 412, (debian.CHESS_SIDE, debian.CHESS_SIDE),
            "pychess, xboard (Debian, unpacked without installing; make datasets)",
            "GPL-3+ (pychess as packaged; xboard GPL-3+)", "illustration", debian.chess_pieces,
            needs=Needs(files=lambda: [debian.PYCHESS_DIR, debian.XBOARD_DIR], commands=("rsvg-convert",)),
        ),
    )
}  # fmt: skip


def list_datasets() -> list[ExampleDataset]:
    """All built-in example datasets, sorted by name.

    Example:
        >>> [d.name for d in list_datasets()][:4]
        ['animal_mnist', 'card_ranks', 'chess_pieces', 'clipart_categories']
    """
    return [EXAMPLE_DATASETS[name] for name in sorted(EXAMPLE_DATASETS)]


def get_dataset(name: str) -> ExampleDataset:
    """The registry entry for ``name``; the error lists the valid names.

    Args:
        name: a key of ``EXAMPLE_DATASETS``.

    Example:
        >>> get_dataset("lfw_faces").classes
        ('face', 'non_face')
    """
    if name not in EXAMPLE_DATASETS:
        raise choices_error("example dataset", name, list(EXAMPLE_DATASETS))
    return EXAMPLE_DATASETS[name]


def export_dataset(
    name: str, out_dir: str | os.PathLike, *, per_class: int | None = None, seed: int = 0
) -> Path:
    """Write an example dataset as ``out_dir/<class>/<i>.png`` and return ``out_dir``.

    The folder is filled under a temporary name and renamed into place when complete, so a
    crash never leaves a half export; calling again with the same arguments reuses it.

    Args:
        name: one of :func:`list_datasets` (``lfw_faces``, ``animal_mnist``, ``digits``, ...).
        out_dir: the folder to create (it must not exist, be empty, or be an untouched earlier
            export of the same data set, which is replaced).
        per_class: keep this many images per class (a seeded random choice); ``None`` keeps all.
        seed: seed of that choice.

    Example:
        >>> folder = export_dataset("lfw_faces", "/tmp/lfw", per_class=20)  # doctest: +SKIP
        >>> sorted(p.name for p in folder.iterdir())  # doctest: +SKIP
        ['face', 'non_face']
    """
    entry = get_dataset(name)
    if per_class is not None and (isinstance(per_class, bool) or per_class < 1):
        raise TransferkitError(f"per_class={per_class!r}; expected a positive integer or None (all images).")
    out_dir = Path(out_dir)
    wanted = {"dataset": name, "per_class": per_class, "seed": seed if per_class else None}
    if _export_matches(out_dir, wanted):
        return out_dir
    if out_dir.exists() and (not out_dir.is_dir() or _has_foreign_content(out_dir, name)):
        raise TransferkitError(
            f"Export folder {out_dir} exists and is not an untouched export of {name!r} made by "
            "transferkit (another data set, or files added to it); expected a new or empty folder. "
            "Choose another path or empty it."
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(out_dir)
    try:
        counts = _write_pngs(entry, staging, per_class, seed)
        (staging / MARKER).write_text(json.dumps({**wanted, "counts": counts}, indent=2) + "\n")
        _move_into_place(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not _export_matches(out_dir, wanted):  # lost a race to another exporter with other arguments
        raise TransferkitError(f"Export folder {out_dir} was changed while exporting {name!r}; try again.")
    return out_dir


def _write_pngs(entry: ExampleDataset, folder: Path, per_class: int | None, seed: int) -> dict[str, int]:
    images, labels = entry.load()
    rng = np.random.default_rng(seed)
    counts = {}
    for label, class_name in enumerate(entry.classes):
        members = np.flatnonzero(labels == label)
        if per_class is not None and per_class < len(members):
            members = np.sort(rng.choice(members, per_class, replace=False))
        (folder / class_name).mkdir()
        for i, index in enumerate(members):
            Image.fromarray(images[index]).save(folder / class_name / f"{i:04d}.png")
        counts[class_name] = len(members)
    return counts


def _marker(out_dir: Path) -> dict | None:
    """The export record a transferkit export left in ``out_dir``; None when there is none."""
    try:
        return json.loads((out_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _export_matches(out_dir: Path, wanted: dict) -> bool:
    found = _marker(out_dir)
    return found is not None and all(found.get(key) == value for key, value in wanted.items())


def _has_foreign_content(out_dir: Path, name: str) -> bool:
    """True when ``out_dir`` holds anything but an earlier export of ``name`` as it was written
    (the marker and ``<class>/<i>.png`` files): replacing it must not delete a user's files."""
    if not any(out_dir.iterdir()):
        return False
    found = _marker(out_dir)
    if found is None or found.get("dataset") != name:
        return True
    classes = set(found.get("counts", {}))
    for path in out_dir.rglob("*"):
        parts = path.relative_to(out_dir).parts
        written = parts == (MARKER,) or (parts[0] in classes and len(parts) == 1 and path.is_dir())
        written = written or (len(parts) == 2 and parts[0] in classes and re.fullmatch(r"\d+\.png", parts[1]))
        if not written:
            return True
    return False


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Rename ``staging`` to ``out_dir``, replacing an empty folder or an earlier export."""
    old = None
    if out_dir.exists() and any(out_dir.iterdir()):  # an earlier export with other arguments
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.rename(out_dir, old)
    try:
        os.rename(staging, out_dir)  # atomic; also replaces an empty folder
    except OSError:
        if not (out_dir / MARKER).is_file():  # someone else's complete export arrived first: fine
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
