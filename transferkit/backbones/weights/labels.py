"""ImageNet-1k class names, read offline from files tensorflow-datasets ships.

``keras.applications.imagenet_utils.decode_predictions`` downloads its index file, so it fails
offline. tensorflow-datasets' wheel holds the 1000 human-readable names in the standard order
(``datasets/siscore/labels.py``, ``IMAGENET_LABELS_LIST``) and the WordNet synsets
(``datasets/imagenet2012/labels.txt``). Both are read as files, without importing tfds.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path

from transferkit.errors import TransferkitError


def _tfds_file(relative: str) -> Path | None:
    spec = importlib.util.find_spec("tensorflow_datasets")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.is_file() else None


def _names_from_siscore(path: Path) -> list[str] | None:
    """The ``IMAGENET_LABELS_LIST = [...]`` literal of tfds' SI-Score labels module, parsed, not run."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "IMAGENET_LABELS_LIST" for target in node.targets
        ):
            names = ast.literal_eval(node.value)
            return names if len(names) == 1000 else None
    return None


@functools.lru_cache(maxsize=1)
def _class_names() -> tuple[str, ...]:
    siscore = _tfds_file("datasets/siscore/labels.py")
    names = _names_from_siscore(siscore) if siscore else None
    if names:
        return tuple(name.split(",")[0].strip() for name in names)
    synsets = _tfds_file("datasets/imagenet2012/labels.txt")
    if synsets:
        return tuple(synsets.read_text(encoding="utf-8").split())
    raise TransferkitError(
        "ImageNet class names are read from tensorflow-datasets' files, but tensorflow_datasets is not "
        "installed. Install it with `pip install tensorflow-datasets` (or `make setup`)."
    )


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in the standard index order, read offline.

    Names are the first synonym of each class, as Keras' ``decode_predictions`` shows them
    (``"tench"``, ``"goldfish"``, ...); two classes share a name (``"crane"``, ``"maillot"``), as in
    Keras. Falls back to WordNet synsets (``"n01440764"``) if only those are available.

    Example:
        >>> imagenet_class_names()[:2]
        ['tench', 'goldfish']
    """
    return list(_class_names())
