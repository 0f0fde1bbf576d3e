"""A folder of everything that goes wrong with real image collections: each file must be used or
listed with a reason, nothing may hang or crash, and the fatal cases must be one clear error."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tifffile
from PIL import Image

from transferkit.data.decode import decode_image, probe_image
from transferkit.data.loading import load_data, load_images, make_dataset
from transferkit.errors import TransferkitError

# Under pytest the module-level filter in transferkit.data.decode is reset; the limit is ours anyway.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")

RED, BLUE = (220, 20, 20), (20, 20, 220)
CATS, DOGS = "cats", "chiens été"  # a class name with a space and an accent


def _save(path: Path, image: Image.Image, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def _solid(colour=RED, size=(24, 16), mode="RGB") -> Image.Image:
    return Image.new(mode, size, colour)


@pytest.fixture(scope="module")
def huge_jpeg(tmp_path_factory) -> Path:
    """A 12000 x 12000 solid JPEG, made in a child process so this one never holds its 432 MB."""
    path = tmp_path_factory.mktemp("huge") / "huge.jpg"
    code = f"from PIL import Image; Image.new('RGB', (12000, 12000), {RED}).save({str(path)!r}, quality=50)"
    subprocess.run([sys.executable, "-c", code], check=True)
    return path


def _rotated_jpeg(path: Path) -> Path:
    """Stored landscape, left red / right blue, EXIF orientation 6 (display rotated 90 deg CW)."""
    image = _solid(RED, (40, 20))
    image.paste(BLUE, (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(path, image, exif=exif, quality=95)


def _good_files(root: Path, huge: Path) -> dict[str, Path]:
    cats, dogs = root / CATS, root / DOGS
    cats.mkdir(parents=True)
    rgba = _solid((0, 0, 0, 0), mode="RGBA")
    rgba.paste((0, 0, 255, 255), (0, 0, 12, 16))  # left half opaque blue, right half transparent
    gif_frames = [_solid(RED).quantize(4), _solid(BLUE).quantize(4)]
    gif = cats / "anim.gif"
    gif_frames[0].save(gif, save_all=True, append_images=gif_frames[1:], duration=50)
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    sixteen = Image.fromarray(np.full((16, 16), 32896, np.uint16))  # mid grey in 16 bits
    rgb16 = tf.io.encode_png(tf.fill([16, 16, 3], tf.constant(65535, tf.uint16))).numpy()
    (cats / "rgb16.png").write_bytes(rgb16)
    os.symlink(huge, cats / "huge.jpg")
    pages = [_solid(RED), _solid(BLUE)]
    pages[0].save(cats / "pages.tif", save_all=True, append_images=pages[1:])
    tifffile.imwrite(cats / "rgb48.tiff", np.full((16, 16, 3), (65535, 0, 0), np.uint16), photometric="rgb")
    files = {
        "rgb": _save(cats / "photo one.JPG", _solid(RED), quality=95),
        "grey": _save(cats / "grey.png", _solid(128, mode="L")),
        "rgba": _save(cats / "rgba.png", rgba),
        "la": _save(cats / "la.png", _solid((50, 255), mode="LA")),
        "palette": _save(cats / "palette.png", _solid(RED).quantize(4)),
        "sixteen": _save(cats / "sixteen.png", sixteen),
        "rgb16": cats / "rgb16.png",
        "cmyk": _save(cats / "cmyk.jpg", cmyk, quality=95),
        "gif": gif,
        "one_pixel": _save(cats / "one.bmp", _solid(RED, (1, 1))),
        "huge": cats / "huge.jpg",
        "rotated": _rotated_jpeg(cats / "rotated.jpeg"),
        "webp": _save(cats / "pic.webp", _solid(RED), lossless=True),
        "tiff": _save(cats / "scan.TIF", _solid(RED), compression="tiff_lzw"),
        "tiff16": _save(cats / "grey16.tif", sixteen),
        "tiff48": cats / "rgb48.tiff",
        "tiff_float": _save(cats / "float.tif", Image.fromarray(np.full((16, 16), 0.5, np.float32))),
        "tiff_pages": cats / "pages.tif",
        "nested": _save(cats / "2019" / "summer" / "deep.png", _solid(RED)),
        "unicode": _save(dogs / "été ñ 写真.png", _solid(BLUE)),
        "dog2": _save(dogs / "b.jpg", _solid(BLUE), quality=95),
        "dog3": _save(dogs / "sub dir" / "c.png", _solid(BLUE)),
    }
    return files


def _bad_files(root: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, words expected in its skip reason)."""
    cats = root / CATS
    full = cats / "full.jpg"
    _save(full, Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)))
    (cats / "truncated.jpg").write_bytes(full.read_bytes()[:600])
    full.unlink()
    (cats / "zero.jpg").write_bytes(b"")
    (cats / "text.jpg").write_text("this is not a picture\n")
    (cats / "notes.txt").write_text("shot on a phone\n")
    (cats / "broken.png").symlink_to(root / "does-not-exist.png")
    (cats / "self.jpg").symlink_to("self.jpg")
    os.mkfifo(cats / "fifo.jpg")  # open() on it would block forever
    (cats / "loop").symlink_to(cats, target_is_directory=True)
    (cats / "2019" / "up").symlink_to(root, target_is_directory=True)  # a link back above the class
    (root / "everything").symlink_to(root, target_is_directory=True)  # a "class" that is the root
    (root / "README.md").write_text("my pets\n")
    return {
        "truncated": (cats / "truncated.jpg", "truncated"),
        "zero": (cats / "zero.jpg", "empty file"),
        "text": (cats / "text.jpg", "not a supported image"),
        "notes": (cats / "notes.txt", "not an image file"),
        "broken": (cats / "broken.png", "symlink"),
        "self": (cats / "self.jpg", "symlink"),
        "fifo": (cats / "fifo.jpg", "not a regular file"),
        "loop": (cats / "loop", "symlink loop"),
        "up": (cats / "2019" / "up", "symlink loop"),
        "everything": (root / "everything", "symlink loop"),
        "readme": (root / "README.md", "not inside a class folder"),
        "empty_class": (root / "empty class", "no usable images"),
    }


def _hidden_files(root: Path) -> list[Path]:
    hidden = [root / CATS / ".hidden.jpg", root / CATS / "._photo one.JPG", root / ".git" / "x" / "y.png"]
    for path in hidden:
        _save(path, _solid(RED))
    (root / CATS / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "empty class").mkdir()
    (root / "empty class" / ".keep").write_text("")
    return hidden


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, huge_jpeg):
    root = tmp_path_factory.mktemp("corpus") / "my photos"
    good = _good_files(root, huge_jpeg)
    bad = _bad_files(root)
    hidden = _hidden_files(root)
    return root, good, bad, hidden


@pytest.fixture(scope="module")
def splits(corpus):
    return load_data(str(corpus[0]), validation_split=0.25, seed=3)


def test_every_file_is_used_or_skipped_with_a_reason(corpus, splits):
    root, good, bad, hidden = corpus
    held_out = splits.test.paths if splits.test is not None else ()
    used = set(splits.train.paths) | set(splits.val.paths) | set(held_out)
    assert used == {str(p) for p in good.values()}
    reasons = dict(splits.card.skipped)
    for name, (path, words) in bad.items():
        assert words in reasons.get(str(path), ""), (name, reasons.get(str(path)))
    listed = used | set(reasons)
    assert not any(str(h) in listed for h in hidden)  # hidden files are ignored silently
    assert splits.class_names == (CATS, DOGS)  # the empty class folder is left out
    assert sum(counts.get(DOGS, 0) for counts in splits.card.counts.values()) == 3  # in every split
    json.dumps(splits.card.to_dict())
    assert "skipped" in splits.card.summary()


@pytest.mark.parametrize(
    ("name", "expected"),
    [("rgb", RED), ("grey", (128, 128, 128)), ("palette", RED), ("cmyk", (255, 0, 0)), ("gif", RED),
     ("one_pixel", RED), ("huge", RED), ("webp", RED), ("nested", RED), ("unicode", BLUE),
     ("tiff", RED), ("tiff16", (128, 128, 128)), ("tiff48", (255, 0, 0)), ("tiff_float", (128, 128, 128)),
     ("tiff_pages", RED),
     ("sixteen", (128, 128, 128)), ("rgb16", (255, 255, 255)), ("la", (50, 50, 50))],
)  # fmt: skip
def test_usable_files_decode_to_plausible_rgb(corpus, name, expected):
    image = decode_image(corpus[1][name], 16)
    assert image.shape == (16, 16, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(int) - expected).max() <= 12, image[8, 8]


def test_transparency_is_composited_on_white(corpus):
    image = decode_image(corpus[1]["rgba"], 16)
    assert tuple(image[8, 2]) == (0, 0, 255)  # opaque part kept
    assert tuple(image[8, 13]) == (255, 255, 255)  # transparent part is white, not black


def _assert_upright(path: Path) -> None:
    """A 40 x 20 landscape (left red, right blue) tagged to turn 90 degrees: portrait, red on top."""
    assert probe_image(path) == (20, 40)  # upright: portrait
    image = decode_image(path, 16).astype(int)
    assert image[2, 8, 0] > 180 and image[2, 8, 2] < 80  # top is red
    assert image[13, 8, 2] > 180 and image[13, 8, 0] < 80  # bottom is blue


def test_exif_orientation_is_applied(corpus):
    _assert_upright(corpus[1]["rotated"])


@pytest.mark.parametrize(
    "dtype, compression",
    [(np.uint8, None), (np.uint8, "zlib"), (np.uint16, None)],
    ids=["8-bit", "8-bit-zlib", "16-bit"],
)
def test_tiff_orientation_is_applied_once(tmp_path, dtype, compression):
    """Pillow's TIFF reader turns an oriented TIFF itself: the scan's size and the decode turn it once."""
    white = np.iinfo(dtype).max
    pixels = np.zeros((20, 40, 3), dtype)  # stored landscape: left red, right blue
    pixels[:, :20, 0], pixels[:, 20:, 2] = white, white
    path = tmp_path / "turned.tif"
    tifffile.imwrite(
        path, pixels, photometric="rgb", compression=compression, extratags=[(274, "H", 1, 6, True)]
    )
    _assert_upright(path)


@pytest.mark.parametrize(
    "extension, reader, missing",
    [(".avif", "AVIF", "AVIF needs a newer Pillow"), (".heic", "HEIF", 'pip install -e ".[heic]"')],
)
def test_phone_photo_formats_are_read_and_without_a_reader_the_skip_names_it(
    tmp_path, monkeypatch, extension, reader, missing
):
    from transferkit.data import decode

    for name, colour in (("red", RED), ("blue", BLUE)):
        (tmp_path / "pets" / name).mkdir(parents=True)
        for i in range(3):
            _solid(colour).save(tmp_path / "pets" / name / f"{i}{extension}", quality=90)
    splits = load_data(str(tmp_path / "pets"), validation_split=0, test_split=0)
    assert splits.class_names == ("blue", "red") and len(splits.train) == 6
    red = tmp_path / "pets" / "red" / f"0{extension}"
    assert probe_image(red) == (24, 16)
    image = decode_image(red, 8).astype(int)
    assert (image[..., 0] > 200).all() and (image[..., 2] < 60).all()
    (tmp_path / f"broken{extension}").write_bytes(b"not an image at all")
    with pytest.raises(decode.UnusableImage, match="not a supported image"):
        decode_image(tmp_path / f"broken{extension}", 8)  # the reader is there: the file is the problem
    # without the reader (an older Pillow, no pillow-heif) the skip reason says what to install
    monkeypatch.setattr(decode, "PIL_FORMATS", tuple(f for f in decode.PIL_FORMATS if f != reader))
    with pytest.raises(decode.UnusableImage, match=re.escape(missing)):
        decode_image(red, 8)


def test_jpegs_named_as_browsers_save_them_are_images(tmp_path):
    """A JPEG a browser saved as .jfif (or .jpe) is read like any .jpg, in a folder too: a class
    of them was left out whole, as "not an image file"."""
    _save(tmp_path / "pets" / "cats" / "a.jfif", _solid(RED), format="JPEG")
    _save(tmp_path / "pets" / "cats" / "b.JPE", _solid(RED), format="JPEG")
    _save(tmp_path / "pets" / "dogs" / "c.jpg", _solid(BLUE))
    splits = load_data(str(tmp_path / "pets"), validation_split=0, test_split=0)
    assert splits.class_names == ("cats", "dogs") and len(splits.train) == 3
    assert not splits.card.skipped


def test_run_folders_inside_the_data_are_not_a_class_of_figures(tmp_path):
    """``cd pets && transferkit fit --data .`` writes runs/ into the data; the next fit read it as a
    third class whose images were the first run's plots."""
    pets = tmp_path / "pets"
    for name, colour in (("cats", RED), ("dogs", BLUE)):
        for i in range(3):
            _save(pets / name / f"{i}.png", _solid(colour))
    run = pets / "runs" / "pets-auto-20261205-101500"
    _save(run / "curves.png", _solid())
    (run / "run.json").write_text("{}")
    _save(pets / "lr_find" / "lr_find.png", _solid())
    (pets / "lr_find" / "lr_find.json").write_text("{}")
    splits = load_data(str(pets), validation_split=0, test_split=0)
    assert splits.class_names == ("cats", "dogs") and len(splits.train) == 6
    assert "a transferkit run folder" in dict(splits.card.skipped)[str(run)]
    # Nor an empty class: --strict takes the folder, and the card lists no class folder left out.
    strict = load_data(str(pets), validation_split=0, test_split=0, strict=True)
    assert strict.class_names == ("cats", "dogs")
    assert "class folder(s) left out" not in strict.card.summary()


def test_huge_jpeg_decodes_in_little_memory(huge_jpeg):
    code = (
        "import resource, sys; from transferkit.data.decode import decode_image; "
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
        f"image = decode_image({str(huge_jpeg)!r}, 224); "
        "grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before; "
        "print(image.shape, grown // 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    shape, grown_mb = out.rsplit(" ", 1)
    assert shape == "(224, 224, 3)"
    assert int(grown_mb) < 100  # a full decode would need 432 MB; the 1/8-scale draft needs ~7


def test_decompression_bomb_is_skipped_with_a_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # so a 20 x 20 image counts as a bomb
    for name in ("a", "b"):
        _save(tmp_path / name / "small.png", _solid(size=(5, 5)))
    _save(tmp_path / "a" / "bomb.png", _solid(size=(20, 20)))
    splits = load_data(str(tmp_path), validation_split=0)
    assert "too large" in dict(splits.card.skipped)[str(tmp_path / "a" / "bomb.png")]


def test_make_dataset_iterates_the_whole_corpus(splits):
    for images, batch_size in ((splits.train, 4), (splits.val, 3)):
        count = 0
        for pixels, labels in make_dataset(images, 32, batch_size, shuffle=True):
            assert pixels.dtype == tf.uint8 and pixels.shape[1:] == (32, 32, 3)
            count += int(labels.shape[0])
        assert count == len(images)


def test_file_broken_after_the_scan_is_left_out_and_logged_once(tmp_path, caplog):
    for name in ("a", "b"):
        for i in range(3):
            _save(tmp_path / name / f"{i}.png", _solid(RED if name == "a" else BLUE))
    splits = load_data(str(tmp_path), validation_split=0, test_split=0)
    (tmp_path / "a" / "1.png").write_bytes(b"gone bad")
    (tmp_path / "b" / "2.png").unlink()
    ds = make_dataset(splits.train, 8, 2, cache=False)
    with caplog.at_level(logging.WARNING, logger="transferkit.data.pipeline"):
        counts = [sum(int(y.shape[0]) for _, y in ds) for _ in range(2)]
    assert counts == [4, 4]
    warnings = [r for r in caplog.records if "failed to decode" in r.getMessage()]
    assert len(warnings) == 2  # once per file, not once per epoch


def test_load_images_returns_usable_files_and_reasons(corpus):
    good, bad = corpus[1], corpus[2]
    paths = [good["rgb"], bad["truncated"][0], good["unicode"], bad["zero"][0]]
    images, skipped = load_images(paths, 20)
    assert images.shape == (2, 20, 20, 3) and images.dtype == np.uint8
    assert [p for p, _ in skipped] == [str(bad["truncated"][0]), str(bad["zero"][0])]


def _message(call, *args, **kwargs) -> str:
    with pytest.raises(TransferkitError) as info:
        call(*args, **kwargs)
    assert "\n" not in str(info.value)  # the CLI prints it as one line
    return str(info.value)


def test_fatal_conditions_raise_one_clear_error(tmp_path, corpus):
    assert "does not exist" in _message(load_data, str(tmp_path / "nope"))
    (tmp_path / "file.txt").write_text("x")
    assert "is not a folder" in _message(load_data, str(tmp_path / "file.txt"))
    (tmp_path / "pets.zip").write_bytes(b"PK")
    assert f"python -m zipfile -e {tmp_path / 'pets.zip'} {tmp_path / 'pets'}" in _message(
        load_data, str(tmp_path / "pets.zip")
    )
    (tmp_path / "pets.tar.gz").write_bytes(b"")
    assert "tar -xf" in _message(load_data, str(tmp_path / "pets.tar.gz"))
    (tmp_path / "bad" / "a").mkdir(parents=True)
    (tmp_path / "bad" / "a" / "x.jpg").write_text("not an image")
    assert "No usable images" in _message(load_data, str(tmp_path / "bad"))
    _save(tmp_path / "one" / "only" / "x.png", _solid())
    assert "Only one class" in _message(load_data, str(tmp_path / "one"))
    for name in ("cats", "dogs"):  # an archive unpacked into one folder of class folders
        _save(tmp_path / "unpacked" / "pets" / name / "x.png", _solid())
    hint = _message(load_data, str(tmp_path / "unpacked"))
    assert (
        "Only one class ('pets')" in hint
        and f"(cats, dogs): if those are the classes, pass {str(tmp_path / 'unpacked' / 'pets')!r}" in hint
    )
    assert "empty class (--strict)" in _message(load_data, str(corpus[0]), strict=True)


def test_large_png_is_crc_checked_and_kept(tmp_path, monkeypatch):
    """The scan only CRC-checks a PNG above FULL_CHECK_MAX_PIXELS. Its orientation must be read
    without loading its pixels (Pillow inflates them to look for an eXIf chunk after them), or
    verify() refuses: every 8-bit PNG over 4 megapixels was skipped as undecodable."""
    from transferkit.data import decode

    monkeypatch.setattr(decode, "FULL_CHECK_MAX_PIXELS", 100)  # so a 40 x 20 PNG counts as large
    exif = Image.Exif()
    exif[0x0112] = 6
    turned = _save(tmp_path / CATS / "turned.png", _solid(size=(40, 20)), exif=exif)
    plain = _save(tmp_path / DOGS / "plain.png", _solid(BLUE, size=(40, 20)))
    _save(tmp_path / CATS / "plain.png", _solid(size=(40, 20)))
    data = plain.read_bytes()
    cut = tmp_path / DOGS / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    splits = load_data(str(tmp_path), validation_split=0, test_split=0)
    assert dict(splits.card.skipped).keys() == {str(cut)}  # the broken one only
    assert len(splits.train) == 3
    assert probe_image(turned) == (20, 40) and probe_image(plain) == (40, 20)


def test_huge_png_is_reduced_before_compositing(tmp_path, monkeypatch):
    """Above REDUCE_ABOVE_PIXELS a picture is box-reduced first (each later step copies it whole);
    the pixels stay those of the full decode, transparency still composited on white."""
    from transferkit.data import decode

    side = 1200
    ramp = np.linspace(0, 255, side).astype(np.uint8)
    rgba = np.empty((side, side, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = ramp, ramp[:, None], 255 - ramp
    rgba[..., 3] = np.where(ramp < 64, 0, 255)  # the left quarter transparent
    path = _save(tmp_path / "huge.png", Image.fromarray(rgba, "RGBA"))
    whole = decode_image(path, 64).astype(int)
    factors, reduce = [], Image.Image.reduce

    def spy(img, factor, *box):
        factors.append(factor)
        return reduce(img, factor, *box)

    monkeypatch.setattr(Image.Image, "reduce", spy)
    monkeypatch.setattr(decode, "REDUCE_ABOVE_PIXELS", side * side - 1)
    reduced = decode_image(path, 64).astype(int)
    assert factors[0] == side // (4 * 64)  # (Pillow calls itself again for RGBA)
    assert np.abs(reduced - whole).max() <= 6 and np.abs(reduced - whole).mean() < 0.5
    assert (reduced[:, :14] >= 250).all() and reduced[:, 20:, 0].min() > 60  # white, then the ramp


def test_an_internal_error_is_one_short_line_however_long_its_message(monkeypatch):
    """A converter's error can carry kilobytes of compiler diagnostics; the CLI prints one line."""
    from click.testing import CliRunner

    from transferkit.backbones import registry
    from transferkit.cli import main

    class Broken:
        def values(self):
            raise RuntimeError(
                "Could not translate MLIR to FlatBuffer: " + "x" * 5_000 + "\n<unknown>:0: note"
            )

    monkeypatch.setattr(registry, "BACKBONES", Broken())
    monkeypatch.delenv("TRANSFERKIT_DEBUG", raising=False)
    result = CliRunner().invoke(main, ["backbones"])
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Internal error: RuntimeError: Could not translate MLIR to FlatBuffer: xxx")
    assert line.endswith("[...] (set TRANSFERKIT_DEBUG=1 for the traceback)") and len(line) < 500
