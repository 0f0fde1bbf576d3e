"""Loaders of the example datasets whose images ship in Debian packages: fonts, card decks, emoji,
icon themes (which theme drew an icon; which context it is filed under), Tux Paint's stamps,
Openclipart's clip art, mahjong tiles, chess pieces. ``make datasets`` installs the packages (apt),
or unpacks the ones whose dependencies a data set does not need (:data:`UNPACKED_ROOT`); each
loader's error names them.

Mostly non-photographic on purpose: they are the data sets unlike ImageNet that the selector and
the recipes are checked on (see ``benchmarks/regret.py``). The stamps, photo cut-outs and drawings
of everyday things, and the clip art, drawings of things, are the exceptions: unseen sets nearer
ImageNet's side.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from transferkit.data.examples_pypi import (
    GLYPHS,
    flatten_rgba,
    missing_error,
    render_glyphs,
    require_file,
    spread_evenly,
)
from transferkit.errors import TransferkitError

# Where ``make datasets`` unpacks the games whose pictures are read, never run (``apt-get download``,
# ``dpkg-deb -x``): installed, pychess would bring GTK and GStreamer, gnome-mahjongg GTK 4. No root
# needed, no dependencies pulled in.
UNPACKED_ROOT = Path(
    os.environ.get("TRANSFERKIT_DEBIAN_ROOT", Path.home() / ".cache" / "transferkit" / "debian")
)


def installed_or_unpacked(path: Path) -> Path:
    """``path`` if its package is installed, else where ``make datasets`` unpacks it (which may not
    exist either: the loader's check says what to do)."""
    return path if path.exists() else UNPACKED_ROOT / path.relative_to("/")


URW_DIR = Path("/usr/share/fonts/opentype/urw-base35")
URW_FAMILIES = {  # class -> (regular, bold, italic, bold italic) files; the PostScript font each clones
    "nimbus_roman": (
        "NimbusRoman-Regular",
        "NimbusRoman-Bold",
        "NimbusRoman-Italic",
        "NimbusRoman-BoldItalic",
    ),
    "nimbus_sans": ("NimbusSans-Regular", "NimbusSans-Bold", "NimbusSans-Italic", "NimbusSans-BoldItalic"),
    "nimbus_mono": (
        "NimbusMonoPS-Regular",
        "NimbusMonoPS-Bold",
        "NimbusMonoPS-Italic",
        "NimbusMonoPS-BoldItalic",
    ),
    "urw_bookman": ("URWBookman-Light", "URWBookman-Demi", "URWBookman-LightItalic", "URWBookman-DemiItalic"),
    "urw_gothic": ("URWGothic-Book", "URWGothic-Demi", "URWGothic-BookOblique", "URWGothic-DemiOblique"),
    "c059_schoolbook": ("C059-Roman", "C059-Bold", "C059-Italic", "C059-BdIta"),
    "p052_palatino": ("P052-Roman", "P052-Bold", "P052-Italic", "P052-BoldItalic"),
}


def font_families() -> tuple[np.ndarray, np.ndarray]:
    hint = "apt-get install fonts-urw-base35"
    files = [
        [
            require_file(
                URW_DIR / f"{stem}.otf", "font_families", "the Debian package fonts-urw-base35", hint
            )
            for stem in stems
        ]
        for stems in URW_FAMILIES.values()
    ]
    images = render_glyphs(files)
    per_class = 4 * len(GLYPHS)
    return images, np.repeat(np.arange(len(files)), per_class)


CARDS_DIR = Path("/usr/share/aisleriot/cards")
SUITS = ("clubs", "diamonds", "hearts", "spades")
RANKS = ("ace", "2", "3", "4", "5", "6", "7", "8", "9", "10", "jack", "queen", "king")
# Every Aisleriot theme lays its cards on a 13 x 5 grid: rows clubs, diamonds, hearts, spades
# (ids club_1 .. spade_king), ace..king left to right; row 5 holds jokers and the back.
# Left out: swiss-xvii (Swiss suits: acorns/bells/roses/shields, not French ones), the
# Cyrillic-named copy of atlasnye, and the *_bitmap twins of anglo and gnomangelo.
CARD_DECKS = (
    "ancient_french", "anglo", "anglo_modern", "anglo_modern_4_color", "anglo_poker", "atlasnye",
    "atlasnye_skat", "bellot", "berlin", "dondorf", "gnomangelo", "guyenne-classic", "lattmann",
    "neoclassical", "neoclassical_4_color", "orell", "ornamental", "paris", "plastic", "rheinland",
    "simplistic", "slavic_costumes", "tango", "tango_nuevo", "tarocco", "tigullio",
)  # fmt: skip
CARD_W, CARD_H = 64, 96


def _render_deck(path: Path) -> np.ndarray:
    """The whole deck sheet, [5 * CARD_H, 13 * CARD_W, 3], on mid grey."""
    png = subprocess.run(
        ["rsvg-convert", "-w", str(13 * CARD_W), "-h", str(5 * CARD_H), str(path)],
        check=True,
        capture_output=True,
    ).stdout
    return flatten_rgba(Image.open(io.BytesIO(png)), (128, 128, 128))


def _cards(dataset: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every card of every deck: ``(images, suits, ranks)``, deck by deck, suit by suit, ace to king;
    ``dataset`` is the example data set's name, for the error when a package is missing."""
    pkg_hint = "apt-get install --no-install-recommends gnome-cards-data librsvg2-bin"
    for deck in CARD_DECKS:
        require_file(CARDS_DIR / f"{deck}.svgz", dataset, "the Debian package gnome-cards-data", pkg_hint)
    if shutil.which("rsvg-convert") is None:
        raise missing_error(dataset, "rsvg-convert (Debian librsvg2-bin)", pkg_hint)
    images, suits, ranks = [], [], []
    for deck in CARD_DECKS:
        sheet = _render_deck(CARDS_DIR / f"{deck}.svgz")
        for suit in range(4):
            for rank in range(13):
                images.append(sheet[suit * CARD_H : (suit + 1) * CARD_H, rank * CARD_W : (rank + 1) * CARD_W])
                suits.append(suit)
                ranks.append(rank)
    return np.stack(images), np.asarray(suits), np.asarray(ranks)


def playing_cards() -> tuple[np.ndarray, np.ndarray]:
    images, suits, _ = _cards("playing_cards")
    return images, suits


def card_ranks() -> tuple[np.ndarray, np.ndarray]:
    images, _, ranks = _cards("card_ranks")
    return images, ranks


EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
EMOJI_GROUPS = (
    "Smileys & Emotion", "People & Body", "Animals & Nature", "Food & Drink", "Travel & Places",
    "Activities", "Objects", "Symbols", "Flags",
)  # fmt: skip
EMOJI_CAP = 220  # per group; People & Body has 363, Activities 85
SKIN_TONES = {chr(c) for c in range(0x1F3FB, 0x1F400)}


def _emoji_sequences() -> list[tuple[str, int]]:
    """(emoji, group index) for fully-qualified emoji without skin-tone variants, in file order."""
    by_group: dict[str, list[str]] = {g: [] for g in EMOJI_GROUPS}
    group = None
    for line in EMOJI_TEST.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif "; fully-qualified" in line and group in by_group:
            emoji = "".join(chr(int(cp, 16)) for cp in line.split(";", 1)[0].split())
            if not SKIN_TONES.intersection(emoji):
                by_group[group].append(emoji)
    return [(e, g) for g, name in enumerate(EMOJI_GROUPS) for e in spread_evenly(by_group[name], EMOJI_CAP)]


def emoji_groups() -> tuple[np.ndarray, np.ndarray]:
    hint = "apt-get install fonts-noto-color-emoji unicode-data"
    require_file(EMOJI_FONT, "emoji_groups", "the Debian package fonts-noto-color-emoji", hint)
    require_file(EMOJI_TEST, "emoji_groups", "the Debian package unicode-data (emoji-test.txt)", hint)
    from PIL import features

    if not features.check("raqm"):  # ZWJ sequences and flags are ligatures: they need shaping
        raise TransferkitError(
            "Example dataset 'emoji_groups' needs Pillow built with libraqm (the PyPI wheels are). "
            "Install it with: pip install --force-reinstall pillow"
        )
    font = ImageFont.truetype(str(EMOJI_FONT), 109, layout_engine=ImageFont.Layout.RAQM)  # bitmap size
    single = font.getlength("\U0001f600")
    images, labels = [], []
    for emoji, group in _emoji_sequences():
        if font.getlength(emoji) > 1.2 * single:  # not one glyph in this font version: skip
            continue
        canvas = Image.new("RGBA", (136, 136), (0, 0, 0, 0))
        ImageDraw.Draw(canvas).text((68, 68), emoji, font=font, embedded_color=True, anchor="mm")
        small = canvas.resize((64, 64), Image.Resampling.LANCZOS)
        images.append(flatten_rgba(small, (255, 255, 255)))
        labels.append(group)
    return np.stack(images), np.asarray(labels)


ICON_THEMES = {  # class -> (folder of hand-drawn 32 px PNGs, Debian package)
    "tango": ("/usr/share/icons/Tango/32x32", "tango-icon-theme"),
    "gnome": ("/usr/share/icons/gnome/32x32", "gnome-icon-theme"),
    "oxygen": ("/usr/share/icons/oxygen/base/32x32", "oxygen-icon-theme"),
    "lxde_nuovext": ("/usr/share/icons/nuoveXT2/32x32", "lxde-icon-theme"),
}
# Adwaita is left out: its full-colour 'legacy' icons are the gnome-icon-theme 3.12 drawings
# (most are pixel-identical), and it has none at 32 px.
ICON_CAP = 250  # per theme; Oxygen has 1,203 drawn icons at 32 px, LXDE 144, Tango 214


def icon_themes() -> tuple[np.ndarray, np.ndarray]:
    hint = "apt-get install --no-install-recommends " + " ".join(p for _, p in ICON_THEMES.values())
    per_theme: list[dict[bytes, np.ndarray]] = []
    for folder, package in ICON_THEMES.values():
        root = require_file(Path(folder), "icon_themes", f"the Debian package {package}", hint)
        icons: dict[bytes, np.ndarray] = {}
        # regular files only: symlinks are aliases of drawn icons; '-symbolic' icons are monochrome
        for path in sorted(p for p in root.rglob("*.png") if not p.is_symlink() and "symbolic" not in p.name):
            image = Image.open(path)
            if image.size != (32, 32):  # the 'animations' spinner sprite sheets
                continue
            pixels = flatten_rgba(image, (255, 255, 255))
            icons.setdefault(hashlib.sha1(pixels.tobytes()).digest(), pixels)  # de-duplicate in theme
        per_theme.append(icons)
    shared = set()  # an icon drawn identically in two themes has no single right label: drop it
    for i, a in enumerate(per_theme):
        for b in per_theme[i + 1 :]:
            shared |= a.keys() & b.keys()
    images, labels = [], []
    for label, icons in enumerate(per_theme):
        kept = spread_evenly([v for k, v in icons.items() if k not in shared], ICON_CAP)
        # Blank on white (an Oxygen icon drawn in white), left out after the cap so that the cap
        # keeps picking the same icons: the other 854 are the ones picked before this check.
        kept = [pixels for pixels in kept if inked(pixels) >= MIN_INK]
        images += kept
        labels += [label] * len(kept)
    return np.stack(images), np.asarray(labels)


ICON_CONTEXTS = ("actions", "apps", "devices", "mimetypes", "places", "status")
ICON_CONTEXT_THEMES = {  # theme folder -> (Debian package, its folder names that are not the context's)
    "/usr/share/icons/Faenza": ("faenza-icon-theme", {}),
    "/usr/share/icons/elementary-xfce": ("elementary-xfce-icon-theme", {"mimetypes": "mimes"}),
}
# The six freedesktop contexts both themes fill at 48 px. Left out: categories, emblems, emotes,
# animations, panel and notifications (under 70 icons, or a theme's own). Two themes unrelated to
# icon_themes' four (MATE's, a fork of GNOME 2's drawings, would repeat that tuning set's images).
ICON_CONTEXT_SIDE = 48


def icon_contexts() -> tuple[np.ndarray, np.ndarray]:
    """The freedesktop context a 48 px full-colour icon is filed under (what it stands for: an
    action, an application, a device, a file type, a place, a status), from the Faenza and
    elementary-xfce themes, on white.

    Regular files only (symlinks are aliases of drawn icons), '-symbolic' monochrome icons left out;
    an icon drawn twice in one context is kept once, one filed under two contexts is dropped (it has
    no single right label), and so is one that is blank on white (:func:`distinct`).
    """
    hint = "apt-get install --no-install-recommends " + " ".join(p for p, _ in ICON_CONTEXT_THEMES.values())
    icons = []
    for theme, (package, renamed) in ICON_CONTEXT_THEMES.items():
        root = require_file(Path(theme), "icon_contexts", f"the Debian package {package}", hint)
        for label, context in enumerate(ICON_CONTEXTS):
            folder = root / renamed.get(context, context) / str(ICON_CONTEXT_SIDE)
            for path in sorted(folder.glob("*.png")):
                if path.is_symlink() or "symbolic" in path.name:
                    continue
                with Image.open(path) as image:
                    if image.size != (ICON_CONTEXT_SIDE, ICON_CONTEXT_SIDE):  # sprite sheets
                        continue
                    icons.append((flatten_rgba(image, (255, 255, 255)), label))
    return distinct(sorted(icons, key=lambda icon: icon[1]))  # by context, each theme's in turn


STAMPS_DIR = Path("/usr/share/tuxpaint/stamps")
STAMP_CATEGORIES = ("animals", "food", "household", "plants", "town", "vehicles")
# The categories with 34 or more PNG stamps. Left out: symbols (letters, shapes, chess men, money:
# no shared subject), seasonal (Christmas trees and Easter eggs overlap plants and food), clothes
# (19), and those under 17. SVG-only stamps are left out too (248, no rasteriser needed then).
STAMP_SIDE = 128


def stamp_categories() -> tuple[np.ndarray, np.ndarray]:
    """Tux Paint's PNG stamps (photo cut-outs and drawings) by their top-level category folder, each
    scaled to fit a ``STAMP_SIDE`` square, centred on white; a stamp found twice is kept once."""
    hint = "apt-get install --no-install-recommends tuxpaint-stamps-default"
    root = require_file(STAMPS_DIR, "stamp_categories", "the Debian package tuxpaint-stamps-default", hint)
    return pictures_by_category(root, STAMP_CATEGORIES, STAMP_SIDE)


CLIPART_DIR = Path("/usr/share/openclipart/png")
CLIPART_CATEGORIES = ("animals", "buildings", "food", "plants", "tools", "transportation")
# Openclipart's categories of things with 70 or more PNGs. Left out: people (400) and recreation
# (614), scenes that hold the others (a gardener with a spade, a boy on a bicycle); office (142),
# which overlaps tools; computer (2,158 icons), shapes, signs and symbols, decorations, special
# (no shared subject); unsorted; those under 70.
CLIPART_SIDE = 128
# Pillow's warning limit. Eleven food drawings of 169 megapixels and one of 623 are skipped by their
# header before anything is decoded (the 623 one is over Pillow's hard limit besides).
CLIPART_MAX_PIXELS = 89_478_485
CLIPART_PLACEHOLDERS = frozenset(
    {"animals/birds/duck_yellow_ii_kurt_cagl_.png", "animals/birds/penguin/tux_didier_fabert_01.png"}
)
"""Files that draw Inkscape's "Linked Image Not Found" box instead of their subject (the rendered
SVG linked a bitmap the package does not ship); found by eye on contact sheets of all six categories."""
MIN_INK = 0.005
"""The least share of a built-in picture's pixels that must differ from the white page (by more than
16 of 255 in a channel) for :func:`distinct` to keep it: at 128 px, 82 pixels, a 9 px square.
Openclipart's 13 bullet holes (filed under tools) are a dot of 65-74 pixels on an A4 page at that
size; the next least-inked drawings, a house and a shovel small on their pages, have 84 and 118. No
Tux Paint stamp has under 2.4%."""


def clipart_categories() -> tuple[np.ndarray, np.ndarray]:
    """Openclipart's public-domain clip art (drawings) by top-level category folder, each scaled to
    fit a ``CLIPART_SIDE`` square, centred on white; a drawing found twice is kept once, one filed
    under two categories is dropped, as are the placeholders (:data:`CLIPART_PLACEHOLDERS`) and
    drawings too small on their page to see (:data:`MIN_INK`)."""
    hint = "apt-get install --no-install-recommends openclipart-png"
    root = require_file(CLIPART_DIR, "clipart_categories", "the Debian package openclipart-png", hint)
    return pictures_by_category(
        root, CLIPART_CATEGORIES, CLIPART_SIDE, max_pixels=CLIPART_MAX_PIXELS, skip=CLIPART_PLACEHOLDERS
    )


def pictures_by_category(
    root: Path,
    categories: tuple[str, ...],
    side: int,
    max_pixels: int | None = None,
    skip: frozenset[str] = frozenset(),
) -> tuple[np.ndarray, np.ndarray]:
    """Every PNG under ``root/<category>`` (sub-folders too), labelled by its category's index,
    scaled to fit a ``side`` square and centred on white, as :func:`distinct` keeps them.

    Args:
        max_pixels: skip larger files by the size in their header, before decoding them.
        skip: paths relative to ``root`` (with '/') to leave out.
    """
    return distinct(_category_pictures(root, categories, side, max_pixels, skip))


def _category_pictures(
    root: Path, categories: tuple[str, ...], side: int, max_pixels: int | None, skip: frozenset[str]
) -> Iterator[tuple[np.ndarray, int]]:
    for label, category in enumerate(categories):
        for path in sorted((root / category).rglob("*.png")):
            if path.relative_to(root).as_posix() in skip:
                continue
            try:
                with warnings.catch_warnings():  # Pillow's warning above 89 megapixels: skipped below
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    opened = Image.open(path)
            except Image.DecompressionBombError:  # over Pillow's hard limit (179 megapixels)
                if max_pixels is None:
                    raise
                continue
            with opened:
                if max_pixels is not None and opened.width * opened.height > max_pixels:
                    continue
                image = opened.convert("RGBA")
            yield in_square(image, side), label


def distinct(pictures: Iterable[tuple[np.ndarray, int]]) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)`` of ``pictures`` (RGB pixels on white, label), in their order, cleaned:

    - a picture found twice under one label is kept once (the first);
    - one found under two labels is dropped: it has no single right label (Openclipart files 20
      drawings under two of its categories, a gum nut under food and plants);
    - one with less than :data:`MIN_INK` of its pixels drawn on is dropped: there is nothing to
      classify (Openclipart's bullet holes, a dot on an A4 page).
    """
    first: dict[bytes, tuple[np.ndarray, int]] = {}
    labels: dict[bytes, set[int]] = {}
    for pixels, label in pictures:
        if inked(pixels) < MIN_INK:
            continue
        digest = hashlib.sha1(pixels.tobytes()).digest()
        first.setdefault(digest, (pixels, label))
        labels.setdefault(digest, set()).add(label)
    kept = [picture for digest, picture in first.items() if len(labels[digest]) == 1]
    return np.stack([pixels for pixels, _ in kept]), np.asarray([label for _, label in kept])


def inked(pixels: np.ndarray) -> float:
    """The share of ``pixels`` (RGB or grey on white) that differ from white by more than 16 of 255."""
    faint = 255 - pixels.astype(np.int16)
    return float(np.mean((faint.max(axis=-1) if faint.ndim == 3 else faint) > 16))


MAHJONG_SUITS = ("bamboo", "bonus", "characters", "dots", "dragons", "winds")
# bonus: the four flowers and four seasons. Three sources, each drawing every tile of a set.
KMAHJONGG_DIR = Path("/usr/share/kmahjongglib/tilesets")
KMAHJONGG_TILESETS = ("default", "traditional")
# Left out: alphabet (the suits drawn as letters and digits), classic and egypt (their tiles' SVG
# elements are drawn at scattered positions and scales, so no face crops the same way), jade (its
# faces are drawn in white for a green tile body: on white all 41 are blank, and until 2026-12-06
# two of them were in the set, a blank "bamboo" and a blank "characters").
KMAHJONGG_IDS = {"BAMBOO": 0, "FLOWER": 1, "SEASON": 1, "CHARACTER": 2, "ROD": 3, "DRAGON": 4, "WIND": 5}
GNOME_MAHJONGG_DIR = Path("/usr/share/gnome-mahjongg/themes")
GNOME_MAHJONGG_THEMES = ("smooth.png", "postmodern.svg")  # edu_kang_xi left out: Kangxi radicals, not suits
# A theme is a strip of 43 tiles (the last one blank) over the same tiles highlighted, left to right:
# dots 1-9, winds (N W S E), red and green dragons, characters 1-9, bamboo 1-9, four flowers, the
# white dragon, four seasons. The highlighted row is left out (the same drawings, tinted).
GNOME_MAHJONGG_ORDER = (3,) * 9 + (5,) * 4 + (4,) * 2 + (2,) * 9 + (0,) * 9 + (1,) * 4 + (4,) + (1,) * 4
XMAHJONGG_DIR = Path("/usr/share/games/xmahjongg/tiles")
XMAHJONGG_SETS = ("dorothys.gif", "dorwhite.gif", "gnome.gif", "gnome2.gif")
# A 21 x 4 grid, rows 3-4 the selected twins of rows 1-2: the same order as GNOME's up to the white
# dragon; the four tiles after it (drawn like the winds) are left out, as are the small, thick and
# thin sets (one tile each) and real.gif (another grid).
XMAHJONGG_ORDER = GNOME_MAHJONGG_ORDER[:-4]
MAHJONG_SIDE = 96


def mahjong_suits() -> tuple[np.ndarray, np.ndarray]:
    """Mahjong tiles by suit from eight tile sets of three Debian games, each scaled to fit a
    ``MAHJONG_SIDE`` square, centred on white; a tile drawn twice is kept once.

    KDE's tile faces are SVG elements without the tile body (cropped to what they draw); GNOME's and
    xmahjongg's are cut from a sheet of whole tiles, body and shadow included.
    """
    hint = (
        "apt-get install --no-install-recommends kdegames-mahjongg-data-kf5 librsvg2-bin, and make datasets "
        f"(it unpacks the games gnome-mahjongg and xmahjongg into {UNPACKED_ROOT}, no root needed)"
    )
    gnome, xmahjongg = installed_or_unpacked(GNOME_MAHJONGG_DIR), installed_or_unpacked(XMAHJONGG_DIR)
    for folder, package in (
        (KMAHJONGG_DIR, "kdegames-mahjongg-data-kf5"),
        (gnome, "gnome-mahjongg, installed or unpacked"),
        (xmahjongg, "xmahjongg, installed or unpacked"),
    ):
        require_file(folder, "mahjong_suits", f"the Debian package {package}", hint)
    if shutil.which("rsvg-convert") is None:
        raise missing_error("mahjong_suits", "rsvg-convert (Debian librsvg2-bin)", hint)
    tiles: list[tuple[Image.Image, int]] = []
    for name in KMAHJONGG_TILESETS:
        tiles += _kmahjongg_faces(KMAHJONGG_DIR / f"{name}.svgz")
    for theme in GNOME_MAHJONGG_THEMES:
        tiles += _cut(_open_sheet(gnome / theme), 43, 2, GNOME_MAHJONGG_ORDER)
    for sheet in XMAHJONGG_SETS:
        tiles += _cut(_open_sheet(xmahjongg / sheet), 21, 4, XMAHJONGG_ORDER)
    return distinct((in_square(tile, MAHJONG_SIDE, enlarge=True), label) for tile, label in tiles)


def _rsvg(*args: str) -> Image.Image:
    png = subprocess.run(["rsvg-convert", *args], check=True, capture_output=True).stdout
    return Image.open(io.BytesIO(png)).convert("RGBA")


def _kmahjongg_faces(path: Path) -> list[tuple[Image.Image, int]]:
    """Every suit tile's face in a KDE tile set, cropped to its drawn (opaque) pixels: an element's
    box can hold invisible parts far off the tile. A face that draws nothing is left out."""
    svg = gzip.decompress(path.read_bytes())
    ids = sorted(set(re.findall(rb'id="((?:%s)_\d+)"' % "|".join(KMAHJONGG_IDS).encode(), svg)))
    faces = []
    for element in (i.decode() for i in ids):
        face = _rsvg(f"--export-id={element}", "--zoom=1", str(path))
        drawn = face.getchannel("A").getbbox()
        if drawn is not None:
            faces.append((face.crop(drawn), KMAHJONGG_IDS[element.split("_")[0]]))
    return faces


def _open_sheet(path: Path) -> Image.Image:
    return _rsvg(str(path)) if path.suffix == ".svg" else Image.open(path).convert("RGBA")


def _cut(
    sheet: Image.Image, columns: int, rows: int, order: tuple[int, ...]
) -> list[tuple[Image.Image, int]]:
    """The first ``len(order)`` tiles of a ``columns`` x ``rows`` sheet, row by row, with their suits."""
    w, h = sheet.width // columns, sheet.height // rows
    return [
        (sheet.crop((c * w, r * h, (c + 1) * w, (r + 1) * h)), label)
        for k, label in enumerate(order)
        for r, c in [divmod(k, columns)]
    ]


def in_square(image: Image.Image, side: int, enlarge: bool = False) -> np.ndarray:
    """``image`` (RGBA) scaled down to fit a ``side`` square (up too, with ``enlarge``; down in
    place), centred on white: RGB uint8."""
    if enlarge:
        scale = side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    else:
        image.thumbnail((side, side), Image.Resampling.LANCZOS)  # in place
    square = Image.new("RGBA", (side, side))  # transparent: the white comes next
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return flatten_rgba(square, (255, 255, 255))


CHESS_PIECES = ("king", "queen", "rook", "bishop", "knight", "pawn")
PYCHESS_DIR = Path("/usr/share/pychess/pieces")
# pychess's piece sets of one SVG per piece (``wk.svg`` ... ``bp.svg``). Left out: ada, makruk and
# sittuyin, which draw Thai and Burmese pieces (a pawn is a disc), and the sets drawn in one SVG.
PYCHESS_SETS = (
    "alfonso", "alpha", "cburnett", "chessicons", "chessmonk", "freestaunton", "kilfiger", "kosal", "leipzig",
    "magnetic", "maya", "merida", "merida_new", "metaltops", "pirat", "regular",
)  # fmt: skip
# pychess's chess fonts: the white pieces' letters, then the black pieces', in CHESS_PIECES' order
# (pychess/gfx/Pieces.py: "pnbrqk" / "omvtwl", for cheq "phbrqk" / "ojntwl").
CHESS_FONT_LETTERS = {"cheq": ("kqrbhp", "lwtnjo")}
CHESS_FONT_DEFAULT_LETTERS = ("kqrbnp", "lwtvmo")
XBOARD_DIR = Path("/usr/share/games/xboard/themes/default")
CHESS_SIDE = 96


def chess_pieces() -> tuple[np.ndarray, np.ndarray]:
    """Chess pieces by type, white and black, from 16 SVG sets and 18 chess fonts of pychess and
    xboard's own set: each drawn as its set draws it on a ``CHESS_SIDE`` square (an SVG's page
    scaled to the square; a font's glyph at a fixed size and centre), on white. A piece drawn
    twice is kept once."""
    hint = (
        f"make datasets (it unpacks the Debian packages pychess and xboard into {UNPACKED_ROOT}, no root "
        "needed), and apt-get install librsvg2-bin"
    )
    pychess = installed_or_unpacked(PYCHESS_DIR)
    xboard = installed_or_unpacked(XBOARD_DIR)
    for folder, package in ((pychess, "pychess"), (xboard, "xboard")):
        require_file(folder, "chess_pieces", f"the Debian package {package}, installed or unpacked", hint)
    if shutil.which("rsvg-convert") is None:
        raise missing_error("chess_pieces", "rsvg-convert (Debian librsvg2-bin)", hint)
    files = [
        (pychess / name / f"{colour}{letter}.svg", label)
        for name in PYCHESS_SETS
        for colour in "wb"
        for label, letter in enumerate("kqrbnp")
    ]
    files += [
        (xboard / f"{colour}{piece.title()}.svg", label)
        for colour in ("White", "Black")
        for label, piece in enumerate(CHESS_PIECES)
    ]
    size = str(CHESS_SIDE)
    pieces = [
        (in_square(_rsvg("-w", size, "-h", size, "--keep-aspect-ratio", str(file)), CHESS_SIDE), label)
        for file, label in files
    ]
    for font in sorted((pychess / "ttf").glob("*.ttf")):
        for letters in CHESS_FONT_LETTERS.get(font.stem, CHESS_FONT_DEFAULT_LETTERS):
            pieces += [(_chess_glyph(font, letter), label) for label, letter in enumerate(letters)]
    return distinct(pieces)


def _chess_glyph(font: Path, letter: str) -> np.ndarray:
    """A chess font's ``letter`` (a piece) in black, on a fixed centre, on white: RGB uint8."""
    side = CHESS_SIDE
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    face = ImageFont.truetype(str(font), round(side * 0.75), layout_engine=ImageFont.Layout.BASIC)
    ImageDraw.Draw(canvas).text((side / 2, side / 2), letter, font=face, fill=(0, 0, 0), anchor="mm")
    return np.asarray(canvas)
