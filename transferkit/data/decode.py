"""Turn one image file (or its bytes) into an RGB uint8 array of a fixed size, or say why not.

Every path into the toolkit (folder scan, ``tf.data`` training pipeline, TFDS records,
``predict``) decodes through :func:`decode_image`, so a picture looks the same in training and
in prediction.

Decisions, in the order they are applied:

- Formats: JPEG (incl. multi-picture MPO from cameras), PNG, BMP, GIF, WebP, TIFF (remote
  sensing and microscopy sets ship as TIFF, e.g. UC Merced Land Use, NCT-CRC-HE), AVIF where
  the installed Pillow reads it (11.3 and later), HEIC / HEIF (iPhone photos) where pillow-heif
  is installed (the ``heic`` extra); without them such a file's skip reason names what to
  install. Pillow's other decoders are not even tried, so random bytes never reach an exotic
  plugin. A TIFF with more than four bands (multispectral) is not an image Pillow reads, and is
  skipped with that reason.
- Size guard: Pillow refuses images above ``2 * PIL.Image.MAX_IMAGE_PIXELS`` (about 179
  megapixels, e.g. 13400 x 13400) as possible decompression bombs; such a file is skipped with
  that reason. Raise ``PIL.Image.MAX_IMAGE_PIXELS`` to accept bigger ones.
- JPEG draft: a large JPEG is decoded directly at 1/2, 1/4 or 1/8 scale (libjpeg's DCT
  scaling) while staying at least ``image_size`` on each side, so a 12000 x 12000 photo costs
  about 1500 x 1500 pixels of memory and time.
- EXIF orientation is applied (a portrait phone photo stays upright).
- Animated GIF/WebP, multi-page TIFF: the first frame.
- Colour: high-bit-depth integer grey (16-bit, as X-ray, CT and microscopy sets ship, or 32-bit)
  is scaled (not clipped) to 8 bits from the data set's **white level**: the largest value a file
  of that depth holds, ``2**bits - 1`` for the fewest bits (at least 8) that hold every sample the
  scan saw (:func:`white_level_for`). A 12-bit detector's 0-4095 in 16-bit files becomes 0-255
  instead of the 16 grey levels that 0-65535 would leave; without a white level, 65535. 16-bit
  colour (RGB or RGBA PNG and TIFF, as fluorescence microscopy ships) is read at full depth by
  OpenCV where it is installed (``pip install -e ".[deep-colour]"``) and scaled by the
  same white level; Pillow alone reads it through its high byte, which leaves 12-bit values at
  0-15 (nearly black; the scan counts such files). Floating-point grey in [0, 1] is scaled to
  [0, 255] (any other range: as 16-bit integers are); CMYK, palette and grey become RGB;
  transparency (RGBA, LA, palette or colour-key transparency) is composited on **white**, the
  way viewers and browsers show such files, instead of dropping alpha, which exposes whatever
  colour the encoder left under transparent pixels (often black or noise).
- Resize: squashed to ``image_size`` x ``image_size`` ignoring aspect ratio, like the default of
  ``keras.utils.image_dataset_from_directory`` (nothing is cropped away), with Pillow's bilinear
  filter, which widens its support when shrinking (antialiased: no moire, unlike
  ``tf.image.resize`` without ``antialias``). A picture of more than 16 megapixels that was not
  drafted (a huge PNG) is first box-reduced to at least 4x that size (:func:`_reduced`): the
  steps before the resize each copy the whole picture.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps

from transferkit.errors import extra_install


def _heif_opener() -> tuple[str, ...]:
    """HEIC / HEIF (iPhone photos) through pillow-heif where it is installed (the ``heic`` extra).
    It turns the picture upright itself and resets the EXIF orientation, so it is not turned twice."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return ()
    register_heif_opener()
    return ("HEIF",)


IMAGE_EXTENSIONS = (
    ".avif",
    ".bmp",
    ".gif",
    ".heic",
    ".heif",
    ".jfif",  # JPEG as web browsers on Windows save it
    ".jpe",
    ".jpeg",
    ".jpg",
    ".png",
    ".tif",
    ".tiff",
    ".webp",
)
# AVIF (phone cameras, the web) where this Pillow reads it: its own wheels do from 11.3 on.
_AVIF = ("AVIF",) if Image.registered_extensions().get(".avif") == "AVIF" else ()
_HEIF = _heif_opener()
PIL_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF", *_AVIF, *_HEIF)  # JPEG includes camera MPO files
_READER_NEEDED = {  # extension: (the Pillow format that reads it, what to install without it)
    ".avif": ("AVIF", "AVIF needs a newer Pillow (11.3 or later: pip install -U pillow)"),
    ".heic": ("HEIF", f"HEIC needs pillow-heif: {extra_install('heic')}"),
    ".heif": ("HEIF", f"HEIF needs pillow-heif: {extra_install('heic')}"),
}
RESAMPLE = Image.Resampling.BILINEAR
BACKGROUND = (255, 255, 255, 255)  # transparent pixels become white
FULL_CHECK_MAX_PIXELS = 4_000_000  # bigger PNGs are CRC-checked at scan time, not fully decoded
# Pictures above this many pixels (PNG, TIFF, WebP...: a JPEG is drafted smaller as it decodes) are
# box-reduced to at least REDUCED_MARGIN x the output size before compositing, converting and
# resizing: each of those steps copies the whole picture (a 169-megapixel RGBA PNG: 10.4 s and
# 2.7 GB peak to decode before, see _reduced).
REDUCE_ABOVE_PIXELS = 16_000_000
REDUCED_MARGIN = 4
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
HIGH_BIT_MODES = (*_SIXTEEN_BIT_MODES, "I")  # integer grey above 8 bits: scaled by a white level

# Our own limit is Pillow's hard limit (DecompressionBombError, reported as a skip reason); its softer
# DecompressionBombWarning (89-179 megapixels) is silenced by the CLI's process set-up, not here.


class UnusableImage(Exception):
    """A file that cannot be used as an image; ``str(err)`` is the reason shown in the card."""


def has_image_extension(path: str | os.PathLike) -> bool:
    """True when ``path`` ends in a supported image extension (case-insensitive)."""
    return os.fspath(path).lower().endswith(IMAGE_EXTENSIONS)


EMPTY_FILE = "empty file (0 bytes)"


def not_an_image_file(path: str | os.PathLike) -> str:
    """Why a file without an image extension is left out: the same words in a scan and in predict."""
    extension = os.path.splitext(os.fspath(path))[1] or "none"
    return f"not an image file (extension {extension!r}; expected one of {', '.join(IMAGE_EXTENSIONS)})"


def _open(source: str | os.PathLike | bytes) -> Image.Image:
    if not isinstance(source, bytes) and not os.path.isfile(source):  # a FIFO would block open()
        what = "not a regular file" if os.path.lexists(source) else "file not found"
        raise UnusableImage(what if not os.path.islink(source) else "broken or looping symlink")
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        return Image.open(fp, formats=PIL_FORMATS)
    except Image.DecompressionBombError as err:
        raise UnusableImage(f"too large to decode safely ({err}); downscale it") from None
    except Image.UnidentifiedImageError:
        extension = "" if isinstance(source, bytes) else os.path.splitext(source)[1].lower()
        reader, install = _READER_NEEDED.get(extension, ("", ""))
        if reader and reader not in PIL_FORMATS:
            raise UnusableImage(install) from None
        if not isinstance(source, bytes) and os.path.getsize(source) == 0:
            raise UnusableImage(EMPTY_FILE) from None
        if not isinstance(source, bytes) and not has_image_extension(source):  # predict names any file
            raise UnusableImage(not_an_image_file(source)) from None
        raise UnusableImage(f"not a supported image (expected {', '.join(PIL_FORMATS)} data)") from None
    except OSError as err:  # with errno: the file system; without: Pillow reading the data
        raise UnusableImage(f"cannot read file: {err.strerror}" if err.errno else _reason(err)) from None
    except Exception as err:  # a corrupt header can raise nearly anything inside a plugin
        raise UnusableImage(_reason(err)) from None


def _orientation(img: Image.Image, *, load: bool = True) -> int:
    """The EXIF orientation tag, 1 (as stored) when there is none. ``load=False``: without loading
    the pixels, which Pillow does to look for a PNG's eXIf chunk after them (the PNG specification
    puts it ahead of them); such a PNG counts as unturned."""
    if not load and img.format == "PNG" and "exif" not in img.info:
        return 1
    try:
        return int(img.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block must not make the picture unusable
        return 1


def _upright_size(img: Image.Image, *, load: bool = True) -> tuple[int, int]:
    """``img``'s ``(width, height)`` once turned upright by its orientation tag (read before loading;
    ``load`` as :func:`_orientation`'s).

    Pillow's TIFF reader already reports (and loads) an oriented TIFF upright: its size differs from
    the stored width and height tags then, and must not be turned again.
    """
    width, height = img.size
    if _orientation(img, load=load) not in (5, 6, 7, 8):
        return width, height
    if img.format == "TIFF" and (width, height) != (img.tag_v2.get(256), img.tag_v2.get(257)):
        return width, height
    return height, width


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag; a corrupt tag is ignored."""
    if _orientation(img) == 1:
        return img
    try:
        return ImageOps.exif_transpose(img)
    except (ValueError, TypeError, KeyError, SyntaxError):
        return img


def white_level_for(peak: int) -> int:
    """The white of integer samples whose largest is ``peak``: ``2**bits - 1``, fewest bits, at least 8.

    Example:
        >>> white_level_for(3000), white_level_for(4095), white_level_for(4096), white_level_for(200)
        (4095, 4095, 8191, 255)
    """
    return (1 << max(8, int(peak).bit_length())) - 1


def sixteen_bit_colour(img: Image.Image) -> bool:
    """Whether ``img`` is 16-bit colour, which Pillow reads through its high byte. Ask before its
    pixels or EXIF load (a PNG's EXIF lookup loads the pixels, which empties ``tile``)."""
    return img.mode in ("RGB", "RGBA") and any(";16" in str(tile.args) for tile in img.tile)


def _full_depth_colour(source: str | os.PathLike | bytes) -> np.ndarray | None:
    """A 16-bit colour file's samples at full depth, ``uint16 [H, W, 3 or 4]`` in RGB(A) order and
    upright (OpenCV applies the orientation tag itself, even with ``IMREAD_UNCHANGED``), by
    OpenCV's decoder; None without OpenCV (the optional ``deep-colour`` extra) or if it reads the
    file otherwise."""
    try:
        import cv2
    except ImportError:
        return None
    data = source if isinstance(source, bytes) else np.fromfile(source, np.uint8)
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.dtype != np.uint16 or pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        return None
    order = [2, 1, 0, 3][: pixels.shape[2]]  # OpenCV's BGR(A) -> RGB(A)
    return np.ascontiguousarray(pixels[..., order])


def _colour_peak(pixels: np.ndarray) -> int:
    """The largest colour sample of ``uint16 [H, W, 3 or 4]`` pixels (alpha left out)."""
    return int(pixels[..., :3].max(initial=0))


def _scaled_colour(pixels: np.ndarray, white_level: int | None) -> Image.Image:
    """Full-depth 16-bit colour -> an 8-bit RGB(A) image: colour ``0..white_level`` (65535 without
    one) and alpha ``0..65535`` onto 0..255."""
    scale = 255.0 / (white_level or 65535)
    img = Image.fromarray(np.clip(np.rint(pixels * scale), 0, 255).astype(np.uint8))
    if pixels.shape[2] == 4:  # alpha is not sample data: its 16-bit range maps onto 8 bits as is
        img.putalpha(Image.fromarray(np.rint(pixels[..., 3] / 257.0).astype(np.uint8)))
    return img


def _to_rgb(img: Image.Image, white_level: int | None = None) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB (high-bit grey scaled, transparency composited on white)."""
    if img.mode in HIGH_BIT_MODES or img.mode == "F":
        values = np.nan_to_num(np.asarray(img, dtype=np.float64))
        if img.mode == "F" and values.size and values.min() >= 0 and values.max() <= 1:
            values = values * 255.0  # a float image in [0, 1]
        elif img.mode in HIGH_BIT_MODES and white_level:
            values = values * (255.0 / white_level)  # the data set's 0..white -> 0..255
        elif img.mode in _SIXTEEN_BIT_MODES or values.max(initial=0) > 255:
            values = values / 257.0  # 0..65535 -> 0..255
        img = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, BACKGROUND), rgba).convert("RGB")
    return img.convert("RGB")


def _reduced(img: Image.Image, image_size: int) -> Image.Image:
    """``img`` box-reduced by the largest whole factor that keeps both sides at least
    ``REDUCED_MARGIN * image_size``, when it has more than ``REDUCE_ABOVE_PIXELS`` pixels; else itself.

    Pillow reduces RGBA with premultiplied alpha, so compositing on white after it matches
    compositing before it, and the final antialiased resize from >= 4x the output size decides the
    pixels: a 4200-px colour ramp, its left quarter transparent, decoded at 64 px came out within 3
    levels of the unreduced decode (mean 0.26), 5 on the hard edge of the transparency, in 135 MB
    more memory instead of 269 MB.
    """
    width, height = img.size
    factor = min(width, height) // (REDUCED_MARGIN * image_size)
    if width * height <= REDUCE_ABOVE_PIXELS or factor < 2 or img.mode not in ("L", "LA", "RGB", "RGBA"):
        return img
    return img.reduce(factor)


def decode_image(
    source: str | os.PathLike | bytes, image_size: int, white_level: int | None = None
) -> np.ndarray:
    """Decode a file path or encoded bytes into a ``uint8 [image_size, image_size, 3]`` RGB array.

    Args:
        source: path of an image file, or the encoded bytes of one.
        image_size: side of the square output, in pixels.
        white_level: the value that becomes 255 in high-bit-depth images (the data set's, from
            its scan: ``DatasetCard.white_level``); None: 65535 for 16-bit files. 8-bit files
            ignore it.

    Returns:
        The picture, upright, RGB, squashed to ``image_size`` x ``image_size``.

    Raises:
        UnusableImage: for anything that cannot be decoded; the message is the reason.

    Example:
        >>> from PIL import Image; import io
        >>> buf = io.BytesIO(); Image.new("LA", (40, 20)).save(buf, "PNG")
        >>> decode_image(buf.getvalue(), 8).shape
        (8, 8, 3)
    """
    img = _open(source)
    try:
        with img:
            deep = _full_depth_colour(source) if sixteen_bit_colour(img) else None
            if deep is not None:  # already upright
                picture = _scaled_colour(deep, white_level)
            else:
                img.draft(None, (image_size, image_size))  # JPEG only: DCT-scaled decode, >= target
                picture = _upright(img)
            rgb = _to_rgb(_reduced(picture, image_size), white_level)
            return np.asarray(rgb.resize((image_size, image_size), RESAMPLE), dtype=np.uint8)
    except UnusableImage:
        raise
    except Exception as err:  # Pillow raises many types on corrupt data; all mean "unusable"
        raise UnusableImage(_reason(err)) from None


class Probe(NamedTuple):
    """What the scan learns from one file: its upright ``(width, height)``; for high-bit-depth
    integer grey (``HIGH_BIT_MODES``), and 16-bit colour read at full depth (OpenCV installed),
    its largest sample (``None`` for every other image); and ``dim_colour``: 16-bit colour whose
    values fit in 12 bits that only Pillow could read, which reduces it to its high byte (0-15:
    nearly black), a loss this toolkit can then only report."""

    size: tuple[int, int]
    peak: int | None = None
    dim_colour: bool = False


def high_bit_depth(path: str | os.PathLike) -> bool:
    """Whether the file holds more than 8 bits a sample (16-bit grey or colour): its header only."""
    try:
        with Image.open(path) as img:
            return img.mode in HIGH_BIT_MODES or sixteen_bit_colour(img)
    except OSError:
        return False


def probe(path: str | os.PathLike) -> Probe:
    """Check that ``path`` decodes completely; return its upright size (and peak, if high-bit).

    16-bit colour is decoded twice where OpenCV is installed: by Pillow, whose decoder checks the
    file, and by OpenCV for its samples at full depth.

    Cheaper than :func:`decode_image`: a JPEG is decoded at 1/8 scale (which still reads every
    byte, so truncation is caught), an 8-bit PNG above ``FULL_CHECK_MAX_PIXELS`` is CRC-checked
    instead of inflated, and nothing is converted or resized.

    Args:
        path: the image file.

    Raises:
        UnusableImage: with the reason when the file cannot be used.

    Example:
        >>> probe("cat.jpg")  # doctest: +SKIP
        Probe(size=(640, 480), peak=None)
    """
    img = _open(path)
    try:
        with img:
            width, height = img.size
            high_bit = img.mode in HIGH_BIT_MODES
            colour_16 = sixteen_bit_colour(img)  # before anything loads the pixels
            checked_only = img.format == "PNG" and width * height > FULL_CHECK_MAX_PIXELS
            checked_only = checked_only and not (high_bit or colour_16)
            size = _upright_size(img, load=not checked_only)  # verify() needs the pixels unread
            if checked_only:
                img.verify()  # CRC of every chunk: catches truncation and corruption, no inflate
            else:
                img.draft(None, (1, 1))
                img.load()
            peak = int(np.asarray(img).max(initial=0)) if high_bit else None  # getextrema fails on I;16B
            deep = _full_depth_colour(path) if colour_16 else None
            if deep is not None:  # decoded whole by Pillow above, its samples at full depth here
                return Probe(size, _colour_peak(deep))
            dim = colour_16 and max(high for _, high in img.getextrema()[:3]) < 16  # colour, not alpha
            return Probe(size, peak, dim)
    except UnusableImage:
        raise
    except Exception as err:
        raise UnusableImage(_reason(err)) from None


def probe_image(path: str | os.PathLike) -> tuple[int, int]:
    """:func:`probe`'s upright ``(width, height)`` of ``path``.

    Example:
        >>> probe_image("cat.jpg")  # doctest: +SKIP
        (640, 480)
    """
    return probe(path).size


def _reason(err: Exception) -> str:
    text = str(err).strip() or type(err).__name__
    if "truncated" in text.lower():
        return f"truncated or corrupt image data ({text})"
    return f"cannot decode: {text}"


def load_images(
    paths: Sequence[str | os.PathLike], image_size: int, white_level: int | None = None
) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Decode many files for prediction, in parallel, keeping the usable ones.

    Args:
        paths: image files to decode (or TFDS record ids like ``tfds:beans/test#3``, as
            :func:`~transferkit.data.loading.load_data` names them: read from their split).
        image_size: side of the square output, in pixels.
        white_level: as :func:`decode_image`'s (a run's: the one it trained with).

    Returns:
        ``(images, skipped)``: a ``uint8 [n_usable, image_size, image_size, 3]`` array in the
        order of ``paths``, and ``(path, reason)`` for each file that could not be used.

    Example:
        >>> images, skipped = load_images(["cat.jpg", "notes.txt"], 224)  # doctest: +SKIP
        >>> images.shape, skipped  # doctest: +SKIP
        ((1, 224, 224, 3), [('notes.txt', 'not a supported image (...)')])
    """

    if any(os.fspath(path).startswith("tfds:") for path in paths):  # records of a TFDS split: no files
        from transferkit.data.tfds_source import decode_records

        found = decode_records([os.fspath(path) for path in paths], image_size, white_level)
        missing = "not a record of its TFDS split that decodes"
        results = [found.get(os.fspath(path), missing) for path in paths]
    else:

        def attempt(path: str | os.PathLike) -> np.ndarray | str:
            try:
                return decode_image(path, image_size, white_level)
            except UnusableImage as err:
                return str(err)

        with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 2)) as pool:
            results = list(pool.map(attempt, paths))
    arrays = [r for r in results if isinstance(r, np.ndarray)]
    skipped = [(os.fspath(p), r) for p, r in zip(paths, results, strict=True) if isinstance(r, str)]
    stacked = np.stack(arrays) if arrays else np.zeros((0, image_size, image_size, 3), np.uint8)
    return stacked, skipped
