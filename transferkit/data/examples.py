"""Built-in example datasets of real images that ship inside installed packages (no download).

Each one is written out as an ordinary image folder (``out_dir/<class>/<i>.png``), so examples,
notebooks and tests exercise exactly the path a user's own folder takes.

Example:
    >>> from transferkit.data.examples import export_dataset
    >>> from transferkit.data.loading import load_data
    >>> splits = load_data(str(export_dataset("lfw_faces", "/tmp/lfw_faces")))  # doctest: +SKIP
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from transferkit.errors import TransferkitError, choices_error

MARKER = ".transferkit-export.json"  # hidden: the data scan never sees it


@dataclass(frozen=True)
class ExampleDataset:
    """One built-in dataset: real, labelled images bundled with an installed package."""

    name: str
    description: str
    classes: tuple[str, ...]
    size: int  # number of images
    image_size: tuple[int, int]  # (width, height)
    source_package: str
    loader: Callable[[], tuple[np.ndarray, np.ndarray]] = field(repr=False, compare=False)

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """``(uint8 images [N, H, W] or [N, H, W, 3], int64 labels [N])``, in the source's order."""
        images, labels = self.loader()
        return np.asarray(images, dtype=np.uint8), np.asarray(labels, dtype=np.int64)


def _lfw_faces() -> tuple[np.ndarray, np.ndarray]:
    from skimage import data

    faces = data.lfw_subset()  # float 0..1; the first 100 are faces, the last 100 are not
    return np.rint(faces * 255), np.repeat([0, 1], 100)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()  # 0..16 grey levels
    return np.rint(digits.images * (255 / 16)), digits.target


def _textures() -> tuple[np.ndarray, np.ndarray]:
    from skimage import data

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


def _animal_mnist() -> tuple[np.ndarray, np.ndarray]:
    spec = importlib.util.find_spec("animal_mnist")  # located, never imported: its loader downloads
    if spec is None or not spec.submodule_search_locations:
        raise TransferkitError(
            "Example dataset 'animal_mnist' needs the animal-mnist package, which is not installed. "
            "Install it with: pip install --no-deps animal-mnist==0.4"
        )
    folder = Path(spec.submodule_search_locations[0]) / "data" / "Animal_MNIST"
    arrays = []
    for name in ("animal_data_version_3.gz", "animal_label_version_3.gz"):
        with gzip.open(folder / name, "rb") as handle:
            arrays.append(_NumpyOnlyUnpickler(handle).load())
    return arrays[0], arrays[1]


EXAMPLE_DATASETS: dict[str, ExampleDataset] = {
    entry.name: entry
    for entry in (
        ExampleDataset(
            "lfw_faces",
            "Labeled Faces in the Wild crops vs. other crops of the same photos (scikit-image lfw_subset)",
            ("face", "non_face"),
            200,
            (25, 25),
            "scikit-image",
            _lfw_faces,
        ),
        ExampleDataset(
            "animal_mnist",
            "Animal silhouettes in the MNIST format; label order as listed in the package README "
            "(checked by eye)",
            ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"),
            10_000,
            (28, 28),
            "animal-mnist",
            _animal_mnist,
        ),
        ExampleDataset(
            "digits",
            "UCI handwritten digits, 8x8, 17 grey levels (scikit-learn load_digits)",
            tuple(str(d) for d in range(10)),
            1_797,
            (8, 8),
            "scikit-learn",
            _digits,
        ),
        ExampleDataset(
            "textures",
            "64x64 tiles of three texture photos: brick, grass, gravel (scikit-image, as in its "
            "texture classification example); tiles of one photo are correlated",
            ("brick", "grass", "gravel"),
            192,
            (64, 64),
            "scikit-image",
            _textures,
        ),
    )
}


def list_datasets() -> list[ExampleDataset]:
    """All built-in example datasets, sorted by name.

    Example:
        >>> [d.name for d in list_datasets()]
        ['animal_mnist', 'digits', 'lfw_faces', 'textures']
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
        out_dir: the folder to create (it must not exist, be empty, or be an earlier export).
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
    if out_dir.exists() and (not out_dir.is_dir() or _has_foreign_content(out_dir)):
        raise TransferkitError(
            f"Export folder {out_dir} exists and is not an export of {name!r} made by transferkit; "
            "expected a new or empty folder. Choose another path or empty it."
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
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


def _export_matches(out_dir: Path, wanted: dict) -> bool:
    try:
        found = json.loads((out_dir / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return all(found.get(key) == value for key, value in wanted.items())


def _has_foreign_content(out_dir: Path) -> bool:
    """True when ``out_dir`` holds anything other than an earlier transferkit export."""
    return any(out_dir.iterdir()) and not (out_dir / MARKER).is_file()


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
