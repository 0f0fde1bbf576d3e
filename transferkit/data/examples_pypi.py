"""Loaders of the example datasets whose images ship inside PyPI packages (no download, no apt).

Each loader returns ``(uint8 images [N, H, W] or [N, H, W, 3], int labels [N])`` in a fixed order
and raises :class:`~transferkit.errors.TransferkitError` with the install command when the
package is missing. The registry that describes them is :mod:`transferkit.data.examples`.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
import string
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from transferkit.errors import TransferkitError, extra_install

GLYPHS = string.ascii_uppercase + string.ascii_lowercase + string.digits  # 62 characters


def missing_error(dataset: str, what: str, hint: str) -> TransferkitError:
    return TransferkitError(
        f"Example dataset {dataset!r} needs {what}, which is not installed. Install it with: {hint}"
    )


SKIMAGE_HINT = extra_install("examples")  # scikit-image, whose wheel bundles the images
# --no-deps, as the Makefile installs it: its declared dependencies are wrong
ANIMAL_MNIST_HINT = "pip install --no-deps animal-mnist==0.4"


def skimage_data(dataset: str):
    """``skimage.data``, or an error that names the extra that installs it."""
    try:
        from skimage import data
    except ImportError:
        raise missing_error(dataset, "scikit-image", SKIMAGE_HINT) from None
    return data


def require_file(path: Path, dataset: str, what: str, hint: str) -> Path:
    if not path.exists():
        raise missing_error(dataset, what, hint)
    return path


def flatten_rgba(image: Image.Image, background: tuple[int, int, int]) -> np.ndarray:
    """RGB uint8 array of ``image`` composited onto a solid ``background``."""
    rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, background + (255,))
    canvas.alpha_composite(rgba)
    return np.asarray(canvas.convert("RGB"), dtype=np.uint8)


def spread_evenly(items: list, cap: int) -> list:
    """At most ``cap`` items, evenly spaced over the list (deterministic, keeps every sub-range)."""
    if len(items) <= cap:
        return list(items)
    picks = np.linspace(0, len(items) - 1, cap).round().astype(int)
    return [items[i] for i in picks]


def render_glyphs(font_files: list[list[Path]], size: int = 64, points: int = 40) -> np.ndarray:
    """Black-on-white glyphs, one per (class, font file, character), drawn on a fixed baseline.

    The baseline and horizontal centre are fixed (not the glyph's bounding box), so x-height,
    cap height and descender depth, which differ between typefaces, survive in the image.
    """
    images = []
    for files in font_files:
        for file in files:
            font = ImageFont.truetype(str(file), points, layout_engine=ImageFont.Layout.BASIC)
            for char in GLYPHS:
                canvas = Image.new("L", (size, size), 255)
                ImageDraw.Draw(canvas).text((size / 2, size * 0.72), char, font=font, fill=0, anchor="ms")
                images.append(np.asarray(canvas))
    return np.stack(images)


def lfw_faces() -> tuple[np.ndarray, np.ndarray]:
    faces = skimage_data("lfw_faces").lfw_subset()  # float 0..1: 100 faces, then 100 non-faces
    return np.rint(faces * 255), np.repeat([0, 1], 100)


def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()  # 0..16 grey levels
    return np.rint(digits.images * (255 / 16)), digits.target


def textures() -> tuple[np.ndarray, np.ndarray]:
    data = skimage_data("textures")
    images, labels = [], []
    for label, photo in enumerate((data.brick(), data.grass(), data.gravel())):  # 512 x 512 each
        tiles = photo.reshape(8, 64, 8, 64).swapaxes(1, 2).reshape(64, 64, 64)  # non-overlapping
        images.append(tiles)
        labels += [label] * 64
    return np.concatenate(images), np.asarray(labels)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain numpy arrays and refuses any other object (no code runs from the file)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(0))[0],
        ("numpy._core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(0))[0],
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        return self._ALLOWED[(module, name)]


def animal_mnist() -> tuple[np.ndarray, np.ndarray]:
    spec = importlib.util.find_spec("animal_mnist")  # located, never imported: its loader downloads
    if spec is None or not spec.submodule_search_locations:
        raise TransferkitError(
            "Example dataset 'animal_mnist' needs the animal-mnist package, which is not installed. "
            f"Install it with: {ANIMAL_MNIST_HINT}"
        )
    folder = Path(spec.submodule_search_locations[0]) / "data" / "Animal_MNIST"
    arrays = []
    for name in ("animal_data_version_3.gz", "animal_label_version_3.gz"):
        with gzip.open(folder / name, "rb") as handle:
            arrays.append(_NumpyOnlyUnpickler(handle).load())
    return arrays[0], arrays[1]


MPL_FAMILIES = {
    "dejavu_sans": ("DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique"),
    "dejavu_serif": ("DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic", "DejaVuSerif-BoldItalic"),
    "dejavu_sans_mono": (
        "DejaVuSansMono",
        "DejaVuSansMono-Bold",
        "DejaVuSansMono-Oblique",
        "DejaVuSansMono-BoldOblique",
    ),
    "stix_general": ("STIXGeneral", "STIXGeneralBol", "STIXGeneralItalic", "STIXGeneralBolIta"),
}


def font_families_mpl() -> tuple[np.ndarray, np.ndarray]:
    spec = importlib.util.find_spec("matplotlib")  # located, not imported (importing is slow)
    hint = "pip install matplotlib"
    if spec is None or not spec.submodule_search_locations:
        raise missing_error("font_families_mpl", "matplotlib", hint)
    folder = Path(spec.submodule_search_locations[0]) / "mpl-data" / "fonts" / "ttf"
    files = [
        [
            require_file(folder / f"{stem}.ttf", "font_families_mpl", "matplotlib's bundled fonts", hint)
            for stem in stems
        ]
        for stems in MPL_FAMILIES.values()
    ]
    images = render_glyphs(files)
    return images, np.repeat(np.arange(len(files)), 4 * len(GLYPHS))


SCIENCE_SOURCES = {  # class -> file in skimage/data (all bundled in the wheel, no pooch download)
    "astronomy_hubble": "hubble_deep_field.jpg",
    "histology_ihc": "ihc.png",
    "retina_fundus": "retina.jpg",
    "lunar_surface": "moon.png",
    "cell_phase_microscopy": "cell.png",
}
SCIENCE_CAP = 64


def science_tiles() -> tuple[np.ndarray, np.ndarray]:
    spec = importlib.util.find_spec("skimage")  # located, not imported
    hint = SKIMAGE_HINT
    if spec is None or not spec.submodule_search_locations:
        raise missing_error("science_tiles", "scikit-image", hint)
    folder = Path(spec.submodule_search_locations[0]) / "data"
    images, labels = [], []
    for label, name in enumerate(SCIENCE_SOURCES.values()):
        grey = np.asarray(
            Image.open(require_file(folder / name, "science_tiles", "scikit-image", hint)).convert("L")
        )
        rows, cols = grey.shape[0] // 64, grey.shape[1] // 64
        tiles = grey[: rows * 64, : cols * 64].reshape(rows, 64, cols, 64).swapaxes(1, 2).reshape(-1, 64, 64)
        # drop tiles that are mostly the black frame around the fundus photo, then keep the
        # SCIENCE_CAP most textured tiles (highest std; ties by position), in raster order
        tiles = [t for t in tiles if (t < 16).mean() < 0.25 or name == "hubble_deep_field.jpg"]
        order = sorted(range(len(tiles)), key=lambda i: (-float(tiles[i].std()), i))[:SCIENCE_CAP]
        kept = [tiles[i] for i in sorted(order)]
        images += kept
        labels += [label] * len(kept)
    return np.stack(images), np.asarray(labels)
