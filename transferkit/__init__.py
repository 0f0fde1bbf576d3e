"""transferkit: transfer learning for image classification with Keras 3.

Example:
    >>> import transferkit
    >>> run = transferkit.fit(data="./pets", size="small", similar=True)  # doctest: +SKIP
    >>> transferkit.predict(run.run_dir, ["photo.jpg"])  # doctest: +SKIP
"""

from importlib.metadata import PackageNotFoundError, version

from transferkit.api import FitResult, evaluate, fit, predict, resume
from transferkit.backbones import BACKBONES, BackboneSpec, get_backbone
from transferkit.data import DatasetCard, DataSplits, load_data
from transferkit.datasets import export_dataset, list_datasets
from transferkit.errors import TransferkitError
from transferkit.recipes import Recipe, load_builtin
from transferkit.recipes import load as load_recipe
from transferkit.runfolder import load_run

try:
    __version__ = version("transferkit")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0+unknown"

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "DataSplits",
    "DatasetCard",
    "FitResult",
    "Recipe",
    "TransferkitError",
    "evaluate",
    "export_dataset",
    "fit",
    "get_backbone",
    "list_datasets",
    "load_data",
    "load_builtin",
    "load_recipe",
    "load_run",
    "predict",
    "resume",
]
