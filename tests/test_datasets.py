"""Built-in example datasets: real images from installed packages, exported as image folders."""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferkit.data import examples as datasets
from transferkit.data import examples_pypi
from transferkit.data.examples import EXAMPLE_DATASETS, export_dataset, get_dataset, list_datasets
from transferkit.data.loading import load_data
from transferkit.errors import TransferkitError


def test_registry_lists_real_datasets():
    names = [entry.name for entry in list_datasets()]
    assert names == sorted(names)
    assert {"lfw_faces", "animal_mnist", "digits", "textures"} <= set(names)
    entry = EXAMPLE_DATASETS["lfw_faces"]
    assert (
        entry.classes == ("face", "non_face") and entry.size == 200 and entry.source_package == "scikit-image"
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.name = "x"


def test_unknown_name_lists_the_valid_ones(tmp_path):
    choices = "Choose one of: animal_mnist, card_ranks, chess_pieces, clipart_categories, digits"
    with pytest.raises(TransferkitError, match=f"Unknown example dataset 'lfw'. {choices}"):
        export_dataset("lfw", tmp_path / "x")


def test_lfw_faces_exports_two_classes_of_100_pngs_that_load_data_reads(tmp_path):
    folder = export_dataset("lfw_faces", tmp_path / "lfw")
    assert folder == tmp_path / "lfw"
    for name in ("face", "non_face"):
        files = sorted((folder / name).glob("*.png"))
        assert len(files) == 100
    first = np.asarray(Image.open(folder / "face" / "0000.png"))
    from skimage import data

    np.testing.assert_array_equal(first, np.rint(data.lfw_subset()[0] * 255).astype(np.uint8))
    splits = load_data(str(folder), validation_split=0.2)
    assert splits.class_names == ("face", "non_face")
    assert (len(splits.train), len(splits.val), len(splits.test), splits.card.skipped) == (130, 40, 30, ())
    assert splits.card.image_sizes["width"]["median"] == 25


def test_export_is_idempotent_and_replaces_only_its_own_exports(tmp_path):
    folder = export_dataset("lfw_faces", tmp_path / "lfw", per_class=10, seed=1)
    stamp = (folder / "face" / "0000.png").stat().st_mtime_ns
    assert export_dataset("lfw_faces", folder, per_class=10, seed=1) == folder
    assert (folder / "face" / "0000.png").stat().st_mtime_ns == stamp  # reused, not rewritten
    export_dataset("lfw_faces", folder, per_class=4, seed=1)  # other arguments: replaced
    assert len(list((folder / "face").iterdir())) == 4
    assert json.loads((folder / datasets.MARKER).read_text())["counts"] == {"face": 4, "non_face": 4}
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(TransferkitError, match="not an untouched export"):
        export_dataset("lfw_faces", tmp_path / "mine")
    with pytest.raises(TransferkitError, match="another data set"):  # an export of another one stays
        export_dataset("digits", folder, per_class=2)
    (folder / "face" / "my_extra.png").write_bytes((folder / "face" / "0000.png").read_bytes())
    with pytest.raises(TransferkitError, match="files added to it"):  # so do files a user added
        export_dataset("lfw_faces", folder, per_class=3, seed=1)
    assert len(list((folder / "face").iterdir())) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lfw", "mine"]  # no temporary folders left


def test_a_crash_mid_export_leaves_nothing_behind(tmp_path, monkeypatch):
    def fail(entry, folder, per_class, seed):
        (folder / "face").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(datasets, "_write_pngs", fail)
    with pytest.raises(KeyboardInterrupt):
        export_dataset("lfw_faces", tmp_path / "lfw")
    assert list(tmp_path.iterdir()) == []


def test_per_class_sampling_is_seeded(tmp_path):
    a = export_dataset("digits", tmp_path / "a", per_class=3, seed=5)
    b = export_dataset("digits", tmp_path / "b", per_class=3, seed=5)
    for digit in range(10):
        pixels = [[np.asarray(Image.open(p)) for p in sorted((f / str(digit)).iterdir())] for f in (a, b)]
        assert len(pixels[0]) == 3
        assert all(np.array_equal(x, y) for x, y in zip(*pixels, strict=True))
    with pytest.raises(TransferkitError, match="per_class"):
        export_dataset("digits", tmp_path / "c", per_class=0)


@pytest.mark.parametrize(
    ("name", "num_classes", "shape"),
    [("digits", 10, (1797, 8, 8)), ("textures", 3, (192, 64, 64)), ("lfw_faces", 2, (200, 25, 25))],
)
def test_bundled_arrays(name, num_classes, shape):
    images, labels = get_dataset(name).load()
    assert images.shape == shape and images.dtype == np.uint8 and images.max() > 200
    assert sorted(set(labels.tolist())) == list(range(num_classes))


@pytest.mark.skipif(importlib.util.find_spec("animal_mnist") is None, reason="animal-mnist not installed")
def test_animal_mnist_reads_the_package_pickles_safely(tmp_path):
    images, labels = get_dataset("animal_mnist").load()
    assert images.shape == (10_000, 28, 28) and np.bincount(labels).tolist() == [1000] * 10
    folder = export_dataset("animal_mnist", tmp_path / "animals", per_class=2)
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == sorted(
        EXAMPLE_DATASETS["animal_mnist"].classes
    )
    evil = b"cos\nsystem\n(S'echo hacked'\ntR."  # a pickle that would run a shell command
    with pytest.raises(Exception, match="refusing to unpickle"):
        examples_pypi._NumpyOnlyUnpickler(io.BytesIO(evil)).load()


def test_every_entry_names_its_licence_kind_and_source():
    for entry in list_datasets():
        assert entry.licence and entry.source_package, entry.name
        assert entry.kind in ("photo", "drawing", "typography", "illustration", "scientific")
    non_photographic = [e for e in list_datasets() if e.kind != "photo"]
    assert len(non_photographic) >= 3


def test_matplotlib_font_glyphs_are_four_balanced_typefaces_rendered_the_same_twice():
    entry = get_dataset("font_families_mpl")
    images, labels = entry.load()
    assert images.shape == (992, 64, 64) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [248] * 4
    assert 0 < images.mean() < 255  # ink on paper, not blank
    again, _ = entry.load()
    np.testing.assert_array_equal(images, again)


@pytest.mark.parametrize(
    "name, constant",
    [
        ("font_families", "URW_DIR"),
        ("playing_cards", "CARDS_DIR"),
        ("card_ranks", "CARDS_DIR"),
        ("emoji_groups", "EMOJI_FONT"),
        ("stamp_categories", "STAMPS_DIR"),
        ("clipart_categories", "CLIPART_DIR"),
        ("mahjong_suits", "KMAHJONGG_DIR"),
        ("mahjong_suits", "XMAHJONGG_DIR"),
    ],
)
def test_a_missing_debian_package_is_a_clear_error_with_the_install_command(
    name, constant, monkeypatch, tmp_path
):
    from transferkit.data import examples_debian

    monkeypatch.setattr(examples_debian, constant, tmp_path / "absent")
    with pytest.raises(TransferkitError, match="apt-get install"):
        get_dataset(name).load()


def test_datasets_command_says_which_sets_this_machine_has_and_how_to_get_the_others(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from transferkit.cli import main
    from transferkit.data import examples_debian

    unpacked = tmp_path / "unpacked"
    monkeypatch.setattr(examples_debian, "UNPACKED_ROOT", unpacked)
    monkeypatch.setattr(examples_debian, "CLIPART_DIR", tmp_path / "no-clipart")  # neither installed
    monkeypatch.setattr(examples_debian, "XBOARD_DIR", tmp_path / "no-xboard")  # nor unpacked
    monkeypatch.setattr(examples_debian, "PYCHESS_DIR", tmp_path / "pychess")
    (unpacked / (tmp_path / "pychess").relative_to("/")).mkdir(parents=True)  # unpacked: that counts
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "skimage" else find_spec(name)
    )
    monkeypatch.setattr(shutil, "which", lambda command: None if command == "rsvg-convert" else "/bin/true")
    names = [entry.name for entry in list_datasets()]

    result = CliRunner().invoke(main, ["datasets"])

    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.split()[0] in names}
    assert lines["digits"].endswith("; ready")  # scikit-learn is a dependency
    assert lines["clipart_categories"].endswith(
        f"not here: make datasets (missing {tmp_path / 'no-clipart'})"
    )
    assert lines["lfw_faces"].endswith(f"not here: {examples_pypi.SKIMAGE_HINT} (missing skimage)")
    missing = f"{tmp_path / 'no-xboard'}, rsvg-convert"
    assert lines["chess_pieces"].endswith(f"not here: make datasets (missing {missing})")
    ready = sum(line.endswith("; ready") for line in lines.values())
    assert f"{ready} of {len(names)} ready on this machine." in result.output
    assert ready == sum(not get_dataset(name).needs.missing() for name in names) < len(names)


def test_stamp_categories_label_by_category_folder_centre_on_white_and_drop_repeats(monkeypatch, tmp_path):
    from transferkit.data import examples_debian

    def stamp(path, size, colour):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGBA", size, colour).save(path)

    stamp(tmp_path / "animals" / "birds" / "crow.png", (256, 128), (0, 0, 0, 255))  # in a sub-folder
    stamp(tmp_path / "animals" / "cat.png", (64, 64), (200, 0, 0, 128))  # half transparent
    stamp(tmp_path / "animals" / "crow_again.png", (256, 128), (0, 0, 0, 255))  # the crow once more
    stamp(tmp_path / "food" / "egg.png", (80, 100), (250, 250, 0, 255))
    stamp(tmp_path / "plants" / "egg_plant.png", (80, 100), (250, 250, 0, 255))  # the egg, filed twice
    stamp(tmp_path / "vehicles" / "car.png", (90, 300), (0, 0, 255, 255))
    stamp(tmp_path / "symbols" / "star.png", (32, 32), (9, 9, 9, 255))  # not a category used
    monkeypatch.setattr(examples_debian, "STAMPS_DIR", tmp_path)

    images, labels = get_dataset("stamp_categories").load()

    side = examples_debian.STAMP_SIDE
    assert images.shape == (3, side, side, 3) and images.dtype == np.uint8
    categories = examples_debian.STAMP_CATEGORIES
    # the second crow dropped as a copy; the egg under food and plants has no single label: both gone
    assert [categories[i] for i in labels] == ["animals", "animals", "vehicles"]
    crow, cat, car = images  # sorted by path within a category: birds/crow.png before cat.png
    assert (crow[0, 0] == 255).all() and (crow[side // 2, side // 2] == 0).all()  # 2:1, letterboxed
    assert (car[side // 2, 0] == 255).all() and (car[side // 2, side // 2] == [0, 0, 255]).all()
    assert (cat[0, 0] == 255).all() and 100 < int(cat[side // 2, side // 2, 1]) < 155  # red over white


def test_icon_contexts_label_by_context_folder_and_drop_icons_filed_under_two(monkeypatch, tmp_path):
    from transferkit.data import examples_debian

    side = examples_debian.ICON_CONTEXT_SIDE

    def icon(path, colour, size=(side, side)):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGBA", size, colour).save(path)

    first, second = tmp_path / "first", tmp_path / "second"
    icon(first / "apps" / str(side) / "editor.png", (255, 0, 0, 255))
    icon(first / "apps" / str(side) / "editor-copy.png", (255, 0, 0, 255))  # drawn twice: kept once
    icon(first / "apps" / str(side) / "spinner.png", (9, 9, 9, 255), (side * 4, side))  # a sprite sheet
    icon(first / "places" / str(side) / "folder.png", (0, 0, 255, 128))  # half transparent
    icon(first / "status" / str(side) / "battery-symbolic.png", (0, 0, 0, 255))  # monochrome
    icon(first / "status" / str(side) / "alias.png", (0, 99, 0, 255))
    (first / "status" / str(side) / "link.png").symlink_to(first / "status" / str(side) / "alias.png")
    icon(second / "mimes" / str(side) / "text.png", (0, 255, 0, 255))  # this theme's name for mimetypes
    icon(second / "devices" / str(side) / "red.png", (255, 0, 0, 255))  # the editor again: two contexts
    themes = {str(first): ("first-icons", {}), str(second): ("second-icons", {"mimetypes": "mimes"})}
    monkeypatch.setattr(examples_debian, "ICON_CONTEXT_THEMES", themes)

    images, labels = examples_debian.icon_contexts()

    contexts = examples_debian.ICON_CONTEXTS
    assert [contexts[i] for i in labels] == ["mimetypes", "places", "status"]
    assert images.shape == (3, side, side, 3) and images.dtype == np.uint8
    assert (images[0] == [0, 255, 0]).all()
    assert (images[1][..., 2] == 255).all() and 100 < int(images[1][0, 0, 0]) < 155  # blue over white


def test_icon_contexts_missing_theme_is_a_clear_error_with_the_install_command(monkeypatch, tmp_path):
    from transferkit.data import examples_debian

    themes = {str(tmp_path / "absent"): ("faenza-icon-theme", {})}
    monkeypatch.setattr(examples_debian, "ICON_CONTEXT_THEMES", themes)
    with pytest.raises(TransferkitError, match="apt-get install --no-install-recommends faenza-icon-theme"):
        get_dataset("icon_contexts").load()


def test_distinct_keeps_a_copy_once_and_drops_doubly_labelled_and_blank_pictures():
    from transferkit.data.examples_debian import MIN_INK, distinct

    def picture(value, inked_pixels=64 * 64):
        pixels = np.full((64, 64, 3), 255, np.uint8)
        pixels.reshape(-1, 3)[:inked_pixels] = value
        return pixels

    few = int(MIN_INK * 64 * 64)  # just under the share: nothing to classify
    pictures = [
        (picture(10), 0),
        (picture(20), 1),
        (picture(10), 0),  # a copy under the same label: kept once
        (picture(30), 2),
        (picture(30), 1),  # the same picture under another label: neither kept
        (picture(40, few), 2),  # a dot on the page
        (picture(40, few + 2), 2),  # just over the share
        (picture(250), 1),  # drawn in white on white
    ]

    images, labels = distinct(pictures)

    assert labels.tolist() == [0, 1, 2]
    assert [int(image[0, 0, 0]) for image in images] == [10, 20, 40]


def test_clipart_leaves_out_the_placeholders_by_path(monkeypatch, tmp_path):
    from transferkit.data import examples_debian

    for name in ("animals/birds/owl.png", *examples_debian.CLIPART_PLACEHOLDERS):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGBA", (40, 40), (len(name), 0, 0, 255)).save(path)
    monkeypatch.setattr(examples_debian, "CLIPART_DIR", tmp_path)

    images, labels = get_dataset("clipart_categories").load()

    assert labels.tolist() == [0] and int(images[0, 64, 64, 0]) == len("animals/birds/owl.png")


def test_clipart_skips_huge_drawings_by_their_header_before_decoding(monkeypatch, tmp_path):
    from transferkit.data import examples_debian

    sizes = {"fox": (60, 40), "whale": (400, 300), "bomb": (600, 400), "barn": (30, 30)}
    for name, size in sizes.items():
        path = tmp_path / ("buildings" if name == "barn" else "animals") / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGBA", size, (0, 0, 0, 255)).save(path)
    monkeypatch.setattr(examples_debian, "CLIPART_DIR", tmp_path)
    monkeypatch.setattr(examples_debian, "CLIPART_MAX_PIXELS", 100_000)  # the whale (120,000) is over
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)  # the bomb (240,000) over Pillow's 2x too
    decoded, convert = [], Image.Image.convert

    def spy(img, *args, **kwargs):
        decoded.append(img.size)
        return convert(img, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "convert", spy)

    images, labels = get_dataset("clipart_categories").load()

    categories = examples_debian.CLIPART_CATEGORIES
    assert [categories[i] for i in labels] == ["animals", "buildings"]  # the fox, the barn
    assert sizes["whale"] not in decoded and sizes["bomb"] not in decoded
    assert images.shape[1:] == (examples_debian.CLIPART_SIDE, examples_debian.CLIPART_SIDE, 3)


def test_mahjong_suits_cut_each_sheet_in_its_order_crop_svg_faces_to_what_they_draw(monkeypatch, tmp_path):
    import gzip

    from transferkit.data import examples_debian as debian

    def sheet(columns, rows, first, tile=(8, 10)):  # every tile its own grey level, row by row
        image = Image.new("RGBA", (columns * tile[0], rows * tile[1]))
        for k in range(columns * rows):
            r, c = divmod(k, columns)
            block = Image.new("RGBA", tile, (first + k,) * 3 + (255,))
            image.paste(block, (c * tile[0], r * tile[1]))
        return image

    for folder in ("kde", "gnome", "x"):
        (tmp_path / folder).mkdir()
    svg = b'<svg><g id="WIND_2"/><g id="ROD_7"/><g id="BAMBOO_3"/><g id="TILE_1"/></svg>'
    (tmp_path / "kde" / "one.svgz").write_bytes(gzip.compress(svg))
    sheet(43, 2, 0).save(tmp_path / "gnome" / "strip.png")
    sheet(21, 4, 100).convert("RGB").save(tmp_path / "x" / "grid.gif")
    sheet(21, 4, 100).convert("RGB").save(tmp_path / "x" / "same_grid.gif")  # every tile a repeat: dropped
    for constant, value in {
        "KMAHJONGG_DIR": tmp_path / "kde",
        "KMAHJONGG_TILESETS": ("one",),
        "GNOME_MAHJONGG_DIR": tmp_path / "gnome",
        "GNOME_MAHJONGG_THEMES": ("strip.png",),
        "XMAHJONGG_DIR": tmp_path / "x",
        "XMAHJONGG_SETS": ("grid.gif", "same_grid.gif"),
    }.items():
        monkeypatch.setattr(debian, constant, value)
    monkeypatch.setattr(debian.shutil, "which", lambda name: f"/usr/bin/{name}")
    rendered = []

    def rsvg(*args):  # an element's box: a 6 x 6 opaque face far from an invisible corner
        rendered.append(args)
        face = Image.new("RGBA", (60, 90))
        if args[0] != "--export-id=BAMBOO_3":  # this one draws nothing
            face.paste(Image.new("RGBA", (6, 6), (255, len(rendered), 0, 255)), (50, 80))
        return face

    monkeypatch.setattr(debian, "_rsvg", rsvg)

    images, labels = get_dataset("mahjong_suits").load()

    suits = debian.MAHJONG_SUITS
    assert [a[0] for a in rendered] == ["--export-id=BAMBOO_3", "--export-id=ROD_7", "--export-id=WIND_2"]
    gnome = [suits[i] for i in debian.GNOME_MAHJONGG_ORDER]
    assert gnome[:9] == ["dots"] * 9 and gnome[-5:] == ["dragons"] + ["bonus"] * 4  # white dragon, seasons
    x_tiles = [suits[i] for i in debian.XMAHJONGG_ORDER]
    assert [suits[i] for i in labels] == ["dots", "winds"] + gnome + x_tiles
    # The faces fill the square's height (enlarged from 6 px): all red but the white margins.
    assert images.shape == (2 + 42 + 38, debian.MAHJONG_SIDE, debian.MAHJONG_SIDE, 3)
    assert (images[0, :, debian.MAHJONG_SIDE // 2] == [255, 2, 0]).all()
    # GNOME's strip: the first row's tiles, the grey levels 0..41; xmahjongg's grid: rows 1-2's.
    np.testing.assert_array_equal(images[2:44, 48, 48, 0], np.arange(42))
    np.testing.assert_array_equal(images[44:, 48, 48, 0], 100 + np.arange(38))


def test_chess_pieces_label_each_set_by_file_and_each_font_by_its_letters_from_unpacked_packages(
    monkeypatch, tmp_path
):
    import matplotlib

    from transferkit.data import examples_debian as debian

    # Not installed: found where make datasets unpacks them.
    monkeypatch.setattr(debian, "PYCHESS_DIR", Path("/absent/pychess/pieces"))
    monkeypatch.setattr(debian, "XBOARD_DIR", Path("/absent/xboard/default"))
    monkeypatch.setattr(debian, "UNPACKED_ROOT", tmp_path)
    pieces = tmp_path / "absent" / "pychess" / "pieces"
    xboard = tmp_path / "absent" / "xboard" / "default"
    (pieces / "ttf").mkdir(parents=True)
    xboard.mkdir(parents=True)
    monkeypatch.setattr(debian, "PYCHESS_SETS", ("one", "two"))
    for name in ("one", "two"):
        (pieces / name).mkdir()
        for file in ("wk", "wq", "wr", "wb", "wn", "wp", "bk", "bq", "br", "bb", "bn", "bp"):
            (pieces / name / f"{file}.svg").write_text("<svg/>")
    for colour in ("White", "Black"):
        for piece in ("King", "Queen", "Rook", "Bishop", "Knight", "Pawn"):
            (xboard / f"{colour}{piece}.svg").write_text("<svg/>")
    # Text fonts stand in for the chess fonts: they draw the letters themselves. merida is usual again.
    fonts = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    for font, text_font in (("cheq", "DejaVuSans"), ("usual", "DejaVuSerif"), ("merida", "DejaVuSerif")):
        shutil.copy(fonts / f"{text_font}.ttf", pieces / "ttf" / f"{font}.ttf")
    monkeypatch.setattr(debian.shutil, "which", lambda name: f"/usr/bin/{name}")
    rendered = []

    def rsvg(*args):  # each file its own red level
        rendered.append(Path(args[-1]).relative_to(tmp_path / "absent"))
        return Image.new("RGBA", (20, 40), (len(rendered), 0, 0, 255))

    monkeypatch.setattr(debian, "_rsvg", rsvg)

    images, labels = get_dataset("chess_pieces").load()

    names = [debian.CHESS_PIECES[i] for i in labels]
    kinds = list(debian.CHESS_PIECES)
    assert [p.as_posix() for p in rendered[:7]] == [
        "pychess/pieces/one/wk.svg", "pychess/pieces/one/wq.svg", "pychess/pieces/one/wr.svg",
        "pychess/pieces/one/wb.svg", "pychess/pieces/one/wn.svg", "pychess/pieces/one/wp.svg",
        "pychess/pieces/one/bk.svg",
    ]  # fmt: skip
    assert rendered[24:26] == [Path("xboard/default/WhiteKing.svg"), Path("xboard/default/WhiteQueen.svg")]
    assert names[:36] == kinds * 6  # two SVG sets and xboard's, white then black
    assert (images[:36, 48, 48] == np.stack([np.arange(1, 37), [0] * 36, [0] * 36], axis=1)).all()
    # Fonts in name order, white pieces then black; merida draws what usual does: dropped.
    assert names[36:] == kinds * 4 and images.shape == (36 + 24, debian.CHESS_SIDE, debian.CHESS_SIDE, 3)
    cheq, usual = pieces / "ttf" / "cheq.ttf", pieces / "ttf" / "usual.ttf"
    letters = [(cheq, letter) for letter in "kqrbhplwtnjo"]
    letters += [(usual, letter) for letter in "kqrbnplwtvmo"]
    for image, (font, letter) in zip(images[36:], letters, strict=True):  # pychess' letter for each piece
        np.testing.assert_array_equal(image, debian._chess_glyph(font, letter))
    assert images[36:].min() == 0 and images[36:].max() == 255  # ink on white


def test_chess_pieces_not_unpacked_says_make_datasets_and_where(monkeypatch, tmp_path):
    from transferkit.data import examples_debian as debian

    monkeypatch.setattr(debian, "PYCHESS_DIR", Path("/absent/pychess/pieces"))
    monkeypatch.setattr(debian, "UNPACKED_ROOT", tmp_path / "unpacked")
    with pytest.raises(TransferkitError, match=f"make datasets .*{tmp_path / 'unpacked'}"):
        get_dataset("chess_pieces").load()


@pytest.mark.parametrize("name", ["lfw_faces", "textures"])
def test_a_missing_scikit_image_names_the_extra_that_installs_it(name, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "skimage", None)  # import skimage raises ImportError
    with pytest.raises(TransferkitError, match=r'needs scikit-image.*pip install -e "\.\[examples\]"'):
        get_dataset(name).load()


def test_icon_themes_drop_icons_drawn_in_two_themes_and_blank_ones_after_the_cap(monkeypatch, tmp_path):
    from transferkit.data import examples_debian

    def icon(path, colour, size=(32, 32)):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGBA", size, colour).save(path)

    first, second = tmp_path / "first", tmp_path / "second"
    for i in range(5):  # 0 is drawn in the other theme too, 3 in white
        icon(first / "apps" / f"{i}.png", (40 * i, 0, 0, 255) if i != 3 else (255, 255, 255, 255))
    icon(first / "apps" / "spinner.png", (9, 9, 9, 255), (128, 32))  # a sprite sheet
    icon(second / "apps" / "same.png", (0, 0, 0, 255))  # icon 0 again: drawn in both themes
    icon(second / "apps" / "own.png", (0, 0, 200, 255))
    themes = {"first": (str(first), "first-icons"), "second": (str(second), "second-icons")}
    monkeypatch.setattr(examples_debian, "ICON_THEMES", themes)
    monkeypatch.setattr(examples_debian, "ICON_CAP", 3)

    images, labels = examples_debian.icon_themes()

    # first: 1-4 left once 0 (shared) goes; the cap of 3 keeps 1, 3 and 4, then 3 (white) goes
    assert labels.tolist() == [0, 0, 1]
    assert [int(image[0, 0, 0]) for image in images] == [40, 160, 0]
